"""The figures of report 5 (sparse layers); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.plotting import WIDTH_IN, legend_below, set_title, suptitle, tight_with_legend_below

REF_STYLES = [(0, (1, 1.5)), (0, (6, 2)), (0, (6, 2, 1.5, 2)), (0, (2.5, 1.5))]  # dotted, dashed, dash-dot, short


def metric_vs_k(df: pd.DataFrame, y: str, hue: str, refs: Mapping[str, Sequence[float]], title: str, ylabel: str,
                x: str = "k_pct", xlabel: str = "winners k (% of the layer's units, log scale)") -> Figure:
    """A metric against k (log axis), one line per `hue` with its range over seeds as a band; reference values
    (e.g. the original model, a dense control; one per seed) as horizontal lines with their seed range shaded."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    sns.lineplot(df, x=x, y=y, hue=hue, marker="o", errorbar=("pi", 100), ax=ax)
    colors = sns.color_palette("colorblind", 8)[3:]
    for i, (label, values) in enumerate(refs.items()):
        v = np.asarray(values, float)
        ax.axhline(v.mean(), color=colors[i % len(colors)], ls=REF_STYLES[i % len(REF_STYLES)], lw=1.8, label=label)
        if len(v) > 1:
            ax.axhspan(v.min(), v.max(), color=colors[i % len(colors)], alpha=0.15, lw=0)
    ax.set_xscale("log")
    ks = np.unique(df[x].to_numpy(float))
    ax.xaxis.set_major_locator(plt.FixedLocator(ks))  # tick the k values themselves (a log axis over less than a
    ax.xaxis.set_major_formatter(plt.FixedFormatter([f"{v:.3g}" for v in ks]))  # decade has one tick of its own)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title)
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=2))
    return fig


def duty_cycle_histograms(duties: Mapping[str, np.ndarray], target: float, title: str) -> Figure:
    """Histograms of the units' duty cycles (share of tokens each unit is active), one per layer variant, with the
    target density k/n dashed; units at 0 are dead."""
    cols = min(2, len(duties))
    rows = -(-len(duties) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.9 * rows + 1.5), squeeze=False, sharex=True)
    for ax in axes.flat[len(duties):]:
        ax.set_visible(False)
    hi = max(float(np.max(d)) for d in duties.values())
    for ax, color, (name, d) in zip(axes.flat, sns.color_palette("colorblind", len(duties)), duties.items()):
        sns.histplot(np.asarray(d, float), bins=np.linspace(0, hi * 1.02 + 1e-9, 41), ax=ax, color=color)
        ax.axvline(target, color="0.2", ls=(0, (4, 2)), lw=1.4, label=f"target k/n = {target:.3f}")
        ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set(xlabel="duty cycle\n(share of tokens active)", ylabel="units (count)" if ax in axes[:, 0] else "")
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_title(name, fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=1))
    return fig


def unit_score_histograms(df: pd.DataFrame, scores: Mapping[str, str], hue: str, order: Sequence[str],
                          title: str) -> Figure:
    """Per score (column -> axis label): density histograms of one value per unit for each group in `order`, each
    group's median as a dashed line in its colour."""
    fig, axes = plt.subplots(len(scores), 1, figsize=(WIDTH_IN, 2.7 * len(scores) + 1.6), squeeze=False)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))  # one score per row, legend below
    for ax, (col, label) in zip(axes[:, 0], scores.items()):
        part = df[df[col].notna()]
        sns.histplot(part, x=col, hue=hue, hue_order=order, palette=palette, element="step", stat="density",
                     common_norm=False, bins=40, ax=ax, fill=False)
        for name in order:
            vals = part.loc[part[hue] == name, col]
            if len(vals):
                ax.axvline(vals.median(), color=palette[name], ls=(0, (4, 2)), lw=1.3)
        ax.set(xlabel=label, ylabel="density (units)")
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles = [plt.Line2D([], [], color=palette[n], lw=1.6, label=n) for n in order]
    handles.append(plt.Line2D([], [], color="0.3", ls=(0, (4, 2)), lw=1.3, label="median of the group"))
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, [h.get_label() for h in handles], ncol=3, title=hue))
    return fig


def gain_bars(eq: pd.DataFrame, title: str) -> Figure:
    """Each basis's selectivity gain over its own random rotation (columns basis, gain, 'gain 95% CI'), at equal
    sparsity, as horizontal bars with their 95% CIs; 0 (no better than random directions) dotted."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.45 * len(eq) + 2.0))
    y = np.arange(len(eq))
    lo = np.array([c[0] for c in eq["gain 95% CI"]])
    hi = np.array([c[1] for c in eq["gain 95% CI"]])
    colors = sns.color_palette("colorblind", len(eq))
    ax.barh(y, eq["gain"], color=colors, alpha=0.8)
    ax.errorbar(eq["gain"], y, xerr=[eq["gain"] - lo, hi - eq["gain"]], fmt="none", color="0.2", capsize=4)
    ax.axvline(0, color="0.3", ls=":", lw=1.2)
    ax.set_yticks(y, eq["basis"])
    ax.invert_yaxis()
    ax.set(xlabel="median selectivity minus its random rotation's (Cohen's d)")
    set_title(ax, title)
    fig.tight_layout()
    return fig
