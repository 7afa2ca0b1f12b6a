"""Artifacts on disk (storage only): directories keyed by a config hash, atomic writes, safe loaders."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

ENV_VAR = "ARTIFACTS_DIR"


def root() -> Path:
    """Artifacts root: $ARTIFACTS_DIR, else ./artifacts next to the repo's lib/."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "artifacts"


def config_hash(obj: Any, n: int = 10) -> str:
    """Short sha256 of a config's canonical JSON (RunConfig, any dataclass, dict, or str)."""
    if hasattr(obj, "to_json"):
        text = obj.to_json()
    elif dataclasses.is_dataclass(obj):
        text = json.dumps(dataclasses.asdict(obj), sort_keys=True)
    else:
        text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def path(kind: str, name: str, cfg: Any) -> Path:
    """`root/<kind>/<name>-<hash(cfg)>/` (not created)."""
    for label, value in (("kind", kind), ("name", name)):
        if not value or "/" in value or value.startswith("."):
            raise ValueError(f"artifact {label}={value!r} must be a non-empty name without '/' or a leading '.'")
    return root() / kind / f"{name}-{config_hash(cfg)}"


def _atomic(dest: Path, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temp file in dest's folder, then rename it onto dest."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def write_json(dest: Path, obj: Any) -> Path:
    """Atomically write JSON."""
    return _atomic(dest, lambda p: p.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_jsonable)))


def read_json(src: Path) -> Any:
    """Read JSON written by write_json."""
    return json.loads(Path(src).read_text())


def write_text(dest: Path, text: str) -> Path:
    """Atomically write a text file."""
    return _atomic(dest, lambda p: p.write_text(text))


def save_tensors(dest: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous, moved to CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return _atomic(dest, lambda p: save_file(flat, str(p), metadata=metadata))


def load_tensors(src: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file."""
    return load_file(str(src), device=str(device))


def save_torch(dest: Path, obj: Any) -> Path:
    """Atomically torch.save an object made of tensors and plain containers (loadable with weights_only)."""
    return _atomic(dest, lambda p: torch.save(obj, p))


def load_torch(src: Path) -> Any:
    """torch.load with weights_only=True (no arbitrary pickle)."""
    return torch.load(src, map_location="cpu", weights_only=True)


def save_dataframe(dest: Path, df: "Any") -> Path:
    """Atomically write a DataFrame as CSV."""
    return _atomic(dest, lambda p: df.to_csv(p, index=False))


def _jsonable(x: Any) -> Any:
    """Fallback JSON encoder for numpy/torch scalars and tuples."""
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def is_complete(directory: Path, required: tuple[str, ...] = ("weights.safetensors", "config.json")) -> bool:
    """True if every required file exists in the artifact directory."""
    return all((Path(directory) / f).exists() for f in required)
