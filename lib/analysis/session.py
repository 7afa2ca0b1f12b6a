"""The notebook preamble in one call: device, findings ledger, plot style, quiet TransformerLens warnings; and what a
report run on a model given by path (its `model_path` parameter) needs: the name its ledger is kept under, a
one-row description of the model, and a clean stop where the model lacks what the report studies."""

from __future__ import annotations

import ast
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from lib.analysis import findings, plotting, tables
from lib.core import memory, pretrained


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


def start(notebook: str, preset: str, device: str | None = None,
          model_path: str | os.PathLike | None = None) -> Session:
    """Start a report: check papermill's parameters against the notebook's, a fresh findings ledger for (notebook,
    preset), the book's plot style and table display options, TransformerLens 3.9's HookedTransformer deprecation notice silenced, freed
    memory kept for reuse by the large batched passes (lib.core.memory.keep_freed_memory), and the
    device (CUDA when available, unless given). With `model_path` (the report runs on that model instead of ours)
    the ledger is kept apart under the model's name (`model_label`), out of the book's findings page."""
    check_parameters()
    check_device(preset, torch.cuda.is_available() or str(device).startswith("cuda"))
    memory.keep_freed_memory()
    warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
    plotting.set_style()
    tables.set_display_options()
    ledger = findings.start(notebook, preset, model=None if model_path is None else model_label(model_path))
    return Session(notebook, preset, device or ("cuda" if torch.cuda.is_available() else "cpu"), ledger)


# ------------------------------------------------------------------------------------- a model given by path


def model_label(model_path: str | os.PathLike) -> str:
    """The name a run on a model given by path keeps its findings under: the folder's name, or a Hugging Face cache
    name with '/' as '--' ('EleutherAI/pythia-70m' -> 'EleutherAI--pythia-70m')."""
    p = Path(model_path).expanduser()
    name = p.resolve().name if p.is_dir() else str(model_path).strip("/").replace("/", "--")
    return name.lstrip(".") or "model"


def model_card(model, name: str | None = None) -> pd.DataFrame:
    """One row describing a HookedTransformer: its name (default: TransformerLens's model_name), its architecture
    (`pretrained.architecture`) and sizes."""
    c = model.cfg
    return pd.DataFrame([{"model": name or c.model_name, **pretrained.architecture(model).row(), "layers": c.n_layers,
                          "d_model": c.d_model, "heads": c.n_heads, "d_mlp": None if c.attn_only else c.d_mlp,
                          "n_ctx": c.n_ctx, "vocabulary": c.d_vocab}])


class _NoOp(ast.NodeTransformer):
    """Turns a cell into an empty one (see `skip_rest`)."""

    def visit_Module(self, node: ast.Module) -> ast.Module:
        return ast.Module(body=[], type_ignores=[])


def card_or_skip(model, name: str, method: str, **needs) -> None:
    """A loaded model's card, then `pretrained.require(model, method, **needs)`; where it lacks what the report
    studies, the reason is shown and the rest of the report skipped (`skip_rest`)."""
    from IPython.display import Markdown, display

    display(model_card(model, name))
    try:
        pretrained.require(model, method, **needs)
    except pretrained.ArchitectureError as e:
        display(Markdown(f"**This report cannot run on {name}:** {e}. The rest is skipped."))
        skip_rest(str(e))


def skip_rest(reason: str) -> None:
    """Stop a report cleanly where it cannot run (e.g. a loaded model lacks what it studies): every later cell of
    this kernel runs as an empty cell, so papermill finishes without an error and the notebook shows only the
    reason, which the caller displays first. Outside a kernel there are no later cells: RuntimeError(reason)."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise RuntimeError(reason)
    shell.ast_transformers.append(_NoOp())
