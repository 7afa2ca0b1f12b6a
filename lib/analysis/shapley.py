"""Shapley values of the players of a cooperative game: exact enumeration, truncated Monte-Carlo permutation
sampling (TMC) and the multi-armed-bandit variant (TMAB) of Neuron Shapley (Ghorbani & Zou 2020); MLP neurons of a
HookedTransformer as players, many coalitions per batched forward pass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lib.analysis.fastpath import fast_path_ok, prompt_chunks, require_fast_path, tail_query_block, width_chunks
from lib.analysis.prompts import KeywordPrompts, keyword_scores, tail
from lib.core import artifacts, hooks, pretrained
from lib.core.checks import check, int_at_least

ValueFn = Callable[[Bool[Tensor, "batch n"]], Float[Tensor, "batch *games"]]
ABLATIONS = ("zero", "mean")
METRICS = ("neg_loss", "top1", "top5")
EXACT_MAX = 16


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class ShapleyResult:
    """Estimates `values` [n] (or [n, games] for a game with several values per coalition), their standard errors,
    value-function evaluations used (per coalition), marginals sampled per player, the estimates after each
    sampled permutation (`trace_values`, with the evaluations used so far in `trace_evals`), and whether the
    estimator stopped by its own stopping rule before its budget (`stopped_by_rule`)."""

    values: Float[Tensor, "n *games"]
    stderr: Float[Tensor, "n *games"]
    n_evals: int
    counts: Int[Tensor, " n"]
    trace_evals: Int[Tensor, " t"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    trace_values: Float[Tensor, "t n *games"] = field(default_factory=lambda: torch.zeros(0))
    stopped_by_rule: bool = False

    def top(self, k: int, game: int | None = None) -> Int[Tensor, " k"]:
        """Indices of the k players with the highest estimates (of one game, for several)."""
        return top_k(self.values if game is None else self.values[:, game], k)

    def trace_top(self, k: int, game: int | None = None) -> list[frozenset[int]]:
        """The top-k set after each sampled permutation."""
        vals = self.trace_values if game is None else self.trace_values[..., game]
        return [frozenset(top_k(v, k).tolist()) for v in vals]


def top_k(values: Float[Tensor, " n"], k: int) -> Int[Tensor, " k"]:
    """Indices of the k largest values (ties broken by index, so deterministic)."""
    int_at_least("k", k, 1)
    check(values.dim() == 1 and k <= len(values), "k", k, f"at most the number of players ({len(values)})")
    order = np.lexsort((np.arange(len(values)), -values.double().numpy()))
    return torch.as_tensor(order[:k].copy())


def _evaluate(value_fn: ValueFn, masks: Bool[Tensor, "batch n"], batch_size: int) -> Tensor:
    """value_fn over masks in batches of batch_size coalitions, as float64 [batch, *games]."""
    out = []
    for i in range(0, len(masks), batch_size):
        part = masks[i : i + batch_size]
        v = torch.as_tensor(value_fn(part))
        check(v.dim() in (1, 2) and v.shape[0] == len(part), "value_fn output shape", tuple(v.shape),
               f"(batch,) or (batch, games) with batch = {len(part)} coalitions")
        out.append(v.detach().double().cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------------ exact


def exact_shapley(value_fn: ValueFn, n_players: int, batch_size: int = 4096) -> ShapleyResult:
    """Shapley values by enumerating all 2^n coalitions (n <= 16): sum over S not containing i of
    |S|! (n - |S| - 1)! / n! · (v(S ∪ {i}) − v(S))."""
    int_at_least("n_players", n_players, 1)
    check(n_players <= EXACT_MAX, "n_players", n_players, f"at most {EXACT_MAX} for enumeration (2^n coalitions)")
    int_at_least("batch_size", batch_size, 1)
    codes = torch.arange(2**n_players)
    masks = ((codes[:, None] >> torch.arange(n_players)) & 1).bool()
    v = _evaluate(value_fn, masks, batch_size)
    size = masks.sum(1)
    s = torch.arange(n_players, dtype=torch.float64)
    weight = torch.exp(torch.lgamma(s + 1) + torch.lgamma(n_players - s) - math.lgamma(n_players + 1))
    phi = []
    for i in range(n_players):
        without = codes[((codes >> i) & 1) == 0]
        w = weight[size[without]].view(-1, *([1] * (v.dim() - 1)))
        phi.append((w * (v[without | (1 << i)] - v[without])).sum(0))
    values = torch.stack(phi).float()
    return ShapleyResult(values, torch.zeros_like(values), 2**n_players,
                         torch.full((n_players,), 2 ** (n_players - 1), dtype=torch.long))


# ------------------------------------------------------------------------------------------ permutations


def prefix_masks(perm: Int[Tensor, " n"], steps: Int[Tensor, " m"]) -> Bool[Tensor, "m n"]:
    """Coalitions S_j = all players minus the first j of the permutation (removal order), one row per j in steps."""
    pos = torch.empty_like(perm)
    pos[perm] = torch.arange(len(perm))
    return pos[None, :] >= steps[:, None]


def _is_truncated(v: Tensor, v_empty: Tensor, scale: Tensor, tol: float) -> Bool[Tensor, " m"]:
    """Rows whose value is within tol · scale of v(∅) in every game (the model is already broken)."""
    close = (v - v_empty).abs() <= tol * scale
    return close if close.dim() == 1 else close.all(-1)


def permutation_marginals(value_fn: ValueFn, perm: Int[Tensor, " n"], v_full: Tensor, v_empty: Tensor,
                          truncation_tol: float = 0.0, batch_size: int = 64, scale: Tensor | None = None
                          ) -> tuple[Tensor, int]:
    """Marginal contributions [n, *games] of every player along one permutation, removing players one by one from
    the full coalition (marginal = v(before removal) − v(after)), and the evaluations used.

    With truncation_tol > 0, the walk stops once a coalition's value is within truncation_tol · scale of v(∅)
    (scale: the game's range, default |v(N) − v(∅)|; `tmc_shapley` passes the range of every value it has seen);
    later players get marginal 0 (Neuron Shapley's truncation, which assumes a broken model stays broken). With 0,
    marginals sum to v(N) − v(∅).
    """
    n = len(perm)
    scale = (v_full - v_empty).abs() if scale is None else scale
    vals, evals, cut = [v_full[None]], 0, None
    for start in range(1, n, batch_size):
        steps = torch.arange(start, min(start + batch_size, n))
        v = _evaluate(value_fn, prefix_masks(perm, steps), batch_size)
        evals += len(steps)
        vals.append(v)
        hit = _is_truncated(v, v_empty, scale, truncation_tol) if truncation_tol > 0 else torch.zeros(0, dtype=bool)
        if hit.any():
            cut = start + int(hit.nonzero()[0])
            break
    seq = torch.cat(vals)
    if cut is None:
        seq = torch.cat([seq, v_empty[None]])
    else:  # after the cut every coalition counts as worth v(S_cut): later marginals are 0
        seq = torch.cat([seq[: cut + 1], seq[cut][None].expand(n - cut, *seq.shape[1:])])
    marginals = torch.empty(n, *seq.shape[1:], dtype=seq.dtype)
    marginals[perm] = seq[:-1] - seq[1:]
    return marginals, evals


def _check_common(n_players: int, truncation_tol: float, batch_size: int) -> None:
    int_at_least("n_players", n_players, 1)
    check(0.0 <= truncation_tol < 1.0, "truncation_tol", truncation_tol, "a float in [0, 1)")
    int_at_least("batch_size", batch_size, 1)


def _ends(value_fn: ValueFn, n_players: int) -> tuple[Tensor, Tensor]:
    """v(all players) and v(no player)."""
    v = _evaluate(value_fn, torch.stack([torch.ones(n_players, dtype=bool), torch.zeros(n_players, dtype=bool)]), 2)
    return v[0], v[1]


def _moments(sums: Tensor, sq: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error from running sums (counts broadcast over games); stderr inf below 2 samples."""
    c = counts.double().view(-1, *([1] * (sums.dim() - 1)))
    mean = sums / c.clamp(min=1)
    var = ((sq - c * mean**2) / (c - 1).clamp(min=1)).clamp(min=0)
    se = torch.where(c >= 2, (var / c.clamp(min=1)).sqrt(), torch.full_like(var, float("inf")))
    return mean, se


def tmc_shapley(value_fn: ValueFn, n_players: int, n_permutations: int, truncation_tol: float = 0.0,
                generator: torch.Generator | None = None, batch_size: int = 64, progress: bool = False,
                desc: str = "TMC", stop_top_k: int | None = None, stable_for: int = 20) -> ShapleyResult:
    """Truncated Monte-Carlo Shapley: the mean marginal of each player over n_permutations uniform permutations
    (walked in removal order, truncated as in `permutation_marginals` at truncation_tol times the range of the
    values seen in earlier walks, per game; |v(N) − v(∅)| before the first). Works for several games at once; a
    walk is cut only where every game is near its v(∅). Truncation is exact when a coalition near v(∅) stays there
    as players leave (a broken model stays broken); where walks pass v(∅) on their way (a non-monotone game) it
    zeroes real marginals, whatever the tolerance.

    With stop_top_k = k (a single game), TMC gets a stopping rule: it stops once the top-k set has stayed the same
    for `stable_for` consecutive permutations (n_permutations is then the budget)."""
    _check_common(n_players, truncation_tol, batch_size)
    int_at_least("n_permutations", n_permutations, 1)
    if stop_top_k is not None:
        int_at_least("stop_top_k", stop_top_k, 1)
        int_at_least("stable_for", stable_for, 1)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v_full, v_empty = _ends(value_fn, n_players)
    sums = torch.zeros(n_players, *v_full.shape, dtype=torch.float64)
    sq, evals, trace_e, trace_v = sums.clone(), 2, [], []
    lo, hi = torch.minimum(v_full, v_empty).double(), torch.maximum(v_full, v_empty).double()  # the game's range
    for t in tqdm(range(n_permutations), desc=desc, disable=not progress, leave=False):
        perm = torch.randperm(n_players, generator=g)
        m, e = permutation_marginals(value_fn, perm, v_full, v_empty, truncation_tol, batch_size, hi - lo)
        walk = v_full.double() - m[perm].cumsum(0)  # the values of the coalitions this walk evaluated
        lo, hi = torch.minimum(lo, walk.min(0).values), torch.maximum(hi, walk.max(0).values)
        sums, sq, evals = sums + m, sq + m**2, evals + e
        trace_e.append(evals)
        trace_v.append((sums / (t + 1)).float())
        if stop_top_k is not None and _stable(trace_v, stop_top_k, stable_for):
            break
    counts = torch.full((n_players,), len(trace_e), dtype=torch.long)
    mean, se = _moments(sums, sq, counts)
    by_rule = stop_top_k is not None and _stable(trace_v, stop_top_k, stable_for)
    return ShapleyResult(mean.float(), se.float(), evals, counts, torch.tensor(trace_e), torch.stack(trace_v), by_rule)


def _stable(trace_v: list[Tensor], k: int, n: int) -> bool:
    """Whether the top-k set of the last n + 1 running estimates is one and the same set."""
    if len(trace_v) <= n:
        return False
    first = frozenset(top_k(trace_v[-n - 1], k).tolist())
    return all(frozenset(top_k(v, k).tolist()) == first for v in trace_v[-n:])


# ------------------------------------------------------------------------------------------ TMAB


def active_marginals(value_fn: ValueFn, perm: Int[Tensor, " n"], active: Bool[Tensor, " n"], v_full: Tensor,
                     v_empty: Tensor, truncation_tol: float = 0.0, batch_size: int = 64,
                     scale: Tensor | None = None) -> tuple[Tensor, int, tuple[float, float]]:
    """Marginals [n] along one permutation (removal order) for the `active` players only (others 0), evaluating
    only the coalitions just before and after each active player's removal; evaluations used; (min, max) of the
    values evaluated. Truncation as in `permutation_marginals`, checked on the coalitions evaluated."""
    n = len(perm)
    scale = (v_full - v_empty).abs() if scale is None else scale
    pos = torch.empty_like(perm)
    pos[perm] = torch.arange(n)
    q = pos[active]
    steps = torch.unique(torch.cat([q, q + 1]))
    steps = steps[(steps > 0) & (steps < n)]
    known = {0: v_full, n: v_empty}
    evals, cut = 0, None
    for i in range(0, len(steps), batch_size):
        part = steps[i : i + batch_size]
        v = _evaluate(value_fn, prefix_masks(perm, part), batch_size)
        evals += len(part)
        known.update(zip(part.tolist(), v))
        hit = _is_truncated(v, v_empty, scale, truncation_tol) if truncation_tol > 0 else torch.zeros(0, dtype=bool)
        if hit.any():
            cut = int(part[int(hit.nonzero()[0])])
            break
    out = torch.zeros(n, dtype=torch.float64)
    for player, j in zip(active.nonzero().flatten().tolist(), q.tolist()):
        if cut is None or j < cut:
            out[player] = float(known[j] - known[j + 1])
    values = torch.stack([torch.as_tensor(x, dtype=torch.float64) for x in known.values()])
    return out, evals, (float(values.min()), float(values.max()))


def bernstein_half_width(var: Tensor, counts: Tensor, value_range: float, delta: Tensor | float
                         ) -> Float[Tensor, " n"]:
    """Empirical-Bernstein half-width (Maurer & Pontil 2009, Thm. 4, two-sided): sqrt(2 V log(2/δ) / n)
    + 7 R log(2/δ) / (3 (n − 1)) for n samples of sample variance V in a range of width R; inf below 2 samples.
    The range term keeps early intervals wide, so a player whose first few marginals happen to agree is not
    retired on them (a Student-t interval would be 0 wide there)."""
    n = counts.double()
    log_term = torch.log(2 / torch.as_tensor(delta, dtype=torch.float64))
    h = (2 * var * log_term / n.clamp(min=1)).sqrt() + 7 * value_range * log_term / (3 * (n - 1).clamp(min=1))
    return torch.where(n >= 2, h, torch.full_like(h, float("inf")))


def tmab_shapley(value_fn: ValueFn, n_players: int, k: int, delta: float = 0.05, max_permutations: int = 100,
                 truncation_tol: float = 0.0, min_samples: int = 2, epsilon: float = 0.0,
                 value_range: float | None = None, max_evals: int | None = None,
                 generator: torch.Generator | None = None, batch_size: int = 64, progress: bool = False,
                 desc: str = "TMAB") -> ShapleyResult:
    """Neuron Shapley's bandit for the top-k players: sample permutations, but compute marginals only for players
    whose rank against the top-k boundary is still uncertain, and stop once the top-k set is separated.

    Players are re-examined at the check rounds t_j = ⌈1.2^j⌉ (and in between keep their status). At check j each
    player's mean marginal gets an empirical-Bernstein interval (`bernstein_half_width`) at level
    δ / (n_players (j + 1)(j + 2)), so that all intervals at all checks hold together with probability ≥ 1 − δ (a
    union bound; a bound at every round would pay log t² instead of log j²). A player in the current top-k is active while its lower bound is not above every other player's upper
    bound, and a player outside it while its upper bound reaches the lowest lower bound of the top-k; players with
    fewer than min_samples marginals are active. Activity is recomputed every round, so no player is retired for
    good. When no player is active the top-k set is certified (with probability ≥ 1 − δ, if R bounds the marginals).
    The range R of a marginal is `value_range` if given, else the range of every marginal observed so far, over all
    players (at least |v(all) − v(none)|): a player whose own marginals have not yet shown their scale is bounded by
    what the others' have. epsilon > 0 also retires a player once its half-width is below epsilon (an
    approximation). Stops when certified, or after max_permutations or once max_evals value evaluations are spent
    (the budget). For a single game (value_fn -> [batch]); `certified` tells whether it stopped on its own."""
    _check_common(n_players, truncation_tol, batch_size)
    int_at_least("k", k, 1)
    check(k < n_players, "k", k, f"less than n_players={n_players} (a boundary needs a (k+1)-th player)")
    check(0.0 < delta < 1.0, "delta", delta, "a float in (0, 1)")
    int_at_least("max_permutations", max_permutations, 1)
    int_at_least("min_samples", min_samples, 2)
    check(epsilon >= 0, "epsilon", epsilon, "a float >= 0")
    check(value_range is None or value_range > 0, "value_range", value_range, "None (estimated) or a positive float")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    v_full, v_empty = _ends(value_fn, n_players)
    check(v_full.dim() == 0, "value_fn output shape", (1, *v_full.shape), "(batch,): TMAB ranks a single game")
    sums, sq = torch.zeros(n_players, dtype=torch.float64), torch.zeros(n_players, dtype=torch.float64)
    counts, active = torch.zeros(n_players, dtype=torch.long), torch.ones(n_players, dtype=bool)
    lo, hi = sorted((0.0, float(v_full - v_empty)))  # the range of the marginals seen (all players)
    g_lo, g_hi = sorted((float(v_full), float(v_empty)))  # the range of the game's values seen
    evals, trace_e, trace_v = 2, [], []
    checks = sorted({math.ceil(1.2**j) for j in range(200) if 1.2**j <= max_permutations} | {max_permutations})
    bar = tqdm(range(1, max_permutations + 1), desc=desc, disable=not progress, leave=False)
    for t in bar:
        m, e, (v_lo, v_hi) = active_marginals(value_fn, torch.randperm(n_players, generator=g), active, v_full,
                                              v_empty, truncation_tol, batch_size, torch.tensor(g_hi - g_lo))
        g_lo, g_hi = min(g_lo, v_lo), max(g_hi, v_hi)
        sums, sq, counts, evals = sums + m, sq + m**2, counts + active, evals + e
        if active.any():
            lo, hi = min(lo, float(m[active].min())), max(hi, float(m[active].max()))
        mean, se = _moments(sums, sq, counts)
        trace_e.append(evals)
        trace_v.append(mean.float())
        if t in checks:
            j = checks.index(t)
            var = se**2 * counts.double()  # the sample variance
            r = value_range if value_range is not None else hi - lo
            half = bernstein_half_width(var, counts, r, delta / (n_players * (j + 1) * (j + 2)))
            active = still_active(mean, half, counts, k, min_samples, epsilon)
        bar.set_postfix(active=int(active.sum()))
        if not active.any() or (max_evals is not None and evals >= max_evals):
            break
    mean, se = _moments(sums, sq, counts)
    return ShapleyResult(mean.float(), se.float(), evals, counts, torch.tensor(trace_e), torch.stack(trace_v),
                         stopped_by_rule=not bool(active.any()))


def t_quantile(p: float, df: Tensor) -> Float[Tensor, " n"]:
    """Student-t quantile for each entry of df (Cornish-Fisher expansion around the normal quantile, Abramowitz &
    Stegun 26.7.5: within 1% of the exact value from df = 2; inf for df < 1)."""
    z = NormalDist().inv_cdf(p)
    g = [(z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160]
    nu = df.double().clamp(min=1)
    t = z + sum(gi / nu ** (i + 1) for i, gi in enumerate(g))
    return torch.where(df >= 1, t, torch.full_like(t, float("inf")))


def still_active(mean: Tensor, half: Tensor, counts: Tensor, k: int, min_samples: int = 2,
                 epsilon: float = 0.0) -> Bool[Tensor, " n"]:
    """Players whose top-k membership is not yet separated: a current top-k player whose lower bound is not above
    the highest upper bound outside the top-k, or an outside player whose upper bound reaches the lowest lower bound
    inside it; also players with fewer than min_samples marginals. epsilon > 0 retires intervals narrower than it."""
    inside = torch.zeros_like(mean, dtype=torch.bool)
    inside[mean.argsort(descending=True, stable=True)[:k]] = True
    lower, upper = mean - half, mean + half
    lowest_in, highest_out = lower[inside].min(), upper[~inside].max()
    unsure = torch.where(inside, lower <= highest_out, upper >= lowest_in) & ~(half < epsilon)
    return unsure | (counts < min_samples)


# ------------------------------------------------------------------------------------------ convergence


def cost_estimators(value_fn: ValueFn, n_players: int, k: int, budget_permutations: int, delta: float = 0.05,
                    stable_for: int = 20, seed: int = 0, progress: bool = False
                    ) -> dict[str, Callable[[], ShapleyResult]]:
    """The two estimators of a fair cost comparison, not yet run: TMC until its top-k has not changed for
    `stable_for` permutations, TMAB until its empirical-Bernstein intervals separate the top-k at confidence
    1 − delta; both within the same budget of value evaluations (budget_permutations full TMC walks)."""
    budget = 2 + budget_permutations * (n_players - 1)
    return {"TMC": lambda: tmc_shapley(value_fn, n_players, budget_permutations, generator=torch.Generator().manual_seed(
                seed), stop_top_k=k, stable_for=stable_for, progress=progress, desc="TMC"),
            "TMAB": lambda: tmab_shapley(value_fn, n_players, k, delta, max_permutations=10 * budget_permutations,
                                         max_evals=budget, generator=torch.Generator().manual_seed(seed),
                                         progress=progress)}


def cost_table(runs: Mapping[str, ShapleyResult], k: int, reference: frozenset) -> pd.DataFrame:
    """One row per estimator: evaluations used, whether its rule stopped it (else the budget did), exact top-k and
    Jaccard overlap with an independent `reference` top-k, and the evaluations after which its running top-k
    equals the reference for good (hindsight; inf if it never does)."""
    return pd.DataFrame([{"estimator": name, "evaluations": r.n_evals,
                          "stopped_by": "rule" if r.stopped_by_rule else "budget",
                          "exact": frozenset(r.top(k).tolist()) == reference,
                          "jaccard": set_jaccard(r.top(k).tolist(), reference),
                          "evaluations_to_reference": evals_to_reach(r.trace_evals.tolist(), r.trace_top(k), reference)}
                         for name, r in runs.items()])


def cost_comparison(value_fn: ValueFn, n_players: int, k: int, reference: frozenset, budget_permutations: int,
                    delta: float = 0.05, stable_for: int = 20, seed: int = 0, progress: bool = False
                    ) -> tuple[pd.DataFrame, dict[str, ShapleyResult]]:
    """Run `cost_estimators` on one game and score them with `cost_table` (the bench and report 4 share this)."""
    runs = {name: run() for name, run in cost_estimators(value_fn, n_players, k, budget_permutations, delta,
                                                         stable_for, seed, progress).items()}
    return cost_table(runs, k, reference), runs


def truncation_check(value_fn: ValueFn, n_players: int, tolerances: Sequence[float], n_permutations: int, k: int,
                     seed: int = 0, batch_size: int = 64) -> tuple[pd.DataFrame, Float[Tensor, " games"]]:
    """Does truncation save evaluations without changing the top-k? TMC on the same n_permutations walks without
    and with each truncation tolerance (relative to the range of the values seen, as in `tmc_shapley`). One row
    per tolerance: the share of the untruncated run's evaluations used, the share of games whose top-k is
    unchanged, and the mean Jaccard overlap of the top-k sets. Also returned, per game: the share of the untruncated
    walks' coalitions worth less than v(∅) (truncation assumes a walk that reaches v(∅) has nothing left to lose;
    where many coalitions lie below it, walks pass v(∅) on the way down and back)."""
    int_at_least("n_permutations", n_permutations, 1)
    for tol in tolerances:
        check(0.0 < tol < 1.0, "tolerance", tol, "a float in (0, 1)")
    v_full, v_empty = _ends(value_fn, n_players)
    g = torch.Generator().manual_seed(seed)
    sums, below, evals = torch.zeros(n_players, *v_full.shape, dtype=torch.float64), 0.0, 2
    for _ in range(n_permutations):  # the walks tmc_shapley draws from this seed, kept to see where they go
        perm = torch.randperm(n_players, generator=g)
        m, e = permutation_marginals(value_fn, perm, v_full, v_empty, 0.0, batch_size)
        walk = v_full.double() - m[perm].cumsum(0)[:-1]  # the coalitions between all and none
        sums, evals, below = sums + m, evals + e, below + (walk < v_empty.double()).double().mean(0)
    base = sums / n_permutations
    games = 1 if base.dim() == 1 else base.shape[1]
    col = (lambda x, j: x) if base.dim() == 1 else (lambda x, j: x[:, j])
    rows = []
    for tol in tolerances:
        r = tmc_shapley(value_fn, n_players, n_permutations, tol, torch.Generator().manual_seed(seed), batch_size)
        jac = [set_jaccard(top_k(col(r.values, j), k).tolist(), top_k(col(base, j), k).tolist()) for j in range(games)]
        rows.append({"tolerance": tol, "evaluations": r.n_evals, "evaluation_share": r.n_evals / evals,
                     "top_k_unchanged": float(np.mean([j == 1.0 for j in jac])), "jaccard": float(np.mean(jac))})
    return pd.DataFrame(rows), (below / n_permutations).float()


def evals_to_reach(trace_evals: Sequence[int], trace_sets: Sequence[frozenset], reference: frozenset) -> float:
    """Evaluations after which the running top-k set equals `reference` and stays equal; inf if it ends elsewhere."""
    hit = float("inf")
    for e, s in zip(trace_evals, trace_sets):
        hit = (hit if np.isfinite(hit) else float(e)) if s == reference else float("inf")
    return hit


def set_jaccard(a: frozenset | Sequence[int], b: frozenset | Sequence[int]) -> float:
    """|A ∩ B| / |A ∪ B| of two index sets (1 for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


# ------------------------------------------------------------------------------------------ neurons as players


@dataclass(frozen=True)
class Players:
    """MLP neurons as players, layer-major: player p is unit p % d_mlp of layer layers[p // d_mlp]."""

    layers: tuple[int, ...]
    d_mlp: int

    @property
    def n(self) -> int:
        return len(self.layers) * self.d_mlp

    def layer_units(self) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
        """(layer, unit) of every player."""
        p = torch.arange(self.n)
        return torch.tensor(self.layers)[p // self.d_mlp], p % self.d_mlp

    def gather(self, per_layer: Float[Tensor, "layer unit"]) -> Float[Tensor, " n"]:
        """A [model layer, unit] table (e.g. selectivity) as one value per player."""
        return per_layer[list(self.layers)].flatten()

    def per_layer(self, mask: Bool[Tensor, "*batch n"], layer: int) -> Bool[Tensor, "*batch d_mlp"]:
        """The columns of `mask` belonging to one model layer."""
        i = self.layers.index(layer)
        return mask[..., i * self.d_mlp : (i + 1) * self.d_mlp]


def neuron_players(model, layers: Sequence[int] | None = None) -> Players:
    """Players for the MLP neurons of `layers` (default: every layer) of a HookedTransformer."""
    n_layers = model.cfg.n_layers
    layers = tuple(range(n_layers)) if layers is None else tuple(sorted(set(int(x) for x in layers)))
    check(len(layers) > 0 and all(0 <= x < n_layers for x in layers), "layers", layers,
           f"a non-empty subset of 0..{n_layers - 1}")
    pretrained.require(model, "the Shapley neuron game (its players are MLP neurons)", mlp=True)
    return Players(layers, model.cfg.d_mlp)


def _fill_hook(mask_rows: Bool[Tensor, "rows d_mlp"], fill: Tensor) -> Callable:
    """Hook keeping present neurons and replacing absent ones by `fill` (0 or their mean), row by row."""
    def hook_fn(x: Tensor, hook=None) -> Tensor:
        m = mask_rows.to(x.device, x.dtype).view(len(x), *([1] * (x.dim() - 2)), -1)
        return x * m + fill.to(x.device, x.dtype) * (1 - m)
    return hook_fn


@dataclass(frozen=True)
class NeuronGame:
    """Coalitions of MLP neurons -> keyword metric per topic: absent neurons are zero- or mean-ablated at
    `mlp.hook_post`; `__call__` gives [batch, topics], `single(topic)` a value function of one topic. Build with
    `neuron_game`, which caches the clean activations the batched path resumes from."""

    model: object
    prompts: KeywordPrompts
    players: Players
    topics: tuple[str, ...]
    metric: str
    fill: Float[Tensor, "layer unit"]
    fast: bool
    max_tokens: int
    chunks: tuple[Tensor, ...]
    clean: tuple[dict, ...]

    @property
    def n_players(self) -> int:
        return self.players.n

    def __call__(self, masks: Bool[Tensor, "batch n"]) -> Float[Tensor, "batch topics"]:
        """The metric per topic of every coalition (mean over the topic's prompts; neg_loss = −keyword loss)."""
        s = self.scores(masks)
        x = -s["loss"] if self.metric == "neg_loss" else s[self.metric]
        return torch.stack([x[:, self.topic_idx(t)].mean(1) for t in self.topics], 1)

    def single(self, topic: str) -> ValueFn:
        """A value function [batch] of one topic's metric."""
        check(topic in self.topics, "topic", topic, f"one of {self.topics}")
        j = self.topics.index(topic)
        return lambda masks: self(masks)[:, j]

    def topic_idx(self, topic: str) -> Int[Tensor, " m"]:
        """Indices of the prompts of one topic."""
        return torch.tensor([i for i, t in enumerate(self.prompts.topics) if t == topic])

    def _hooks(self, masks: Tensor, reps: int, skip: int | None) -> list[tuple[str, Callable]]:
        rows = masks.repeat_interleave(reps, 0)
        return [(hooks.name("mlp_post", layer), _fill_hook(self.players.per_layer(rows, layer), self.fill[layer]))
                for layer in self.players.layers if layer != skip]

    @torch.no_grad()
    def _logits(self, masks: Tensor, c: int) -> Float[Tensor, "rows width vocab"]:
        """Logits at the positions that predict each prompt's keyword, rows coalition-major, of chunk c under every
        coalition in masks."""
        model, idx, clean = self.model, self.chunks[c], self.clean[c]
        b, lengths = len(masks), self.prompts.lengths[idx].repeat(len(masks))
        width = int(self.prompts.word_lengths[idx].max())
        if not self.fast:
            tokens = self.prompts.tokens[idx, : int(self.prompts.lengths[idx].max())].repeat(b, 1)
            logits = model.run_with_hooks(tokens.to(model.cfg.device), fwd_hooks=self._hooks(masks, len(idx), None))
            return tail(logits, lengths, width)
        first, last = self.players.layers[0], model.cfg.n_layers - 1
        with model.hooks(fwd_hooks=self._hooks(masks, len(idx), first)):
            x = torch.cat([_first_layer(clean, row, model.blocks[first].mlp.W_out)
                           for row in self.players.per_layer(masks, first)])
            if first < last:
                for layer in range(first + 1, last):
                    x = model.blocks[layer](x)
                x = tail_query_block(model.blocks[last], x, lengths, width)
            if model.cfg.normalization_type is not None:
                x = model.ln_final(x)
            return model.unembed(x)

    def scores(self, masks: Bool[Tensor, "batch n"]) -> dict[str, Float[Tensor, "batch prompt"]]:
        """Per-prompt keyword loss, top-1 and top-5 hits under every coalition (batched forward passes)."""
        masks = self._masks(masks)
        out = {k: torch.zeros(len(masks), len(self.prompts)) for k in ("loss", "top1", "top5")}
        for c, idx in enumerate(self.chunks):
            last_only = self.fast and self.players.layers[0] == self.model.cfg.n_layers - 1
            targets = self.prompts.tail_targets(idx)
            pos = targets.shape[1] if last_only else int(self.prompts.lengths[idx].max())  # tokens per row a pass carries
            per = max(1, self.max_tokens // (len(idx) * pos))
            for i in range(0, len(masks), per):
                part = masks[i : i + per]
                s = keyword_scores(self._logits(part, c), targets.repeat(len(part), 1))
                for key, v in s.items():
                    out[key][i : i + len(part), idx] = v.view(len(part), len(idx))
        return out

    @torch.no_grad()
    def scores_loop(self, masks: Bool[Tensor, "batch n"]) -> dict[str, Float[Tensor, "batch prompt"]]:
        """The same as `scores`, one full run_with_hooks forward of all prompts per coalition (the reference)."""
        masks, tokens = self._masks(masks), self.prompts.tokens.to(self.model.cfg.device)
        rows = {k: [] for k in ("loss", "top1", "top5")}
        for mask in masks:
            logits = self.model.run_with_hooks(tokens, fwd_hooks=self._hooks(mask[None], len(tokens), None))
            for key, v in keyword_scores(tail(logits, self.prompts.lengths, self.prompts.width),
                                         self.prompts.tail_targets()).items():
                rows[key].append(v)
        return {k: torch.stack(v) for k, v in rows.items()}

    def _masks(self, masks: Tensor) -> Tensor:
        masks = torch.as_tensor(masks)
        check(masks.dim() == 2 and masks.shape[1] == self.n_players and masks.dtype == torch.bool, "masks",
               f"{masks.dtype} {tuple(masks.shape)}", f"a bool tensor (batch, {self.n_players})")
        return masks.cpu()


def neuron_game(model, prompts: KeywordPrompts, layers: Sequence[int] | None = None, metric: str = "neg_loss",
                ablation: str = "zero", mean: Float[Tensor, "layer unit"] | None = None,
                topics: Sequence[str] | None = None, fast: bool | None = None, max_tokens: int = 16384,
                chunk_tokens: int = 4096, by_width: bool | None = None) -> NeuronGame:
    """The game whose players are the MLP neurons of `layers` and whose value is `metric` on each topic's prompts.

    Batched: prompts are sorted by length and cut into chunks of about chunk_tokens tokens (within each keyword
    length when only the last layer's players are in the game, or by_width=True: `fastpath.width_chunks`, 1.6x
    faster on notebook 4's game, bench/shapley_eval.py); a clean forward per
    chunk caches the first player layer's resid_mid and mlp post-activations; a batch of coalitions (about
    max_tokens tokens per pass) resumes there with each row's own mask, runs the last block only for the positions
    that predict each prompt's keyword, and unembeds only those (GPT-2-style models; `fast=False` or other architectures run
    whole forwards with per-row mask hooks). Exact up to float rounding (a test compares `scores_loop`).
    """
    check(metric in METRICS, "metric", metric, f"one of {METRICS}")
    check(ablation in ABLATIONS, "ablation", ablation, f"one of {ABLATIONS}")
    check(ablation == "zero" or mean is not None, "mean", mean, "the neurons' mean activations [layer, unit]")
    players = neuron_players(model, layers)
    topics = tuple(dict.fromkeys(prompts.topics)) if topics is None else tuple(topics)
    check(all(t in prompts.topics for t in topics), "topics", topics, f"topics of the prompts: {set(prompts.topics)}")
    shape = (model.cfg.n_layers, model.cfg.d_mlp)
    fill = torch.zeros(shape) if ablation == "zero" else torch.as_tensor(mean, dtype=torch.float32)
    check(tuple(fill.shape) == shape, "mean.shape", tuple(fill.shape), f"{shape} (layer, unit)")
    fast = fast_path_ok(model) if fast is None else fast
    if fast:
        require_fast_path(model, "the neuron game's fast path (fast=True)")
    tail_only = fast and players.layers[0] == model.cfg.n_layers - 1  # passes score only the keyword positions
    by_width = tail_only if by_width is None else by_width
    chunks = tuple((width_chunks if by_width else prompt_chunks)(prompts, chunk_tokens))
    clean = tuple(_clean_cache(model, prompts, idx, players.layers[0], fill[players.layers[0]]) if fast else {}
                  for idx in chunks)
    return NeuronGame(model, prompts, players, topics, metric, fill, fast, max_tokens, chunks, clean)


@torch.no_grad()
def _clean_cache(model, prompts: KeywordPrompts, idx: Tensor, layer: int, fill: Tensor) -> dict[str, Tensor]:
    """What a coalition's pass resumes from at `layer`, for the prompts at idx (only the positions that predict the
    keyword if it is the last layer): resid_post with every neuron present ("full") and with every neuron ablated ("empty"), and each
    neuron's activation minus its fill ("diff"), so that a coalition adds or removes only the neurons it changes."""
    pos = int(prompts.lengths[idx].max())
    names = {"mid": hooks.name("resid_mid", layer), "post": hooks.name("mlp_post", layer)}
    _, cache = model.run_with_cache(prompts.tokens[idx, :pos].to(model.cfg.device), names_filter=list(names.values()),
                                    stop_at_layer=layer + 1)
    c = {k: cache[n] for k, n in names.items()}
    if layer == model.cfg.n_layers - 1:
        c = {k: tail(v, prompts.lengths[idx], int(prompts.word_lengths[idx].max())) for k, v in c.items()}
    mlp, fill = model.blocks[layer].mlp, fill.to(c["post"])
    return {"full": c["mid"] + c["post"] @ mlp.W_out + mlp.b_out,
            "empty": c["mid"] + (fill @ mlp.W_out + mlp.b_out).expand_as(c["mid"]), "diff": c["post"] - fill}


def _first_layer(clean: dict[str, Tensor], mask: Bool[Tensor, " d_mlp"], w_out: Tensor) -> Tensor:
    """resid_post of the first player layer under one coalition: from the full side minus the absent neurons, or
    from the empty side plus the present ones, whichever touches fewer neurons."""
    absent = (~mask).nonzero().flatten().to(w_out.device)
    if len(absent) <= len(mask) // 2:
        return clean["full"] - clean["diff"][..., absent] @ w_out[absent]
    present = mask.nonzero().flatten().to(w_out.device)
    return clean["empty"] + clean["diff"][..., present] @ w_out[present]


# ------------------------------------------------------------------------------------------ cheap attribution


# ------------------------------------------------------------------------------------------ removal and specificity


# ------------------------------------------------------------------------------------------ cache


def cached(directory: Path, compute: Callable[[], ShapleyResult]) -> ShapleyResult:
    """The ShapleyResult saved in directory/result.safetensors, else compute() saved there (atomically)."""
    path = Path(directory) / "result.safetensors"
    if path.exists():
        t = artifacts.load_tensors(path)
        return ShapleyResult(t["values"], t["stderr"], int(t["n_evals"]), t["counts"], t["trace_evals"],
                             t["trace_values"], bool(t["stopped_by_rule"]) if "stopped_by_rule" in t else False)
    res = compute()
    artifacts.save_tensors(path, {"values": res.values.contiguous(), "stderr": res.stderr.contiguous(),
                                  "n_evals": torch.tensor(res.n_evals), "counts": res.counts.contiguous(),
                                  "trace_evals": res.trace_evals.contiguous(),
                                  "trace_values": res.trace_values.contiguous(),
                                  "stopped_by_rule": torch.tensor(res.stopped_by_rule)})
    return res
