"""The figures of report 8 (the IOI circuit); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from lib.analysis.plotting import SMALL, WIDTH_IN, legend_below, suptitle, symlog_if_wide, tight_with_legend_below

CLASS_COLORS = dict(zip(("name mover", "s-inhibition", "duplicate token", "induction", "previous token"),
                        sns.color_palette("colorblind", 5)))


def behaviour_over_training(scores: pd.DataFrame, sets: Mapping[str, str], title: str,
                            threshold: float | None = None) -> Figure:
    """Two stacked panels, logit difference IO - S and accuracy, against the training step (symlog: the init at 0);
    one colour per prompt set (`sets`: set -> label), one line style per run (column 'run'); `threshold` dotted on
    the accuracy panel."""
    fig, axes = plt.subplots(2, 1, figsize=(WIDTH_IN, 5.6), sharex=True)
    colors = sns.color_palette("colorblind", len(sets))
    styles = ["-", "--", ":", "-."]
    runs = list(dict.fromkeys(scores["run"]))
    for ax, (col, ylabel) in zip(axes, (("logit_diff", "logit diff. IO − S (nats)"),
                                        ("accuracy", "accuracy (share IO > S)"))):
        for color, (name, label) in zip(colors, sets.items()):
            for style, run in zip(styles * 4, runs):
                d = scores[(scores["set"] == name) & (scores["run"] == run)].sort_values("step")
                ax.plot(d["step"], d[col], color=color, ls=style, lw=1.6, marker="o", ms=2,
                        label=f"{label}, {run}" if len(runs) > 1 else label)
        ax.set(ylabel=ylabel)
        symlog_if_wide(ax, scores["step"].to_numpy())
    axes[0].axhline(0, color="0.3", lw=0.8)
    axes[1].set_ylim(-0.02, 1.02)
    if threshold is not None:
        axes[1].axhline(threshold, color="0.2", ls=":", lw=1.2, label=f"formed: accuracy > {threshold:g}")
    axes[1].set(xlabel="training step")
    handles, labels = axes[1].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=2))
    return fig


def head_maps(maps: Mapping[str, np.ndarray], title: str, cbar: str, vmax: float | None = None) -> Figure:
    """One heatmap (layer x head) per entry of `maps`, stacked, on a shared diverging colour scale, each cell
    annotated with its value (NaN cells blank)."""
    n = len(maps)
    n_layers, n_heads = next(iter(maps.values())).shape
    finite = [float(np.nanmax(np.abs(m))) for m in maps.values() if np.isfinite(m).any()]
    vmax = vmax or max(finite, default=1.0) or 1.0
    fig, axes = plt.subplots(n, 1, figsize=(WIDTH_IN, n * (0.38 * n_layers + 0.9) + 1.0), squeeze=False,
                             sharex=True)
    for i, (ax, (name, m)) in enumerate(zip(axes[:, 0], maps.items())):
        sns.heatmap(pd.DataFrame(m, index=[f"L{L}" for L in range(n_layers)], columns=[f"H{h}" for h in range(n_heads)]),
                    ax=ax, cmap="RdBu_r", center=0, vmin=-vmax, vmax=vmax, annot=True, fmt=".2f",
                    annot_kws={"fontsize": SMALL}, cbar_kws={"label": cbar if i == n // 2 else ""},
                    linewidths=0.5, linecolor="white")
        ax.set_title(name, fontsize=10)
        ax.grid(False)
        ax.set(xlabel="head" if i == n - 1 else "", ylabel="layer")
        ax.tick_params(labelsize=SMALL, rotation=0)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def class_scores_over_training(scores: pd.DataFrame, behaviour: str, title: str,
                               rises: Mapping[str, Mapping[str, float]] | None = None) -> Figure:
    """One panel per run (column 'run'): each head class's score (columns named as CLASS_COLORS) and the
    behaviour (column `behaviour`, black) against the training step; each curve's half-rise step (`rises`: run ->
    {class or behaviour: step}) as a short tick on the top edge in the curve's colour."""
    runs = list(dict.fromkeys(scores["run"]))
    fig, axes = plt.subplots(len(runs), 1, figsize=(WIDTH_IN, 2.5 * len(runs) + 1.6), squeeze=False, sharex=True)
    for ax, run in zip(axes[:, 0], runs):
        d = scores[scores["run"] == run].sort_values("step")
        for cls, color in CLASS_COLORS.items():
            if cls in d:
                ax.plot(d["step"], d[cls], color=color, lw=1.6, label=cls)
        ax.plot(d["step"], d[behaviour], color="black", lw=2.0, ls="--", label=behaviour)
        for key, step in (rises or {}).get(run, {}).items():
            if np.isfinite(step):
                ax.axvline(step, ymin=0.93, ymax=1.0, color=CLASS_COLORS.get(key, "black"), lw=3)
        symlog_if_wide(ax, d["step"].to_numpy())
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(run, fontsize=10)
        ax.set(ylabel="score")
    axes[-1][0].set(xlabel="training step")
    handles, labels = axes[0][0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3))
    return fig


def formation_order(rises: pd.DataFrame, order: Sequence[str], title: str) -> Figure:
    """Half-rise step of each head class and of the behaviour (rows of `order`), one marker per run (columns
    'run', 'score', 'step'); a curve that never rose is left out."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.42 * len(order) + 2.2))
    runs = list(dict.fromkeys(rises["run"]))
    markers = ["o", "s", "^", "D", "v"]
    y = {name: i for i, name in enumerate(order)}
    for j, run in enumerate(runs):
        d = rises[(rises["run"] == run) & np.isfinite(rises["step"])]
        ax.scatter(d["step"], [y[s] + 0.12 * (j - (len(runs) - 1) / 2) for s in d["score"]], marker=markers[j % 5],
                   s=36, label=run, zorder=3)
    ax.set_yticks(range(len(order)), list(order))
    ax.invert_yaxis()
    symlog_if_wide(ax, rises["step"].dropna().to_numpy())
    ax.set(xlabel="training step at which the score is halfway up")
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, *ax.get_legend_handles_labels(), ncol=3))
    return fig
