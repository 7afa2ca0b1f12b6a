"""The figures of report 1 (build the transformer); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.plotting import SMALL, WIDTH_IN, legend_below, set_title, suptitle, tight_with_legend_below


def training_curves(
    histories: Mapping[str, pd.DataFrame],
    references: Mapping[str, float] | None = None,
    title: str = "Training curves",
) -> Figure:
    """Loss and accuracy (train and held-out) against training tokens, one colour per model.

    `references` maps a label to a held-out loss drawn as a horizontal line (e.g. a bigram baseline).
    Each history needs columns tokens, loss, val_loss, accuracy, val_accuracy; its step-0 row is initialisation.
    """
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.6))
    colors = sns.color_palette("colorblind", len(histories))
    for color, (name, h) in zip(colors, histories.items()):
        h = h.copy()
        h["mtokens"] = h["tokens"] / 1e6
        for ax, metric in zip(axes, ("loss", "accuracy")):
            ax.plot(h["mtokens"][1:], h[metric][1:], color=color, alpha=0.55, lw=1.2, ls="--", label=f"{name}: train")
            ax.plot(h["mtokens"], h[f"val_{metric}"], color=color, lw=2, label=f"{name}: held-out")
            ax.scatter([0], [h[f"val_{metric}"].iloc[0]], color=color, marker="o", s=30, zorder=5)
    styles = [":", "-."]
    for i, (label, value) in enumerate((references or {}).items()):
        axes[0].axhline(value, color="0.35", ls=styles[i % 2], lw=1.3, label=label)
    axes[0].set(xlabel="training tokens (millions)", ylabel="cross-entropy (nats / token)", title="Loss")
    axes[1].set(xlabel="training tokens (millions)", ylabel="next-token accuracy (fraction)", title="Accuracy")
    init = max(h["val_loss"].iloc[0] for h in histories.values())
    axes[0].set_ylim(top=init * 1.05)
    handles, labels = axes[0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=2))
    return fig


def metric_vs_params(
    df: pd.DataFrame, x: str = "n_params", y: str = "val_loss", hue: str = "model", title: str = ""
) -> Figure:
    """Mean ± sd over seeds of `y` against parameter count (log axis), one line per `hue` value, seeds as dots."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    sns.scatterplot(df, x=x, y=y, hue=hue, ax=ax, alpha=0.45, s=28, legend=False)
    sns.lineplot(df, x=x, y=y, hue=hue, ax=ax, errorbar="sd", err_style="bars", marker="o", markersize=7,
                 err_kws={"capsize": 4})
    for _, row in df.groupby([hue, x], as_index=False).first().iterrows():
        if "n_layers" in row:
            ax.annotate(f"{int(row['n_layers'])}L", (row[x], df[(df[x] == row[x])][y].mean()),
                        textcoords="offset points", xytext=(6, 4), fontsize=SMALL, color="0.3")
    ax.set_xscale("log")
    ax.set(xlabel="parameters (count, log scale)", ylabel="held-out loss (nats / token)")
    set_title(ax, title)
    fig.tight_layout()
    return fig


def head_heatmaps(
    scores: Mapping[str, np.ndarray], title: str, vmax: float = 1.0, cbar_label: str = "score"
) -> Figure:
    """One [layer, head] heatmap per panel, annotated, on a shared 0..vmax colour scale."""
    n = len(scores)
    first = np.asarray(next(iter(scores.values())))
    fig, axes = plt.subplots(1, n, figsize=(1.0 + 0.75 * first.shape[1] * n + 1.2, 0.6 * first.shape[0] + 1.7),
                             squeeze=False)
    for i, (ax, (name, s)) in enumerate(zip(axes[0], scores.items())):
        s = np.asarray(s)
        sns.heatmap(s, ax=ax, vmin=0, vmax=vmax, cmap="viridis", annot=True, fmt=".2f", annot_kws={"fontsize": 8},
                    cbar=i == n - 1, cbar_kws={"label": cbar_label}, square=False)
        ax.set(title=name, xlabel="head", ylabel="layer" if i == 0 else "")
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def loss_by_position(curves: Mapping[str, np.ndarray], boundary: int | None, title: str) -> Figure:
    """Per-position loss curves (mean ± sd band given as [2, pos] arrays: mean row, sd row)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.6))
    for name, arr in curves.items():
        mean, sd = np.asarray(arr)
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, label=name, lw=1.6)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
    if boundary is not None:
        ax.axvline(boundary, color="0.4", ls=":", lw=1.2, label="start of the repeat")
    ax.set(xlabel="position of the predicted token", ylabel="cross-entropy (nats / token)")
    set_title(ax, title)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig
