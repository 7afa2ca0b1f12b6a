"""Topic-linked unit clusters, partial impairments as TransformerLens hooks, and the batched dose-response sweep."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lib.analysis.impairment import (
    ENDPOINTS,
    Cluster,
    base_cluster,
    random_cluster,
    selective_cluster,
)
from lib.analysis.stats import bootstrap, percentile_ci, spearman
from lib.analysis.units import TopicStats, layer_mask, n_units
from lib.core.checks import check

METHODS = ("selectivity", "kmeans", "random")


# ----------------------------------------------------------------------------------- activation statistics


# --------------------------------------------------------------------------------------------- clusters


def kmeans(x: Float[Tensor, "n d"], k: int, generator: torch.Generator, n_init: int = 4,
           iters: int = 50) -> tuple[Int[Tensor, " n"], Float[Tensor, "k d"]]:
    """Lloyd's k-means with k-means++ seeding, best of n_init runs (deterministic for the generator)."""
    best = None
    for _ in range(n_init):
        c = x[torch.randint(len(x), (1,), generator=generator)]
        for _ in range(k - 1):  # k-means++: next centre with probability proportional to squared distance
            d2 = torch.cdist(x, c).min(1).values ** 2
            c = torch.cat([c, x[torch.multinomial(d2 + 1e-12, 1, generator=generator)]])
        for _ in range(iters):
            labels = torch.cdist(x, c).argmin(1)
            new = torch.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
            if torch.allclose(new, c):
                break
            c = new
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, c)
    return best[1], best[2]


def kmeans_cluster(stats: TopicStats, topic: str, frac: float = 0.025, n_clusters: int | None = None,
                   generator: torch.Generator | None = None, layers: Sequence[int] | None = None) -> Cluster:
    """Per layer: k-means on the units' topic profiles (mean activation per topic, z-scored across topics); the
    group whose centre is highest on `topic`, capped at the top `frac` of units by their profile on `topic`."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    i, k = stats.topics.index(topic), n_units(frac, stats.mean.shape[-1])
    mask = torch.zeros(stats.mean.shape[1:], dtype=torch.bool)
    for layer in torch.nonzero(layer_mask(*mask.shape, layers)).flatten().tolist():
        prof = stats.mean[:, layer].T  # (unit, topic)
        prof = (prof - prof.mean(1, keepdim=True)) / (prof.std(1, keepdim=True) + 1e-8)
        labels, centres = kmeans(prof, n_clusters or len(stats.topics), g)
        members = torch.nonzero(labels == centres[:, i].argmax()).flatten()
        mask[layer, members[prof[members, i].argsort(descending=True)[:k]]] = True
    return base_cluster(stats).with_mask(mask, f"{topic} k-means", "kmeans")


def find_cluster(stats: TopicStats, topic: str, method: str = "selectivity", frac: float = 0.025,
                 generator: torch.Generator | None = None, layers: Sequence[int] | None = None) -> Cluster:
    """A cluster for `topic` by method 'selectivity', 'kmeans' or 'random' (random: same size as selectivity's)."""
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


def largest_step_share(y: np.ndarray) -> float:
    """Share of a curve's total variation taken by its largest single step: 1/(steps) if even, 1 for a jump."""
    steps = np.abs(np.diff(np.asarray(y, float)))
    return float(steps.max() / steps.sum()) if steps.sum() > 0 else float("nan")


def monotonicity(df: pd.DataFrame, value: str = "loss", n_boot: int = 1000, seed: int = 0) -> dict:
    """Spearman of the mean curve (value vs intensity) with a bootstrap CI over prompts, and its largest step share."""
    x, mat = curve_matrix(df, value)

    def rho_of(rows: np.ndarray) -> float:  # a curve that does not move is scored as no monotone trend (0)
        r = spearman(x, rows.mean(0))
        return 0.0 if np.isnan(r) else r

    lo, hi = percentile_ci(bootstrap(rho_of, mat, n_boot=n_boot, seed=seed))
    return {"spearman": rho_of(mat), "ci_low": lo, "ci_high": hi, "largest_step": largest_step_share(mat.mean(0))}


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
