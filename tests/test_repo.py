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


# ---------------------------------------------------------------- the shape of lib


def _lib_imports() -> dict[str, list[tuple[str, str, bool]]]:
    """module -> [(imported module, imported name or '', inside a function?)] for every import of lib in lib/."""
    import ast

    out = {}
    for path in sorted((REPO / "lib").rglob("*.py")):
        mod = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        tree, found = ast.parse(path.read_text()), []
        funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inner = {id(x) for f in funcs for x in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib":
                for alias in node.names:
                    found.append((node.module, alias.name, id(node) in inner))
            elif isinstance(node, ast.Import):
                found += [(a.name, "", id(node) in inner) for a in node.names if a.name.split(".")[0] == "lib"]
        out[mod] = found
    return out


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "lib"


def test_imports_flow_one_way() -> None:
    """core -> nothing of analysis or reports; analysis -> nothing of reports; a report -> no other report."""
    rank = {"core": 0, "analysis": 1, "reports": 2}
    bad = []
    for mod, imports in _lib_imports().items():
        for target, name, _ in imports:
            full = f"{target}.{name}" if name and target in ("lib", "lib.core", "lib.analysis", "lib.reports") else target
            src, dst = _layer(mod), _layer(full)
            if src in rank and dst in rank and rank[dst] > rank[src]:
                bad.append(f"{mod} imports {full}")
            if src == dst == "reports" and full.split(".")[2] != mod.split(".")[2]:
                bad.append(f"{mod} imports another report: {full}")
    assert not bad, "imports against the flow notebooks -> reports -> analysis -> core:\n" + "\n".join(bad)


def test_no_hidden_imports_private_names_or_imports_by_string() -> None:
    """No lib import inside a function (it hides cycles), no private name imported across modules, no importlib."""
    bad = []
    for mod, imports in _lib_imports().items():
        for target, name, in_function in imports:
            if in_function and mod != "lib.submodels":  # the documented `python -m lib.submodels` entry point
                bad.append(f"{mod}: `from {target} import {name}` inside a function")
            if name.startswith("_"):
                bad.append(f"{mod}: imports the private name {target}.{name}")
    for path in (REPO / "lib").rglob("*.py"):
        text = path.read_text()
        if "importlib" in text or "__import__(" in text:
            bad.append(f"{path.relative_to(REPO)} imports modules by string")
    assert not bad, "\n".join(bad)


def test_lib_has_no_import_cycle() -> None:
    """The module graph of lib (imports of modules and of names from them) has no cycle."""
    mods = _lib_imports()

    def resolve(target: str, name: str) -> str:
        return f"{target}.{name}" if f"{target}.{name}" in mods else target

    graph = {m: {resolve(t, n) for t, n, _ in imps if resolve(t, n) in mods and resolve(t, n) != m}
             for m, imps in mods.items()}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for nxt in sorted(graph[m]):
            if state.get(nxt) == 1:
                return path + [m, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [m])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_every_report_has_its_package() -> None:
    """notebooks/NN_<slug>.py has lib/reports/<slug>/ with params.py (resolve) and plots.py."""
    import importlib

    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        slug = nb.stem[3:]
        params = importlib.import_module(f"lib.reports.{slug}.params")
        assert callable(params.resolve) and set(params.PRESETS) == {"smoke", "cpu", "gpu"}, slug
        importlib.import_module(f"lib.reports.{slug}.plots")
