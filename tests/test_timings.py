"""scripts/timings.py: the book's time per notebook, split into training and analysis, from papermill's cell timings."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import timings  # noqa: E402


def _executed(path: Path, durations: list[tuple[float, bool]], total: float | None, preset: str = "cpu") -> Path:
    """A notebook as papermill leaves it: per-cell durations (some cells tagged training) and a total."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem[:2]}. A report: its question")]
    for i, (d, train) in enumerate(durations):
        c = nbformat.v4.new_code_cell(f"x = {i}")
        c.metadata["papermill"] = {"duration": d, "status": "completed"}
        if train:
            c.metadata["tags"] = ["training", "hide-input"]
        nb.cells.append(c)
    if total is not None:
        nb.metadata["papermill"] = {"duration": total, "parameters": {"preset": preset},
                                    "start_time": "2026-12-02T01:00:00.000000"}
    nbformat.write(nb, path)
    return path


def test_training_is_the_tagged_cells_and_analysis_the_rest(tmp_path: Path) -> None:
    _executed(tmp_path / "01_a.ipynb", [(2.0, True), (4.0, False), (1.25, True)], total=10.0)
    _executed(tmp_path / "02_b.ipynb", [(30.0, False)], total=31.0)
    _executed(tmp_path / "findings.ipynb", [(3.0, False)], total=5.0)
    df = timings.timings(tmp_path)
    assert df.notebook.tolist() == ["01_a", "02_b", "findings"]  # reports in order, the findings page last
    assert df.training_s.tolist() == [3.25, 0.0, 0.0]
    assert df.analysis_s.tolist() == [6.75, 31.0, 5.0]  # total minus training: the kernel's start counts as analysis
    assert df.training_cells.tolist() == [2, 0, 0]
    text = timings.text_table(df)
    assert "0:46" in text.splitlines()[-1]  # 10 + 31 + 5 s in all
    md = timings.markdown_table(df)
    assert "| {doc}`01. A report <executed/01_a>` | 0:03 | 0:07 | 0:10 |" in md  # the title up to its colon
    csv, page = timings.write(df, tmp_path)
    assert csv.read_text().splitlines()[0] == ",".join(timings.COLUMNS) and page.read_text() == md


def test_a_notebook_not_run_by_papermill_is_named(tmp_path: Path) -> None:
    _executed(tmp_path / "01_a.ipynb", [(1.0, True)], total=None)
    with pytest.raises(ValueError, match="01_a.ipynb: no papermill timing"):
        timings.timings(tmp_path)
    with pytest.raises(ValueError, match="no executed notebooks"):
        timings.timings(tmp_path / "empty")
