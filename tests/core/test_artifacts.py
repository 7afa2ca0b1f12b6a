"""Damaged, edited, swapped or foreign artifacts are never loaded silently: each is an error that names the file or
folder and says how to rebuild it; an interrupted or damaged checkpoint is skipped with a warning that names it."""

import json
import shutil
import warnings

import pytest
import torch

from lib.core import artifacts, data
from lib.core.config import resolve
from lib.core.runs import get_or_train, load_model
from lib.core.train import ConfigMismatch, list_checkpoints, train

OVERRIDES = dict(max_steps=8, eval_every=4, checkpoint_every=4, warmup_steps=2, batch_size=8)


@pytest.fixture(scope="module")
def run(artifacts_tmp):
    cfg = resolve("smoke", **OVERRIDES)
    model, history, directory = get_or_train(cfg, name="integrity", progress=False)
    return cfg, model, history, directory


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the trained model's artifact folder (same name, so its hash still applies) to damage."""
    dest = tmp_path / run[3].name
    shutil.copytree(run[3], dest, ignore=shutil.ignore_patterns("checkpoints"))
    return dest


def _flip_a_byte(path, offset=-9):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_an_intact_artifact_loads_and_its_manifest_lists_every_file(run, copy):
    model, cfg = load_model(copy)
    assert cfg == run[0] and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                    run[1].state_dict().values()))
    assert set(artifacts.read_json(copy / "manifest.json")["sha256"]) == {"weights.safetensors", "config.json",
                                                                         "metrics.json"}


def test_flipped_bytes_in_the_weights_are_an_error_naming_the_file(copy):
    _flip_a_byte(copy / "weights.safetensors")
    with pytest.raises(artifacts.ArtifactError, match=r"weights\.safetensors.*sha256.*make clean-artifacts"):
        load_model(copy)


def test_weights_swapped_for_another_runs_are_an_error(run, copy, artifacts_tmp):
    other, _, other_dir = get_or_train(run[0].replace(seed=1), name="integrity", progress=False)
    shutil.copy(other_dir / "weights.safetensors", copy / "weights.safetensors")
    with pytest.raises(artifacts.ArtifactError, match="swapped"):
        load_model(copy)


def test_an_edited_config_no_longer_matches_its_folder(copy):
    cfg = json.loads((copy / "config.json").read_text())
    cfg["train"]["lr"] = 0.5
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(artifacts.ArtifactError, match=rf"{copy.name}.*config hashes to .*config.json edited"):
        load_model(copy)


@pytest.mark.parametrize("name, garbage", [("weights.safetensors", b"\x00\x01 not safetensors"),
                                            ("config.json", b"{not json"), ("metrics.json", b"[1, 2")])
def test_truncated_or_garbage_files_are_errors_naming_them(copy, name, garbage):
    (copy / name).write_bytes(garbage)
    with pytest.raises(artifacts.ArtifactError, match=name.replace(".", r"\.")):
        load_model(copy)


def test_a_missing_manifest_means_incomplete_and_names_the_folder(copy):
    (copy / "manifest.json").unlink()
    assert not artifacts.is_complete(copy)
    with pytest.raises(FileNotFoundError, match=rf"{copy.name}.*manifest\.json"):
        load_model(copy)


def test_missing_metrics_are_rebuilt_from_the_final_checkpoint(run):
    cfg, model, history, directory = run
    (directory / "metrics.json").unlink()
    again, h2, _ = get_or_train(cfg, name="integrity", progress=False)
    assert h2["val_loss"].tolist() == history["val_loss"].tolist()
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_a_checkpoint_of_another_config_is_not_resumed(tmp_path):
    cfg = resolve("smoke", **OVERRIDES)
    train(cfg.replace(lr=1e-2), ckpt_dir=tmp_path, progress=False, stop_after=4)
    with pytest.raises(ConfigMismatch, match=r"step_0000004 was written by another config.*train\.lr"):
        train(cfg, ckpt_dir=tmp_path, progress=False)


def test_a_damaged_newest_checkpoint_is_skipped_with_a_warning_and_the_result_is_unchanged(tmp_path):
    cfg = resolve("smoke", **OVERRIDES)
    full, _ = train(cfg, progress=False)
    train(cfg, ckpt_dir=tmp_path, progress=False, stop_after=6, keep_checkpoints=None)  # step 4, then 6
    newest = list_checkpoints(tmp_path)[-1]
    assert newest.name == "step_0000006"
    _flip_a_byte(newest / "weights.safetensors")
    with pytest.warns(UserWarning, match=r"step_0000006.*sha256"):
        resumed, _ = train(cfg, ckpt_dir=tmp_path, progress=False)  # from step 4
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), full.state_dict().values()))


def test_damaged_token_and_tokenizer_caches_are_errors_naming_them(artifacts_tmp):
    cfg = resolve("smoke").data
    data.load_token_data(cfg)  # built and cached
    tokens = data.tokens_path(cfg)
    _flip_a_byte(tokens, offset=-3)
    with pytest.raises(artifacts.ArtifactError, match=r"tokens\.safetensors"):
        data.load_token_data(cfg)
    shutil.rmtree(tokens.parent)
    data.load_token_data(cfg)  # rebuilt once deleted, as the message says
    tok = data.bpe_path(cfg)
    tok.write_text("{ garbage")
    with pytest.raises(artifacts.ArtifactError, match=r"tokenizer\.json"):
        data.get_tokenizer(cfg)
    shutil.rmtree(tok.parent)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data.get_tokenizer(cfg).vocab_size == cfg.vocab_size
