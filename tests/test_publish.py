"""Publishing: the CI workflow is valid and runs only Makefile targets, `make publish` pushes with a pinned
ghp-import (dry run: in a throwaway clone), and every executed page says which commit and preset produced it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
sys.path.insert(0, str(REPO / "scripts"))
import execute_notebook  # noqa: E402


def _targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)}


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def test_workflow_triggers_and_jobs(workflow):
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(on) == {"push", "pull_request"}
    jobs = workflow["jobs"]
    assert [s["run"] for s in jobs["test"]["steps"] if "run" in s] == ["make test"]
    book = jobs["book"]
    assert book["needs"] == "test" and "refs/heads/main" in book["if"] and "push" in book["if"]
    assert any(s.get("run") == "make book PRESET=cpu" for s in book["steps"])
    cache = next(s for s in book["steps"] if s.get("uses", "").startswith("actions/cache@"))
    assert cache["with"]["path"] == "artifacts" and "hashFiles('lib/**', 'requirements.txt')" in cache["with"]["key"]
    uploads = {s["with"]["path"] for s in book["steps"] if "upload" in s.get("uses", "")}
    assert {"book/executed", "book/_build/html"} <= uploads
    deploy = jobs["deploy"]
    assert deploy["needs"] == "book" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


def test_every_run_step_is_an_existing_make_target_and_every_action_is_pinned(workflow):
    targets = _targets()
    assert {"test", "book", "publish"} <= targets
    for name, job in workflow["jobs"].items():
        for step in job["steps"]:
            if "run" in step:
                words = step["run"].split()
                assert words[0] == "make" and "\n" not in step["run"].strip(), (name, step["run"])
                goals = [w for w in words[1:] if "=" not in w]
                assert goals and set(goals) <= targets, f"job {name}: {step['run']!r} names no Makefile target"
            if "uses" in step:
                ref = step["uses"].split("@")[1]
                assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", ref), f"{step['uses']}: pin an exact version"


def test_ci_entry_point_is_unchanged():
    lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-1] == "make test"


def test_ghp_import_is_pinned_and_publish_uses_it():
    pins = (REPO / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"ghp-import==\d+\.\d+\.\d+", p) for p in pins)
    dry = subprocess.run(["make", "-n", "publish", "DRY_RUN=1"], cwd=REPO, capture_output=True, text=True)
    assert "scripts/publish.py --dry-run" in dry.stdout


def test_publish_dry_run_commits_in_a_clone_and_pushes_nothing(tmp_path):
    html = tmp_path / "html"
    (html / "_static").mkdir(parents=True)
    (html / "index.html").write_text("<html><body>book</body></html>")
    (html / "_static" / "style.css").write_text("body {}")
    branches = subprocess.run(["git", "branch", "--list"], cwd=REPO, capture_output=True, text=True).stdout
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "publish.py"), "--html", str(html), "--dry-run"],
                       cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Dry run: 3 files would be pushed to origin/gh-pages" in r.stdout  # index, css and ghp-import's .nojekyll
    assert "nothing was pushed" in r.stdout
    after = subprocess.run(["git", "branch", "--list"], cwd=REPO, capture_output=True, text=True).stdout
    assert after == branches  # this checkout's branches did not change
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "publish.py"), "--html", str(tmp_path / "no"),
                              "--dry-run"], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode != 0 and "make book" in missing.stderr


def _executed(tmp_path: Path, duration: float, params: dict) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 3. A report\n\nIntro."),
                                         nbformat.v4.new_code_cell("x = 1")])
    nb.metadata["papermill"] = {"start_time": "2026-12-01T10:00:00+00:00", "end_time": "2026-12-01T10:05:07+00:00",
                                "duration": duration, "parameters": params}
    dest = tmp_path / "03.ipynb"
    nbformat.write(nb, dest)
    return dest


def test_each_page_says_what_produced_its_numbers(tmp_path):
    dest = _executed(tmp_path, 307.2, {"preset": "cpu"})
    execute_notebook.stamp(dest, "abc1234")
    execute_notebook.stamp(dest, "def5678")  # a rerun replaces the cell instead of adding another
    nb = nbformat.read(dest, as_version=4)
    stamps = [c for c in nb.cells if execute_notebook.STAMP_TAG in c.metadata.get("tags", [])]
    assert len(stamps) == 1 and nb.cells[1] is stamps[0] and nb.cells[0].source.startswith("# 3.")
    assert stamps[0].source == ("*Executed 2026-12-01 10:05 UTC at commit `def5678` with preset `cpu` in 5 min 07 s "
                                "(papermill; the numbers on this page come from that run).*")
    other = _executed(tmp_path, 12.0, {"preset": "smoke", "model_path": "/m"})
    execute_notebook.stamp(other, "abc1234")
    assert "preset `smoke` and parameters `model_path='/m'` in 12 s" in nbformat.read(other, as_version=4).cells[1].source


def test_commit_names_uncommitted_changes(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("a")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}
    import os

    subprocess.run(["git", "add", "f"], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "x"], cwd=tmp_path, check=True, env={**os.environ, **env})
    sha = execute_notebook.commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{7,}", sha)
    (tmp_path / "f").write_text("b")
    assert execute_notebook.commit(tmp_path) == sha + " + uncommitted changes"
    assert execute_notebook.commit(tmp_path / "nowhere") == "unknown"


def _figure_output(title: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": title})


def test_figures_get_anchors_and_code_is_collapsed():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import x"), nbformat.v4.new_code_cell("p = 1"),
                nbformat.v4.new_code_cell("fig"), nbformat.v4.new_code_cell("again"),
                nbformat.v4.new_code_cell("shown")]
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    nb.cells[2].outputs = [_figure_output("<Figure 'Fig. 3b: loss vs k' 620x400>"),
                           _figure_output("<Figure 'no number' 620x400>")]
    nb.cells[3].outputs = [_figure_output("<Figure 'Fig. 3b: the same number again' 620x400>"),
                           _figure_output('<Figure "Fig. 4: a topic\'s title" 620x400>')]  # repr's other quotes
    nb.cells[4].metadata["tags"] = ["show-input"]
    assert execute_notebook.anchor_figures(nb) == ["fig-3b", "fig-4"]
    assert execute_notebook.anchor_figures(nb) == ["fig-3b", "fig-4"]  # a rerun replaces, never duplicates
    first = nb.cells[2].outputs
    assert len(first) == 3 and first[0].data["text/html"] == '<span id="fig-3b" class="figure-anchor"></span>'
    assert len(nb.cells[3].outputs) == 3 and 'id="fig-4"' in nb.cells[3].outputs[1].data["text/html"]
    nb.cells.append(nbformat.v4.new_code_cell("preset = 'cpu'", metadata={"tags": ["parameters"]}))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="done")]
    execute_notebook.collapse_code(nb)
    execute_notebook.collapse_code(nb)
    assert [c.metadata.get("tags") for c in nb.cells] == [
        ["hide-input"], ["injected-parameters", "remove-cell"], ["hide-input"], ["hide-input"], ["show-input"],
        ["parameters", "hide-input"]]
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("def f(): pass")])  # no output: plumbing
    execute_notebook.collapse_code(bare)
    assert bare.cells[0].metadata["tags"] == ["remove-cell"]


def test_figure_repr_names_the_title():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.analysis import plotting

    plotting.set_style()
    fig, ax = plt.subplots(figsize=(4, 2))
    ax.set_title("Fig. 2: a\nwrapped title")
    assert execute_notebook.FIGURE_TITLE.match(repr(fig)).group(1) == "2"
    assert repr(fig) == "<Figure 'Fig. 2: a wrapped title' 440x220>"
    plt.close(fig)
