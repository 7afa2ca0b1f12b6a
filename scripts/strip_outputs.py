"""Strip outputs, execution counts and widget state from notebooks in place (committed .ipynb carry none).

Usage: python scripts/strip_outputs.py NOTEBOOK.ipynb...

After stripping a notebook, its paired .py (if any) gets a fresh mtime, because jupytext
refuses to open a pair whose .ipynb is newer than its text file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat


def strip(nb: nbformat.NotebookNode) -> bool:
    """Remove outputs and run state from nb; True if anything changed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        changed |= bool(cell.outputs) or cell.execution_count is not None
        cell.outputs, cell.execution_count = [], None
        changed |= cell.metadata.pop("execution", None) is not None
    return changed


def main() -> None:
    for name in sys.argv[1:]:
        path = Path(name)
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.write(nb, path)
            if path.with_suffix(".py").exists():
                os.utime(path.with_suffix(".py"))
            print(f"stripped outputs: {path}")


if __name__ == "__main__":
    main()
