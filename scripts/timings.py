"""Where the book's time goes: each executed report's wall time, split into training and analysis, from papermill's
cell timings.

    python scripts/timings.py book/executed            # print the table
    python scripts/timings.py book/executed --write    # also write timings.csv and timings.md beside the notebooks

`make book` writes the files before it builds the book (the intro page includes timings.md) and prints the table
at the end. Training is the time of the code cells tagged `training` (the cells that train a report's models, or
load them when an earlier run left them in artifacts/); analysis is the rest of the notebook's papermill wall
time, the kernel's start included. A notebook that was not executed by papermill has no timings: an error names it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd

TAG = "training"
COLUMNS = ["notebook", "title", "preset", "started", "training_s", "analysis_s", "total_s", "training_cells"]


def title(nb: nbformat.NotebookNode, default: str) -> str:
    """The notebook's short title: its first '# ' heading up to a colon ('8. Indirect object identification')."""
    for c in nb.cells:
        if c.cell_type == "markdown":
            for line in c.source.splitlines():
                if line.startswith("# "):
                    return line[2:].split(":")[0].strip().replace("`", "").replace("<", "").replace(">", "") or default
    return default


def notebook_timing(path: Path) -> dict:
    """One executed notebook's row: its total papermill wall time and the part spent in `training` cells."""
    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill")
    if not meta or meta.get("duration") is None:
        raise ValueError(f"{path}: no papermill timing in its metadata (metadata.papermill.duration); only notebooks "
                         "executed by papermill (make book, scripts/execute_notebook.py) can be timed")
    total = float(meta["duration"])
    cells = [c for c in nb.cells if c.cell_type == "code"]
    missing = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("duration") is None
               and c.metadata.get("papermill", {}).get("status") != "pending"]
    if missing:
        raise ValueError(f"{path}: code cells {missing[:5]} have no papermill duration; was the run interrupted?")
    training = [float(c.metadata["papermill"]["duration"]) for c in cells if TAG in c.metadata.get("tags", [])]
    return {"notebook": path.stem, "title": title(nb, path.stem), "preset": meta.get("parameters", {}).get("preset"), "started": meta.get("start_time"),
            "training_s": sum(training), "analysis_s": total - sum(training), "total_s": total,
            "training_cells": len(training)}


def timings(folder: Path) -> pd.DataFrame:
    """A row per executed report (NN_*.ipynb, in order) and the findings notebook, if present."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("findings.ipynb"))
    paths = [p for p in paths if not p.name.endswith(".failed.ipynb")]
    if not paths:
        raise ValueError(f"{folder}: no executed notebooks (NN_*.ipynb or findings.ipynb) to time")
    return pd.DataFrame([notebook_timing(p) for p in paths], columns=COLUMNS)


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def text_table(df: pd.DataFrame) -> str:
    """The table for a terminal: minutes:seconds per notebook and the sum."""
    rows = [(r.notebook, r.preset or "", minutes(r.training_s), minutes(r.analysis_s), minutes(r.total_s))
            for r in df.itertuples()]
    rows.append(("all notebooks", "", minutes(df.training_s.sum()), minutes(df.analysis_s.sum()),
                 minutes(df.total_s.sum())))
    head = ("notebook", "preset", "training", "analysis", "total")
    w = [max(len(str(x[i])) for x in [head, *rows]) for i in range(5)]
    line = lambda x: "  ".join(str(v).ljust(w[0]) if i == 0 else str(v).rjust(w[i]) for i, v in enumerate(x))  # noqa: E731
    return "\n".join([line(head), line(["-" * n for n in w]), *map(line, rows[:-1]), line(["-" * n for n in w]),
                      line(rows[-1])])


def markdown_table(df: pd.DataFrame) -> str:
    """The table for the intro page (MyST): each report linked to its page."""
    presets = sorted({p for p in df.preset if p})
    started = pd.to_datetime(df.started.dropna(), utc=True)
    when = f", started {started.min():%Y-%m-%d %H:%M} UTC" if len(started) else ""
    out = [f"Wall time of each notebook in the build of this book (preset {', '.join(presets) or 'unknown'}{when}; "
           "minutes:seconds, from papermill's cell timings). *Training* is the cells that train the report's models "
           "or load them from `artifacts/` when an earlier run made them; *analysis* is everything else.", "",
           "| Report | Training | Analysis | Total |", "|---|--:|--:|--:|"]
    for r in df.itertuples():
        out.append(f"| {{doc}}`{r.title} <executed/{r.notebook}>` | {minutes(r.training_s)} | "
                   f"{minutes(r.analysis_s)} | {minutes(r.total_s)} |")
    out.append(f"| **All notebooks** | **{minutes(df.training_s.sum())}** | **{minutes(df.analysis_s.sum())}** | "
               f"**{minutes(df.total_s.sum())}** |")
    return "\n".join(out) + "\n"


def write(df: pd.DataFrame, folder: Path) -> tuple[Path, Path]:
    """timings.csv and timings.md in folder, each written whole (temporary file, then rename)."""
    paths = folder / "timings.csv", folder / "timings.md"
    for path, text in zip(paths, (df.to_csv(index=False), markdown_table(df))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the executed notebooks (book/executed)")
    ap.add_argument("--write", action="store_true", help="also write timings.csv and timings.md into folder")
    args = ap.parse_args()
    try:
        df = timings(args.folder)
    except ValueError as err:
        sys.exit(str(err))
    if args.write:
        write(df, args.folder)
    print(f"\nWall time per notebook, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC "
          f"(training = cells tagged '{TAG}'; {args.folder / 'timings.csv'}):\n")
    print(text_table(df))


if __name__ == "__main__":
    main()
