"""The figures of report 7 (the sub-model tool); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from lib.analysis.plotting import SMALL, WIDTH_IN, legend_below, set_title, suptitle, tight_with_legend_below


def submodel_gaps(table: pd.DataFrame, title: str, order: Sequence[str] | None = None) -> Figure:
    """Per concept (rows) and method (colours): the validation gap of the found sub-model (dot; filled if it is
    validated), the 95th percentile of its size-matched random sub-models (short grey bar) and, where the
    initialisation control ran, the same pipeline's gap at initialisation (small cross)."""
    order = list(order or dict.fromkeys(table.concept))
    methods = list(dict.fromkeys(table.method))
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.32 * len(order) * max(1, len(methods) / 2) + 2.4))
    step = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        part = table[table.method == m].set_index("concept").reindex(order)
        y = np.arange(len(order)) - 0.4 + step * (j + 0.5)
        ax.scatter(part.random_q95, y, marker="|", s=90, color="0.55", label="random: 95th pct" if j == 0 else None)
        beats = (part.status == "validated").to_numpy() if "status" in part else \
            part.beats_random.fillna(False).astype(bool).to_numpy()
        if "init_gap" in part:
            ax.scatter(part.init_gap, y, marker="x", s=18, color=palette[m], alpha=0.7, lw=1,
                       label="at initialisation" if j == 0 else None)
        ax.scatter(part.gap[beats], y[beats], color=palette[m], s=28, label=m, zorder=3)
        ax.scatter(part.gap[~beats], y[~beats], facecolor="white", edgecolor=palette[m], s=28, zorder=3)
    ax.axvline(0, color="0.3", ls=":", lw=1)
    ax.set_yticks(np.arange(len(order)), order)
    ax.invert_yaxis()
    ax.set(xlabel="own-concept minus other-concept keyword-loss rise\nwhen ablated (nats)", ylabel="concept")
    set_title(ax, title)
    handles, labels = ax.get_legend_handles_labels()
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3, title="method (hollow: not validated)"))
    return fig


def explanation_figure(active: pd.DataFrame, tracked: pd.DataFrame, title: str, n_submodels: int = 6,
                       first: Sequence[str] = ()) -> Figure:
    """Left: activity (mean z-score of the units) at each position of the prompt of the sub-models in `first`, then
    of the most active at the last position (rows of `active`); right: the clean top tokens' probabilities clean and
    under each ablation (`tracked`)."""
    rest = [n for n in active.iloc[:, -1].sort_values(ascending=False).index if n not in first]
    top = active.loc[(list(first) + rest)[: max(n_submodels, len(first))]]
    # for the column: the heatmap over the full width, the probabilities below it
    heights = [0.35 * len(top) + 1.9, 0.32 * tracked.token.nunique() * max(1, tracked.ablated.nunique() / 3) + 0.9]
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, sum(heights) + 1.8), gridspec_kw={"height_ratios": heights})
    sns.heatmap(top, ax=axes[0], cmap="RdBu_r", center=0, cbar_kws={"label": "activity (mean z-score)"},
                linewidths=0.3, linecolor="0.9")
    axes[0].set(xlabel="position: token", ylabel="sub-model")
    axes[0].tick_params(axis="x", labelsize=SMALL, rotation=90)
    axes[0].tick_params(axis="y", labelsize=SMALL)
    df = tracked.assign(token=tracked.token.map(repr))
    sns.barplot(df, y="token", x="prob", hue="ablated", ax=axes[1], orient="h")
    axes[1].set(xlabel="next-token probability", ylabel="clean top tokens")
    axes[1].xaxis.set_major_locator(MaxNLocator(nbins=5))  # small probabilities: long tick labels, so few of them
    axes[1].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    handles, labels = axes[1].get_legend_handles_labels()
    axes[1].get_legend().remove()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3, title="ablated"))
    return fig
