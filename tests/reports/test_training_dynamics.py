"""Training dynamics: the objectives attribution explains, D* on hand-made cases, the copy-target mask, dense
checkpoints and refined windows (the attribution machinery's tests are in tests/analysis/test_attribution.py)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import LAYER1_ATTENTION, fp32_tol, tiny_attention_hooked
from lib.analysis import metrics, stats
from lib.core.config import resolve
from lib.core.train import init_model, list_checkpoints, load_checkpoint_weights
from lib.reports.training_dynamics import kernel as attribution

NAMES = LAYER1_ATTENTION


@pytest.fixture(scope="module")
def hooked():
    return tiny_attention_hooked()


def test_induction_objective_matches_head_scores_and_only_touches_query_key(hooked):
    tokens = metrics.repeated_tokens(4, 6, torch.arange(30), torch.Generator().manual_seed(0))
    value = attribution.induction_objective(tokens, layer=1, head=1)(hooked)
    assert value.item() == pytest.approx(metrics.head_scores(hooked, tokens)["induction"][1, 1].item(),
                                         abs=fp32_tol(1.0))  # a mean of attention probabilities (≤ 1)
    g = attribution.objective_grad(hooked, attribution.induction_objective(tokens, layer=1, head=1), NAMES)
    q, k, v, o = g.split([p.numel() for p in attribution.param_subset(hooked, NAMES).values()])
    assert q.abs().sum() > 0 and k.abs().sum() > 0 and v.abs().sum() == 0 and o.abs().sum() == 0
    icl = attribution.objective_grad(hooked, attribution.icl_objective(torch.randint(0, 30, (3, 12)), early=2, late=8, width=1), NAMES)
    assert icl.abs().sum() > 0


def test_spearman():
    a = np.arange(20.0)
    assert stats.spearman(a, a**3) == pytest.approx(1.0) and stats.spearman(a, -a) == pytest.approx(-1.0)


def test_data_dimensionality_hand_cases():
    eye = torch.eye(5)
    assert torch.allclose(attribution.data_dimensionality(eye, center=False), torch.ones(5))
    dup = torch.cat([eye[:3], eye[:1]])  # rows 0 and 3 are the same vector: they share one dimension
    d = attribution.data_dimensionality(dup, center=False)
    assert torch.allclose(d, torch.tensor([0.5, 1.0, 1.0, 0.5]))
    h = torch.randn(50, 8)
    assert attribution.data_dimensionality(h).sum() <= 8 + 1e-4  # sum of D* is at most the rank


def test_copy_target_mask():
    spans = torch.tensor([[2, 3, 5], [-1, -1, -1]])  # span 2..4 copied to 5..7
    m = attribution.copy_target_mask(spans, n_ctx=10)
    assert m.shape == (2, 9)
    assert m[0].nonzero().flatten().tolist() == [5, 6]  # loss index t predicts token t+1 = 6, 7
    assert not m[1].any()


def _tiny_run(max_steps):
    """A smoke-sized attention-only config and random token data for a few training steps."""
    cfg = resolve("smoke", attention_only=True, max_steps=max_steps, eval_every=max_steps, checkpoint_every=max_steps,
                  batch_size=4, warmup_steps=2)
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(0, cfg.model.d_vocab, (n, cfg.model.n_ctx), generator=g)  # noqa: E731
    return cfg, SimpleNamespace(train=rand(64), val=rand(16), val_beginnings=rand(16)[:, :20])


def test_train_dense_keeps_the_requested_steps_and_resumes(tmp_path):
    cfg, data = _tiny_run(9)
    steps = [0, 1, 2, 5, 9]
    paths = attribution.train_dense(cfg, tmp_path / "ck", steps, progress=False, data=data)
    assert [attribution.checkpoint_step(p) for p in paths] == steps
    init, _ = load_checkpoint_weights(paths[0])
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), init_model(cfg).state_dict().values()))
    assert attribution.train_dense(cfg, tmp_path / "ck", steps, progress=False, data=data) == paths
    assert len(list_checkpoints(tmp_path / "ck")) == len(steps)
    hooked = dict(attribution.hooked_checkpoints(paths[-2:]))
    assert set(hooked) == {5, 9}


def test_dense_window_adds_the_checkpoints_the_run_passed_through(tmp_path):
    cfg, data = _tiny_run(12)
    paths = attribution.train_dense(cfg, tmp_path / "sparse", [0, 4, 12], progress=False, data=data)
    every = attribution.train_dense(cfg, tmp_path / "every", list(range(13)), progress=False, data=data)
    dense = attribution.dense_window(cfg, paths, tmp_path / "window", 5, 9, 3, progress=False, data=data)
    assert [attribution.checkpoint_step(p) for p in dense] == [5, 7, 9]
    for p in dense:
        a, _ = load_checkpoint_weights(p)
        b, _ = load_checkpoint_weights(every[attribution.checkpoint_step(p)])
        assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    assert attribution.dense_window(cfg, paths, tmp_path / "window", 5, 9, 3, progress=False, data=data) == dense
    with pytest.raises(ValueError, match="not allowed"):
        attribution.dense_window(cfg, paths, tmp_path / "w2", 9, 5, 3, progress=False, data=data)



def test_dstar_histograms_draw_every_panel():
    # a regression: with the shared log axis, every panel after the first came out empty
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    from lib.reports.training_dynamics import plots

    rng = np.random.default_rng(0)
    groups = ["planted repeat", "natural", "other"]
    df = pd.concat([pd.DataFrame({"dstar": rng.lognormal(np.log(0.03 + 0.01 * k), 0.5, 200), "checkpoint": f"c{k}",
                                  "group": rng.choice(groups, 200)}) for k in range(4)])
    fig = plots.dstar_histograms(df, "D*", groups)
    drawn = [sum(len(c.get_paths()) for c in ax.collections) for ax in fig.axes if ax.get_visible()]
    assert drawn == [3, 3, 3, 3], drawn  # each panel draws its three groups' histograms
    plt.close(fig)
