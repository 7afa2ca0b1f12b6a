"""The figures of report 5 (sparse layers); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def metric_vs_k(df: pd.DataFrame, y: str, hue: str, refs: Mapping[str, Sequence[float]], title: str, ylabel: str,
                x: str = "k_pct", xlabel: str = "winners k (% of the layer's units, log scale)") -> Figure:
    """A metric against k (log axis), one line per `hue` with its range over seeds as a band; reference values
    (e.g. the original model, a dense control; one per seed) as horizontal lines with their seed range shaded."""
    fig, ax = plt.subplots(figsize=(7.8, 4.3))
    sns.lineplot(df, x=x, y=y, hue=hue, marker="o", errorbar=("pi", 100), ax=ax)
    colors = sns.color_palette("colorblind", 8)[3:]
    for i, (label, values) in enumerate(refs.items()):
        v = np.asarray(values, float)
        ax.axhline(v.mean(), color=colors[i % len(colors)], ls=(0, (4, 2)) if i % 2 else ":", lw=1.6, label=label)
        if len(v) > 1:
            ax.axhspan(v.min(), v.max(), color=colors[i % len(colors)], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ks = np.unique(df[x].to_numpy(float))
    ax.set_xticks(ks)
    ax.set_xticklabels([f"{v:.2g}" for v in ks])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def duty_cycle_histograms(duties: Mapping[str, np.ndarray], target: float, title: str) -> Figure:
    """Histograms of the units' duty cycles (share of tokens each unit is active), one per layer variant, with the
    target density k/n dashed; units at 0 are dead."""
    fig, axes = plt.subplots(1, len(duties), figsize=(4.3 * len(duties), 3.6), squeeze=False, sharex=True)
    hi = max(float(np.max(d)) for d in duties.values())
    for ax, color, (name, d) in zip(axes[0], sns.color_palette("colorblind", len(duties)), duties.items()):
        sns.histplot(np.asarray(d, float), bins=np.linspace(0, hi * 1.02 + 1e-9, 41), ax=ax, color=color)
        ax.axvline(target, color="0.2", ls=(0, (4, 2)), lw=1.4, label=f"target k/n = {target:.3f}")
        ax.set(xlabel="duty cycle (share of tokens active)", ylabel="units (count)", title=name)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def unit_score_histograms(df: pd.DataFrame, scores: Mapping[str, str], hue: str, order: Sequence[str],
                          title: str) -> Figure:
    """Per score (column -> axis label): density histograms of one value per unit for each group in `order`, each
    group's median as a dashed line in its colour."""
    fig, axes = plt.subplots(1, len(scores), figsize=(5.6 * len(scores), 3.9), squeeze=False)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    for ax, (col, label) in zip(axes[0], scores.items()):
        part = df[df[col].notna()]
        sns.histplot(part, x=col, hue=hue, hue_order=order, palette=palette, element="step", stat="density",
                     common_norm=False, bins=40, ax=ax, fill=False)
        for name in order:
            vals = part.loc[part[hue] == name, col]
            if len(vals):
                ax.axvline(vals.median(), color=palette[name], ls=(0, (4, 2)), lw=1.3)
        ax.set(xlabel=label, ylabel="density (units)")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def gain_bars(eq: pd.DataFrame, title: str) -> Figure:
    """Each basis's selectivity gain over its own random rotation (columns basis, gain, 'gain 95% CI'), at equal
    sparsity, as horizontal bars with their 95% CIs; 0 (no better than random directions) dotted."""
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(eq) + 1.5))
    y = np.arange(len(eq))
    lo = np.array([c[0] for c in eq["gain 95% CI"]])
    hi = np.array([c[1] for c in eq["gain 95% CI"]])
    colors = sns.color_palette("colorblind", len(eq))
    ax.barh(y, eq["gain"], color=colors, alpha=0.8)
    ax.errorbar(eq["gain"], y, xerr=[eq["gain"] - lo, hi - eq["gain"]], fmt="none", color="0.2", capsize=4)
    ax.axvline(0, color="0.3", ls=":", lw=1.2)
    ax.set_yticks(y, eq["basis"])
    ax.invert_yaxis()
    ax.set(xlabel="median selectivity minus its random rotation's (Cohen's d)", title=title)
    fig.tight_layout()
    return fig
