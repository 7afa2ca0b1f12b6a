"""Report 5 kernel: unit measures on planted units."""

import numpy as np
import pytest
import torch

from lib.reports.sparse_layers import kernel as sparse


def test_unit_measures_on_planted_units():
    owner = torch.arange(3).repeat_interleave(100)
    acts = torch.zeros(300, 3)
    acts[owner == 1, 0] = 1.0 + torch.rand(100)  # unit 0: only topic 1
    acts[:, 1] = torch.rand(300)  # unit 1: no topic
    df = sparse.unit_scores(acts, owner, ["a", "b", "c"], n_top=50)
    assert df.top_topic[0] == "b" and df.monosemanticity[0] == 1.0 and df.selectivity[0] > 5
    assert df.selectivity[1] < 0.5 and df.monosemanticity[1] < 0.8
    assert df.monosemanticity.isna()[2] and df.selectivity.isna()[2] and df.duty[2] == 0  # a dead unit: unscored
    assert df.scored.tolist() == [True, True, False]
    assert sparse.duty_entropy(torch.ones(8)) == pytest.approx(1.0)
    q = sparse.random_rotation(6, torch.Generator().manual_seed(0))
    assert torch.allclose(q @ q.T, torch.eye(6), atol=1e-5)


def test_sparsify_keeps_each_token_k_largest_and_leaves_a_k_sparse_layer_alone():
    x = torch.tensor([[3.0, -1.0, 2.0, 0.5], [0.0, 4.0, 1.0, 5.0]])
    assert sparse.sparsify(x, 2).tolist() == [[3.0, 0.0, 2.0, 0.0], [0.0, 4.0, 0.0, 5.0]]
    y = sparse.sparsify(x, 2)
    assert torch.equal(sparse.sparsify(y, 2), y)
    with pytest.raises(ValueError, match="k=5"):
        sparse.sparsify(x, 5)


def _planted_basis(n_units=16, tokens_per_topic=200, seed=0):
    """Unit u fires on topic u % 4 (axis-aligned), plus noise: a privileged basis, every unit one topic's."""
    g = torch.Generator().manual_seed(seed)
    owner = torch.arange(4).repeat_interleave(tokens_per_topic)
    acts = 0.3 * torch.rand(len(owner), n_units, generator=g)
    for u in range(n_units):
        acts[owner == u % 4, u] += 1.0 + torch.rand(tokens_per_topic, generator=g)
    return acts, owner


def test_rotation_gain_is_positive_for_a_privileged_basis_and_zero_for_a_rotated_one():
    acts, owner = _planted_basis()
    g = torch.Generator().manual_seed(1)
    topics = ["a", "b", "c", "d"]
    planted = sparse.rotation_gain(acts, owner, topics, n_top=20, k=4, generator=g, n_rotations=3, n_boot=200)
    assert planted["gain"] > 1.0 and planted["ci_low"] > 0
    rotated = acts @ sparse.random_rotation(acts.shape[1], torch.Generator().manual_seed(2))
    null = sparse.rotation_gain(rotated, owner, topics, n_top=20, k=4, generator=g, n_rotations=3, n_boot=200)
    assert null["ci_low"] < 0 < null["ci_high"] or abs(null["gain"]) < 0.3 * planted["gain"]


def test_monosemanticity_null_shuffles_whole_windows():
    # 40 windows of 10 tokens, 4 topics; a unit fires on every token of 3 windows of topic 0 (clustered)
    window = torch.arange(40).repeat_interleave(10)
    window_topic = torch.arange(4).repeat(10)  # window w has topic w % 4
    acts = torch.rand(400, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    for w in (0, 4, 8):
        acts[window == w, 0] += 1.0
    g = torch.Generator().manual_seed(0)
    obs, null = sparse.monosemanticity_null(acts[:, :1], window, window_topic, n_top=30, n_topics=4, n_shuffles=200,
                                            generator=g)
    assert obs == 1.0
    # 30 top activations in 3 windows: a shuffle puts those 3 windows in one topic with p = 1/16, so the null's
    # median share is 2/3 or 1/3 -- far above 1/4, the naive "chance" of independent draws
    assert np.median(null) >= 1 / 3 and (null == 1.0).mean() < 0.25
