"""Repository invariants: exact pins, the CI entry point, every report in the book, the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")


def _requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _toc_files(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("root", "file")] + [
            f for k, v in node.items() if k not in ("root", "file") for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for item in node for f in _toc_files(item)]
    return []


def test_requirements_pinned_exactly() -> None:
    """Every requirement is pinned with `==` (no ranges, no bare names, no URLs)."""
    loose = [r for r in _requirements() if not PIN.match(r)]
    assert not loose, f"requirements.txt lines not pinned with ==: {loose}"


def test_torch_pinned_first() -> None:
    """torch is pinned to 2.13.0 (the CPU build that installs here) and listed first."""
    reqs = _requirements()
    assert reqs and reqs[0] == "torch==2.13.0", f"first requirement is {reqs[:1]}, expected torch==2.13.0"
    assert sum(r.lower().startswith("torch==") for r in reqs) == 1


def test_ci_runs_make_test() -> None:
    """.ci/run is a strict bash script that runs `make test`."""
    text = (REPO / ".ci" / "run").read_text()
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    assert "set -euo pipefail" in text
    assert re.search(r"^make test\s*$", text, re.M), ".ci/run must call `make test`"


def test_every_notebook_in_toc() -> None:
    """Each notebooks/NN_*.py appears in book/_toc.yml as executed/NN_*, in numeric order."""
    toc = _toc_files(yaml.safe_load((REPO / "book" / "_toc.yml").read_text()))
    notebooks = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    missing = [nb for nb in notebooks if f"executed/{nb}" not in toc]
    assert not missing, f"add to book/_toc.yml: {[f'executed/{nb}' for nb in missing]}"
    listed = [f.removeprefix("executed/") for f in toc if f.removeprefix("executed/") in notebooks]
    assert listed == notebooks, f"reports out of numeric order in book/_toc.yml: {listed}"
    for page in ("intro", "executed/findings", "data", "references"):
        assert page in toc, f"book/_toc.yml lacks {page}"


def test_static_book_pages_exist() -> None:
    """Every toc page outside executed/ (written by `make book`) exists in book/."""
    toc = _toc_files(yaml.safe_load((REPO / "book" / "_toc.yml").read_text()))
    static = [f for f in toc if not f.startswith("executed/")]
    missing = [f for f in static if not any((REPO / "book" / f"{f}{s}").exists() for s in (".md", ".ipynb"))]
    assert not missing, f"toc pages missing from book/: {missing}"


@pytest.mark.parametrize("command", ["make book", "make test"])
def test_readme_mentions(command: str) -> None:
    """The README gives the two set-up commands."""
    assert command in (REPO / "README.md").read_text()


def test_makefile_offline() -> None:
    """The Makefile keeps Hugging Face libraries offline for every recipe."""
    text = (REPO / "Makefile").read_text()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert re.search(rf"^export {var} :?= ?1$", text, re.M), f"Makefile must export {var}=1"
