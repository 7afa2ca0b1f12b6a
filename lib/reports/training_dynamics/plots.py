"""The figures of report 6 (training dynamics); shared figure kinds are in lib.analysis.plotting."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from lib.analysis.plotting import SMALL, WIDTH_IN, legend_below, set_title, suptitle, tight_with_legend_below, wrap


def _group_palette(names: Sequence[str]) -> dict:
    """Fixed colours for data groups in every figure: the planted ground truth (names[0]) orange, then blue, green."""
    pal = sns.color_palette("colorblind")
    return dict(zip(names, [pal[1], pal[0], pal[2], pal[4], pal[7]]))


def _mark_phase(ax, phase, color="0.25", label: str | None = "detected phase change", span: bool = True) -> None:
    """Dotted line at the phase-change step, and (span) its 10%-90% window shaded (nothing if none was found)."""
    if phase is None or not getattr(phase, "found", True):
        return
    if span:
        ax.axvspan(phase.start, phase.end, color=color, alpha=0.08, lw=0)
    ax.axvline(phase.step, color=color, ls=":", lw=1.6, label=label)


def dynamics_curves(
    curves: Mapping[str, pd.DataFrame], panels: Mapping[str, tuple[str, str]], phase, title: str,
    xlabel: str = "training step",
) -> Figure:
    """One panel per entry of `panels` (panel title -> (column, y label)); one line per run; phase change marked."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH_IN, 2.3 * len(panels) + 1.6), squeeze=False, sharex=True)
    colors = sns.color_palette("colorblind", len(curves))  # one panel per row, sharing the step axis
    for ax, (name, (col, ylabel)) in zip(axes[:, 0], panels.items()):
        for color, (run, df) in zip(colors, curves.items()):
            ax.plot(df["step"], df[col], color=color, lw=1.8, marker="o", ms=2.5, label=run)
        _mark_phase(ax, phase)
        ax.set(ylabel=ylabel)
        ax.set_title(name, fontsize=10)
    axes[-1][0].set(xlabel=xlabel)
    handles, labels = axes[0][0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3))
    return fig


def head_scores_over_training(
    heads: pd.DataFrame, scores: Mapping[str, str], phase, title: str, vmax: float = 1.0
) -> Figure:
    """Heatmaps (head x training step, real step spacing on x) of per-head scores; phase change marked."""
    fig, axes = plt.subplots(len(scores), 1, figsize=(WIDTH_IN, (0.25 * heads["head_name"].nunique() + 1.3) * len(scores)
                                                      + 0.9), squeeze=False)  # one score per row
    for i, (ax, (col, label)) in enumerate(zip(axes[:, 0], scores.items())):
        wide = heads.pivot(index="head_name", columns="step", values=col)
        steps = wide.columns.to_numpy(dtype=float)
        edges = np.concatenate([[steps[0]], (steps[1:] + steps[:-1]) / 2, [steps[-1]]])
        mesh = ax.pcolormesh(edges, np.arange(len(wide) + 1), wide.to_numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_yticks(np.arange(len(wide)) + 0.5, wide.index)
        ax.invert_yaxis()
        _mark_phase(ax, phase, color="white", span=False, label=None)
        fig.colorbar(mesh, ax=ax, label="attention weight", fraction=0.05, pad=0.02)
        ax.set(xlabel="training step" if i == len(scores) - 1 else "", ylabel="head (layer, head)")
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="y", labelsize=SMALL)
        ax.grid(False)
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def seed_curves(
    runs: Mapping[str, pd.DataFrame], panels: Mapping[str, tuple[str, str]], phases: Mapping[str, object],
    title: str, control: str | None = None,
) -> Figure:
    """Each seed as a thin line, mean ± sd over seeds as a band, the control run dashed; each seed's phase step."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(WIDTH_IN, 2.3 * len(panels) + 1.8), squeeze=False, sharex=True)
    seeds = {k: v for k, v in runs.items() if k != control}
    colors = dict(zip(seeds, sns.color_palette("colorblind", len(seeds))))
    grid = np.unique(np.concatenate([df["step"].to_numpy() for df in seeds.values()]))
    for ax, (name, (col, ylabel)) in zip(axes[:, 0], panels.items()):
        ys = np.stack([np.interp(grid, df["step"], df[col]) for df in seeds.values()])
        ax.fill_between(grid, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color="0.6", alpha=0.3,
                        label=f"mean ± sd over {len(seeds)} seeds")
        for run, df in seeds.items():
            ax.plot(df["step"], df[col], color=colors[run], lw=1.3, label=run)
            _mark_phase(ax, phases.get(run), color=colors[run], span=False, label=None)
        if control is not None:
            ax.plot(runs[control]["step"], runs[control][col], color="0.3", ls="--", lw=1.5, label=control)
        ax.set(ylabel=ylabel)
        ax.set_title(name, fontsize=10)
    axes[-1][0].set(xlabel="training step (dotted: each seed's detected phase change)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=3))
    return fig


def score_histogram(scores, groups, order: Sequence[str], threshold: float | None, title: str, xlabel: str) -> Figure:
    """Histogram of attribution scores per group (densities normalised per group); the top-1% threshold marked. Scores
    are shown in units of a power of ten named in the x label (matplotlib's offset text would sit on the label)."""
    x = np.asarray(scores, dtype=float)
    big = np.abs(x[np.isfinite(x)]).max() if np.isfinite(x).any() else 0.0
    power = int(np.floor(np.log10(big))) if big > 0 else 0
    if power not in (-1, 0, 1, 2):
        x, threshold = x / 10.0**power, None if threshold is None else threshold / 10.0**power
        xlabel = f"{xlabel}, in units of $10^{{{power}}}$"
    df = pd.DataFrame({"score": x, "group": np.asarray(groups)})
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.0))
    sns.histplot(df, x="score", hue="group", hue_order=list(order), stat="density", common_norm=False, bins=60,
                 element="step", palette=_group_palette(order), ax=ax)
    if threshold is not None:
        ax.axvline(threshold, color="0.2", ls="--", lw=1.3)
        ax.annotate("top 1% →", (threshold, ax.get_ylim()[1] * 0.95), xytext=(4, 0), textcoords="offset points",
                    fontsize=SMALL, va="top")
    ax.set(xlabel=xlabel, ylabel="density (per group)")
    set_title(ax, title)
    sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.2), fontsize=SMALL, title="group", ncol=3,
                    frameon=False)  # below the axes, off the data
    fig.tight_layout()
    return fig


def enrichment_curves(df: pd.DataFrame, null: pd.DataFrame, title: str) -> Figure:
    """Enrichment (precision / base rate) against the top fraction, one line per attribution, one panel per
    ground-truth label (column target); the shuffled-score null as a band (null columns target, frac, low, high)."""
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(len(targets), 1, figsize=(WIDTH_IN, 2.8 * len(targets) + 1.8), squeeze=False)
    ticks = sorted(df["frac"].unique() * 100)
    for i, (ax, target) in enumerate(zip(axes[:, 0], targets)):
        n = null[null["target"] == target]
        ax.fill_between(n["frac"] * 100, n["low"], n["high"], color="0.6", alpha=0.3,
                        label="shuffled scores (95% of permutations)")
        sub = df[df["target"] == target]
        sns.lineplot(sub.assign(pct=sub["frac"] * 100), x="pct", y="enrichment", hue="attribution",
                     style="attribution", markers=True, dashes=False, ax=ax, legend=i == len(targets) - 1)
        ax.axhline(1.0, color="0.3", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(xlabel="top fraction by attribution score (%, log scale)" if i == len(targets) - 1 else "",
               ylabel="enrichment\n(precision / base rate)")
        ax.set_title(target, fontsize=10)
    handles, labels = axes[-1][0].get_legend_handles_labels()
    axes[-1][0].get_legend().remove()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=2))
    return fig


def rank_scatter(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], groups, order: Sequence[str],
                 title: str) -> Figure:
    """Rank of each example's score under two runs, one panel per pair named 'A vs B', coloured by group (groups:
    one array for every pair, or a mapping pair name -> array when the pairs rank different examples)."""
    cols = min(2, len(pairs))
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 3.2 * rows + 1.6), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.set_visible(False)
    pal = _group_palette(order)
    for ax, (name, (a, b)) in zip(axes.flat, pairs.items()):
        g = np.asarray(groups[name] if isinstance(groups, Mapping) else groups)
        ra, rb = pd.Series(a).rank(pct=True).to_numpy() * 100, pd.Series(b).rank(pct=True).to_numpy() * 100
        for group in reversed(list(order)):  # the ground truth drawn last, on top
            mask = g == group
            ax.scatter(ra[mask], rb[mask], s=7, alpha=0.6, color=pal[group], label=group, lw=0)
        x_run, y_run = name.split(" vs ")
        ax.set(xlabel=f"rank under {x_run} (percentile)", ylabel=f"rank under {y_run} (percentile)",
               xlim=(0, 100), ylim=(0, 100), aspect="equal")
        ax.set_title(wrap(name, 0.48 * WIDTH_IN, 10), fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles[::-1], labels[::-1], ncol=len(order), markerscale=3))
    return fig


def influence_over_training(df: pd.DataFrame, phase, title: str, names: Sequence[str],
                            ylabel: str = "TracIn term at the checkpoint\n(lr-weighted gradient dot)") -> Figure:
    """Mean TracIn term per checkpoint for each group (95% bootstrap band over sequences); phase change marked."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4))
    sns.lineplot(df, x="step", y="term", hue="group", hue_order=list(names), palette=_group_palette(names),
                 errorbar=("ci", 95), n_boot=200, marker="o", ax=ax)
    ax.axhline(0, color="0.3", lw=0.8)
    _mark_phase(ax, phase)
    ax.set(xlabel="checkpoint (training step)", ylabel=ylabel)
    set_title(ax, title)
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    return fig


def dstar_histograms(df: pd.DataFrame, title: str, names: Sequence[str]) -> Figure:
    """D* per training sequence (log x, shared log bins), one panel per checkpoint, hue = group (names[0] first)."""
    panels = list(dict.fromkeys(df["checkpoint"]))
    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.9 * rows + 1.6), squeeze=False, sharex=True)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    # bins in log10 units: with log_scale, seaborn bins log10(x); passing bins in data units once the shared axis is
    # already logarithmic put every panel after the first outside its bins (they came out empty)
    binrange = (np.log10(df["dstar"].min()), np.log10(df["dstar"].max()))
    for i, (ax, name) in enumerate(zip(axes.flat, panels)):
        sns.histplot(df[df["checkpoint"] == name], x="dstar", hue="group", hue_order=list(names), bins=40,
                     binrange=binrange, log_scale=True, stat="probability", common_norm=False, element="step",
                     palette=_group_palette(names), ax=ax, legend=i == 0)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1-2-5 ticks: D* often spans < a decade
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set(xlabel="D* (dimensions per\nsequence, log scale)", ylabel="fraction of the group" if ax in axes[:, 0]
               else "")
        ax.set_title(name, fontsize=10)
    legend = axes[0][0].get_legend()
    handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    legend.remove()
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=len(names), title="group"))
    return fig


def highlighted_tokens(rows: Sequence[dict]):
    """HTML table of token sequences with some tokens highlighted: rows of {label, tokens (str list), mask}."""
    import html as _html

    from IPython.display import HTML

    cells = []
    for row in rows:
        toks = "".join(f"<span style='background:#ffd54f'>{_html.escape(t)}</span>" if m else _html.escape(t)
                       for t, m in zip(row["tokens"], row["mask"]))
        cells.append(f"<tr><td style='white-space:nowrap;vertical-align:top'>{_html.escape(row['label'])}</td>"
                     f"<td style='font-family:monospace;white-space:pre-wrap'>{toks}</td></tr>")
    return HTML("<table><tr><th>sequence</th><th>text (highlighted: tokens in a repeated n-gram)</th></tr>"
                + "".join(cells) + "</table>")


def llc_over_training(llc: pd.DataFrame, curve: pd.DataFrame, phase, others: pd.DataFrame, title: str) -> Figure:
    """Three panels sharing the step axis: the LLC of the main run per checkpoint (mean ± sd over chains; points
    whose chains failed split-R̂ hollow) with other seeds' LLC at initialisation and at the end as separate markers;
    the max induction score; the held-out loss. The phase-change window shaded. llc: step, llc, sd, stationary;
    curve: step, max_induction, held_out_loss; others: run, step, llc, sd."""
    fig, axes = plt.subplots(3, 1, figsize=(WIDTH_IN, 7.6), sharex=True, gridspec_kw={"height_ratios": [1.4, 1, 1]})
    ax = axes[0]
    ok = llc["stationary"].to_numpy(bool)
    ax.errorbar(llc["step"], llc["llc"], yerr=llc["sd"], color="C0", lw=1.6, marker="o", ms=4, capsize=2,
                label="main run (mean ± sd over chains)")
    if (~ok).any():
        ax.scatter(llc["step"][~ok], llc["llc"][~ok], s=70, facecolors="white", edgecolors="C3", zorder=3,
                   label="chains not stationary (split-R̂ > 1.1)")
    pal = sns.color_palette("colorblind")
    for i, (run, df) in enumerate(others.groupby("run", sort=False)):
        ax.errorbar(df["step"], df["llc"], yerr=df["sd"], ls="none", marker="s", ms=5, capsize=2,
                    color=pal[(i + 2) % len(pal)], label=f"{run} (initialisation, end)")
    ax.set(ylabel="local learning coefficient λ̂")
    ax.legend(fontsize=SMALL, loc="best")
    for a, (col, label) in zip(axes[1:], (("max_induction", "max induction score"),
                                          ("held_out_loss", "held-out loss (nats / token)"))):
        a.plot(curve["step"], curve[col], color="0.2", lw=1.6, marker="o", ms=2.5)
        a.set(ylabel=label)
    for a in axes:
        _mark_phase(a, phase, label=None)
    axes[-1].set(xlabel="training step")
    suptitle(fig, title)
    fig.tight_layout()
    return fig


def llc_traces(traces: Mapping[str, np.ndarray], burnin: int, title: str) -> Figure:
    """The per-step mean SGLD loss of every chain, one panel per estimate (name -> [chain, step]), burn-in shaded:
    a chain that still drifts after burn-in is not sampling the localised posterior yet."""
    n = len(traces)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.7 * rows + 1.2), squeeze=False)
    for ax, (name, tr) in zip(axes.flat, traces.items()):
        for c in range(tr.shape[0]):
            ax.plot(np.arange(tr.shape[1]), tr[c], lw=0.9, alpha=0.85, label=f"chain {c}")
        ax.axvspan(0, burnin, color="0.5", alpha=0.15, lw=0)
        ax.set(xlabel="SGLD step", ylabel="sampled loss\n(nats / token)" if ax in axes[:, 0] else "")
        ax.set_title(wrap(name, 0.48 * WIDTH_IN, 10), fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=SMALL)
    suptitle(fig, title)
    fig.tight_layout()
    return fig
