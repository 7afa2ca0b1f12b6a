"""Artifacts on disk (storage only): directories keyed by a config hash, atomic writes, safe loaders."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file

ENV_VAR = "ARTIFACTS_DIR"
MANIFEST = "manifest.json"  # written last: its presence marks an artifact complete


class ArtifactError(ValueError):
    """An artifact on disk is damaged, incomplete, or does not match the config it is filed under."""


def rebuild_hint(directory: Path) -> str:
    """How to get rid of a bad artifact (the artifact folder holding `directory`) so that the next run rebuilds it."""
    directory = Path(directory)
    while directory.name.startswith("step_") or directory.name == "checkpoints":
        directory = directory.parent
    return (f"delete it (rm -r '{directory}') or run `make clean-artifacts NAME={directory.name}`, and the next run "
            "rebuilds it")


def damaged(path: Path, what: str) -> ArtifactError:
    """An ArtifactError naming the file or folder, what is wrong and how to rebuild it."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    return ArtifactError(f"{path}: {what}; {rebuild_hint(folder)}")


def git_commit(repo: Path | None = None) -> str:
    """The checked-out commit (short hash) of `repo` (default: this repository), with ' + uncommitted changes' when
    tracked files differ from it; 'unknown' outside git."""
    here = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + (" + uncommitted changes" if sha and dirty else "")


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
    """Read JSON written by write_json (ArtifactError naming the file if it is not valid JSON)."""
    try:
        return json.loads(Path(src).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise damaged(src, f"not valid JSON ({e})") from e


def write_text(dest: Path, text: str) -> Path:
    """Atomically write a text file."""
    return _atomic(dest, lambda p: p.write_text(text))


def save_tensors(dest: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a safetensors file (tensors made contiguous, moved to CPU)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    return _atomic(dest, lambda p: save_file(flat, str(p), metadata=metadata))


def load_tensors(src: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (ArtifactError naming it if it is truncated or not safetensors)."""
    if not Path(src).is_file():
        raise FileNotFoundError(f"no tensors file {src}")
    try:
        return load_file(str(src), device=str(device))
    except Exception as e:  # safetensors raises SafetensorError (a bare Exception subclass) or OSError
        raise damaged(src, f"not a readable safetensors file ({type(e).__name__}: {e})") from e


def save_torch(dest: Path, obj: Any) -> Path:
    """Atomically torch.save an object made of tensors and plain containers (loadable with weights_only)."""
    return _atomic(dest, lambda p: torch.save(obj, p))


def load_torch(src: Path) -> Any:
    """torch.load with weights_only=True (no arbitrary pickle); ArtifactError naming the file if it is damaged."""
    if not Path(src).is_file():
        raise FileNotFoundError(f"no torch file {src}")
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip, a bad pickle, a tensor storage error
        raise damaged(src, f"not a readable torch file ({type(e).__name__}: {e})") from e


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path, files: Sequence[str], key: Any) -> Path:
    """Write directory/manifest.json (last): the hash of the key the artifact is filed under and each file's sha256."""
    directory = Path(directory)
    return write_json(directory / MANIFEST, {"key_hash": config_hash(key),
                                             "sha256": {f: sha256(directory / f) for f in files}})


def verify(directory: Path, key: Any) -> None:
    """Check an artifact against its manifest: `key` (what it was built from, as stored beside it) hashes to the
    manifest's key hash and, for a folder named `<name>-<hash>`, to the folder's hash; every listed file has its
    recorded sha256. ArtifactError naming the folder and what differs."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise damaged(directory, f"no {MANIFEST} (an interrupted write, or an artifact from before checksums)")
    manifest, want = read_json(directory / MANIFEST), config_hash(key)
    named = re.fullmatch(r".+-([0-9a-f]{10})", directory.name)
    if manifest.get("key_hash") != want or (named and named.group(1) != want):
        raise damaged(directory, f"its config hashes to {want}, but the manifest says {manifest.get('key_hash')}"
                                 + (f" and the folder {named.group(1)}" if named else "")
                                 + " (config.json edited, or the folder copied from another config)")
    for name, digest in manifest.get("sha256", {}).items():
        if not (directory / name).is_file():
            raise damaged(directory, f"{name} is missing")
        if sha256(directory / name) != digest:
            raise damaged(directory / name, "its sha256 differs from the manifest's (the file changed after it was "
                                            "written: damaged, or swapped for another run's)")


@contextlib.contextmanager
def lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on an artifact folder (a sibling .lock file) while building it, so two processes never
    build the same artifact at once: the second waits, then finds it complete."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


def is_complete(directory: Path, required: tuple[str, ...] = ("weights.safetensors", "config.json", MANIFEST)) -> bool:
    """True if every required file exists in the artifact directory."""
    return all((Path(directory) / f).exists() for f in required)
