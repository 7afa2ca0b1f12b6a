"""Fail if the book would silently drop a report: a toc page with no file, or a notebook missing from the toc.

Usage: python scripts/check_toc.py [BOOK_DIR]   (default: book; reports are BOOK_DIR/../notebooks/NN_*.py)

Jupyter Book only warns about a toc entry whose file is missing, and with
`only_build_toc_files` it leaves out any page that is not in the toc.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

SUFFIXES = (".md", ".ipynb", ".rst")


def toc_files(toc: dict | list) -> list[str]:
    """Every `root`/`file` entry of a jb-book toc, in order."""
    found: list[str] = []
    if isinstance(toc, dict):
        for key, value in toc.items():
            if key in ("root", "file") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(toc_files(value))
    elif isinstance(toc, list):
        for item in toc:
            found.extend(toc_files(item))
    return found


def problems(book: Path) -> list[str]:
    """Toc pages with no source file, and reports (../notebooks/NN_*.py) not listed as executed/NN_*."""
    pages = toc_files(yaml.safe_load((book / "_toc.yml").read_text()))
    missing = [p for p in pages if not any((book / (p + s)).exists() for s in SUFFIXES) and not (book / p).exists()]
    reports = sorted(p.stem for p in (book.parent / "notebooks").glob("[0-9][0-9]_*.py"))
    unlisted = [r for r in reports if f"executed/{r}" not in pages]
    return ([f"listed in {book}/_toc.yml but not on disk: {p}" for p in missing]
            + [f"not in {book}/_toc.yml (add `- file: executed/{r}`): notebooks/{r}.py" for r in unlisted])


def main() -> None:
    book = Path(sys.argv[1] if len(sys.argv) > 1 else "book")
    found = problems(book)
    if found:
        sys.exit("\n".join(found) + "\nExecuted notebooks are written by `make book` (papermill): "
                 "check that it ran them all.")
    print(f"{book}/_toc.yml: every page is present and every report is listed")


if __name__ == "__main__":
    main()
