"""Report 5 kernel: unit measures on planted units."""

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
