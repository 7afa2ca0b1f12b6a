"""Shared pytest fixtures: seeding, and a temporary ARTIFACTS_DIR."""

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed torch before every test."""
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def artifacts_tmp(tmp_path_factory):
    """Point ARTIFACTS_DIR at a session tmp dir for every test (never the repo's artifacts/); restore it afterwards."""
    old = os.environ.get("ARTIFACTS_DIR")
    tmp = tmp_path_factory.mktemp("artifacts")
    os.environ["ARTIFACTS_DIR"] = str(tmp)
    yield tmp
    if old is None:
        os.environ.pop("ARTIFACTS_DIR", None)
    else:
        os.environ["ARTIFACTS_DIR"] = old


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    """kind -> folder of a tiny saved Hugging Face model (tests.helpers.save_tiny_hf), for gpt2, gpt_neox, llama."""
    from tests.helpers import HF_KINDS, save_tiny_hf

    root = tmp_path_factory.mktemp("tiny-hf")
    out = {}
    for kind in HF_KINDS:
        save_tiny_hf(kind, root / kind)
        out[kind] = root / kind
    return out
