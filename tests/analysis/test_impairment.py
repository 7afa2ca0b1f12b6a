"""Impairment hooks, clusters and the batched sweep against the per-condition loop."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fp32_tol, planted_topic_stats
from lib.analysis import impairment
from lib.analysis.prompts import KeywordPrompts
from lib.analysis.units import LOCATIONS, match_units, topic_stats, unit_activations
from lib.core import config, hooks, model, train

CFG = config.resolve("smoke", attention_only=False, n_layers=3, init_range=0.3)


@pytest.fixture(scope="session")
def hooked():
    return model.to_hooked(train.init_model(CFG).eval())


@pytest.fixture(scope="session")
def pr():
    """12 right-padded random prompts of lengths 3..14 with random keyword targets."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.arange(3, 15)
    tokens = torch.randint(1, CFG.model.d_vocab, (12, 14), generator=g)
    tokens[torch.arange(14)[None] >= lengths[:, None]] = 0
    targets = torch.randint(0, CFG.model.d_vocab, (12,), generator=g)
    topics = tuple(["a", "b", "c"][i % 3] for i in range(12))
    return KeywordPrompts(tokens, lengths, targets, topics, ("x",) * 12, torch.arange(12))


@pytest.fixture(scope="session")
def clusters(hooked, pr):
    """Selectivity clusters at every location: all layers, the first, the middle and the last layer."""
    windows = {t: pr.tokens[[i for i, x in enumerate(pr.topics) if x == t]] for t in "abc"}
    stats = topic_stats(hooked, windows, LOCATIONS, progress=False)
    out = {}
    for loc in LOCATIONS:
        for name, layers in (("all", None), ("first", [0]), ("middle", [1]), ("last", [2])):
            out[f"{loc} {name}"] = impairment.selective_cluster(stats[loc], "a", 0.1, layers)
    return out


def _no_hooks_left(m) -> bool:
    return all(not hp.fwd_hooks for hp in m.hook_dict.values())


@pytest.mark.parametrize("kind", ["noise", "negative_noise", "scale", "zero", "mean"])
@pytest.mark.parametrize("loc", LOCATIONS)
def test_intensity_zero_is_bit_identical(hooked, pr, clusters, kind, loc):
    clean = hooked(pr.tokens)
    g = torch.Generator().manual_seed(0)
    out = hooked.run_with_hooks(pr.tokens, fwd_hooks=impairment.cluster_hooks(clusters[f"{loc} all"], kind, 0.0, g))
    assert torch.equal(out, clean)
    assert _no_hooks_left(hooked)


def test_hooks_touch_only_the_cluster_units_and_negative_noise_is_nonpositive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 20)
    units = torch.tensor([2, 5, 11])
    others = torch.ones(20, dtype=torch.bool)
    others[units] = False
    for kind in impairment.KINDS:
        fn = impairment.impairment(kind, units, 0.7, generator=g, sd=torch.full((3,), 2.0), mean=torch.ones(3))
        y = fn(x.clone())
        assert torch.equal(y[..., others], x[..., others])
        assert not torch.equal(y[..., units], x[..., units])
    shift = impairment.impairment("negative_noise", units, 3.0, generator=g)(x.clone()) - x
    assert (shift <= 0).all() and (shift[..., units] < 0).any()
    assert torch.equal(shift[..., units].amax(-1), torch.zeros(4, 7))  # shifted so that the maximum is 0


def test_per_row_intensity_and_same_seed_same_result():
    x = torch.randn(3, 5, 8)
    units = torch.tensor([1, 4])
    a = torch.tensor([0.0, 1.0, 2.0])
    y = impairment.impairment("scale", units, a)(x.clone())
    assert torch.equal(y[0], x[0]) and torch.allclose(y[2, :, units], -x[2, :, units])
    draw = [impairment.impairment("noise", units, 1.0, generator=torch.Generator().manual_seed(s))(x.clone())
            for s in (7, 7, 8)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


@pytest.mark.parametrize("fast", [True, False])
def test_batched_sweep_equals_per_condition_loop(hooked, pr, clusters, fast):
    conds = impairment.dose_grid(clusters, (0.0, 0.5, 3.0), (0.0, 0.6), seeds=(0, 1))
    loop = impairment.sweep_loop(hooked, pr, clusters, conds, progress=False)
    batched = impairment.sweep(hooked, pr, clusters, conds, max_tokens=200, chunk_tokens=60, fast=fast, progress=False)
    assert len(batched) == len(conds) * len(pr)
    keys = ["cluster", "kind", "intensity", "seed", "prompt", "topic"]
    pd.testing.assert_frame_equal(batched[keys], loop[keys])
    assert np.allclose(batched.loss, loop.loss, rtol=0, atol=fp32_tol(loop.loss.to_numpy()))  # other batch shapes
    assert (batched.top1 == loop.top1).mean() > 0.99 and (batched.top5 == loop.top5).mean() > 0.99
    assert _no_hooks_left(hooked)


def test_grid_deduplicates():
    conds = impairment.dose_grid(["c"], (0.0, 1.0), (0.0, 0.5), seeds=(0, 1, 2))
    by = pd.DataFrame([c.__dict__ for c in conds]).groupby("kind").size().to_dict()
    assert by == {"noise": 4, "negative_noise": 4, "scale": 2, "zero": 1, "mean": 1}


def test_match_units_recovers_a_permutation():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 30, generator=g)
    perm = torch.randperm(30, generator=g)
    found = match_units(acts, acts[:, perm])
    assert torch.equal(perm[found], torch.arange(30))


def test_specificity_index_and_ci():
    rng = np.random.default_rng(0)
    rows = [{"topic": t, "prompt": i + 100 * j, "intensity": 1.0, "d_loss": d + rng.normal(0, 0.05)}
            for j, (t, d) in enumerate((("a", 2.0), ("b", 1.0), ("c", 1.0))) for i in range(50)]
    value, (lo, hi) = impairment.specificity(pd.DataFrame(rows), "a", ["b", "c"], n_boot=300)
    assert value == pytest.approx(2.0, abs=0.05) and lo < value < hi
    assert impairment.specificities(pd.DataFrame(rows).assign(cluster="x"), "a", ["b", "c"]).index.tolist() == ["x"]


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="kind='blur'"):
        impairment.impairment("blur", torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="generator"):
        impairment.impairment("noise", torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="location"):
        unit_activations(None, torch.zeros(1, 1, dtype=torch.long), "resid")
    assert hooks.name("mlp_post", 0) in {n for n, _ in impairment.cluster_hooks(_clu(), "scale", 0.5)}


def _clu() -> impairment.Cluster:
    return impairment.selective_cluster(planted_topic_stats(), "a", 0.1)
