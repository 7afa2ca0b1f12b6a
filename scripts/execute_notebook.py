"""Execute one notebook with papermill for the book; a failed run is kept aside as NAME.failed.ipynb.

Usage: python scripts/execute_notebook.py SRC.ipynb DEST.ipynb [-p NAME VALUE]... [--cwd DIR]

VALUE is read as YAML, so `-p d_model 768` passes an int and `-p preset gpu` a string, as
papermill's own `-p` does. The kernel is `python3` from the running interpreter's environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import papermill as pm
import yaml


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
