"""The figures of report 4 (neuron Shapley); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.plotting import (
    WIDTH_IN,
    legend_below,
    set_title,
    suptitle,
    symlog_if_wide,
    tight_with_legend_below,
)


def value_histograms(df: pd.DataFrame, x: str, hue: str, title: str, xlabel: str, bins: int = 60) -> Figure:
    """Distribution of values (e.g. Shapley values, one row per neuron x topic), one step histogram per `hue`
    group on a log count axis (the tails are what matter)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.9))
    edges = np.linspace(df[x].min(), df[x].max() + 1e-12, bins + 1)
    sns.histplot(df, x=x, hue=hue, bins=edges, element="step", fill=False, ax=ax, stat="count", common_norm=False)
    ax.set_yscale("log")
    ax.axvline(0, color="0.4", ls=":", lw=1)
    ax.set(xlabel=xlabel, ylabel="neurons × topics\n(count, log scale)")
    set_title(ax, title)
    fig.tight_layout()
    return fig


def removal_curves(df: pd.DataFrame, x: str, metrics: Mapping[str, str], hue: str, title: str, xlabel: str,
                   hue_order: Sequence[str] | None = None) -> Figure:
    """Metric versus number of units removed, one line per ordering (95% bootstrap bands over the rows at each x:
    topics x prompts, and seeds for random orderings), one panel per metric, symlog x."""
    fig, axes = plt.subplots(len(metrics), 1, figsize=(WIDTH_IN, 2.9 * len(metrics) + 1.6), squeeze=False,
                             sharex=True)  # one panel per row: the symlog ticks need the column's width
    for ax, (metric, label) in zip(axes[:, 0], metrics.items()):
        sns.lineplot(df, x=x, y=metric, hue=hue, hue_order=hue_order, ax=ax, errorbar=("ci", 95), n_boot=200, seed=0,
                     marker="o", markersize=4, legend=ax is axes[0][0])
        symlog_if_wide(ax, df[x].to_numpy())
        ax.set(xlabel="", ylabel=label)
    axes[-1][0].set(xlabel=xlabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][0].get_legend().remove()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3, title=hue))
    return fig


def convergence_curves(df: pd.DataFrame, x: str, y: str, hue: str, title: str, xlabel: str, ylabel: str,
                       marks: Mapping[str, float] | None = None) -> Figure:
    """A convergence trace per estimator (e.g. top-k overlap with a reference versus evaluations, log x); earlier
    estimators are drawn wider and underneath, so traces that coincide stay visible; `marks` puts a triangle at the
    evaluations where each estimator stopped."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    order = list(dict.fromkeys(df[hue]))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    for i, name in enumerate(order):
        part = df[df[hue] == name]
        ax.plot(part[x], part[y], drawstyle="steps-post", color=palette[name], lw=1.5 + 2.5 * (len(order) - 1 - i),
                alpha=0.9 if i == len(order) - 1 else 0.45, label=name, zorder=2 + i)
    for name, at in (marks or {}).items():
        if np.isfinite(at):
            ax.plot([at], [1.0], marker="v", ms=10, color=palette[name], ls="none", zorder=10)
    ax.legend(title=hue, loc="lower right")
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(-0.02, 1.08))
    set_title(ax, title)
    fig.tight_layout()
    return fig


def agreement_scatter(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
                      title: str) -> Figure:
    """Per panel, one dot per unit: a cheap score against the reference score (ranks as percentiles)."""
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 3.1 * rows + 1.0), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, (a, b)) in zip(axes.flat, panels.items()):
        ra, rb = pd.Series(a).rank(pct=True).to_numpy() * 100, pd.Series(b).rank(pct=True).to_numpy() * 100
        ax.scatter(ra, rb, s=6, alpha=0.5, lw=0)
        ax.set(xlabel=xlabel, ylabel=ylabel if ax in axes[:, 0] else "", xlim=(0, 100), ylim=(0, 100),
               aspect="equal")
        ax.set_title(name, fontsize=10)
    suptitle(fig, title)
    fig.tight_layout()
    return fig
