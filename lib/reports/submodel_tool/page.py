"""The tool's result as one self-contained HTML page (`--report FILE.html`): the model, the sub-models and their
validation, the prompt's activity and the prediction clean and with each ablation; figures inline as PNG, no
script and nothing fetched, so it opens anywhere and can be shared as one file."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import io
import shlex
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from lib.analysis import plotting
from lib.core import artifacts
from lib.reports.submodel_tool import plots
from lib.reports.submodel_tool.kernel import Explanation, SubModel, scores_table, validation_table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.86em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.55em; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
tr.validated td:first-child { border-left: 4px solid #2a7; } tr.failed td:first-child { border-left: 4px solid #c44; }
tr.unvalidated td:first-child { border-left: 4px solid #aaa; }
img { max-width: 100%; } code, .mono { font-family: ui-monospace, monospace; font-size: 0.92em; }
.note { color: #555; font-size: 0.9em; } .meta td { text-align: left; }
"""


PROBABILITIES = ("prob", "clean_prob", "change")  # shown with 3 significant digits (a 50k vocabulary's are ~1e-5)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(df: pd.DataFrame, text_cols: Sequence[str] = (), row_class: Sequence[str] | None = None,
           digits: int = 3) -> str:
    """An HTML table of df (index shown when named), numbers rounded, text columns left-aligned."""
    df = df.reset_index() if df.index.name else df
    head = "".join(f'<th class="{"text" if c in text_cols else ""}">{html.escape(str(c))}</th>' for c in df.columns)
    rows = []
    for i, (_, r) in enumerate(df.iterrows()):
        cells = []
        for c in df.columns:
            v = r[c]
            if isinstance(v, float):
                v = "" if pd.isna(v) else f"{v:.3g}" if c in PROBABILITIES else f"{v:.{digits}f}"
            cells.append(f'<td class="{"text" if c in text_cols else ""}">{html.escape(str(v))}</td>')
        cls = f' class="{row_class[i]}"' if row_class is not None else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(ex: Explanation, subs: Mapping[str, SubModel], about: Mapping[str, object], args: argparse.Namespace,
         argv: Sequence[str] | None, wall_s: float) -> str:
    """The page's HTML."""
    plotting.set_style()
    val = validation_table(subs)
    status = val.status.tolist()
    n_ok = status.count("validated")
    meta = {**about, "prompt": args.prompt, "method": args.method, "units per hook": f"{args.frac:.1%} of its width",
            "impairment": f"{args.kind} at intensity {args.intensity:g}",
            "random sub-models per validation": args.n_random,
            "command": "python -m lib.submodels " + " ".join(shlex.quote(a) for a in (argv or [])),
            "commit": artifacts.git_commit(), "written": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "wall time": f"{wall_s:.0f} s"}
    meta_rows = "".join(f"<tr><th class='text'>{html.escape(str(k))}</th><td class='text mono'>"
                        f"{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    table = scores_table(subs)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Sub-models of {html.escape(str(about.get('model', 'a model')))}</title><style>{CSS}</style></head><body>",
        f"<h1>Which sub-models does this prompt use?</h1><p class='mono'>{html.escape(args.prompt)}</p>",
        f"<table class='meta'>{meta_rows}</table>",
        "<h2>1. Sub-models and their validation</h2>",
        f"<p>{n_ok} of {len(subs)} sub-models are validated. A sub-model is <b>validated</b> when ablating it raises "
        "its own concept's held-out keyword loss more than the other concepts' (the gap, in nats), by more than 95% "
        f"of {args.n_random} random sub-models of the same size do (random_q95, p), and by more than the same "
        "pipeline finds in the model at initialisation (init_gap); <b>failed</b> when it was tested and did not; "
        "<b>unvalidated</b> when it could not be tested (e.g. its keyword probe does not beat a unigram baseline). "
        "kept: the loss its units alone preserve when the rest of their layer is ablated.</p>",
        _table(val.drop(columns="why"), text_cols=("submodel", "method", "status"), row_class=status),
        "<p class='note'>Why each status:</p><ul class='note'>"
        + "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(w)}</li>" for n, w in val.why.items()) + "</ul>",
    ]
    if "gap" in table and table.gap.notna().any():
        parts.append(_png(plots.submodel_gaps(table, "Validation gap of each sub-model vs random sub-models")))
    parts += [
        "<h2>2. The prediction, clean and with sub-models ablated</h2>",
        _png(plots.explanation_figure(ex.active(), ex.tracked, "Activity along the prompt; the clean top tokens "
                                      "under each ablation")),
        _table(ex.predictions.drop(columns="token_id"), text_cols=("ablated", "status", "token"), digits=2),
        "<p class='note'>prob: the token's next-token probability under the ablation; clean_prob: without it; "
        "change: the difference. Tokens are shown as the model's tokenizer decodes them.</p>",
        "<h2>3. Activity of each sub-model along the prompt</h2>",
        "<p>Mean z-score of the sub-model's units at each position (z against the concept texts' mean and sd).</p>",
        _table(ex.active().round(2), text_cols=("submodel",), digits=2),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_page(dest: Path, ex: Explanation, subs: Mapping[str, SubModel], about: Mapping[str, object],
               args: argparse.Namespace, argv: Sequence[str] | None, wall_s: float) -> Path:
    """Write the page atomically (nothing half-written is left at dest)."""
    dest = Path(dest)
    if dest.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--report {dest}: the page is HTML, so the file name must end in .html")
    return artifacts.write_text(dest, page(ex, subs, about, args, argv, wall_s))
