"""Runs: trained models as artifacts (save, load, get-or-train), sweeps, and the command line for torchrun.

    torchrun --nproc_per_node 2 -m lib.core.runs --preset smoke --out DIR [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from lib.core import artifacts
from lib.core.config import RunConfig, resolve
from lib.core.model import Transformer
from lib.core.train import rank_world, train


def save_model(directory: Path, model: torch.nn.Module, cfg: RunConfig, metrics: Any = None) -> Path:
    """Write weights.safetensors, config.json, metrics.json and (last, marking completion) manifest.json."""
    directory = Path(directory)
    files = ["weights.safetensors", "config.json"]
    if metrics is not None:
        artifacts.write_json(directory / "metrics.json", metrics)
        files.append("metrics.json")
    artifacts.save_tensors(directory / "weights.safetensors", model.state_dict())
    artifacts.write_json(directory / "config.json", cfg.to_dict())
    artifacts.write_manifest(directory, files, cfg)
    return directory


def load_model(directory: Path, device: str | torch.device = "cpu"):
    """The one loader: our Transformer from config.json + weights.safetensors, after checking both against the
    manifest (ArtifactError naming the folder if anything was damaged, edited or swapped)."""
    directory = Path(directory)
    if not artifacts.is_complete(directory):
        raise FileNotFoundError(f"no complete model artifact in {directory} (need weights.safetensors, config.json "
                                f"and {artifacts.MANIFEST}); {artifacts.rebuild_hint(directory)}")
    try:
        cfg = RunConfig.from_dict(artifacts.read_json(directory / "config.json"))
    except (TypeError, KeyError, ValueError) as e:
        raise artifacts.damaged(directory / "config.json", f"not a RunConfig ({e})") from e
    artifacts.verify(directory, cfg)
    model = Transformer(cfg.model)
    model.load_state_dict(artifacts.load_tensors(directory / "weights.safetensors"))
    return model.to(device).eval(), cfg


def model_dir(cfg: Any, name: str = "model") -> Path:
    """Artifact directory of the model trained with RunConfig `cfg`."""
    return artifacts.path("models", name, cfg)


def get_or_train(cfg: RunConfig, *, name: str = "model", progress: bool = True, device: str = "cpu",
                 checkpoint_steps: Sequence[int] = ()):
    """Load the model trained with `cfg` if present, else train it (resuming from its checkpoints) and save it.

    `checkpoint_steps`: when this call trains, the checkpoints at those steps (0 = the initialisation) are kept in
    the run directory's checkpoints/ (`kept_checkpoints` lists them), so that a later analysis of the same run's
    training reuses them instead of training it again. Holds the artifact's lock while training, so a second
    process asking for the same model waits and then loads it. Returns (model, history DataFrame, run directory).
    """
    directory = model_dir(cfg, name)
    with artifacts.lock(directory):
        if not artifacts.is_complete(directory) or not (directory / "metrics.json").is_file():
            model, history = train(cfg, ckpt_dir=directory / "checkpoints", progress=progress, device=device,
                                   checkpoint_steps=checkpoint_steps)
            save_model(directory, model, cfg, metrics=history.to_dict(orient="list"))
    model, _ = load_model(directory, device=device)
    history = pd.DataFrame(artifacts.read_json(directory / "metrics.json"))
    return model, history, directory


def kept_checkpoints(directory: Path, steps: Sequence[int]) -> list[Path] | None:
    """The checkpoint folders of a `get_or_train` run directory at `steps`, in step order, if every one of them was
    kept (it was trained with them as checkpoint_steps); else None (the caller trains the run with them itself)."""
    folders = [Path(directory) / "checkpoints" / f"step_{int(s):07d}" for s in sorted(set(steps))]
    done = ("weights.safetensors", "state.json", artifacts.MANIFEST)
    return folders if folders and all(artifacts.is_complete(f, done) for f in folders) else None


def sweep(base: RunConfig, grid: Sequence[dict], name: str = "sweep", progress: bool = True,
          device: str = "cpu") -> pd.DataFrame:
    """Train (or load) one model per override dict in `grid` on `device`; one row per run with its final held-out
    metrics."""
    rows = []
    for overrides in tqdm(grid, desc="sweep", disable=not progress):
        cfg = base.replace(**overrides)
        _, history, directory = get_or_train(cfg, name=name, progress=False, device=device)
        last = history.iloc[-1]
        rows.append({**overrides, "n_params": cfg.model.n_params, "val_loss": last["val_loss"],
                     "val_accuracy": last["val_accuracy"], "val_beginnings_loss": last["val_beginnings_loss"],
                     "val_beginnings_accuracy": last["val_beginnings_accuracy"], "seconds": last["seconds"],
                     "init_val_loss": history["val_loss"].iloc[0], "path": str(directory)})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """CLI for torchrun: `torchrun --nproc_per_node N -m lib.core.runs --preset smoke --out DIR [--set key=value ...]`."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--out", required=True, help="folder for the final weights.safetensors, config.json, metrics.json")
    ap.add_argument("--set", nargs="*", default=[], help="overrides key=value (value parsed as JSON if possible)")
    args = ap.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, raw = item.partition("=")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    cfg = resolve(args.preset, **overrides)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = "cpu"
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = "cuda"
    model, history = train(cfg, progress=True, device=device)
    if rank_world()[0] == 0:
        save_model(Path(args.out), model, cfg, metrics=history.to_dict(orient="list"))
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()





# Steps of the short "bench" runs: report 1's depth x MLP x seed benchmark, whose 2-layer MLP run report 3 reuses as
# its "early" model. Defined once, so both reports ask for the same artifact (and the early model never trains longer
# than the preset's final model).
BENCH_STEPS = {"smoke": 10, "cpu": 300, "gpu": 1000}


def bench_overrides(cfg: RunConfig, steps: int) -> dict[str, int]:
    """Overrides that train cfg for a short budget of `steps`: warmup at most a quarter of it, one evaluation and one
    checkpoint at the end (what report 1's benchmark runs and report 3's early model are)."""
    return dict(max_steps=steps, warmup_steps=min(cfg.train.warmup_steps, steps // 4), eval_every=steps,
                checkpoint_every=steps)
