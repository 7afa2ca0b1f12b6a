"""The LLC estimator on models whose learning coefficient is known, the calibration rule, and the window test."""

import numpy as np
import pandas as pd
import pytest
import torch

from lib.reports.training_dynamics import llc

N = 1000
_G = torch.Generator().manual_seed(0)
X, Y = torch.randn(N, 4, generator=_G, dtype=torch.float64), torch.randn(N, generator=_G, dtype=torch.float64)
Y = (Y - X @ torch.linalg.lstsq(X, Y).solution).float()  # y orthogonal to x: w* = 0 is the empirical minimiser exactly
X = X.float()


class Linear(torch.nn.Module):
    """y = x[:, :d] w: a regular model, λ = d / 2."""

    def __init__(self, d):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(d))

    def pred(self, x):
        return x[:, : len(self.w)] @ self.w


class Product(torch.nn.Module):
    """y = a b x0 at a = b = 0: singular (normal crossing), λ = 1/2 with multiplicity 2, below d / 2 = 1."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))

    def pred(self, x):
        return self.a * self.b * x[:, 0]


def _loss(model, ids):  # devinterp's loss hook: the "token" ids index the regression data
    i = ids[:, 0]
    return (0.5 * (model.pred(X[i]) - Y[i]) ** 2)[:, None]


def _llc(model, **kw):
    ids = torch.stack([torch.arange(N), torch.zeros(N, dtype=torch.long)], 1)
    args = dict(lr=3e-4, localization=1.0, nbeta=N / np.log(N), num_chains=4, num_draws=500, num_burnin=100,
                batch_size=250, loss_fn=_loss)
    return llc.estimate(model, ids, **{**args, **kw})


def test_llc_recovers_half_the_dimension_of_a_regular_model_and_less_for_a_singular_one():
    """Known answers: λ = d/2 for a regular model (within 30%: SGLD at finite n and step); the singular model a·b·x
    at its singularity well below its d/2 = 1. A version without nβ (a plain loss gap) would give ~1e-3, one that
    forgot to subtract the checkpoint's loss ~nβ·0.5 ≈ 70."""
    two, four, prod = _llc(Linear(2)), _llc(Linear(4)), _llc(Product())
    assert 0.7 < two.mean < 1.3 and 1.4 < four.mean < 2.6
    assert prod.mean < 0.7 and prod.mean < two.mean
    assert two.trace.shape == (4, 600) and two.per_chain.shape == (4,) and two.sd > 0
    assert two.stationary and two.rhat < llc.RHAT_MAX
    assert two.rise == pytest.approx(two.mean / two.config["nbeta"], rel=1e-9)  # λ̂ = nβ × rise
    model = Linear(2)
    _llc(model)
    assert torch.equal(model.w.detach(), torch.zeros(2))  # sampling works on a copy


def test_calibration_rule_takes_the_largest_stationary_positive_step_everywhere():
    t1 = pd.DataFrame({"lr": [1e-4, 1e-4, 1e-3, 1e-3], "localization": [1, 10, 1, 10], "llc": [1.0, 0.9, 1.2, -0.5],
                       "stationary": [True, True, True, True], "rise": [0.1, 0.1, 0.2, 0.1], "diverged": [False] * 4})
    t2 = t1.assign(stationary=[True, True, False, True])
    assert llc.choose([t1]) == (1e-3, 1)
    assert llc.choose([t1, t2]) == (1e-4, 1)  # 1e-3 with localization 1 is not stationary at the second checkpoint
    assert llc.choose([t1.assign(rise=[0.1, 0.1, 5.0, 0.1])]) == (1e-4, 1)  # wandered 5 nats off: not localised
    assert llc.choose([t1.assign(stationary=False)]) is None


def test_window_rate_test_finds_a_planted_steep_segment_and_not_a_straight_line():
    steps = np.arange(0, 3001, 100.0)
    planted = np.where(steps < 1500, 0.001 * steps, 1.5 + 0.02 * (steps - 1500))
    planted = np.where(steps > 1800, planted[steps == 1800][0] + 0.001 * (steps - 1800), planted)
    ratio, p, null = llc.window_rate_test(steps, planted, 1500, 1800)
    assert ratio == pytest.approx(20.0) and p < 0.05 and len(null) > 100
    ratio0, p0, _ = llc.window_rate_test(steps, 2.0 * steps, 1500, 1800)
    assert ratio0 == pytest.approx(1.0) and p0 > 0.5
    assert np.isnan(llc.window_rate_ratio(steps, planted, 5000, 6000))  # no segment inside


def test_our_module_and_its_hooked_twin_give_the_same_llc():
    """devinterp takes any module with cfg.n_heads for a TransformerLens model; estimate() wraps ours, so both run and
    agree: the checkpoint's loss exactly (one forward each), λ̂ within the chains' spread (the noise is drawn per
    parameter, in each module's own order)."""
    from helpers import random_transformer
    from lib.core.config import ModelConfig
    from lib.core.model import to_hooked

    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_vocab=30, n_ctx=12, attention_only=True)
    ours = random_transformer(cfg, matrix_sd=0.3, vector_sd=0.1)
    tokens = torch.randint(0, 30, (64, 12), generator=torch.Generator().manual_seed(1))
    kw = dict(lr=1e-3, localization=100.0, num_chains=3, num_draws=60, num_burnin=20, batch_size=16)
    a, b = llc.estimate(ours, tokens, **kw), llc.estimate(to_hooked(ours), tokens, **kw)
    assert a.init_loss == pytest.approx(b.init_loss, rel=1e-5)
    spread = 4 * max(a.sd, b.sd) / np.sqrt(3) + 0.05 * abs(b.mean)
    assert abs(a.mean - b.mean) < spread and a.mean > 0


def test_over_checkpoints_calibrates_chooses_reuses_and_checks_chain_length():
    ids = torch.stack([torch.arange(N), torch.zeros(N, dtype=torch.long)], 1)
    kw = dict(nbeta=N / np.log(N), num_chains=2, num_draws=40, num_burnin=10, batch_size=250, loss_fn=_loss)
    two, four = Linear(2), Linear(4)
    calib, rows, traces = llc.over_checkpoints(lambda m: m, {"two": two}, [("a", 0, two), ("b", 7, four)], ids,
                                               [3e-4, 3e-2], [1.0], max_rise=1.0, **kw)
    assert list(calib.checkpoint) == ["two", "two"] and set(traces.name) == {llc.trace_name("two", 3e-4, 1.0),
                                                                             llc.trace_name("two", 3e-2, 1.0)}
    choice = llc.choose([calib], 1.0)
    assert choice is not None and list(rows.run) == ["a", "b"] and (rows.lr == choice[0]).all()
    chosen = calib[(calib.lr == choice[0]) & (calib.localization == choice[1])].iloc[0]
    assert rows.llc.iloc[0] == chosen.llc  # the calibration estimate is reused, not redrawn
    assert rows.llc.iloc[1] > rows.llc.iloc[0]  # d = 4 above d = 2
    halves = llc.chain_halves(calib, traces, 10, kw["nbeta"])
    assert len(halves) == 2
    h = halves[halves.lr == choice[0]].iloc[0]
    assert (h["llc, first half"] + h["llc, second half"]) / 2 == pytest.approx(chosen.llc, rel=1e-6)
    none = llc.over_checkpoints(lambda m: m, {"two": two}, [("a", 0, two)], ids, [3e-4], [1.0], max_rise=1e-9, **kw)
    assert none[1].empty  # nothing qualifies: no estimate is made


def test_plain_rows_and_no_garbage_collection_give_the_same_draws_as_devinterps_documented_path(monkeypatch):
    """The tensor dataset and the skipped gc.collect() are speed only: every chain's loss trace is bit-identical to
    the Hugging Face Dataset path with devinterp's collection (a loader that read the rows in another order, or as
    other integers, would change the traces), and the skipped collection is put back afterwards."""
    import devinterp.slt.sampler as sampler

    from helpers import random_transformer
    from lib.core.config import ModelConfig

    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, d_vocab=30, n_ctx=12, attention_only=True)
    model = random_transformer(cfg, matrix_sd=0.3, vector_sd=0.1)
    tokens = torch.randint(0, 30, (64, 12), generator=torch.Generator().manual_seed(2), dtype=torch.int32)
    kw = dict(lr=1e-3, localization=100.0, num_chains=2, num_draws=10, num_burnin=3, batch_size=8, seed=5)
    calls = []
    collect = sampler._gc_and_empty_cache

    def counted():
        calls.append(1)
        collect()

    monkeypatch.setattr(sampler, "_gc_and_empty_cache", counted)
    fast = llc.estimate(model, tokens, **kw)
    assert calls == [] and sampler._gc_and_empty_cache is counted  # skipped, then put back
    slow = llc.estimate(model, tokens, as_documented=True, **kw)
    assert len(calls) == 2 * kw["num_chains"]  # devinterp's own path collects before and after every chain
    assert np.array_equal(fast.trace, slow.trace) and fast.init_loss == slow.init_loss
    assert np.array_equal(fast.per_chain, slow.per_chain) and fast.rhat == slow.rhat
    shuffled = llc.estimate(model, tokens.flip(0), **kw)
    assert not np.array_equal(shuffled.trace, fast.trace)  # the traces do depend on which rows the loader reads
