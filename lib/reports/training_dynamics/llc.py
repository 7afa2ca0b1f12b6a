"""The local learning coefficient (LLC) over training: devinterp's SGLD estimator, chain diagnostics, a pre-registered
calibration rule, and the test of whether the LLC changes fastest inside the induction phase-change window.

The estimate is λ̂ = nβ (E_w[L_n(w)] − L_n(w*)): the expected loss of SGLD draws from the tempered posterior localised at
the checkpoint w* (strength γ), minus the checkpoint's own loss, times the inverse temperature nβ (Lau et al. 2023;
Hoogland et al. 2024 used it to find developmental stages of in-context learning). devinterp runs on the
TransformerLens twin (it reads `cfg.n_heads` as "a TransformerLens model", which our training module also has but
whose forward takes no `return_type`); `estimate` hands it any other module with a `cfg` (our training module,
whose backward pass is about 1.6x faster here) wrapped in a plain module with the next-token loss, which devinterp
then treats as a plain PyTorch model. On the same checkpoint both give the same λ̂ within the chains' spread.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from lib.analysis import stats
from lib.core.checks import check

RHAT_MAX = 1.1  # split-R̂ above this: the chains disagree or drift, and the value is not trusted (BDA3's threshold)


def default_nbeta(batch_size: int) -> float:
    """devinterp's default inverse temperature: batch_size / log(batch_size)."""
    check(isinstance(batch_size, int) and batch_size >= 2, "batch_size", batch_size, "an integer >= 2")
    return batch_size / math.log(batch_size)


@dataclass(frozen=True)
class LLC:
    """One estimate: mean and sd over chains of nβ (mean sampled loss after burn-in − the checkpoint's loss), per-chain
    values, the per-step mean loss of every chain (burn-in included) and the checkpoint's own loss; `config` the
    sampler settings (and devinterp's own mean, which averages the burn-in steps too), `rhat` the split-R̂ of the
    draws after burn-in (`stationary`: rhat <= RHAT_MAX)."""

    mean: float
    sd: float
    per_chain: np.ndarray
    trace: np.ndarray
    init_loss: float
    config: dict
    rhat: float

    @property
    def stationary(self) -> bool:
        return bool(self.rhat <= RHAT_MAX)

    @property
    def rise(self) -> float:
        """Mean sampled loss after burn-in minus the checkpoint's own loss (nats): λ̂ / nβ."""
        return float(self.trace[:, self.config["num_burnin"]:].mean() - self.init_loss)


class _Plain(torch.nn.Module):
    """A module without `cfg`, so that devinterp does not take it for a TransformerLens model."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.inner(input_ids)


class _Rows(torch.utils.data.Dataset):
    """Token rows as devinterp reads them (`{"input_ids": row}`, int64), without a Hugging Face `Dataset`'s Arrow
    decoding of every row of every batch."""

    def __init__(self, tokens: Tensor):
        self.tokens = torch.as_tensor(tokens).long()

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input_ids": self.tokens[i]}


def _next_token_loss(model: torch.nn.Module, input_ids: Tensor) -> Tensor:
    """Per-token cross-entropy [batch, pos - 1] of a module that returns logits."""
    logp = torch.log_softmax(model(input_ids).float(), -1)
    return -logp[:, :-1].gather(-1, input_ids[:, 1:, None])[..., 0]


def _for_sampler(model: torch.nn.Module, loss_fn: Callable | None) -> tuple[torch.nn.Module, Callable | None]:
    from transformer_lens import HookedTransformer

    if isinstance(model, HookedTransformer) or not hasattr(model, "cfg"):
        return model, loss_fn
    return _Plain(model), loss_fn or _next_token_loss


def estimate(model: torch.nn.Module, tokens: Int[Tensor, "n pos"], *, lr: float, localization: float,
             nbeta: float | None = None, num_chains: int = 4, num_draws: int = 200, num_burnin: int = 50,
             batch_size: int = 32, seed: int = 0, loss_fn: Callable | None = None, device: str = "cpu",
             as_documented: bool = False) -> LLC:
    """The LLC of `model` at its current weights on `tokens` (SGLD with step `lr`, localisation `localization`,
    nβ default `default_nbeta(batch_size)`); the model is copied, never changed. loss_fn: devinterp's per-token loss
    `(model, input_ids) -> [batch, pos - 1]` (default: next-token cross-entropy).

    devinterp reads the batches from a plain tensor dataset and skips its gc.collect() between chains on the CPU
    (`as_documented`: the Hugging Face `Dataset` devinterp documents, and its collection). Neither changes a draw:
    the loader's shuffle has the same generator and length, and garbage collection frees no tensor a chain uses, so
    the estimate is bit-identical either way (tests/reports/test_llc.py). In one cProfile run of a cpu-preset
    estimate (3 chains x 100 steps, 13.5 s) the two took 1.6 s and 0.6 s; side by side, the documented path takes
    1.15x as long (median over 8 repetitions, IQR 1.05-1.22; bench/llc_estimate.py)."""
    from datasets import Dataset
    from devinterp.slt.llc import llc as devinterp_llc

    check(lr > 0 and math.isfinite(lr), "lr", lr, "a positive SGLD step size")
    check(localization >= 0, "localization", localization, ">= 0")
    check(num_chains >= 2 and num_draws >= 4, "num_chains/num_draws", (num_chains, num_draws),
          "at least 2 chains and 4 draws (split-R̂ needs them)")
    nbeta = default_nbeta(batch_size) if nbeta is None else float(nbeta)
    ds = (Dataset.from_dict({"input_ids": torch.as_tensor(tokens).tolist()}).with_format("torch") if as_documented
          else _Rows(tokens))
    twin, loss_fn = _for_sampler(copy.deepcopy(model), loss_fn)
    cfg = dict(lr=lr, localization=localization, nbeta=nbeta, num_chains=num_chains, num_draws=num_draws,
               num_burnin=num_burnin, batch_size=batch_size, seed=seed)
    import devinterp.slt.sampler as sampler
    from tqdm.auto import trange

    quiet, collect = sampler.trange, sampler._gc_and_empty_cache
    sampler.trange = lambda *a, **k: trange(*a, **{**k, "disable": True})  # no progress bar per chain in the book
    if not as_documented and not str(device).startswith("cuda"):
        # devinterp runs gc.collect() before and after every chain, to give CUDA memory back; on the CPU it frees
        # nothing the next chain needs, and it took 1.6 s of a 13.5 s cpu-preset estimate (cProfile, one run)
        sampler._gc_and_empty_cache = lambda: None
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = devinterp_llc(twin, ds, {}, lr=lr, n_beta=nbeta, localization=localization, num_chains=num_chains,
                              num_draws=num_draws, num_burnin_steps=num_burnin, batch_size=batch_size,
                              init_seed=seed, loss_fn=loss_fn, device=device, output_path=f"{tmp}/samples.zarr")
            trace = np.asarray(r.loss_trace.values, float)
            mean, init = float(r.llc_mean), float(r.init_loss)
    finally:
        sampler.trange, sampler._gc_and_empty_cache = quiet, collect
    if not np.isfinite(trace).all():
        raise ValueError(f"SGLD diverged at lr={lr}, localization={localization}: non-finite losses in the chains")
    # devinterp 2.0.1 averages every step, burn-in included (`compute_llc`); the estimator is over the draws after it
    per_chain = nbeta * (trace[:, num_burnin:].mean(axis=1) - init)
    cfg["devinterp_llc_mean"] = mean
    return LLC(float(per_chain.mean()), float(per_chain.std()), per_chain, trace, init, cfg,
               stats.split_rhat(trace[:, num_burnin:]))


def calibrate(model: torch.nn.Module, tokens: Tensor, lrs: Sequence[float], localizations: Sequence[float],
              **kwargs) -> tuple[pd.DataFrame, dict[tuple[float, float], LLC]]:
    """Every (lr, localization) of the grid at one checkpoint: a table (lr, localization, llc, sd, rhat, stationary,
    rise, diverged) and the estimates. A diverged chain is a row with diverged=True, not an error."""
    rows, out = [], {}
    for lr in lrs:
        for loc in localizations:
            try:
                e = estimate(model, tokens, lr=lr, localization=loc, **kwargs)
            except ValueError as err:
                if "diverged" not in str(err):
                    raise
                rows.append({"lr": lr, "localization": loc, "llc": np.nan, "sd": np.nan, "rhat": np.nan,
                             "stationary": False, "rise": np.nan, "diverged": True})
                continue
            out[(lr, loc)] = e
            rows.append({"lr": lr, "localization": loc, "llc": e.mean, "sd": e.sd, "rhat": e.rhat,
                         "stationary": e.stationary, "rise": e.rise, "diverged": False})
    return pd.DataFrame(rows), out


def choose(tables: Sequence[pd.DataFrame], max_rise: float = 1.0) -> tuple[float, float] | None:
    """The pre-registered rule: among (lr, localization) that at *every* calibration checkpoint are stationary
    (split-R̂ <= RHAT_MAX), give a positive LLC and stay localised (the sampled loss rises by at most max_rise nats:
    a chain that wanders off to a far worse loss measures somewhere else), the largest lr (the fastest mixing), then
    the smallest localization (the least pull to the checkpoint); None if no setting qualifies (then no LLC value is
    trusted)."""
    ok = None
    for t in tables:
        good = {(r.lr, r.localization) for r in t.itertuples()
                if r.stationary and not r.diverged and r.llc > 0 and r.rise <= max_rise}
        ok = good if ok is None else ok & good
    if not ok:
        return None
    return sorted(ok, key=lambda x: (-x[0], x[1]))[0]


def window_rate_ratio(steps: Sequence[float], values: Sequence[float], start: float, end: float) -> float:
    """How much faster `values` change inside [start, end] than outside: the mean |Δvalue / Δstep| of the segments
    between consecutive checkpoints whose midpoint lies in the window, over the median of the others (NaN when
    either side has no segment)."""
    s, v = np.asarray(steps, float), np.asarray(values, float)
    check(s.ndim == 1 and len(s) == len(v) and len(s) >= 3 and np.all(np.diff(s) > 0), "steps/values",
          (len(s), len(v)), "equal lengths >= 3, steps increasing")
    rate, mid = np.abs(np.diff(v) / np.diff(s)), (s[1:] + s[:-1]) / 2
    inside = (mid >= start) & (mid <= end)
    if not inside.any() or inside.all():
        return float("nan")
    out = np.median(rate[~inside])
    return float(rate[inside].mean() / out) if out > 0 else float("inf")


def window_rate_test(steps: Sequence[float], values: Sequence[float], start: float, end: float,
                     n_shifts: int = 200) -> tuple[float, float, np.ndarray]:
    """window_rate_ratio and its p-value against the same window slid to n_shifts evenly spaced positions along the
    whole run (same length in steps; positions that leave either side empty are skipped): (ratio, p, null)."""
    s = np.asarray(steps, float)
    width = end - start
    offsets = np.linspace(s[0], s[-1] - width, n_shifts)
    null = np.array([window_rate_ratio(s, values, o, o + width) for o in offsets])
    null = null[np.isfinite(null)]
    obs = window_rate_ratio(s, values, start, end)
    if not np.isfinite(obs) or len(null) == 0:
        return obs, float("nan"), null
    return obs, stats.permutation_p(obs, null), null


def _trace_frame(e: LLC, name: str) -> pd.DataFrame:
    t = e.trace
    return pd.DataFrame({"name": name, "chain": np.repeat(np.arange(t.shape[0]), t.shape[1]),
                         "sgld_step": np.tile(np.arange(t.shape[1]), t.shape[0]), "loss": t.ravel()})


def trace_name(checkpoint: str, lr: float, localization: float) -> str:
    """The name of one calibration run's traces in `over_checkpoints`' trace table."""
    return f"{checkpoint}, lr {lr:g}, γ {localization:g}"


def over_checkpoints(load: Callable[[object], torch.nn.Module], calibration: dict[str, object],
                     todo: Sequence[tuple[str, int, object]], tokens: Tensor, lrs: Sequence[float],
                     localizations: Sequence[float], max_rise: float, **kwargs
                     ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The calibration grid at each checkpoint of `calibration` (label -> checkpoint), the pre-registered choice
    (`choose`), then λ̂ at that setting for every (run, step, checkpoint) of `todo` (an estimate already made at a
    calibration checkpoint of the same step is reused). `load(checkpoint)` gives the model. Returns the calibration
    table (with column checkpoint), one row per estimate (run, step, llc, sd, rhat, stationary, rise, lr,
    localization; empty when no setting qualifies) and the calibration traces (name, chain, sgld_step, loss)."""
    tables, traces, done = [], [], {}
    for label, ck in calibration.items():
        t, est = calibrate(load(ck), tokens, lrs, localizations, **kwargs)
        tables.append(t.assign(checkpoint=label))
        traces += [_trace_frame(e, trace_name(label, a, b)) for (a, b), e in est.items()]
        done[label] = est
    choice = choose(tables, max_rise)
    rows = []
    if choice is not None:
        reuse = {calibration[label]: est.get(choice) for label, est in done.items()}
        for run, step, ck in todo:
            e = reuse.get(ck)
            if e is None:
                e = estimate(load(ck), tokens, lr=choice[0], localization=choice[1], **kwargs)
            rows.append({"run": run, "step": step, "llc": e.mean, "sd": e.sd, "rhat": e.rhat,
                         "stationary": e.stationary, "rise": e.rise, "lr": choice[0], "localization": choice[1]})
    return pd.concat(tables, ignore_index=True), pd.DataFrame(rows), pd.concat(traces, ignore_index=True)


def chain_halves(calib: pd.DataFrame, traces: pd.DataFrame, burnin: int, nbeta: float) -> pd.DataFrame:
    """λ̂ from the first and the second half of the draws after burn-in for every calibration run (the chain-length
    check: a chain at its stationary distribution gives the same value from both halves)."""
    rows = []
    for r in calib.itertuples():
        tr = traces[traces.name == trace_name(r.checkpoint, r.lr, r.localization)]
        if r.diverged or tr.empty:
            continue
        post = tr[tr.sgld_step >= burnin].groupby("sgld_step").loss.mean().to_numpy()
        init = post.mean() - r.rise  # the checkpoint's own loss
        h = len(post) // 2
        rows.append({"checkpoint": r.checkpoint, "lr": r.lr, "localization": r.localization,
                     "llc, first half": nbeta * (post[:h].mean() - init),
                     "llc, second half": nbeta * (post[h:].mean() - init)})
    return pd.DataFrame(rows)
