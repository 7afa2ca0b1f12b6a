"""Head scores on hand-built heads; n-gram baselines against brute force."""

import math

import pytest
import torch

from helpers import attn_model, hand_induction_model
from lib.analysis.metrics import frequent_tokens, head_scores, ngram_baseline, repeated_tokens


def test_hand_built_induction_head_scores_high_random_model_low():
    g = torch.Generator().manual_seed(0)
    tokens = repeated_tokens(16, 12, torch.arange(40), g)
    hand = head_scores(hand_induction_model(), tokens)
    rand = head_scores(attn_model(), tokens)
    assert hand["induction"][1, 0] > 0.7  # below 1 only where r repeats a token by chance
    assert hand["prev_token"][0, 0] > 0.9
    assert rand["induction"].max() < 0.2
    assert rand["prev_token"].max() < 0.3


def test_repeated_tokens_shape_and_repeat():
    t = repeated_tokens(3, 5, torch.tensor([7, 8, 9]), torch.Generator().manual_seed(0))
    assert t.shape == (3, 10) and torch.equal(t[:, :5], t[:, 5:]) and set(t.unique().tolist()) <= {7, 8, 9}
    with pytest.raises(ValueError, match="half=1"):
        repeated_tokens(3, 1, torch.tensor([1]), torch.Generator())


def test_frequent_tokens():
    assert frequent_tokens(torch.tensor([[3, 3, 3, 1, 1, 2]]), 2, 5).tolist() == [3, 1]


def _brute_bigram(train, ev, V, k):
    uni = [1.0] * V
    pairs, prevc = {}, [0] * V
    for row in train.tolist():
        for t in row[1:]:
            uni[t] += 1
        for a, b in zip(row[:-1], row[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + 1
            prevc[a] += 1
    tot = sum(uni)
    p_uni = [u / tot for u in uni]
    nll, correct, n = 0.0, 0, 0
    for row in ev.tolist():
        for a, b in zip(row[:-1], row[1:]):
            p = (pairs.get((a, b), 0) + k * p_uni[b]) / (prevc[a] + k)
            nll -= math.log(p)
            cands = [(pairs.get((a, c), 0), -c) for c in range(V)]
            best = max(cands)
            pred = -best[1] if best[0] > 0 else max(range(V), key=lambda c: (p_uni[c], -c))
            correct += pred == b
            n += 1
    return nll / n, correct / n


def test_bigram_baseline_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    V = 7
    train = torch.randint(0, V, (20, 9), generator=g)
    ev = torch.randint(0, V, (5, 9), generator=g)
    res = ngram_baseline(train, ev, V, order=2, k=0.5)
    loss, acc = _brute_bigram(train, ev, V, 0.5)
    assert res["loss"] == pytest.approx(loss, rel=1e-9)
    assert res["accuracy"] == pytest.approx(acc)


def test_unigram_baseline_and_bad_order():
    train = torch.tensor([[0, 1, 1, 1]])
    res = ngram_baseline(train, torch.tensor([[0, 1]]), 3, order=1)
    assert res["loss"] == pytest.approx(-math.log(4 / 6))  # counts (0,3,0)+1 over 6
    assert res["accuracy"] == 1.0
    with pytest.raises(ValueError, match="order=3"):
        ngram_baseline(train, train, 3, order=3)


def test_per_sequence_scores_average_to_the_pooled_scores():
    tokens = repeated_tokens(6, 8, torch.arange(40), torch.Generator().manual_seed(1))
    model = attn_model()
    pooled, per = head_scores(model, tokens), head_scores(model, tokens, per_sequence=True)
    assert per["induction"].shape == (6, 2, 2)
    assert torch.allclose(per["induction"].mean(0), pooled["induction"])
