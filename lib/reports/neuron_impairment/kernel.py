"""Topic-linked unit clusters, partial impairments as TransformerLens hooks, and the batched dose-response sweep."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from lib.analysis.impairment import ENDPOINTS, Cluster, kmeans_cluster, random_cluster, selective_cluster
from lib.analysis.stats import bootstrap, percentile_ci, smoothness, spearman
from lib.analysis.units import TopicStats
from lib.core.checks import check

METHODS = ("selectivity", "kmeans", "random")  # kmeans: on signed-selectivity profiles (any number of topics)


# ----------------------------------------------------------------------------------- activation statistics


# --------------------------------------------------------------------------------------------- clusters


def find_cluster(stats: TopicStats, topic: str, method: str = "selectivity", frac: float = 0.025,
                 generator: torch.Generator | None = None, layers: Sequence[int] | None = None) -> Cluster:
    """A cluster for `topic` by method 'selectivity', 'kmeans' (k-means on signed-selectivity profiles, any number
    of topics) or 'random' (random: same size as selectivity's)."""
    check(method in METHODS, "method", method, f"one of {METHODS}")
    if method == "kmeans":
        return kmeans_cluster(stats, topic, frac, generator=generator, layers=layers)
    found = selective_cluster(stats, topic, frac, layers)
    if method == "random":
        return random_cluster(found, generator if generator is not None else torch.Generator().manual_seed(0))
    return found


def jaccard(a: Cluster | Tensor, b: Cluster | Tensor) -> float:
    """|A ∩ B| / |A ∪ B| over (layer, unit) pairs."""
    ma, mb = (x.mask if isinstance(x, Cluster) else x for x in (a, b))
    union = int((ma | mb).sum())
    return int((ma & mb).sum()) / union if union else 1.0


def random_jaccards(a: Cluster, b: Cluster, n: int, generator: torch.Generator) -> np.ndarray:
    """Jaccard of n pairs of random clusters with a's and b's per-layer sizes (its random expectation)."""
    return np.array([jaccard(random_cluster(a, generator), random_cluster(b, generator)) for _ in range(n)])


def map_cluster(cluster: Cluster, perms: Sequence[Int[Tensor, " unit"]]) -> Bool[Tensor, "layer unit"]:
    """A cluster's mask carried into another model's unit indices (perms from match_units, one per layer)."""
    mask = torch.zeros_like(cluster.mask)
    for layer, perm in enumerate(perms):
        mask[layer, perm[cluster.units(layer)]] = True
    return mask


# ------------------------------------------------------------------------------------------ impairments


# ------------------------------------------------------------------------------------------ the sweep


# ------------------------------------------------------------------------------------------ measures


def curve_matrix(df: pd.DataFrame, value: str = "loss") -> tuple[np.ndarray, np.ndarray]:
    """One curve's rows as (intensities, [prompt, intensity] matrix averaged over noise seeds)."""
    piv = df.groupby(["prompt", "intensity"])[value].mean().unstack("intensity")
    return piv.columns.to_numpy(float), piv.to_numpy(float)


def monotonicity(df: pd.DataFrame, value: str = "loss", n_boot: int = 1000, seed: int = 0) -> dict:
    """Spearman of the mean curve (value vs intensity) with a bootstrap CI over prompts, its `curvature_index` and
    whether it is smooth (`lib.analysis.stats.smoothness`: monotone and no more curved than a cubic)."""
    x, mat = curve_matrix(df, value)

    def rho_of(rows: np.ndarray) -> float:  # a curve that does not move is scored as no monotone trend (0)
        r = spearman(x, rows.mean(0))
        return 0.0 if np.isnan(r) else r

    lo, hi = percentile_ci(bootstrap(rho_of, mat, n_boot=n_boot, seed=seed))
    sm = smoothness(x, mat.mean(0))
    return {"spearman": rho_of(mat), "ci_low": lo, "ci_high": hi, "curvature": sm["curvature"], "smooth": sm["smooth"]}


def curve_table(df: pd.DataFrame, value: str = "loss", by: Sequence[str] = ("cluster", "kind", "topic"),
                n_boot: int = 200) -> pd.DataFrame:
    """monotonicity() for every curve (rows with intensity varied; zero/mean endpoints excluded)."""
    rows = []
    for key, part in df[~df["kind"].isin(ENDPOINTS)].groupby(list(by)):
        rows.append({**dict(zip(by, key)), **monotonicity(part, value, n_boot)})
    return pd.DataFrame(rows)


def threshold_intensity(x: np.ndarray, y: np.ndarray, threshold: float) -> float:
    """First intensity where a decreasing curve y(x) falls below threshold (linear interpolation); inf if never."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if y[0] < threshold:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] < threshold:
            return float(x[i - 1] + (y[i - 1] - threshold) / (y[i - 1] - y[i]) * (x[i] - x[i - 1]))
    return float("inf")


def normalised_auc(x: np.ndarray, y: np.ndarray, clean: float) -> float:
    """Area under a performance-under-impairment curve y(x) (trapezoids), divided by the area the model's own clean
    performance would give over the same range: 1 = no loss of performance at any intensity, 0 = all lost at once.
    Relative to each model's own clean value, so a model that starts lower is not scored 0, and never censored."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    check(len(x) >= 2 and bool((np.diff(x) > 0).all()), "x", x.tolist(), "at least 2 increasing intensities")
    check(np.isfinite(clean) and clean > 0, "clean", clean, "the model's clean performance, > 0")
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (clean * (x[-1] - x[0])))
