"""The figures of report 3 (impairment); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.impairment import ENDPOINTS
from lib.analysis.plotting import (
    SMALL,
    WIDTH_IN,
    legend_below,
    set_title,
    suptitle,
    symlog_if_wide,
    tight_with_legend_below,
)


def dose_response(df: pd.DataFrame, metrics: Mapping[str, str], kinds: Mapping[str, str], title: str,
                  hue: str = "topic", hue_order: Sequence[str] | None = None,
                  endpoints: pd.DataFrame | None = None) -> Figure:
    """Dose-response curves: one row per metric (column -> axis label), one column per impairment kind
    (kind -> x-axis label), one line per `hue`; bands are 95% bootstrap CIs over the rows at each intensity
    (prompts x noise seeds). `endpoints` (rows of kinds 'zero'/'mean') adds a last column of full ablations."""
    hue_order = list(hue_order or sorted(df[hue].unique()))
    n_row = len(kinds) + (endpoints is not None)  # for the column: one row per impairment kind, one column per metric
    fig, axes = plt.subplots(n_row, len(metrics), figsize=(WIDTH_IN, 2.35 * n_row + 1.3), squeeze=False)
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    for j, (metric, label) in enumerate(metrics.items()):
        for i, (kind, xlabel) in enumerate(kinds.items()):
            ax, part = axes[i, j], df[df["kind"] == kind]
            sns.lineplot(part, x="intensity", y=metric, hue=hue, hue_order=hue_order, palette=palette, ax=ax,
                         errorbar=("ci", 95), n_boot=200, seed=0, marker="o", markersize=4, legend=False)
            symlog_if_wide(ax, part["intensity"].to_numpy())
            ax.tick_params(axis="x", labelsize=SMALL)
            ax.set(xlabel=xlabel, ylabel=label)
            ax.set_title(kind.replace("_", " "), fontsize=10)
        if endpoints is not None:
            ax = axes[-1, j]
            sns.pointplot(endpoints, x="kind", y=metric, hue=hue, hue_order=hue_order, palette=palette, ax=ax,
                          errorbar=("ci", 95), n_boot=200, seed=0, dodge=0.4, linestyle="none", legend=False,
                          markersize=5)
            ax.set(xlabel="full ablation", ylabel=label)
            ax.set_title("end-points", fontsize=10)
    handles = [plt.Line2D([], [], color=palette[h], marker="o", lw=2, label=h) for h in hue_order]
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, hue_order, ncol=4, title=hue))
    return fig


def curve_stat_strip(df: pd.DataFrame, x: str, y: str, hue: str, title: str, ylabel: str, xlabel: str = "",
                     ref: float | None = None, log: bool = False) -> Figure:
    """One dot per curve (a statistic such as Spearman's rho) per group, with the group's box behind; `ref` dotted
    (e.g. a pre-registered threshold); `log` puts y on a log scale (for a curvature index spanning decades)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.2))
    df = df.assign(**{hue: df[hue].astype(str).str.replace("_", " ")})  # 'negative_noise' -> 'negative noise'
    sns.boxplot(df, x=x, y=y, ax=ax, color="0.9", showfliers=False, width=0.5, log_scale=log)
    sns.stripplot(df, x=x, y=y, hue=hue, ax=ax, dodge=False, size=6, alpha=0.8, jitter=0.15)
    if ref is not None:
        ax.axhline(ref, color="0.4", ls=":", lw=1.2)
    ax.set(xlabel=xlabel or x, ylabel=ylabel)
    set_title(ax, title)
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=4, title=hue))
    return fig


def relative_tolerance(df: pd.DataFrame, y: str, group: str, run: str, auc: Mapping[str, float], title: str,
                       xlabel: str, ylabel: str) -> Figure:
    """Performance under increasing impairment relative to each run's own clean value (1 = unimpaired), one thin
    line per run (e.g. a training seed) coloured by its group (final / early), the group mean thick; the legend
    gives each group's mean normalised area (`auc`, group -> value)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    groups = list(auc)
    palette = dict(zip(groups, sns.color_palette("colorblind", len(groups))))
    for (g, _), part in df.groupby([group, run], sort=False):
        m = part.groupby("intensity")[y].mean()
        ax.plot(m.index, m.to_numpy(), color=palette[g], lw=0.9, alpha=0.5, marker="o", ms=3)
    for g in groups:
        m = df[df[group] == g].groupby("intensity")[y].mean()
        ax.plot(m.index, m.to_numpy(), color=palette[g], lw=2.6, label=f"{g} (mean normalised area {auc[g]:.2f})")
    symlog_if_wide(ax, df["intensity"].to_numpy())
    ax.axhline(1.0, color="0.3", ls=":", lw=1.1)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def dose_figure(part: pd.DataFrame, metrics: Mapping[str, str], kinds: Mapping[str, str], title: str,
                hue_order: Sequence[str]) -> Figure:
    """dose_response of one test's sweep, with its zero / mean ablations drawn as end-points."""
    ends = part.kind.isin(ENDPOINTS)
    return dose_response(part[~ends], metrics, kinds, title, hue_order=hue_order, endpoints=part[ends])
