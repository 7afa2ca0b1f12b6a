"""All plotting: seaborn figures with labelled axes, units and caption-like titles; circuitsvis widgets."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure


def set_style() -> None:
    """The book's seaborn theme (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold", "figure.autolayout": False})


def training_curves(
    histories: Mapping[str, pd.DataFrame],
    references: Mapping[str, float] | None = None,
    title: str = "Training curves",
) -> Figure:
    """Loss and accuracy (train and held-out) against training tokens, one colour per model.

    `references` maps a label to a held-out loss drawn as a horizontal line (e.g. a bigram baseline).
    Each history needs columns tokens, loss, val_loss, accuracy, val_accuracy; its step-0 row is initialisation.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.2))
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
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def metric_vs_params(
    df: pd.DataFrame, x: str = "n_params", y: str = "val_loss", hue: str = "model", title: str = ""
) -> Figure:
    """Mean ± sd over seeds of `y` against parameter count (log axis), one line per `hue` value, seeds as dots."""
    fig, ax = plt.subplots(figsize=(7, 4.3))
    sns.scatterplot(df, x=x, y=y, hue=hue, ax=ax, alpha=0.45, s=28, legend=False)
    sns.lineplot(df, x=x, y=y, hue=hue, ax=ax, errorbar="sd", err_style="bars", marker="o", markersize=7,
                 err_kws={"capsize": 4})
    for _, row in df.groupby([hue, x], as_index=False).first().iterrows():
        if "n_layers" in row:
            ax.annotate(f"{int(row['n_layers'])}L", (row[x], df[(df[x] == row[x])][y].mean()),
                        textcoords="offset points", xytext=(6, 4), fontsize=8, color="0.3")
    ax.set_xscale("log")
    ax.set(xlabel="parameters (count, log scale)", ylabel="held-out loss (nats / token)", title=title)
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
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def score_bars(df: pd.DataFrame, x: str, y: str, hue: str, title: str, ylabel: str, xlabel: str = "") -> Figure:
    """Grouped bars with error bars (sd over the rows of each group)."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    sns.barplot(df, x=x, y=y, hue=hue, ax=ax, errorbar="sd", capsize=0.1)
    ax.set(xlabel=xlabel or x, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def loss_by_position(curves: Mapping[str, np.ndarray], boundary: int | None, title: str) -> Figure:
    """Per-position loss curves (mean ± sd band given as [2, pos] arrays: mean row, sd row)."""
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for name, arr in curves.items():
        mean, sd = np.asarray(arr)
        x = np.arange(1, len(mean) + 1)
        ax.plot(x, mean, label=name, lw=1.6)
        ax.fill_between(x, mean - sd, mean + sd, alpha=0.2)
    if boundary is not None:
        ax.axvline(boundary, color="0.4", ls=":", lw=1.2, label="start of the repeat")
    ax.set(xlabel="position of the predicted token", ylabel="cross-entropy (nats / token)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def verdict_counts(df: pd.DataFrame, order: Sequence[str], title: str = "Verdicts per report") -> Figure:
    """Stacked horizontal bars of findings per verdict for each notebook."""
    counts = df.assign(verdict=df["verdict"].fillna("no verdict")).pivot_table(
        index="notebook", columns="verdict", values="name", aggfunc="count", fill_value=0
    ).reindex(columns=list(order), fill_value=0)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(counts) + 1.8))
    counts.plot.barh(stacked=True, ax=ax, color=sns.color_palette("colorblind", len(order)), width=0.6)
    ax.set(xlabel="findings (count)", ylabel="report", title=title)
    ax.invert_yaxis()
    ax.legend(title="verdict", bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def attention_widget(tokens: Sequence[str], pattern: np.ndarray, head_names: Sequence[str] | None = None):
    """circuitsvis attention heads view with its bundled JavaScript inlined (renders offline)."""
    import circuitsvis as cv
    from IPython.display import HTML

    obj = cv.attention.attention_heads(attention=np.asarray(pattern), tokens=list(tokens),
                                       attention_head_names=list(head_names) if head_names else None)
    return HTML(obj.local_src)


# ---------------------------------------------------------------------------------------------
# Training dynamics and attribution (report 6). `phases` map a run label to an object with .step, .start
# and .end (lib.metrics.PhaseChange): the detected phase change, marked on every over-training plot.


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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 3.9), squeeze=False)
    colors = sns.color_palette("colorblind", len(curves))
    for ax, (name, (col, ylabel)) in zip(axes[0], panels.items()):
        for color, (run, df) in zip(colors, curves.items()):
            ax.plot(df["step"], df[col], color=color, lw=1.8, marker="o", ms=2.5, label=run)
        _mark_phase(ax, phase)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def head_scores_over_training(
    heads: pd.DataFrame, scores: Mapping[str, str], phase, title: str, vmax: float = 1.0
) -> Figure:
    """Heatmaps (head x training step, real step spacing on x) of per-head scores; phase change marked."""
    fig, axes = plt.subplots(1, len(scores), figsize=(4.6 * len(scores), 0.3 * heads["head_name"].nunique() + 2.0),
                             squeeze=False)
    for i, (ax, (col, label)) in enumerate(zip(axes[0], scores.items())):
        wide = heads.pivot(index="head_name", columns="step", values=col)
        steps = wide.columns.to_numpy(dtype=float)
        edges = np.concatenate([[steps[0]], (steps[1:] + steps[:-1]) / 2, [steps[-1]]])
        mesh = ax.pcolormesh(edges, np.arange(len(wide) + 1), wide.to_numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_yticks(np.arange(len(wide)) + 0.5, wide.index)
        ax.invert_yaxis()
        _mark_phase(ax, phase, color="white", span=False, label=None)
        fig.colorbar(mesh, ax=ax, label="attention weight", fraction=0.05, pad=0.02)
        ax.set(xlabel="training step", ylabel="head (layer, head)" if i == 0 else "", title=label)
        ax.grid(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def seed_curves(
    runs: Mapping[str, pd.DataFrame], panels: Mapping[str, tuple[str, str]], phases: Mapping[str, object],
    title: str, control: str | None = None,
) -> Figure:
    """Each seed as a thin line, mean ± sd over seeds as a band, the control run dashed; each seed's phase step."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.9), squeeze=False)
    seeds = {k: v for k, v in runs.items() if k != control}
    colors = dict(zip(seeds, sns.color_palette("colorblind", len(seeds))))
    grid = np.unique(np.concatenate([df["step"].to_numpy() for df in seeds.values()]))
    for ax, (name, (col, ylabel)) in zip(axes[0], panels.items()):
        ys = np.stack([np.interp(grid, df["step"], df[col]) for df in seeds.values()])
        ax.fill_between(grid, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), color="0.6", alpha=0.3,
                        label=f"mean ± sd over {len(seeds)} seeds")
        for run, df in seeds.items():
            ax.plot(df["step"], df[col], color=colors[run], lw=1.3, label=run)
            _mark_phase(ax, phases.get(run), color=colors[run], span=False, label=None)
        if control is not None:
            ax.plot(runs[control]["step"], runs[control][col], color="0.3", ls="--", lw=1.5, label=control)
        ax.set(xlabel="training step (dotted: each seed's detected phase change)", ylabel=ylabel, title=name)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def score_histogram(scores, groups, order: Sequence[str], threshold: float | None, title: str, xlabel: str) -> Figure:
    """Histogram of attribution scores per group (densities normalised per group); the top-1% threshold marked."""
    df = pd.DataFrame({"score": np.asarray(scores, dtype=float), "group": np.asarray(groups)})
    fig, ax = plt.subplots(figsize=(8, 4.2))
    sns.histplot(df, x="score", hue="group", hue_order=list(order), stat="density", common_norm=False, bins=60,
                 element="step", palette=_group_palette(order), ax=ax)
    if threshold is not None:
        ax.axvline(threshold, color="0.2", ls="--", lw=1.3)
        ax.annotate("top 1% →", (threshold, ax.get_ylim()[1] * 0.95), xytext=(4, 0), textcoords="offset points",
                    fontsize=8, va="top")
    ax.set(xlabel=xlabel, ylabel="density (per group)", title=title)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="group")
    fig.tight_layout()
    return fig


def enrichment_curves(df: pd.DataFrame, null: pd.DataFrame, title: str) -> Figure:
    """Enrichment (precision / base rate) against the top fraction, one line per attribution, one panel per
    ground-truth label (column target); the shuffled-score null as a band (null columns target, frac, low, high)."""
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets) + 2.2, 4.3), squeeze=False)
    ticks = sorted(df["frac"].unique() * 100)
    for i, (ax, target) in enumerate(zip(axes[0], targets)):
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
        ax.set(xlabel="top fraction by attribution score (%, log scale)",
               ylabel="enrichment (precision / base rate)" if i == 0 else "", title=target)
    axes[0][-1].legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def rank_scatter(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], groups, order: Sequence[str],
                 title: str) -> Figure:
    """Rank of each example's score under two runs, one panel per pair named 'A vs B', coloured by group."""
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.3 * len(pairs), 4.5), squeeze=False)
    groups, pal = np.asarray(groups), _group_palette(order)
    for ax, (name, (a, b)) in zip(axes[0], pairs.items()):
        ra, rb = pd.Series(a).rank(pct=True).to_numpy() * 100, pd.Series(b).rank(pct=True).to_numpy() * 100
        for group in reversed(list(order)):  # the ground truth drawn last, on top
            mask = groups == group
            ax.scatter(ra[mask], rb[mask], s=7, alpha=0.6, color=pal[group], label=group, lw=0)
        x_run, y_run = name.split(" vs ")
        ax.set(xlabel=f"rank under {x_run} (percentile)", ylabel=f"rank under {y_run} (percentile)",
               title=name, xlim=(0, 100), ylim=(0, 100), aspect="equal")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], fontsize=8, markerscale=3, loc="lower center", ncol=len(order))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    return fig


def influence_over_training(df: pd.DataFrame, phase, title: str, names: Sequence[str]) -> Figure:
    """Mean TracIn term per checkpoint for each group (95% bootstrap band over sequences); phase change marked."""
    fig, ax = plt.subplots(figsize=(7.8, 4))
    sns.lineplot(df, x="step", y="term", hue="group", hue_order=list(names), palette=_group_palette(names),
                 errorbar=("ci", 95), n_boot=200, marker="o", ax=ax)
    ax.axhline(0, color="0.3", lw=0.8)
    _mark_phase(ax, phase)
    ax.set(xlabel="checkpoint (training step)", ylabel="TracIn term at the checkpoint\n(lr-weighted gradient dot)",
           title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dstar_histograms(df: pd.DataFrame, title: str, names: Sequence[str]) -> Figure:
    """D* per training sequence (log x, shared log bins), one panel per checkpoint, hue = group (names[0] first)."""
    panels = list(dict.fromkeys(df["checkpoint"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.6), squeeze=False)
    bins = np.logspace(np.log10(df["dstar"].min()), np.log10(df["dstar"].max()), 40)
    for i, (ax, name) in enumerate(zip(axes[0], panels)):
        sns.histplot(df[df["checkpoint"] == name], x="dstar", hue="group", hue_order=list(names), bins=bins,
                     stat="probability", common_norm=False, element="step", palette=_group_palette(names), ax=ax,
                     legend=i == len(panels) - 1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(xlabel="D* (dimensions per sequence, log)", ylabel="fraction of the group" if i == 0 else "",
               title=name)
    sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8, title="group")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
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


# ---------------------------------------------------------------- compression (notebook 02)


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
    fig, axes = plt.subplots(len(metrics), len(hooks), figsize=(4.3 * len(hooks) + 1.0, 3.5 * len(metrics) + 0.4),
                             squeeze=False, sharex=True)
    methods = list(dict.fromkeys(df["method"]))
    colors = iter(sns.color_palette("colorblind", len(methods)))
    palette = {m: "0.55" if "random" in m else next(colors) for m in methods}  # the random control in grey
    sizes = sorted(df[x].unique())
    for i, (col, ylabel) in enumerate(metrics.items()):
        for j, hook in enumerate(hooks):
            ax, sub = axes[i, j], df[df["hook"] == hook]
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
            ax.set(xlabel=xlabel if i == len(metrics) - 1 else "", ylabel=ylabel if j == 0 else "",
                   title=hook if i == 0 else "")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.93), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def latent_scatter(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], names: Sequence[str], title: str,
                   xlabel: str = "latent PC 1 (standardised units)", ylabel: str = "latent PC 2") -> Figure:
    """2-D scatter per panel ({name: (xy [n, 2], class index [n])}), points coloured by class (e.g. topic).

    Axes span the 0.5-99.5 percentiles of the points, so a few outliers do not squeeze the cloud.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 2.2, 4.4), squeeze=False)
    colors = sns.color_palette("tab20", len(names))
    for ax, (panel, (xy, labels)) in zip(axes[0], panels.items()):
        xy, labels = np.asarray(xy), np.asarray(labels)
        order = np.random.default_rng(0).permutation(len(xy))  # shuffled draw order: no topic paints over the rest
        ax.scatter(xy[order, 0], xy[order, 1], s=5, alpha=0.5, c=[colors[c] for c in labels[order]], linewidths=0)
        lo, hi = np.percentile(xy, [0.5, 99.5], axis=0)
        pad = 0.05 * (hi - lo)
        ax.set(title=panel, xlabel=xlabel, ylabel=ylabel, xlim=(lo[0] - pad[0], hi[0] + pad[0]),
               ylim=(lo[1] - pad[1], hi[1] + pad[1]))
    handles = [plt.Line2D([], [], marker="o", ls="", color=colors[c], label=n) for c, n in enumerate(names)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="topic",
               frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def probe_bars(df: pd.DataFrame, title: str, chance: float | None = None, x: str = "features",
               y: str = "accuracy", hue: str | None = "model") -> Figure:
    """Horizontal bars of probe accuracy with 95% CI whiskers (columns ci_low, ci_high) and a chance line."""
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(df) + 1.6))
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
    ax.set(xlabel="topic accuracy per token (fraction; 95% bootstrap CI over held-out articles)", ylabel="",
           title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def traversal_heatmap(probs: np.ndarray, tokens: Sequence[str], values: Sequence[float], title: str) -> Figure:
    """Next-token probability [token, traversal value] as an annotated heatmap."""
    probs = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(0.75 * len(values) + 3.0, 0.36 * len(tokens) + 1.8))
    sns.heatmap(probs, ax=ax, cmap="magma_r", annot=True, fmt=".2f", annot_kws={"fontsize": 7},
                xticklabels=[f"{v:+.1f}" for v in values], yticklabels=[repr(t) for t in tokens],
                cbar_kws={"label": "next-token probability"})
    ax.set(xlabel="value of the traversed latent (prior standard deviations)", ylabel="next token", title=title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report 3: impairment (dose-response)


def _symlog_if_wide(ax, x: np.ndarray) -> None:
    """Symmetric-log x axis when the positive intensities span more than a factor of 8."""
    pos = np.unique(np.asarray(x, float)[np.asarray(x, float) > 0])
    if len(pos) > 1 and pos.max() / pos.min() > 8:
        ax.set_xscale("symlog", linthresh=float(pos.min()))
        ax.set_xticks(np.concatenate([[0.0], pos]))
        ax.set_xticklabels([f"{v:g}" for v in np.concatenate([[0.0], pos])], fontsize=8)


def dose_response(df: pd.DataFrame, metrics: Mapping[str, str], kinds: Mapping[str, str], title: str,
                  hue: str = "topic", hue_order: Sequence[str] | None = None,
                  endpoints: pd.DataFrame | None = None) -> Figure:
    """Dose-response curves: one row per metric (column -> axis label), one column per impairment kind
    (kind -> x-axis label), one line per `hue`; bands are 95% bootstrap CIs over the rows at each intensity
    (prompts x noise seeds). `endpoints` (rows of kinds 'zero'/'mean') adds a last column of full ablations."""
    hue_order = list(hue_order or sorted(df[hue].unique()))
    n_col = len(kinds) + (endpoints is not None)
    fig, axes = plt.subplots(len(metrics), n_col, figsize=(3.3 * n_col + 1.6, 2.8 * len(metrics) + 0.9),
                             squeeze=False, gridspec_kw={"width_ratios": [3] * len(kinds) + [2] * (n_col - len(kinds))})
    palette = dict(zip(hue_order, sns.color_palette("colorblind", len(hue_order))))
    for i, (metric, label) in enumerate(metrics.items()):
        for j, (kind, xlabel) in enumerate(kinds.items()):
            ax, part = axes[i, j], df[df["kind"] == kind]
            sns.lineplot(part, x="intensity", y=metric, hue=hue, hue_order=hue_order, palette=palette, ax=ax,
                         errorbar=("ci", 95), n_boot=200, seed=0, marker="o", markersize=4, legend=False)
            _symlog_if_wide(ax, part["intensity"].to_numpy())
            ax.set(xlabel=xlabel if i == len(metrics) - 1 else "", ylabel=label if j == 0 else "",
                   title=kind.replace("_", " ") if i == 0 else "")
        if endpoints is not None:
            ax = axes[i, -1]
            sns.pointplot(endpoints, x="kind", y=metric, hue=hue, hue_order=hue_order, palette=palette, ax=ax,
                          errorbar=("ci", 95), n_boot=200, seed=0, dodge=0.4, linestyle="none", legend=False,
                          markersize=5)
            ax.set(xlabel="full ablation" if i == len(metrics) - 1 else "", ylabel="",
                   title="end-points" if i == 0 else "")
    handles = [plt.Line2D([], [], color=palette[h], marker="o", lw=2, label=h) for h in hue_order]
    fig.legend(handles=handles, title=hue, loc="upper left", bbox_to_anchor=(1.0, 0.9), fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def curve_stat_strip(df: pd.DataFrame, x: str, y: str, hue: str, title: str, ylabel: str, xlabel: str = "",
                     ref: float | None = None) -> Figure:
    """One dot per curve (a statistic such as Spearman's rho) per group, with the group's box behind."""
    fig, ax = plt.subplots(figsize=(7.5, 3.9))
    sns.boxplot(df, x=x, y=y, ax=ax, color="0.9", showfliers=False, width=0.5)
    sns.stripplot(df, x=x, y=y, hue=hue, ax=ax, dodge=False, size=6, alpha=0.8, jitter=0.15)
    if ref is not None:
        ax.axhline(ref, color="0.4", ls=":", lw=1.2)
    ax.set(xlabel=xlabel or x, ylabel=ylabel, title=title)
    ax.legend(title=hue, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def null_histograms(panels: Mapping[str, tuple[np.ndarray, Mapping[str, tuple[float, tuple[float, float] | None]]]],
                    title: str, xlabel: str, quantile: float = 0.95,
                    ylabel: str = "random clusters (count)") -> Figure:
    """Per panel: histogram of a random-control distribution with its `quantile` dashed, and observed values as
    vertical lines, their 95% CIs as horizontal bars near the top."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1.2, 3.7), squeeze=False)
    colors = sns.color_palette("colorblind", 8)[1:]
    for ax, (name, (null, observed)) in zip(axes[0], panels.items()):
        null = np.asarray(null, float)
        null = null[np.isfinite(null)]
        ends = [v for value, ci in observed.values() for v in (value, *(ci or ())) if np.isfinite(v)]
        lo, hi = min([*null, *ends]), max([*null, *ends])
        sns.histplot(null, ax=ax, color="0.6", bins=np.linspace(lo, hi + 1e-9, 31), label="random clusters")
        if len(null):
            ax.axvline(np.quantile(null, quantile), color="0.15", ls=(0, (4, 2)), lw=1.4, zorder=6,
                       label=f"random: {quantile:.0%} quantile")
        top = ax.get_ylim()[1]
        for i, (color, (label, (value, ci))) in enumerate(zip(colors, observed.items())):
            ax.axvline(value, color=color, lw=2.2, label=label)
            if ci is not None and np.all(np.isfinite(ci)):
                ax.errorbar([value], [top * (1.04 + 0.07 * i)], xerr=[[value - ci[0]], [ci[1] - value]], color=color,
                            capsize=4, lw=1.6, marker="o", ms=4)
        ax.set_ylim(top=top * (1.12 + 0.07 * len(observed)))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
        ax.legend(fontsize=7, loc="center right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def tolerance_curves(df: pd.DataFrame, y: str, hue: str, threshold: float, crossings: Mapping[str, float],
                     title: str, xlabel: str, ylabel: str) -> Figure:
    """Performance under increasing impairment, one line per model (95% bootstrap bands), the fixed threshold
    dotted and each model's crossing intensity marked."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    order = list(crossings)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    sns.lineplot(df, x="intensity", y=y, hue=hue, hue_order=order, palette=palette, ax=ax, errorbar=("ci", 95),
                 n_boot=200, seed=0, marker="o", markersize=4)
    _symlog_if_wide(ax, df["intensity"].to_numpy())
    ax.axhline(threshold, color="0.3", ls=":", lw=1.3, label=f"threshold {threshold:.2f}")
    for name, x in crossings.items():
        if np.isfinite(x):
            ax.plot([x], [threshold], marker="v", ms=10, color=palette[name], ls="none")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


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


# ---------------------------------------------------------------- report 4: neuron Shapley


def value_histograms(df: pd.DataFrame, x: str, hue: str, title: str, xlabel: str, bins: int = 60) -> Figure:
    """Distribution of values (e.g. Shapley values, one row per neuron x topic), one step histogram per `hue`
    group on a log count axis (the tails are what matter)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.9))
    edges = np.linspace(df[x].min(), df[x].max() + 1e-12, bins + 1)
    sns.histplot(df, x=x, hue=hue, bins=edges, element="step", fill=False, ax=ax, stat="count", common_norm=False)
    ax.set_yscale("log")
    ax.axvline(0, color="0.4", ls=":", lw=1)
    ax.set(xlabel=xlabel, ylabel="neurons × topics (count, log scale)", title=title)
    fig.tight_layout()
    return fig


def matrix_heatmap(mat: pd.DataFrame, title: str, xlabel: str, ylabel: str, cbar: str, center: float | None = 0.0,
                   annot: bool = False, fmt: str = ".2f", mark_diagonal: bool = False) -> Figure:
    """A labelled heatmap of a table (rows x columns), diverging around `center`; optional diagonal outline."""
    fig, ax = plt.subplots(figsize=(0.42 * mat.shape[1] + 3.2, 0.34 * mat.shape[0] + 1.8))
    sns.heatmap(mat, ax=ax, cmap="RdBu_r" if center is not None else "viridis", center=center, annot=annot, fmt=fmt,
                annot_kws={"fontsize": 6}, cbar_kws={"label": cbar}, linewidths=0.3, linecolor="0.9")
    if mark_diagonal:
        for i in range(min(mat.shape)):
            ax.add_patch(plt.Rectangle((i, i), 1, 1, fill=False, edgecolor="0.1", lw=1.5))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    return fig


def removal_curves(df: pd.DataFrame, x: str, metrics: Mapping[str, str], hue: str, title: str, xlabel: str,
                   hue_order: Sequence[str] | None = None) -> Figure:
    """Metric versus number of units removed, one line per ordering (95% bootstrap bands over the rows at each x:
    topics x prompts, and seeds for random orderings), one panel per metric, symlog x."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics) + 1.4, 4.0), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics.items()):
        sns.lineplot(df, x=x, y=metric, hue=hue, hue_order=hue_order, ax=ax, errorbar=("ci", 95), n_boot=200, seed=0,
                     marker="o", markersize=4, legend=ax is axes[0][-1])
        _symlog_if_wide(ax, df[x].to_numpy())
        ax.set(xlabel=xlabel, ylabel=label)
    axes[0][-1].legend(title=hue, fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def convergence_curves(df: pd.DataFrame, x: str, y: str, hue: str, title: str, xlabel: str, ylabel: str,
                       marks: Mapping[str, float] | None = None) -> Figure:
    """A convergence trace per estimator (e.g. top-k overlap with a reference versus evaluations, log x); `marks`
    puts a triangle where each estimator reached the reference for good."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    order = list(dict.fromkeys(df[hue]))
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    sns.lineplot(df, x=x, y=y, hue=hue, hue_order=order, palette=palette, ax=ax, drawstyle="steps-post")
    for name, at in (marks or {}).items():
        if np.isfinite(at):
            ax.plot([at], [1.0], marker="v", ms=10, color=palette[name], ls="none")
    ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=(-0.02, 1.08))
    fig.tight_layout()
    return fig


def agreement_scatter(panels: Mapping[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str,
                      title: str) -> Figure:
    """Per panel, one dot per unit: a cheap score against the reference score (ranks as percentiles)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels) + 0.6, 4.2), squeeze=False)
    for ax, (name, (a, b)) in zip(axes[0], panels.items()):
        ra, rb = pd.Series(a).rank(pct=True).to_numpy() * 100, pd.Series(b).rank(pct=True).to_numpy() * 100
        ax.scatter(ra, rb, s=6, alpha=0.5, lw=0)
        ax.set(xlabel=xlabel, ylabel=ylabel if ax is axes[0][0] else "", title=name, xlim=(0, 100), ylim=(0, 100),
               aspect="equal")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report 7: the sub-model tool


def submodel_gaps(table: pd.DataFrame, title: str, order: Sequence[str] | None = None) -> Figure:
    """Per concept (rows) and method (colours): the validation gap of the found sub-model (dot; filled if it beats
    random) and the 95th percentile of its size-matched random sub-models (short grey bar)."""
    order = list(order or dict.fromkeys(table.concept))
    methods = list(dict.fromkeys(table.method))
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    fig, ax = plt.subplots(figsize=(8.0, 0.32 * len(order) * max(1, len(methods) / 2) + 1.6))
    step = 0.8 / max(len(methods), 1)
    for j, m in enumerate(methods):
        part = table[table.method == m].set_index("concept").reindex(order)
        y = np.arange(len(order)) - 0.4 + step * (j + 0.5)
        ax.scatter(part.random_q95, y, marker="|", s=90, color="0.55", label="random: 95th pct" if j == 0 else None)
        beats = part.beats_random.fillna(False).astype(bool).to_numpy()
        ax.scatter(part.gap[beats], y[beats], color=palette[m], s=28, label=m, zorder=3)
        ax.scatter(part.gap[~beats], y[~beats], facecolor="white", edgecolor=palette[m], s=28, zorder=3)
    ax.axvline(0, color="0.3", ls=":", lw=1)
    ax.set_yticks(np.arange(len(order)), order)
    ax.invert_yaxis()
    ax.set(xlabel="own-concept minus other-concept keyword-loss rise when ablated (nats)", ylabel="concept",
           title=title)
    ax.legend(fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left", title="method (hollow: not > random)")
    fig.tight_layout()
    return fig


def explanation_figure(active: pd.DataFrame, tracked: pd.DataFrame, title: str, n_submodels: int = 6,
                       first: Sequence[str] = ()) -> Figure:
    """Left: activity (mean z-score of the units) at each position of the prompt of the sub-models in `first`, then
    of the most active at the last position (rows of `active`); right: the clean top tokens' probabilities clean and
    under each ablation (`tracked`)."""
    rest = [n for n in active.iloc[:, -1].sort_values(ascending=False).index if n not in first]
    top = active.loc[(list(first) + rest)[: max(n_submodels, len(first))]]
    fig, axes = plt.subplots(1, 2, figsize=(13.0, 0.45 * len(top) + 2.6),
                             gridspec_kw={"width_ratios": [max(2.0, 0.35 * top.shape[1]), 1.6]})
    sns.heatmap(top, ax=axes[0], cmap="RdBu_r", center=0, cbar_kws={"label": "activity (mean z-score)"},
                linewidths=0.3, linecolor="0.9")
    axes[0].set(xlabel="position: token", ylabel="sub-model")
    axes[0].tick_params(axis="x", labelsize=7, rotation=90)
    df = tracked.assign(token=tracked.token.map(repr))
    sns.barplot(df, y="token", x="prob", hue="ablated", ax=axes[1], orient="h")
    axes[1].set(xlabel="next-token probability", ylabel="clean top tokens")
    axes[1].legend(fontsize=7, title="ablated", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
