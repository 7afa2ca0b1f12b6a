"""Statistics shared by the reports: rank correlation and one percentile-bootstrap engine.

Conventions (one behaviour each):
- `spearman` of a constant input is NaN (a rank correlation is undefined there); a caller that wants another
  reading of a constant curve says so where it calls.
- Bootstrap draws resample with `numpy.random.default_rng(seed).integers(0, n, n)`, one draw per replicate
  (jointly across paired arrays, or one after the other for independent groups); draws whose statistic is not
  finite are dropped (e.g. a resample with no positive label), and an error is raised if none is left.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from lib.core.checks import check, is_int


def ranks(v: Any) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    v = np.asarray(v, float)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN when x or y is constant."""
    rx, ry = ranks(x), ranks(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _as_array(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)


def bootstrap(stat: Callable[..., Any], *arrays: Any, n_boot: int = 1000, seed: int = 0,
              paired: bool = True) -> np.ndarray:
    """The finite values of `stat` over n_boot bootstrap resamples of `arrays` (rows resampled).

    paired: one index draw per replicate shared by all arrays (they must have equal lengths); else each array is
    resampled on its own, in order.
    """
    check(is_int(n_boot) and n_boot >= 1, "n_boot", n_boot, "a positive integer")
    xs = [_as_array(a) for a in arrays]
    check(bool(xs) and all(len(x) >= 1 for x in xs), "arrays", [len(x) for x in xs], "at least one non-empty array")
    if paired:
        check(len({len(x) for x in xs}) == 1, "arrays", [len(x) for x in xs], "equal lengths for a paired bootstrap")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        if paired:
            idx = rng.integers(0, len(xs[0]), len(xs[0]))
            draw = [x[idx] for x in xs]
        else:
            draw = [x[rng.integers(0, len(x), len(x))] for x in xs]
        out.append(float(stat(*draw)))
    out = np.asarray(out)
    out = out[np.isfinite(out)]
    check(len(out) > 0, "stat", getattr(stat, "__name__", stat), "a statistic finite on at least one resample")
    return out


def percentile_ci(boots: Sequence[float], alpha: float = 0.05) -> tuple[float, float]:
    """(low, high) percentile interval of bootstrap replicates."""
    check(0.0 < alpha < 1.0, "alpha", alpha, "a float in (0, 1)")
    low, high = np.quantile(np.asarray(boots, float), [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_ci(samples: Any, stat: Callable[[np.ndarray], Any] = np.mean, n_boot: int = 1000,
                 alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) CI of stat over 1-D samples: (low, high), deterministic for seed."""
    x = np.asarray(_as_array(samples), dtype=float)
    check(x.ndim == 1 and x.size >= 2 and bool(np.isfinite(x).all()), "samples", samples,
          "a 1-D sequence of at least 2 finite numbers")
    check(0.0 < alpha < 1.0, "alpha", alpha, "a float in (0, 1)")
    return percentile_ci(bootstrap(stat, x, n_boot=n_boot, seed=seed), alpha)


def bootstrap_spearman(a: Any, b: Any, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the Spearman correlation, resampling pairs; constant resamples are dropped,
    and (NaN, NaN) is returned when every resample is constant."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # then every resample is constant too
        return float("nan"), float("nan")
    return percentile_ci(bootstrap(spearman, x, y, n_boot=n_boot, seed=seed), alpha)


def spearman_diff_ci(a: Any, b: Any, c: Any, d: Any, n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """spearman(a, b) - spearman(c, d) on the same items (four equal-length arrays) and its paired percentile-bootstrap
    interval (one draw of items per replicate for both correlations): whether one agreement beats another measured
    on the same sequences, e.g. attribution scores of two seeds against a property both seeds share trivially."""
    xs = [np.asarray(v, float) for v in (a, b, c, d)]
    check(len({len(x) for x in xs}) == 1 and len(xs[0]) > 2, "arrays", [len(x) for x in xs],
          "four arrays of one length > 2")
    diff = lambda w, x, y, z: spearman(w, x) - spearman(y, z)  # noqa: E731
    return float(diff(*xs)), percentile_ci(bootstrap(diff, *xs, n_boot=n_boot, seed=seed), alpha)


def split_rhat(chains: Any) -> float:
    """Split-R̂ (Gelman et al., BDA3 §11.4) of draws [chain, draw]: each chain is cut in halves, and the spread of the
    half-chain means is compared with the draws' spread within them; near 1 when every half samples the same
    distribution, above ~1.1 when chains disagree or drift (a trend makes a chain's halves differ)."""
    x = np.asarray(chains, float)
    check(x.ndim == 2 and x.shape[1] >= 4 and np.isfinite(x).all(), "chains", x.shape,
          "a finite [chain, draw] array with at least 4 draws per chain")
    h = x.shape[1] // 2
    halves = np.concatenate([x[:, :h], x[:, x.shape[1] - h:]])  # [2 * chains, h]
    w = halves.var(axis=1, ddof=1).mean()
    b = h * halves.mean(axis=1).var(ddof=1)
    if w == 0:
        return 1.0 if b == 0 else float("inf")
    return float(np.sqrt(((h - 1) / h * w + b / h) / w))


def median_diff_ci(a: Any, b: Any, n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """median(a) - median(b) (NaNs dropped) and its percentile-bootstrap 95% CI, resampling each group on its own."""
    a, b = (np.asarray(v, float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    check(len(a) > 1 and len(b) > 1, "samples", (len(a), len(b)), "at least 2 finite values in each group")
    boots = bootstrap(lambda x, y: np.median(x) - np.median(y), a, b, n_boot=n_boot, seed=seed, paired=False)
    return float(np.median(a) - np.median(b)), percentile_ci(boots)


def _log_comb(n: int, k: int) -> float:
    """log of the binomial coefficient C(n, k)."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    terms = [_log_comb(n, i) + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def binomial_ci(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact (Clopper-Pearson) 1 - alpha interval of a share successes / n: it never collapses to a point (16 of 16
    gives 0.794-1), unlike a bootstrap over 0/1 outcomes. Found by bisection on the binomial distribution."""
    check(is_int(n) and n >= 1, "n", n, "an integer >= 1")
    check(is_int(successes) and 0 <= successes <= n, "successes", successes, f"an integer in [0, {n}]")
    check(0.0 < alpha < 1.0, "alpha", alpha, "a float in (0, 1)")

    def solve(f: Callable[[float], float]) -> float:  # the p in (0, 1) where the decreasing f crosses alpha / 2
        lo, hi = 0.0, 1.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) > alpha / 2 else (lo, mid)
        return (lo + hi) / 2

    low = 0.0 if successes == 0 else 1.0 - solve(lambda q: 1.0 - _binom_cdf(successes - 1, n, 1.0 - q))
    high = 1.0 if successes == n else solve(lambda p: _binom_cdf(successes, n, p))
    return low, high


def share_ci(outcomes: Any, alpha: float = 0.05) -> tuple[float, tuple[float, float]]:
    """The share of true outcomes (0/1 or bool) and its exact binomial interval (`binomial_ci`)."""
    x = np.asarray(_as_array(outcomes), dtype=float)
    check(x.ndim == 1 and x.size >= 1 and bool(np.isin(x, (0.0, 1.0)).all()), "outcomes", outcomes,
          "a 1-D sequence of 0/1 or booleans")
    return float(x.mean()), binomial_ci(int(x.sum()), int(x.size), alpha)


def permutation_p(observed: float, null: Any, higher_is_better: bool = True) -> float:
    """Permutation p-value of an observed statistic against n draws of the same statistic under the null (e.g. n
    random clusters of the same size and layers): (1 + #{null >= observed}) / (1 + n), counting ties against the
    observation (Phipson & Smyth 2010), so it is never 0 and its smallest value is 1 / (1 + n)."""
    x = np.asarray(_as_array(null), dtype=float)
    check(x.ndim == 1 and x.size >= 1 and bool(np.isfinite(x).all()), "null", null,
          "a 1-D sequence of at least 1 finite number")
    o = float(observed)
    check(math.isfinite(o), "observed", observed, "a finite number")
    hits = int((x >= o).sum()) if higher_is_better else int((x <= o).sum())
    return (1 + hits) / (1 + x.size)


def curvature_index(x: Any, y: Any) -> float:
    """How far a sampled curve is from smooth: the largest |second divided difference| f[x_(i-1), x_i, x_(i+1)],
    scaled by (x range)^2 / (2 * y range), in the units of x itself (for an impairment: the dose). It does not
    depend on the units of x or y, nor, for a polynomial, on the grid's spacing: a straight line scores 0, y = x^2
    scores 0.5, y = x^3 at most 1.5 (on [0, X]). A jump between neighbouring grid points x_i < x_(i+1) scores about
    (x range)^2 / ((x_(i+1) - x_(i-1)) * (x_(i+1) - x_i)), large unless the grid is too coarse there to tell a jump
    from a steep cubic (e.g. the last step of a doubling grid). A curve that does most of its rising in a small
    part of the range (y = sqrt(x), 1 - exp(-4x/X)) scores high too: it does not track the dose across the range.
    NaN for a constant curve (no range) or fewer than 3 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    check(x.shape == y.shape and x.ndim == 1, "x, y", (x.shape, y.shape), "two 1-D arrays of equal length")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    check(bool((np.diff(x) > 0).all()), "x", x.tolist(), "distinct values")
    span = float(np.ptp(y)) if len(y) else 0.0
    if len(x) < 3 or span == 0:
        return float("nan")
    first = np.diff(y) / np.diff(x)
    second = np.diff(first) / (x[2:] - x[:-2])
    return float(np.abs(second).max() * (x[-1] - x[0]) ** 2 / (2 * span))


SMOOTH_MAX_CURVATURE = 2.0  # pre-registered: a monotone curve no more curved than a cubic (1.5) reads as smooth
SMOOTH_MIN_SPEARMAN = 0.9


def smoothness(x: Any, y: Any) -> dict[str, float | bool]:
    """A dose-response's smoothness: Spearman of y with x (monotone trend), `curvature_index`, and smooth = the trend
    is monotone (|rho| >= SMOOTH_MIN_SPEARMAN) and the curvature at most SMOOTH_MAX_CURVATURE (thresholds fixed
    before looking at the model's curves)."""
    rho, kappa = spearman(x, y), curvature_index(x, y)
    ok = bool(np.isfinite(rho) and abs(rho) >= SMOOTH_MIN_SPEARMAN and np.isfinite(kappa)
              and kappa <= SMOOTH_MAX_CURVATURE)
    return {"spearman": rho, "curvature": kappa, "smooth": ok}


def binomial_tail_p(successes: int, n: int, p0: float) -> float:
    """Exact one-sided p-value P(X >= successes) for X ~ Binomial(n, p0): how often chance alone does as well."""
    check(is_int(n) and n >= 1, "n", n, "an integer >= 1")
    check(is_int(successes) and 0 <= successes <= n, "successes", successes, f"an integer in [0, {n}]")
    check(0.0 < p0 < 1.0, "p0", p0, "a probability in (0, 1)")
    return 1.0 if successes == 0 else max(0.0, 1.0 - _binom_cdf(successes - 1, n, p0))


def hypergeom_tail_p(hits: int, population: int, marked: int, draws: int) -> float:
    """Exact one-sided p-value P(X >= hits) for X ~ Hypergeometric(population, marked, draws): how often `draws`
    items taken at random without replacement from `population`, of which `marked` are marked, hold at least
    `hits` marked ones (e.g. planted sequences among the top-k attributed). Summed in log space."""
    for name, v in (("population", population), ("marked", marked), ("draws", draws), ("hits", hits)):
        check(is_int(v) and v >= 0, name, v, "an integer >= 0")
    check(marked <= population and draws <= population, "marked, draws", (marked, draws),
          f"at most population={population}")
    lo, hi = max(0, draws - (population - marked)), min(draws, marked)
    if hits <= lo:
        return 1.0
    if hits > hi:
        return 0.0
    terms = [_log_comb(marked, i) + _log_comb(population - marked, draws - i) for i in range(hits, hi + 1)]
    top = max(terms)
    return min(1.0, math.exp(top + math.log(sum(math.exp(t - top) for t in terms)) - _log_comb(population, draws)))
