"""Execute one notebook with papermill for the book; a failed run is kept aside as NAME.failed.ipynb.

Usage: python scripts/execute_notebook.py SRC.ipynb DEST.ipynb [-p NAME VALUE]... [--cwd DIR]

VALUE is read as YAML, so `-p d_model 768` passes an int and `-p preset gpu` a string, as
papermill's own `-p` does. The kernel is `python3` from the running interpreter's environment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
from pathlib import Path

import nbformat
import papermill as pm
import yaml

from lib.core import artifacts

STAMP_TAG = "execution-info"  # the markdown cell that says what produced a page's numbers
# A figure's text/plain output names its title (lib.analysis.plotting.figure_repr): "<Figure 'Fig. 3b: ...' 620x400>"
FIGURE_TITLE = re.compile(r"""^<Figure ['"](?:Fig\.|Figure)\s*(\d+[a-z]?)[:.]""")  # repr quotes with ' or "
ANCHOR_CLASS = "figure-anchor"
SHOW_INPUT = "show-input"  # a cell whose code the book shows open; every other code cell's input is collapsed
HIDDEN = ("hide-input", "remove-input", "remove-cell", "hide-cell", "remove-output", SHOW_INPUT)


def kernel_env() -> None:
    """Set up the environment the kernel inherits (papermill passes os.environ on)."""
    # A non-inline backend (MPLBACKEND=Agg, common on headless machines) drops every figure from
    # the executed notebook, and so from the book.
    os.environ.pop("MPLBACKEND", None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # debugpy's "frozen modules" warning on Python 3.11 kernels is noise in the logs.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    # Find the `python3` kernel of this environment first, before any user-level kernelspec
    # that could point at another interpreter.
    here = str(Path(sys.prefix) / "share" / "jupyter")
    paths = [p for p in os.environ.get("JUPYTER_PATH", "").split(os.pathsep) if p]
    os.environ["JUPYTER_PATH"] = os.pathsep.join([here] + [p for p in paths if p != here])


def failed_path(dest: Path) -> Path:
    """Where a failed run's notebook is kept: NAME.failed.ipynb beside DEST."""
    return dest.with_name(dest.stem + ".failed.ipynb")


def execute(src: Path, dest: Path, parameters: dict, cwd: Path, timeout: int | None = None) -> Path:
    """Run src into dest with papermill; on failure move dest to NAME.failed.ipynb and re-raise."""
    kernel_env()
    dest.parent.mkdir(parents=True, exist_ok=True)
    failed_path(dest).unlink(missing_ok=True)
    try:
        pm.execute_notebook(str(src), str(dest), parameters=parameters, kernel_name="python3", language="python",
                            cwd=str(cwd), execution_timeout=timeout, progress_bar=True)
    except BaseException:
        if dest.exists():
            dest.replace(failed_path(dest))
            print(f"\nFAILED: {src} -- the executed notebook is at {failed_path(dest)}", file=sys.stderr)
        raise
    return stamp(dest, commit(Path(__file__).resolve().parent.parent))


def anchor_figures(nb: nbformat.NotebookNode) -> list[str]:
    """Before each figure output titled 'Fig. N: ...' put an empty HTML element with id 'fig-N' (the first figure of
    each number), so that the findings page can link to it; earlier anchors are replaced. Returns the ids."""
    seen: list[str] = []
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        outs = []
        for out in c.get("outputs", []):
            if ANCHOR_CLASS in str(out.get("data", {}).get("text/html", "")):
                continue
            text = out.get("data", {}).get("text/plain", "")
            m = FIGURE_TITLE.match("".join(text) if isinstance(text, list) else text)
            if m and "image/png" in out.get("data", {}) and f"fig-{m.group(1)}" not in seen:
                seen.append(f"fig-{m.group(1)}")
                outs.append(nbformat.v4.new_output("display_data", data={
                    "text/html": f'<span id="{seen[-1]}" class="{ANCHOR_CLASS}"></span>'}))
            outs.append(out)
        c.outputs = outs
    return seen


def collapse_code(nb: nbformat.NotebookNode) -> None:
    """The book shows results, not plumbing: papermill's injected-parameters cell and every code cell without output
    (set-up, definitions) are removed from the page, and every other code cell's input is collapsed behind a "show"
    toggle (Jupyter Book's `hide-input`), unless the cell already carries a visibility tag or `show-input`. The
    parameters cell stays (collapsed): it shows a reader what can be changed. The code itself is in the notebook,
    which each page offers for download."""
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        tags = c.metadata.setdefault("tags", [])
        if any(t in tags for t in HIDDEN):
            continue
        if "injected-parameters" in tags or (not c.get("outputs") and "parameters" not in tags):
            tags.append("remove-cell")
        else:
            tags.append("hide-input")


def commit(repo: Path) -> str:
    """The checked-out commit (short hash), '+ uncommitted changes' when the tree differs from it; 'unknown'
    outside git (lib.core.artifacts.git_commit)."""
    return artifacts.git_commit(repo)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def stamp_text(nb: nbformat.NotebookNode, sha: str) -> str:
    """One sentence from papermill's metadata: when, at which commit, with which preset, and how long it ran."""
    meta = nb.metadata.get("papermill", {})
    params = meta.get("parameters", {})
    end = meta.get("end_time") or meta.get("start_time")
    when = dt.datetime.fromisoformat(end).strftime("%Y-%m-%d %H:%M UTC") if end else "an unknown date"
    preset = params.get("preset", "the notebook's default")
    others = {k: v for k, v in params.items() if k != "preset"}
    extra = (" and parameters " + ", ".join(f"`{k}={v!r}`" for k, v in others.items())) if others else ""
    took = f" in {_duration(meta['duration'])}" if meta.get("duration") is not None else ""
    return (f"*Executed {when} at commit `{sha}` with preset `{preset}`{extra}{took} (papermill; the numbers on "
            "this page come from that run).*")


def stamp(dest: Path, sha: str) -> Path:
    """Put (or replace) the execution-info cell right after the notebook's title cell, anchor the figures
    (`anchor_figures`) and collapse the code (`collapse_code`)."""
    nb = nbformat.read(dest, as_version=4)
    nb.cells = [c for c in nb.cells if STAMP_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(stamp_text(nb, sha), metadata={"tags": [STAMP_TAG]})
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# ") else 0
    nb.cells.insert(at, cell)
    anchor_figures(nb)
    collapse_code(nb)
    tmp = dest.with_name(dest.name + ".tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--cwd", type=Path, default=None, help="kernel working directory (default: SRC's folder)")
    parser.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default: none)")
    args = parser.parse_args()
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        execute(args.src, args.dest, parameters, args.cwd or args.src.parent, args.timeout)
    except pm.PapermillExecutionError as err:
        sys.exit(f"{args.src}: {err.ename}: {err.evalue}")


if __name__ == "__main__":
    main()
