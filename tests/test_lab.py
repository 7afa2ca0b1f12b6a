"""`make lab`'s server: JupyterLab starts headless on notebooks/, lists the reports and opens a .py as a notebook."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_jupyterlab_serves_the_notebooks_and_opens_paired_py_files(tmp_path):
    port, token = _free_port(), "test-token"
    jupyter = Path(sys.executable).parent / "jupyter"
    cmd = [str(jupyter), "lab", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
           f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False"] + (
        ["--allow-root"] if os.geteuid() == 0 else [])
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    server = subprocess.Popen(cmd, cwd=REPO / "notebooks", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        listing, deadline = None, time.monotonic() + 90
        while listing is None and time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                listing = _get(f"http://127.0.0.1:{port}/api/contents?token={token}")
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 90 s"
        names = {item["name"] for item in listing["content"]}
        reports = {p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")}
        assert reports and reports <= names
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        first = sorted(reports)[0].replace(".ipynb", ".py")
        nb = _get(f"http://127.0.0.1:{port}/api/contents/{first}?type=notebook&content=1&token={token}")
        assert nb["type"] == "notebook" and nb["content"]["cells"]  # jupytext opens the .py as a notebook
    finally:
        server.terminate()
        server.wait(timeout=30)
