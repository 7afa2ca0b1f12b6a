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


def head_maps(maps: Mapping[str, np.ndarray], title: str, cbar: str, vmax: float | None = None,
              through: pd.DataFrame | None = None) -> Figure:
    """One heatmap (layer x head) per entry of `maps`, stacked, then (`through`, rows = receiver inputs, columns =
    sender heads) the path-patching effects into the receivers, all on one diverging colour scale, each cell
    annotated with its value (NaN cells blank)."""
    n_layers, n_heads = next(iter(maps.values())).shape
    frames = {name: pd.DataFrame(m, index=[f"L{L}" for L in range(n_layers)], columns=[f"H{h}" for h in range(n_heads)])
              for name, m in maps.items()}
    labels = {name: ("head", "layer") for name in frames}
    if through is not None:
        frames["through the name movers (path patching)"] = through
        labels["through the name movers (path patching)"] = ("sender head", "")
    values = [f.to_numpy(dtype=float) for f in frames.values()]
    finite = [float(np.nanmax(np.abs(v))) for v in values if np.isfinite(v).any()]
    vmax = vmax or max(finite, default=1.0) or 1.0
    heights = [0.38 * len(f) + 0.75 for f in frames.values()]
    fig, axes = plt.subplots(len(frames), 1, figsize=(WIDTH_IN, sum(heights) + 1.2), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for i, (ax, (name, f)) in enumerate(zip(axes[:, 0], frames.items())):
        sns.heatmap(f.astype(float), ax=ax, cmap="RdBu_r", center=0, vmin=-vmax, vmax=vmax, annot=True, fmt=".2f",
                    annot_kws={"fontsize": SMALL}, cbar_kws={"label": cbar if i == 0 else ""},
                    linewidths=0.5, linecolor="white")
        ax.set_title(name, fontsize=10)
        ax.grid(False)
        ax.set(xlabel=labels[name][0], ylabel=labels[name][1])
        ax.tick_params(labelsize=SMALL, rotation=0)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def class_scores_over_training(scores: pd.DataFrame, behaviour: str, title: str,
                               rises: Mapping[str, Mapping[str, float]] | None = None,
                               extra: Sequence[str] = (), ylabel: str = "score") -> Figure:
    """One panel per run (column 'run'): each head class's score (columns named as CLASS_COLORS), the `extra`
    columns (e.g. single heads' effects, solid grey-to-black shades with markers) and the behaviour (column
    `behaviour`, black dashed) against the training step; each curve's half-rise step (`rises`: run -> {column:
    step}) as a short tick on the top edge in the curve's colour."""
    runs = list(dict.fromkeys(scores["run"]))
    fig, axes = plt.subplots(len(runs), 1, figsize=(WIDTH_IN, 2.5 * len(runs) + 1.9), squeeze=False, sharex=True)
    shades = dict(zip(extra, sns.color_palette("dark", max(len(extra), 1))[::-1]))
    for ax, run in zip(axes[:, 0], runs):
        d = scores[scores["run"] == run].sort_values("step")
        for cls, color in CLASS_COLORS.items():
            if cls in d and np.isfinite(d[cls]).any():
                ax.plot(d["step"], d[cls], color=color, lw=1.4, alpha=0.8, label=cls)
        for col in extra:
            ax.plot(d["step"], d[col], color=shades[col], lw=1.8, marker="o", ms=2.5, label=col)
        ax.plot(d["step"], d[behaviour], color="black", lw=2.0, ls="--", label=behaviour)
        drawn = {*[c for c in CLASS_COLORS if c in d and np.isfinite(d[c]).any()], *extra, behaviour}
        for key, step in (rises or {}).get(run, {}).items():
            if key in drawn and np.isfinite(step):
                ax.axvline(step, ymin=0.93, ymax=1.0, color=CLASS_COLORS.get(key, shades.get(key, "black")), lw=3)
        symlog_if_wide(ax, d["step"].to_numpy())
        cols = [c for c in [*CLASS_COLORS, *extra, behaviour] if c in d]
        lo = min(-0.05, float(np.nanmin(d[cols].to_numpy(dtype=float))) - 0.05)
        ax.set_ylim(lo, max(1.05, float(np.nanmax(d[cols].to_numpy(dtype=float))) + 0.05))
        ax.set_title(run, fontsize=10)
        ax.set(ylabel=ylabel)
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


def enrichment_curves(curves: pd.DataFrame, pre_registered: float, title: str) -> Figure:
    """Enrichment (with its 95% interval as a band) against the top fraction, one line per run (columns run, frac,
    enrichment, ci_low, ci_high); 1 (chance) dashed, the pre-registered fraction dotted."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.8))
    colors = sns.color_palette("colorblind", curves["run"].nunique())
    for color, (run, d) in zip(colors, curves.groupby("run", sort=False)):
        d = d.sort_values("frac")
        ax.plot(d["frac"], d["enrichment"], color=color, marker="o", ms=3, lw=1.8, label=run)
        ax.fill_between(d["frac"], d["ci_low"], d["ci_high"], color=color, alpha=0.15, lw=0)
    ax.axhline(1.0, color="0.3", ls="--", lw=1.2, label="chance")
    ax.axvline(pre_registered, color="0.2", ls=":", lw=1.4, label=f"pre-registered: top {pre_registered:.0%}")
    ax.set_xscale("log")
    fracs = sorted(curves["frac"].unique())
    ax.set_xticks(fracs, [f"{f:.0%}" for f in fracs])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set(xlabel="top fraction of the windows, by TracIn score", ylabel="enrichment (× base rate)")
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, *ax.get_legend_handles_labels(), ncol=2))
    return fig
