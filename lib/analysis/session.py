"""The notebook preamble in one call: device, findings ledger, plot style, quiet TransformerLens warnings."""

from __future__ import annotations

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


def start(notebook: str, preset: str, device: str | None = None) -> Session:
    """Start a report: a fresh findings ledger for (notebook, preset), the book's plot style, TransformerLens 3.9's
    HookedTransformer deprecation notice silenced, and the device (CUDA when available, unless given)."""
    warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
    plotting.set_style()
    ledger = findings.start(notebook, preset)
    return Session(notebook, preset, device or ("cuda" if torch.cuda.is_available() else "cpu"), ledger)
