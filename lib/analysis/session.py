"""The notebook preamble in one call: device, findings ledger, plot style, quiet TransformerLens warnings."""

from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass

import torch

from lib.analysis import findings, plotting


@dataclass(frozen=True)
class Session:
    """What a report notebook runs with."""

    notebook: str
    preset: str
    device: str
    ledger: findings.Ledger


def _assigned(source: str) -> set[str]:
    """Names assigned at the top level of a cell's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}


def unknown_parameters(history: list[str]) -> tuple[list[str], list[str]]:
    """(names papermill injected that the notebook's parameters cell does not define, the names it defines), from
    the kernel's cell history: papermill runs its "# Parameters" cell right after the tagged parameters cell."""
    injected = [i for i, src in enumerate(history) if i > 0 and src.startswith("# Parameters\n")]
    if not injected:
        return [], []
    declared, given = _assigned(history[injected[-1] - 1]), _assigned(history[injected[-1]])
    return sorted(given - declared), sorted(declared)


def check_parameters() -> None:
    """Fail (naming the names) when papermill injected a parameter this notebook does not have: papermill itself
    only warns, and a typo (-p d_modle 64) would silently run the default."""
    try:
        from IPython import get_ipython
    except ImportError:  # not in a kernel
        return
    shell = get_ipython()
    if shell is None:
        return
    unknown, declared = unknown_parameters(list(shell.user_ns.get("In", [])))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}: this notebook's parameters are {declared}")


GPU_ON_CPU = "LIB_ALLOW_GPU_PRESET_ON_CPU"


def check_device(preset: str, cuda: bool) -> None:
    """Refuse the gpu preset without CUDA (unless $LIB_ALLOW_GPU_PRESET_ON_CPU=1): on a CPU it would train
    report-scale models for hours."""
    if preset == "gpu" and not cuda and os.environ.get(GPU_ON_CPU) != "1":
        raise RuntimeError(
            "preset='gpu' needs a CUDA GPU: it trains report-scale models (d_model 768, the 50,257-token GPT-2 "
            "vocabulary, bf16), which on a laptop CPU run at a few hundred tokens per second, hours per report. "
            f"Use preset 'cpu' (or 'smoke'), or set {GPU_ON_CPU}=1 to run it here anyway.")


def start(notebook: str, preset: str, device: str | None = None) -> Session:
    """Start a report: check papermill's parameters against the notebook's, a fresh findings ledger for (notebook,
    preset), the book's plot style, TransformerLens 3.9's HookedTransformer deprecation notice silenced, and the
    device (CUDA when available, unless given)."""
    check_parameters()
    check_device(preset, torch.cuda.is_available() or str(device).startswith("cuda"))
    warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
    plotting.set_style()
    ledger = findings.start(notebook, preset)
    return Session(notebook, preset, device or ("cuda" if torch.cuda.is_available() else "cpu"), ledger)
