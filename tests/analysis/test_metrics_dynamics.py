"""Training-dynamics metrics: prefix matching, differentiable induction score, ICL score, phase-change detection."""

import numpy as np
import pytest
import torch

from helpers import attn_model, fp32_tol, hand_induction_model
from lib.analysis.metrics import (
    attention_patterns,
    head_scores,
    icl_score,
    induction_from_patterns,
    phase_change,
    prefix_matching_score,
    repeated_ngram_mask,
    repeated_tokens,
)


def _distinct_repeats(n, half, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = torch.stack([torch.randperm(vocab, generator=g)[:half] for _ in range(n)])
    return torch.cat([r, r], dim=1)


def test_hand_built_head_high_random_model_low_on_prefix_matching_and_induction():
    tokens = _distinct_repeats(8, 12, 40)
    hand, rand = hand_induction_model(), attn_model(seed=3)
    for model, lo, hi in ((hand, 0.9, 1.01), (rand, 0.0, 0.2)):
        pats = attention_patterns(model, tokens)
        ind = induction_from_patterns(pats).mean(1)  # [layer, head]
        pm = prefix_matching_score(pats, tokens)
        assert lo <= ind[1, 0] <= hi and lo <= pm[1, 0] <= hi
    assert prefix_matching_score(attention_patterns(rand, tokens), tokens).max() < 0.2


def test_prefix_matching_equals_induction_on_distinct_repeats():
    """On [r; r] with distinct tokens the only match for query i is i - half + 1, as the induction score reads it."""
    tokens = _distinct_repeats(5, 10, 40, seed=1)
    pats = attention_patterns(attn_model(seed=5), tokens)
    tol = fp32_tol(1.0)  # means of attention probabilities (at most 1) computed two ways
    assert torch.allclose(prefix_matching_score(pats, tokens), induction_from_patterns(pats).mean(1), rtol=0, atol=tol)
    assert torch.allclose(induction_from_patterns(pats).mean(1),
                          head_scores(attn_model(seed=5), tokens)["induction"], rtol=0, atol=tol)


def test_prefix_matching_counts_only_earlier_matches():
    """Hand-written attention: all mass on the token after an earlier occurrence scores 1, on itself 0."""
    tokens = torch.tensor([[5, 6, 7, 5, 9]])  # query 3 (token 5) matches key 1 (after the 5 at position 0)
    pat = torch.zeros(1, 1, 1, 5, 5)
    pat[..., torch.arange(5), torch.arange(5)] = 1.0  # every query attends to itself
    assert prefix_matching_score(pat, tokens).item() == 0.0
    pat[..., 3, :] = 0.0
    pat[..., 3, 1] = 1.0
    assert prefix_matching_score(pat, tokens).item() == pytest.approx(1.0)


def test_induction_from_patterns_is_differentiable():
    pat = torch.rand(2, 3, 8, 8, requires_grad=True)
    induction_from_patterns(pat).sum().backward()
    assert pat.grad[..., 4:, :].abs().sum() > 0 and pat.grad[..., :4, :].abs().sum() == 0


def test_icl_score_reads_the_right_positions():
    loss = torch.zeros(3, 20)
    loss[:, 3:6] = 2.0  # early window around 4
    loss[:, 14:17] = 0.5  # late window around 15
    assert torch.allclose(icl_score(loss, early=4, late=15, width=1), torch.full((3,), -1.5))
    with pytest.raises(ValueError, match="late=19"):
        icl_score(loss, early=4, late=19, width=1)


def _sigmoid_curve(steps, at, width, lo=0.02, hi=0.6, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return lo + (hi - lo) / (1 + np.exp(-(steps - at) / width)) + noise * rng.standard_normal(len(steps))


@pytest.mark.parametrize("at", [700, 1234, 2200])
def test_phase_change_finds_a_planted_step_on_log_plus_linear_checkpoints(at):
    steps = np.unique(np.concatenate([np.round(np.logspace(0, np.log10(3000), 20)), np.linspace(0, 3000, 41)]))
    pc = phase_change(steps, _sigmoid_curve(steps, at, 60, noise=0.01, seed=at))
    assert abs(pc.step - at) < 120
    assert pc.start < pc.step < pc.end and pc.jump == pytest.approx(0.58, abs=0.06)
    down = phase_change(steps, -_sigmoid_curve(steps, at, 60), increasing=False)
    assert abs(down.step - at) < 120 and down.high < down.low


def test_phase_change_on_a_flat_curve_reports_no_jump():
    steps = np.linspace(0, 3000, 61)
    pc = phase_change(steps, _sigmoid_curve(steps, 1500, 60, hi=0.02, noise=0.005), min_jump=0.1)
    assert pc.jump < 0.05 and not pc.found
    assert phase_change(steps, _sigmoid_curve(steps, 1500, 60), min_jump=0.1).found
    with pytest.raises(ValueError, match="increasing"):
        phase_change([0, 2, 1, 3], [0, 0, 0, 0])


def test_repeated_ngram_mask():
    t = torch.tensor([1, 2, 3, 9, 1, 2, 3, 4])
    assert repeated_ngram_mask(t, 3).tolist() == [1, 1, 1, 0, 1, 1, 1, 0]
    assert repeated_ngram_mask(t, 4).sum() == 0
    assert repeated_tokens(2, 4, torch.arange(5), torch.Generator().manual_seed(0)).shape == (2, 8)
