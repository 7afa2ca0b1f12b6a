"""Notebook checks: pairs in sync and stripped; a smoke run of every report, then the findings
notebook, the findings ledger and a smoke build of the book; then the reports that take a model
(`model_path`) run on a tiny Hugging Face GPT-2.

The smoke tests run in file order, and the reports in numeric order. Every run shares one
session-scoped ARTIFACTS_DIR, so later reports reuse what earlier ones trained, as in
`make book`. `Smoke.run` executes each notebook at most once per session. A test that needs a
notebook that has not run yet (under `-k`) runs it first. A test that needs a notebook whose
run already failed is skipped and names the failed test. Deselect the slow part with
`pytest -k "not smoke"`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

from lib.analysis import findings

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import execute_notebook  # noqa: E402  (the post-processing `make book` applies: stamp, figure anchors, collapsed code)
import timings  # noqa: E402  (the timings table `make book` writes for the intro page)

NOTEBOOK_DIR = REPO / "notebooks"
BOOK = REPO / "book"
REPORTS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
FINDINGS_PY, FINDINGS_IPYNB = BOOK / "findings.py", BOOK / "findings.ipynb"
PAIRED = sorted(NOTEBOOK_DIR.glob("*.py")) + ([FINDINGS_PY] if FINDINGS_PY.exists() else [])
PRESET = "smoke"
CELL_TIMEOUT = 1800  # seconds per cell; a hung kernel fails instead of stalling CI


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO).with_suffix("")) for p in paths]


def _code_cells_with_tag(nb: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and tag in c.metadata.get("tags", [])]


# ---------------------------------------------------------------- (a) pairs


@pytest.mark.parametrize("py", PAIRED, ids=_ids(PAIRED))
def test_pair_in_sync(py: Path) -> None:
    """The committed .ipynb has the same cells (types and sources) as its .py source of truth."""
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.relative_to(REPO)} is missing: run `make sync`"
    text = [(c.cell_type, c.source.rstrip()) for c in jupytext.read(py).cells]
    paired = [(c.cell_type, c.source.rstrip()) for c in jupytext.read(ipynb).cells]
    for i, (a, b) in enumerate(zip(text, paired)):
        if a != b:
            diff = "\n".join(difflib.unified_diff(b[1].splitlines(), a[1].splitlines(), ipynb.name, py.name,
                                                 lineterm="", n=1))
            pytest.fail(f"cell {i} ({a[0]} in the .py, {b[0]} in the .ipynb) differs: run `make sync`\n{diff}",
                        pytrace=False)
    assert len(text) == len(paired), f"{py.name} has {len(text)} cells, {ipynb.name} {len(paired)}: run `make sync`"


@pytest.mark.parametrize("py", PAIRED, ids=_ids(PAIRED))
def test_ipynb_stripped_with_parameters(py: Path) -> None:
    """The committed .ipynb carries no outputs and has a `parameters`-tagged code cell for papermill."""
    ipynb = py.with_suffix(".ipynb")
    if not ipynb.exists():
        pytest.skip(f"{ipynb.name} is missing (reported by test_pair_in_sync)")
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{ipynb.name} has outputs in cells {dirty}: run `make sync` (it strips them)"
    assert _code_cells_with_tag(nb, "parameters"), f"{ipynb.name} has no code cell tagged `parameters`"


# ---------------------------------------------------------------- smoke runs


@contextlib.contextmanager
def _environ(**values: str):
    """Set environment variables for the duration (papermill's kernel inherits os.environ)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Smoke:
    """Executes notebooks once per session into one tmp dir, sharing one ARTIFACTS_DIR."""

    def __init__(self, root: Path) -> None:
        self.root, self.artifacts, self.executed = root, root / "artifacts", root / "executed"
        self.results: dict[str, Path | BaseException] = {}

    def env(self):
        """The environment of a smoke run (also set while reading the findings ledger); every figure a report renders
        is checked for readability at the book's column width (lib.analysis.plotting.check_readable)."""
        jupyter_path = str(Path(sys.prefix) / "share" / "jupyter")  # this venv's python3 kernel first
        extra = os.environ.get("JUPYTER_PATH")
        return _environ(ARTIFACTS_DIR=str(self.artifacts), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                        PYDEVD_DISABLE_FILE_VALIDATION="1",
                        LIB_FIGURE_CHECK="error",  # a figure whose text the book would show below 9 pt fails the run
                        JUPYTER_PATH=os.pathsep.join([jupyter_path] + ([extra] if extra else [])))

    def run(self, source: Path, cwd: Path, parameters: dict | None = None, label: str | None = None) -> Path:
        """Execute source (.py converted with jupytext, or .ipynb) with preset smoke and `parameters`; the executed
        path. `label` names the run (default: the notebook's name)."""
        name = label or source.stem
        if name in self.results:
            result = self.results[name]
            if isinstance(result, BaseException):
                pytest.skip(f"the smoke run of {name} failed earlier (see its own test): {type(result).__name__}")
            return result
        nb = jupytext.read(source)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        src, out = self.root / "input" / f"{name}.ipynb", self.executed / f"{name}.ipynb"
        src.parent.mkdir(parents=True, exist_ok=True)
        self.executed.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, src)
        mpl = os.environ.pop("MPLBACKEND", None)  # a non-inline backend drops the figures
        try:
            with self.env():
                pm.execute_notebook(str(src), str(out), parameters={"preset": PRESET, **(parameters or {})},
                                    kernel_name="python3",
                                    language="python", cwd=str(cwd), execution_timeout=CELL_TIMEOUT,
                                    progress_bar=False)
        except BaseException as err:
            self.results[name] = err
            raise
        finally:
            if mpl is not None:
                os.environ["MPLBACKEND"] = mpl
        self.results[name] = out
        return out

    def run_reports(self) -> list[Path]:
        """Every report, in numeric order."""
        return [self.run(py, NOTEBOOK_DIR) for py in REPORTS]

    def run_findings(self) -> Path:
        """The findings notebook, after every report."""
        self.run_reports()
        return self.run(FINDINGS_PY if FINDINGS_PY.exists() else FINDINGS_IPYNB, BOOK)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    """The session's smoke runs: one tmp dir, one ARTIFACTS_DIR shared by every notebook."""
    return Smoke(tmp_path_factory.mktemp("smoke"))


def _errors(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "error"]


_WARNING = re.compile(r"\b\w*Warning\b|Traceback \(most recent call last\)")


def _warnings(path: Path) -> list[str]:
    """Stream outputs (stdout or stderr) of an executed notebook that carry a warning or a traceback."""
    nb = nbformat.read(path, as_version=4)
    return [f"cell {i}: {o.get('text', '')[:300]!r}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") == "stream" and _WARNING.search(o.get("text", ""))]


def test_warnings_finds_warnings_and_tracebacks(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="a.py:3: RuntimeWarning: All-NaN\n"),
                           nbformat.v4.new_output("stream", name="stdout", text="no warnings here: 0 warned\n"),
                           nbformat.v4.new_output("stream", name="stderr", text="100%|####| 8/8 [00:02]\n")]
    nbformat.write(nb, tmp_path / "n.ipynb")
    assert len(_warnings(tmp_path / "n.ipynb")) == 1


# ---------------------------------------------------------------- (b) every report, in order


@pytest.mark.parametrize("py", REPORTS, ids=_ids(REPORTS))
def test_smoke_notebook(smoke: Smoke, py: Path) -> None:
    """The report runs cleanly end to end with preset smoke (papermill, kernel python3)."""
    out = smoke.run(py, NOTEBOOK_DIR)
    assert not _errors(out), f"{py.name} produced errors: {_errors(out)}"
    assert not _warnings(out), f"{py.name} printed warnings or tracebacks: {_warnings(out)}"
    nb = nbformat.read(out, as_version=4)
    assert _code_cells_with_tag(nb, "injected-parameters"), "papermill did not inject the parameters"


# ---------------------------------------------------------------- (c) the findings notebook


def test_smoke_findings_notebook(smoke: Smoke) -> None:
    """The findings notebook runs cleanly after every report."""
    if not (FINDINGS_PY.exists() or FINDINGS_IPYNB.exists()):
        pytest.skip("book/findings.ipynb does not exist yet")
    out = smoke.run_findings()
    assert not _errors(out), f"findings notebook produced errors: {_errors(out)}"


# ---------------------------------------------------------------- (e) the findings ledger


def _ledger_key(value: object) -> str:
    """A ledger's notebook value as a bare name ('notebooks/01_x.ipynb' -> '01_x')."""
    name = Path(str(value)).name
    return name[: -len(Path(name).suffix)] if Path(name).suffix in (".ipynb", ".py") else name


def test_smoke_findings_ledger(smoke: Smoke) -> None:
    """Every report recorded at least one finding in the smoke run, and every finding names a control."""
    if not REPORTS:
        pytest.skip("no notebooks/NN_*.py yet")
    smoke.run_reports()
    with smoke.env():
        ledger = findings.load_all(PRESET)
    assert {"notebook", "name", "control"} <= set(ledger.columns), f"ledger columns: {list(ledger.columns)}"
    keys = ledger["notebook"].map(_ledger_key)
    silent = [py.stem for py in REPORTS if not (keys == py.stem).any()]
    assert not silent, (f"reports with no finding in {smoke.artifacts / 'findings'}: {silent} "
                        "(call lib.analysis.findings.start(...) and record(...) in each report)")
    controls = ledger["control"]
    blank = ledger[controls.isna() | (controls.astype(str).str.strip() == "")]
    assert blank.empty, f"findings without a control: {blank[['notebook', 'name']].to_dict('records')}"


# ---------------------------------------------------------------- (d) smoke build of the book


def _img_sources(html: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", html)


_REMOTE = re.compile(r"""<(?:script|img|iframe)\b[^>]*\bsrc=["']((?:https?:)?//[^"']+)|"""
                     r"""<link\b[^>]*\bhref=["']((?:https?:)?//[^"']+)""", re.I)


def _remote_refs(text: str) -> list[str]:
    """Scripts, images, frames and stylesheets a page loads from another host, except MathJax (math rendering)."""
    refs = [a or b for a, b in _REMOTE.findall(text)]
    return [r for r in refs if "mathjax" not in r.lower()]


_HREF = re.compile(r"""<a\b[^>]*\bhref=["']([^"']+)["']""", re.I)
_ID = re.compile(r"""\bid=["']([^"']+)["']""")


def _broken_links(page: Path, root: Path) -> list[str]:
    """The page's links to another page of the built book (or an anchor) that do not resolve: the file is missing,
    or it has no element with the link's #id. Links to other hosts, mailto: and javascript: are not checked."""
    bad, ids = [], {}
    for href in _HREF.findall(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I) or href.startswith("//"):
            continue
        target, _, anchor = href.partition("#")
        dest = (page.parent / target).resolve() if target else page
        if target and not dest.is_file():
            bad.append(href)
        elif anchor and dest.suffix == ".html":
            if dest not in ids:
                ids[dest] = set(_ID.findall(dest.read_text()))
            if anchor not in ids[dest]:
                bad.append(href)
    return bad


def test_broken_links_finds_missing_pages_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "b.html").write_text('<span id="fig-1"></span>')
    (tmp_path / "a.html").write_text('<a href="b.html#fig-1">ok</a><a href="b.html#fig-2">no anchor</a>'
                                     '<a href="c.ipynb">no page</a><a href="#top">no id here</a><a id="top2"></a>'
                                     '<a href="https://example.org/x">remote</a><a href="mailto:x@y">mail</a>')
    assert _broken_links(tmp_path / "a.html", tmp_path) == ["b.html#fig-2", "c.ipynb", "#top"]


def test_remote_refs_finds_cdn_loads_but_not_mathjax() -> None:
    page = ('<script src="https://unpkg.com/x.js"></script><script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/'
            'es5/tex-mml-chtml.js"></script><link rel="stylesheet" href="//fonts.example.org/a.css">'
            '<img src="_images/a.png"><a href="https://example.org">a link is not a load</a>')
    assert _remote_refs(page) == ["https://unpkg.com/x.js", "//fonts.example.org/a.css"]


def test_smoke_book_build(smoke: Smoke, tmp_path: Path) -> None:
    """jupyter-book builds a copy of book/ with the smoke-executed notebooks: a page each, figures, no CDN."""
    if not REPORTS:
        pytest.skip("no notebooks/NN_*.py yet: the toc's first report does not exist")
    executed = smoke.run_reports()
    has_findings = FINDINGS_PY.exists() or FINDINGS_IPYNB.exists()
    if has_findings:
        executed.append(smoke.run_findings())

    site = tmp_path / "site"
    book = site / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build", "executed", ".ipynb_checkpoints"))
    (site / "data").symlink_to(REPO / "data")  # data.md offers ../data/PROVENANCE.md for download
    (book / "executed").mkdir()
    for out in executed:
        execute_notebook.stamp(Path(shutil.copy(out, book / "executed" / out.name)), "smoke-test")
    if not has_findings:
        (book / "executed" / "findings.md").write_text("# Findings\n\nThe findings notebook is not written yet.\n")
    timings.write(timings.timings(book / "executed"), book / "executed")  # as `make book` does: the intro shows it

    check = subprocess.run([sys.executable, str(REPO / "scripts" / "check_toc.py"), str(book)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jb = Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run([str(jb), "build", str(book)], capture_output=True, text=True, cwd=site, timeout=900)
    assert build.returncode == 0, f"jupyter-book build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"

    html = book / "_build" / "html"
    assert (html / "index.html").exists(), "no index.html"
    intro = (html / "intro.html").read_text()
    assert "All notebooks" in intro, "the intro page has no timings table"
    table = intro[intro.index("Where the time goes"): intro.index("All notebooks")]
    for out in executed:  # the timings table on the intro page: a row per notebook, linked to its page
        assert re.search(rf'href="executed/{out.stem}.html[^"]*"[^>]*>(<[^>]+>)*\d+\. [^<]+<', table) or (
            out.stem == "findings" and 'href="executed/findings.html' in table), (
            f"the intro's timings table has no linked row for {out.stem}")
    for out in executed:
        page = html / "executed" / f"{out.stem}.html"
        assert page.exists(), f"no page for {out.stem} in the built book"
        text = page.read_text()
        assert "unpkg.com/circuitsvis" not in text, (
            f"{page.name} loads circuitsvis from a CDN: display HTML(obj.local_src) so the book renders offline")
    remote = {str(page.relative_to(html)): refs for page in html.rglob("*.html") if (refs := _remote_refs(page.read_text()))}
    assert not remote, f"pages that fetch from the network (only MathJax may): {remote}"
    broken = {str(page.relative_to(html)): bad for page in html.rglob("*.html")
              if "_static" not in page.parts and (bad := _broken_links(page, html))}
    assert not broken, f"internal links that do not resolve (file or #anchor missing): {broken}"
    if has_findings:
        ledger_page = (html / "executed" / "findings.html").read_text()
        for py in REPORTS:
            assert f'href="{py.stem}.html#fig-' in ledger_page or py.stem not in ledger_page, (
                f"the findings page links no figure of {py.stem}")
    for out in executed:
        text = (html / "executed" / f"{out.stem}.html").read_text()
        assert "Traceback (most recent call last)" not in text and not re.search(r"\b\w*Warning:", text), (
            f"{out.stem}.html shows a traceback or a warning")
    first = html / "executed" / f"{REPORTS[0].stem}.html"
    images = [s for s in _img_sources(first.read_text()) if s.startswith("data:image") or "_images/" in s]
    assert images, f"{first.name} has no embedded figure (<img> with a data: URI or an _images/ file)"
    for src in images:
        if not src.startswith("data:"):
            assert (first.parent / src).resolve().exists(), f"{first.name}: image {src} is missing"


# ---------------------------------------------------------------- (f) the reports on a model given by path

# report -> parameters that keep its smoke run on the tiny GPT-2 short: its 50,257-token vocabulary makes every keyword
# evaluation ~30x dearer than the smoke model's 300 tokens (each run measured < 60 s on 2 cores)
MODEL_PATH_RUNS = {
    "02_compression_infovae": {"seeds": [0]},
    "03_neuron_impairment": {"n_prompts": 4, "noise_seeds": [0, 1]},
    "04_neuron_shapley": {"layers": [1], "n_permutations": 2, "n_prompts": 2},
    "05_sparse_layers": {"seeds": [0]},
    "07_submodel_tool": {"n_prompts": 2, "n_random": 2},
}
MODEL_PATH_REPORTS = [py for py in REPORTS if py.stem in MODEL_PATH_RUNS]
TINY = "tiny-gpt2"  # the folder's name: what a model_path run is called in its outputs and its ledger


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Hugging Face GPT-2 saved with save_pretrained. Seed 1: the init control (the architecture
    initialised with seed 0) is then other weights than the model itself."""
    from tests.helpers import save_tiny_hf

    folder = tmp_path_factory.mktemp("model_path") / TINY
    save_tiny_hf("gpt2", folder, seed=1)
    return folder


def _output_text(path: Path) -> str:
    """Every text and Markdown output of an executed notebook, joined."""
    nb = nbformat.read(path, as_version=4)
    return "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("data", {}).get("text/markdown", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_model_path_reports_cover_the_reports_that_take_a_model() -> None:
    """Every report named in MODEL_PATH_RUNS exists (a renamed notebook would silently drop out of the test)."""
    assert sorted(py.stem for py in MODEL_PATH_REPORTS) == sorted(MODEL_PATH_RUNS), "a report is gone"


@pytest.mark.parametrize("py", MODEL_PATH_REPORTS, ids=_ids(MODEL_PATH_REPORTS))
def test_smoke_model_path(smoke: Smoke, tiny_gpt2: Path, py: Path) -> None:
    """The report runs cleanly at preset smoke on a model given by path, names it, and keeps its findings apart from
    our own models' (under findings/models/<name>/, which the book's findings page does not read)."""
    started = time.time()
    out = smoke.run(py, NOTEBOOK_DIR, {"model_path": str(tiny_gpt2), **MODEL_PATH_RUNS[py.stem]},
                    label=f"{py.stem}-model_path")
    assert not _errors(out), f"{py.name} on {TINY} produced errors: {_errors(out)}"
    assert TINY in _output_text(out), f"{py.name} does not show the loaded model's name {TINY!r}"
    with smoke.env():
        own, apart = findings.ledger_path(py.stem, PRESET), findings.ledger_path(py.stem, PRESET, TINY)
        assert apart.exists(), f"no findings ledger at {apart}"
        assert not own.exists() or own.stat().st_mtime < started, f"the run on {TINY} wrote our model's ledger {own}"
