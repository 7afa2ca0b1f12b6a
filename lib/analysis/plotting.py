"""Shared figure kinds (used by two or more reports, or the findings page) and the book's style.

A report's own figures live in lib/reports/<slug>/plots.py. Every figure: seaborn, labelled axes with units, a
caption-like title, bands or error bars from seeds or the bootstrap."""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

COLUMN_PX = 690  # the book's text column, in CSS pixels (images wider than this are shown scaled down to it)
MIN_DISPLAY_PT = 9.0  # the smallest text a reader should have to read, at display size
FIGURE_CHECK = "LIB_FIGURE_CHECK"  # 'error': a too-small figure text raises; 'log:PATH': one JSON line per figure
WIDTH_IN = 6.2  # a figure's width for the column: COLUMN_PX at 110 dpi is 6.27 in, so the book shows it unscaled
SMALL = 8.5  # the smallest font size a figure uses (legends, annotations, dense ticks): 9.7 pt at display size


def set_style() -> None:
    """The book's seaborn theme (call once per notebook); also installs the figure readability check and the figure
    repr that names its title (`figure_repr`)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold", "figure.autolayout": False})
    _install_check()
    Figure.__repr__ = figure_repr


def figure_repr(fig: Figure) -> str:
    """'<Figure 'Fig. 3: ...' 620x400>': a figure's text/plain output names its title, so that the book build can put
    an anchor (`#fig-3`) before the figure for the findings page to link to (scripts/execute_notebook.py)."""
    w, h = (fig.get_size_inches() * fig.dpi).round().astype(int)
    title = " ".join(_title(fig).split())
    return f"<Figure {title!r} {w}x{h}>" if title else f"<Figure {w}x{h}>"


def readability(fig: Figure, column_px: int = COLUMN_PX) -> dict:
    """How a figure reads in the book: its tight width (inches, as the inline backend crops it), the scale at which
    the column shows it, and its smallest visible text at display size (points, 96 CSS px per inch), with that
    text. A figure is readable when min_pt >= MIN_DISPLAY_PT."""
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    width_in = fig.get_tightbbox(renderer).width
    dpi = fig.dpi
    shown_px = min(width_in * dpi, column_px)
    scale = shown_px / (width_in * dpi)  # display px per image px
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and t.figure is fig
             and t.get_window_extent(renderer).width > 0]
    if not texts:
        return {"width_in": width_in, "scale": scale, "min_pt": float("inf"), "text": ""}
    t = min(texts, key=lambda t: t.get_fontsize())
    min_pt = t.get_fontsize() * dpi / 72 * scale * 72 / 96  # image px of the text, shown at `scale`, in CSS pt
    return {"width_in": round(width_in, 2), "scale": round(scale, 3), "min_pt": round(min_pt, 2),
            "text": t.get_text()[:40], "title": _title(fig)}


def wrap(text: str, width_in: float = WIDTH_IN, fontsize: float = 11.0) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` (bold; about 0.6 em a character), so that a
    long caption-like title does not widen the figure past the column."""
    import textwrap

    return textwrap.fill(text, max(20, int(width_in * 72 / (0.6 * fontsize))), break_on_hyphens=False)


def suptitle(fig: Figure, text: str, fontsize: float = 11.0) -> None:
    """The figure's caption-like title, wrapped to the figure's width."""
    fig.suptitle(wrap(text, fig.get_figwidth(), fontsize), fontsize=fontsize, fontweight="bold")


def set_title(ax, text: str, fontsize: float = 11.0) -> None:
    """The caption-like title of a one-axes figure: over the figure (centred on it, wrapped to its width), so that
    long tick labels beside the axes cannot push it past the figure's edge."""
    suptitle(ax.figure, text, fontsize)


def legend_below(fig: Figure, handles, labels, ncol: int = 2, title: str | None = None, **kw):
    """A figure legend centred under the axes, in at most `ncol` columns and fewer while it would be wider than the
    figure (lay the figure out with tight_with_legend_below)."""
    while True:
        legend = fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, title=title,
                            fontsize=SMALL, title_fontsize=SMALL + 0.5, frameon=False, **kw)
        fig.canvas.draw()
        if ncol == 1 or legend.get_window_extent().width <= 0.98 * fig.get_figwidth() * fig.dpi:
            return legend
        legend.remove()
        ncol -= 1


def tight_with_legend_below(fig: Figure, legend) -> None:
    """tight_layout leaving the bottom strip that `legend` (a figure legend at lower center) needs."""
    fig.canvas.draw()
    h = legend.get_window_extent().height / fig.dpi / fig.get_figheight()
    label = fig._supxlabel
    if label is not None and label.get_text():  # a shared x label sits between the axes and the legend
        label.set(y=h + 0.005, va="bottom")
        h += label.get_window_extent().height / fig.dpi / fig.get_figheight() + 0.005
    fig.tight_layout(rect=(0, h + 0.01, 1, 1))


def _title(fig: Figure) -> str:
    if fig._suptitle is not None and fig._suptitle.get_text():
        return fig._suptitle.get_text()[:80]
    return next((ax.get_title()[:80] for ax in fig.axes if ax.get_title()), "")


def check_readable(fig: Figure) -> dict:
    """readability(fig), acted on per $LIB_FIGURE_CHECK: 'error' raises a ValueError naming the figure and its
    smallest text; 'log:PATH' appends the record to PATH as a JSON line; otherwise nothing."""
    mode = os.environ.get(FIGURE_CHECK, "")
    if not mode:
        return {}
    r = readability(fig)
    if mode.startswith("log:"):
        with open(mode[4:], "a") as f:
            f.write(json.dumps(r) + "\n")
    elif mode == "error" and r["min_pt"] < MIN_DISPLAY_PT:
        raise ValueError(f"figure {r['title']!r} is {r['width_in']} in wide, so the book shows it at {r['scale']:.0%}"
                         f" and its text {r['text']!r} at {r['min_pt']:.1f} pt (< {MIN_DISPLAY_PT} pt): make it "
                         "narrower or its fonts larger")
    return r


def _install_check() -> None:
    """Run check_readable on every figure the inline backend renders (IPython prints figures through
    FigureCanvasBase.print_figure), once per figure."""
    from matplotlib.backend_bases import FigureCanvasBase

    if getattr(FigureCanvasBase.print_figure, "_readability", False):
        return
    original = FigureCanvasBase.print_figure

    def print_figure(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        if not getattr(self.figure, "_checked", False):
            self.figure._checked = True
            check_readable(self.figure)
        return out

    print_figure._readability = True
    FigureCanvasBase.print_figure = print_figure


def verdict_counts(ledger: pd.DataFrame, palette: Mapping[str, str], title: str) -> Figure:
    """Stacked horizontal bars: the findings of each report, by verdict (colours from `palette`, verdict -> colour)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.45 * ledger["notebook"].nunique() + 2.2))
    sns.histplot(data=ledger, y="notebook", hue="verdict", hue_order=list(palette), palette=dict(palette),
                 multiple="stack", discrete=True, shrink=0.7, alpha=1.0, ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="findings (count)", ylabel="")
    set_title(ax, title)
    sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, title=None, frameon=False)
    fig.tight_layout()
    return fig


def symlog_if_wide(ax, x: np.ndarray) -> None:
    """Symmetric-log x axis when the positive values span more than a factor of 8, ticked at 0 and at the values
    themselves (thinned to roughly one tick per factor of two, so that labels never overlap)."""
    pos = np.unique(np.asarray(x, float)[np.asarray(x, float) > 0])
    if len(pos) > 1 and pos.max() / pos.min() > 8:
        ax.set_xscale("symlog", linthresh=float(pos.min()), linscale=0.4)  # keep [0, min] from eating the axis
        ticks = [pos[0]]
        for v in pos[1:]:
            if v / ticks[-1] >= 1.9:
                ticks.append(v)
        ticks = np.concatenate([[0.0], ticks])
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{v:g}" for v in ticks], fontsize=SMALL)
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_xlim(-0.15 * pos.min(), pos.max() * 1.15)  # symlog's autoscale pads far into the negative side


def null_histograms(panels: Mapping[str, tuple[np.ndarray, Mapping[str, tuple[float, tuple[float, float] | None]]]],
                    title: str, xlabel: str, quantile: float = 0.95,
                    ylabel: str = "random clusters (count)", ncols: int = 2,
                    null_label: str = "random clusters") -> Figure:
    """Per panel: histogram of a random-control distribution with its `quantile` dashed, and observed values as
    vertical lines, their 95% CIs as horizontal bars near the top; at most `ncols` panels per row; one legend
    below the panels (the observed values' labels that differ between panels each appear once)."""
    cols = min(ncols, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN if cols > 1 else 4.6, 3.0 * rows + 1.6), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colors = sns.color_palette("colorblind", 8)[1:]
    names = list(dict.fromkeys(label for _, observed in panels.values() for label in observed))
    for ax, (name, (null, observed)) in zip(axes.flat, panels.items()):
        null = np.asarray(null, float)
        null = null[np.isfinite(null)]
        ends = [v for value, ci in observed.values() for v in (value, *(ci or ())) if np.isfinite(v)]
        lo, hi = min([*null, *ends]), max([*null, *ends])
        sns.histplot(null, ax=ax, color="0.6", bins=np.linspace(lo, hi + 1e-9, 31), label=null_label)
        if len(null):
            ax.axvline(np.quantile(null, quantile), color="0.15", ls=(0, (4, 2)), lw=1.4, zorder=6,
                       label=f"random: {quantile:.0%} quantile")
        top = ax.get_ylim()[1]
        for i, (label, (value, ci)) in enumerate(observed.items()):
            color = colors[names.index(label) % len(colors)]  # one colour per observed label across panels
            ax.axvline(value, color=color, lw=2.2, label=label)
            if ci is not None and np.all(np.isfinite(ci)):
                ax.errorbar([value], [top * (1.04 + 0.07 * i)], xerr=[[value - ci[0]], [ci[1] - value]], color=color,
                            capsize=4, lw=1.6, marker="o", ms=4)
        ax.set_ylim(top=top * (1.12 + 0.07 * len(observed)))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts
        ax.xaxis.set_major_locator(MaxNLocator(4))  # values like -0.00025 need room
        ax.tick_params(axis="x", labelsize=SMALL)
        ax.set(xlabel=xlabel, ylabel=ylabel if ax in axes[:, 0] else "")
        ax.set_title(wrap(name, ax.get_position().width * fig.get_figwidth() * 1.1, 10), fontsize=10)
    handles, labels = [], []
    for ax in axes.flat[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    suptitle(fig, title)
    tight_with_legend_below(fig, legend_below(fig, handles, labels, ncol=2))
    return fig


def probe_margins(margins: pd.DataFrame, title: str) -> Figure:
    """Per topic, how many nats better than the baseline (`prompts.probe_margins`) the model predicts the topic's
    keywords (95% CI);
    filled = usable (the interval's low end above 0), hollow = not used."""
    m = margins.sort_values("margin").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.32 * len(m) + 2.0))
    y = np.arange(len(m))
    for usable, color, face in ((True, "C0", "C0"), (False, "C3", "white")):
        part = m[m["usable"] == usable]
        if len(part):
            err = [part["margin"] - part["ci_low"], part["ci_high"] - part["margin"]]
            ax.errorbar(part["margin"], y[part.index], xerr=err, fmt="o", color=color, mfc=face, capsize=3,
                        label="usable" if usable else "not used")
    ax.axvline(0, color="0.3", ls=":", lw=1.1)
    ax.set_yticks(y, m["topic"])
    ax.set(xlabel="keyword log-likelihood gain over the\nunigram / uniform baseline (nats per keyword)")
    set_title(ax, title)
    ax.legend(fontsize=SMALL, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report 4: neuron Shapley


def matrix_heatmap(mat: pd.DataFrame, title: str, xlabel: str, ylabel: str, cbar: str, center: float | None = 0.0,
                   annot: bool = False, fmt: str = ".2f", mark_diagonal: bool = False) -> Figure:
    """A labelled heatmap of a table (rows x columns), diverging around `center`; optional diagonal outline."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.3 * mat.shape[0] + 2.4))
    sns.heatmap(mat, ax=ax, cmap="RdBu_r" if center is not None else "viridis", center=center, annot=annot, fmt=fmt,
                annot_kws={"fontsize": SMALL}, cbar_kws={"label": cbar}, linewidths=0.3, linecolor="0.9")
    if mark_diagonal:
        for i in range(min(mat.shape)):
            ax.add_patch(plt.Rectangle((i, i), 1, 1, fill=False, edgecolor="0.1", lw=1.5))
    ax.set(xlabel=xlabel, ylabel=ylabel)
    set_title(ax, title)
    ax.tick_params(labelsize=SMALL)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report 7: the sub-model tool


# ---------------------------------------------------------------- attention patterns (reports 1 and 8)


def attention_widget(tokens: Sequence[str], pattern: np.ndarray, head_names: Sequence[str] | None = None):
    """circuitsvis attention heads view with its bundled JavaScript inlined (renders offline)."""
    import circuitsvis as cv
    from IPython.display import HTML

    obj = cv.attention.attention_heads(attention=np.asarray(pattern), tokens=list(tokens),
                                       attention_head_names=list(head_names) if head_names else None)
    return HTML(obj.local_src)
