"""The figures of report 2 (compression); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.plotting import SMALL, WIDTH_IN, legend_below, set_title, suptitle, tight_with_legend_below


def sweep_curves(
    df: pd.DataFrame, metrics: Mapping[str, str], title: str, hlines: Mapping[str, Mapping[str, float]] | None = None,
    x: str = "d_latent", xlabel: str = "latent size (latents; SAE: active latents k), log scale",
    logy: Sequence[str] = (),
) -> Figure:
    """One panel per (metric row, hook column): metric against latent size per method, band = min–max over seeds.

    `metrics` maps a column of df to its y label; `hlines` maps a column to {label: value} reference lines, or to
    {label: column} to read a per-hook value from df (e.g. the clean loss); columns in `logy` get a log y axis.
    """
    hooks = list(dict.fromkeys(df["hook"]))
    # for the column: hooks across and metrics down when at most two hooks, else hooks down and metrics across
    across = len(hooks) <= 2
    rows, cols = (len(metrics), len(hooks)) if across else (len(hooks), len(metrics))
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, (2.5 if cols > 1 else 2.8) * rows + 1.2),
                             squeeze=False, sharex=True)
    methods = list(dict.fromkeys(df["method"]))
    colors = iter(sns.color_palette("colorblind", len(methods)))
    palette = {m: "0.55" if "random" in m else next(colors) for m in methods}  # the random control in grey
    sizes = sorted(df[x].unique())
    for i, (col, ylabel) in enumerate(metrics.items()):
        for j, hook in enumerate(hooks):
            r, c = (i, j) if across else (j, i)
            ax, sub = axes[r, c], df[df["hook"] == hook]
            sns.lineplot(sub, x=x, y=col, hue="method", palette=palette, errorbar=("pi", 100), marker="o",
                         markersize=5, ax=ax, legend=i == 0 and j == len(hooks) - 1)
            for k, (label, value) in enumerate(((hlines or {}).get(col) or {}).items()):
                v = sub[value].iloc[0] if isinstance(value, str) else value
                ax.axhline(v, color="0.3", ls=[":", "--", "-."][k % 3], lw=1.1, label=label)
            ax.set_xscale("log", base=2)
            ax.set_xticks(sizes, [str(int(v)) for v in sizes])
            ax.minorticks_off()
            if col in logy:
                ax.set_yscale("log")
            ax.set(xlabel="", ylabel=ylabel if (c == 0 if across else r == rows // 2) else "")
            if (r == 0) if across else True:
                ax.set_title(hook, fontsize=10)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.supxlabel(xlabel, fontsize=10)
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=4))
    return fig


def latent_scatter(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], names: Sequence[str], title: str,
                   xlabel: str = "latent PC 1 (standardised units)", ylabel: str = "latent PC 2") -> Figure:
    """2-D scatter per panel ({name: (xy [n, 2], class index [n])}), points coloured by class (e.g. topic).

    Axes span the 0.5-99.5 percentiles of the points, so a few outliers do not squeeze the cloud.
    """
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 3.2 * rows + 2.2), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colors = sns.color_palette("tab20", len(names))
    for ax, (panel, (xy, labels)) in zip(axes.flat, panels.items()):
        xy, labels = np.asarray(xy), np.asarray(labels)
        order = np.random.default_rng(0).permutation(len(xy))  # shuffled draw order: no topic paints over the rest
        ax.scatter(xy[order, 0], xy[order, 1], s=5, alpha=0.5, c=[colors[c] for c in labels[order]], linewidths=0)
        lo, hi = np.percentile(xy, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(lo[0] - pad[0], hi[0] + pad[0]),
               ylim=(lo[1] - pad[1], hi[1] + pad[1]))
        ax.set_title(panel, fontsize=10)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=n) for c, n in enumerate(names)]
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, list(names), ncol=4, title="topic"))
    return fig


def probe_bars(df: pd.DataFrame, title: str, chance: float | None = None, x: str = "features",
               y: str = "accuracy", hue: str | None = "model") -> Figure:
    """Horizontal bars of probe accuracy with 95% CI whiskers (columns ci_low, ci_high) and a chance line."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.42 * len(df) + 2.2))
    order = list(dict.fromkeys(df[x]))
    groups = list(dict.fromkeys(df[hue])) if hue else [None]
    palette = sns.color_palette("colorblind", len(groups))
    height = 0.8 / len(groups)
    for g, group in enumerate(groups):
        sub = df if group is None else df[df[hue] == group]
        pos = np.array([order.index(v) for v in sub[x]]) + (g - (len(groups) - 1) / 2) * height
        err = np.abs(np.stack([sub[y] - sub["ci_low"], sub["ci_high"] - sub[y]]))
        ax.barh(pos, sub[y], height=height * 0.9, xerr=err, capsize=3, color=palette[g], label=group)
    if chance is not None:
        ax.axvline(chance, color="0.3", ls=":", lw=1.2, label=f"chance ({chance:.3f})")
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set(xlabel="topic accuracy per token (fraction)\n95% bootstrap CI over held-out articles", ylabel="")
    set_title(ax, title)
    handles, labels = ax.get_legend_handles_labels()
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3))
    return fig


def traversal_heatmap(probs: np.ndarray, tokens: Sequence[str], values: Sequence[float], title: str) -> Figure:
    """Next-token probability [token, traversal value] as an annotated heatmap."""
    probs = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.36 * len(tokens) + 2.0))
    sns.heatmap(probs, ax=ax, cmap="magma_r", annot=True, fmt=".2f", annot_kws={"fontsize": SMALL},
                xticklabels=[f"{v:+.1f}" for v in values], yticklabels=[repr(t) for t in tokens],
                cbar_kws={"label": "next-token probability"})
    ax.set(xlabel="value of the traversed latent (prior standard deviations)", ylabel="next token")
    set_title(ax, title)
    fig.tight_layout()
    return fig
