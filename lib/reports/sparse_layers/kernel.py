"""Report 5 (sparse layers): the grid of trained k-WTA layers and the unit measures (selectivity,
monosemanticity, duty cycles) against random rotations. The k-WTA layer and surgery are shared (lib.analysis.kwta)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lib.analysis import kwta
from lib.analysis.kwta import FitConfig, SparseConfig, fit_key, lm_loss, resid_at, start_layer
from lib.analysis.stats import bootstrap, percentile_ci
from lib.analysis.units import best_selectivity, require_hook, stats_from_acts
from lib.core.checks import check, is_int


def train_grid(model, runs: Mapping[tuple, tuple[SparseConfig, FitConfig]], tokens: Int[Tensor, "n pos"],
               eval_tokens: Int[Tensor, "m pos"], base: str, progress: bool = True) -> tuple[dict, pd.DataFrame]:
    """Train (or load) the layer of every run; (run -> surgered model, table of held-out losses, one row per run).

    The frozen prefix's residual stream is computed once per start layer and shared by all runs."""
    resid: dict[int, tuple[Tensor, Tensor]] = {}
    models, rows = {}, []
    for run, (cfg, fit_cfg) in tqdm(runs.items(), desc="sparse layers", disable=not progress):
        start = start_layer(model, cfg)
        if start not in resid:
            resid[start] = (resid_at(model, tokens, start), resid_at(model, eval_tokens, start))
        key = fit_key(base, cfg, fit_cfg, {"n_train": len(tokens)})
        new, hist = kwta.get_or_fit(model, cfg, fit_cfg, tokens, key, resid=resid[start][0], progress=False)
        models[run] = new
        rows.append({"run": run, "loss": lm_loss(new, eval_tokens, start, resid[start][1]),
                     "train_loss_end": float(hist.loss.tail(max(1, len(hist) // 10)).mean())})
    return models, pd.DataFrame(rows)


@torch.no_grad()
def unit_acts(model, tokens: Int[Tensor, "n pos"], hook: str, batch_size: int = 64) -> Float[Tensor, "tokens unit"]:
    """Activations at hook `hook` for every position of `tokens`, flattened over (n, pos)."""
    require_hook(model, hook, f"unit activations at {hook}")
    out = []
    for i in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(tokens[i : i + batch_size].to(model.cfg.device), return_type=None,
                                        names_filter=[hook])
        out.append(cache[hook].flatten(0, -2).cpu())
    return torch.cat(out)


def random_rotation(n: int, generator: torch.Generator) -> Float[Tensor, "n n"]:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def monosemanticity(acts: Float[Tensor, "tokens unit"], owner: Int[Tensor, " tokens"], n_top: int,
                    n_topics: int) -> Float[Tensor, " unit"]:
    """Per unit: share of its n_top largest activations that fall in its most frequent topic among them;
    NaN for units positive on fewer than n_top tokens (too rarely active to score)."""
    check(is_int(n_top) and 0 < n_top <= len(acts), "n_top", n_top, f"an integer in [1, {len(acts)}]")
    top = acts.topk(n_top, dim=0).indices  # (n_top, unit)
    counts = F.one_hot(owner[top], n_topics).sum(0)  # (unit, topic)
    share = counts.max(-1).values.float() / n_top
    return torch.where((acts > 0).sum(0) >= n_top, share, torch.tensor(float("nan")))


def duty_cycles(acts: Float[Tensor, "tokens unit"]) -> Float[Tensor, " unit"]:
    """Share of tokens on which each unit is nonzero (measured, not the running buffer)."""
    return (acts != 0).float().mean(0)


def duty_entropy(duty: Float[Tensor, " unit"]) -> float:
    """Entropy of the duty-cycle distribution (duty / sum) over units, divided by log(units): 1 = all equal."""
    p = duty.double() / duty.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(len(duty)))


def top_contexts(acts: Float[Tensor, " tokens"], tokens: Int[Tensor, "n pos"], tok, owner_topics: Sequence[str],
                 n: int = 5, before: int = 8) -> pd.DataFrame:
    """The n tokens where a unit is largest: activation, topic, and the text up to that token ([token] marked), as
    `tok.display` shows it (a partial UTF-8 character as byte escapes)."""
    pos, rows = tokens.shape[1], []
    for flat in acts.topk(n).indices.tolist():
        i, j = divmod(flat, pos)
        ctx = tok.display(tokens[i, max(0, j - before) : j].tolist()).replace("\n", " ")
        rows.append({"activation": float(acts[flat]), "topic": owner_topics[flat],
                     "context": f"{ctx}[{tok.display([int(tokens[i, j])])}]"})
    return pd.DataFrame(rows)


def unit_scores(acts: Float[Tensor, "tokens unit"], owner: Int[Tensor, " tokens"], topics: Sequence[str],
                n_top: int) -> pd.DataFrame:
    """One row per unit: selectivity (max Cohen's d), top topic, monosemanticity, duty cycle; the scores are NaN
    for units positive on fewer than n_top tokens (dead or too rarely active to score, `scored` False)."""
    sel, top = best_selectivity(stats_from_acts(acts, owner, topics))
    scored = ((acts > 0).sum(0) >= n_top).numpy()
    return pd.DataFrame({"unit": np.arange(acts.shape[1]), "selectivity": np.where(scored, sel.numpy(), np.nan),
                         "top_topic": [topics[i] for i in top.tolist()],
                         "monosemanticity": monosemanticity(acts, owner, n_top, len(topics)).numpy(),
                         "duty": duty_cycles(acts).numpy(), "scored": scored})


def sparsify(acts: Float[Tensor, "tokens unit"], k: int) -> Float[Tensor, "tokens unit"]:
    """Each token's k largest activations kept, the rest zeroed: any basis at the sparsity of a k-WTA layer (a layer
    that is already k-sparse is unchanged), so that bases are compared at equal sparsity."""
    check(is_int(k) and 1 <= k <= acts.shape[1], "k", k, f"an integer in [1, {acts.shape[1]}]")
    idx = acts.topk(k, dim=1).indices
    return torch.zeros_like(acts).scatter_(1, idx, acts.gather(1, idx))


def rotation_gain(acts: Float[Tensor, "tokens unit"], owner: Int[Tensor, " tokens"], topics: Sequence[str],
                  n_top: int, k: int, generator: torch.Generator, n_rotations: int = 3, n_boot: int = 1000,
                  seed: int = 0) -> dict[str, float]:
    """How much more topic-selective a basis's units are than a random rotation of the same units, both at k-WTA
    sparsity k: median selectivity of sparsify(acts, k) minus that of sparsify(acts @ R, k) over n_rotations Haar
    rotations R (their units pooled), with a bootstrap 95% CI resampling units in each group (`boots`: the
    replicates, to compare two bases' gains). A basis whose units are no better than random directions of the same
    space gains 0, whatever its sparsity or scale."""
    own = unit_scores(sparsify(acts, k), owner, topics, n_top).selectivity.dropna().to_numpy()
    rot = np.concatenate([unit_scores(sparsify(acts @ random_rotation(acts.shape[1], generator), k), owner, topics,
                                      n_top).selectivity.dropna().to_numpy() for _ in range(n_rotations)])
    check(len(own) > 1 and len(rot) > 1, "acts", f"{len(own)} and {len(rot)} scored units",
          "at least 2 units active on n_top tokens in the basis and in its rotations")
    boots = bootstrap(lambda a, b: np.median(a) - np.median(b), own, rot, n_boot=n_boot, seed=seed, paired=False)
    lo, hi = percentile_ci(boots)
    return {"median": float(np.median(own)), "rotated": float(np.median(rot)),
            "gain": float(np.median(own) - np.median(rot)), "ci_low": lo, "ci_high": hi, "units": len(own),
            "boots": boots}


def monosemanticity_null(acts: Float[Tensor, "tokens unit"], window: Int[Tensor, " tokens"],
                         window_topic: Int[Tensor, " window"], n_top: int, n_topics: int, n_shuffles: int,
                         generator: torch.Generator) -> tuple[float, np.ndarray]:
    """The median monosemanticity of a basis's scored units and its label-shuffle null: the same statistic with the
    windows' topics permuted among windows (n_shuffles times). Shuffling whole windows keeps what makes top
    activations cluster (neighbouring tokens of one window), so the null's level is the chance level of this
    data, not 1 / n_topics (about 0.12 for 100 independent draws over 14 topics, higher with clustering)."""
    observed = float(np.nanmedian(monosemanticity(acts, window_topic[window], n_top, n_topics).numpy()))
    null = np.array([np.nanmedian(monosemanticity(acts, window_topic[torch.randperm(len(window_topic),
                                                                                    generator=generator)][window],
                                                  n_top, n_topics).numpy()) for _ in range(n_shuffles)])
    return observed, null
