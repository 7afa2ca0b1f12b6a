"""Any model with weights on disk as a TransformerLens HookedTransformer: our artifacts (their exact twin) and local
Hugging Face causal LMs (a folder saved with `save_pretrained`, or the Hugging Face cache). Never the network.

    model, tok = pretrained.load("path/to/folder")          # or "EleutherAI/pythia-70m" from the HF cache
    pretrained.revisions("EleutherAI/pythia-70m")             # a checkpointed suite's revisions found locally
    model = pretrained.load_model("EleutherAI/pythia-70m", revision="step1000")

Hugging Face models go through TransformerLens's own weight conversions (the architectures in `HF_ARCHITECTURES`;
`TESTED` are checked in tests/core/test_any_model.py against Hugging Face's logits), so every analysis sees the same
hook names (`lib.core.hooks`) and weight attributes on every model. `architecture(model)` says what a model has;
`require(model, method, ...)` is how a method refuses, by name, a model that lacks what it needs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.core import artifacts
from lib.core.data import Tokenizer, get_tokenizer, gpt2_tokenizer
from lib.core.model import quiet_hooked, to_hooked
from lib.core.runs import load_model as load_ours
from lib.core.train import init_model

# the causal-LM architectures (config.json "architectures") TransformerLens 3.9's HookedTransformer converts
HF_ARCHITECTURES = (
    "GPT2LMHeadModel", "GPTNeoForCausalLM", "GPTJForCausalLM", "GPTNeoXForCausalLM", "OPTForCausalLM",
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "BloomForCausalLM", "Qwen2ForCausalLM",
    "Qwen3ForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM",
    "OlmoForCausalLM", "Olmo2ForCausalLM",
)
TESTED = ("GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM")  # built tiny and compared in the tests
HOW_TO_PROVIDE = ("Put a Hugging Face model saved with save_pretrained() (config.json, weights, tokenizer files) in a "
                  "folder and pass its path, or fill the Hugging Face cache (~/.cache/huggingface/hub, or $HF_HOME) "
                  "on a machine with network (huggingface-cli download NAME [--revision R]) and copy it here.")


class ArchitectureError(ValueError):
    """A method asked for something this model's architecture does not have (named in the message)."""


def hf_tokenizer(tok: Tokenizer):
    """One of our lib.core.data Tokenizers as a transformers tokenizer (for HookedTransformer's string APIs).

    TransformerLens reloads tokenizers by name, so the wrapper is saved once as an artifact and loaded from there.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = tok.hf.to_str()
    folder = artifacts.path("tokenizers", "hf", spec)
    if not (folder / "tokenizer.json").exists():
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=tok.eos, bos_token=tok.eos,
                                          pad_token=tok.eos)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        wrapped.save_pretrained(tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; its folder is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


# ----------------------------------------------------------------------------------------------- finding it


def _is_ours(folder: Path) -> bool:
    """A model artifact of this repository (lib.core.runs.save_model), not a Hugging Face folder."""
    if not (folder / artifacts.MANIFEST).is_file() or not (folder / "weights.safetensors").is_file():
        return False
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "model" in cfg and "model_type" not in cfg


def _cache_snapshot(name: str, revision: str | None) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        return None
    return snap if (snap / "config.json").is_file() else None


def resolve(spec: str | os.PathLike, revision: str | None = None) -> Path:
    """The local folder of `spec`: a folder (ours or Hugging Face; with `revision`, its subfolder of that name), or
    a name in the Hugging Face cache (at `revision`). FileNotFoundError says where it looked and how to provide it."""
    p = Path(spec).expanduser()
    looked = []
    if p.is_dir():
        folder = p / revision if revision is not None else p
        if (folder / "config.json").is_file():
            return folder
        looked.append(f"{folder} (no config.json" + (f"; local revisions: {revisions(p)}" if revision else "") + ")")
    else:
        looked.append(f"{p} (no such folder)")
    if not p.is_absolute() and not str(spec).startswith("."):
        snap = _cache_snapshot(str(spec), revision)
        if snap is not None:
            return snap
        from huggingface_hub.constants import HF_HUB_CACHE

        looked.append(f"the Hugging Face cache {HF_HUB_CACHE} (no {str(spec)!r}"
                      + (f" at revision {revision!r}" if revision else "") + ")")
    raise FileNotFoundError(f"no local weights for {str(spec)!r}: this project never downloads. Looked in: "
                            f"{'; '.join(looked)}. {HOW_TO_PROVIDE}")


def _step_key(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def revisions(spec: str | os.PathLike) -> list[str]:
    """The revisions of a checkpointed suite (e.g. Pythia's 'step0', 'step1000', ...) available locally, sorted by
    their trailing number: the subfolders holding a config.json of a folder, or the refs of a Hugging Face cache
    entry. Empty when there are none."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return sorted((d.name for d in p.iterdir() if d.is_dir() and (d / "config.json").is_file()), key=_step_key)
    try:
        from huggingface_hub import scan_cache_dir

        repos = [r for r in scan_cache_dir().repos if r.repo_id == str(spec) and r.repo_type == "model"]
    except Exception:  # noqa: BLE001 - no cache at all
        return []
    refs = {ref for r in repos for rev in r.revisions for ref in rev.refs}
    return sorted(refs, key=_step_key)


# ----------------------------------------------------------------------------------------------- loading it


def _hf_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise artifacts.damaged(folder / "config.json", f"not a Hugging Face config ({e})") from e


def load_tokenizer(spec: str | os.PathLike, revision: str | None = None) -> Tokenizer:
    """The tokenizer of `spec` as our Tokenizer. Its `eos` is the token a text starts with (the model's BOS, else
    its EOS): the analyses prepend it to every prompt and put it between documents. A GPT-2 folder saved without
    tokenizer files gets the shipped GPT-2 vocabulary; any other model must bring its own."""
    folder = resolve(spec, revision)
    if _is_ours(folder):
        return get_tokenizer(load_ours(folder)[1].data)
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        c = _hf_config(folder)
        if c.get("model_type") == "gpt2" and c.get("vocab_size") == 50257:
            return gpt2_tokenizer()
        raise FileNotFoundError(f"no tokenizer in {folder} (tokenizer.json, vocab.json + merges.txt, or "
                                f"tokenizer.model): save it beside the weights with tokenizer.save_pretrained()")
    return Tokenizer(*_backend(folder))


def _backend(folder: Path):
    """(the fast tokenizer's `tokenizers.Tokenizer`, the name of the token texts start with) of an HF folder."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    start = hf.bos_token or hf.eos_token
    if start is None:
        raise ValueError(f"the tokenizer in {folder} defines neither a bos_token nor an eos_token: the analyses need "
                         "one to start prompts and separate documents")
    return hf.backend_tokenizer, start


def load_model(spec: str | os.PathLike, device: str | torch.device = "cpu", *, revision: str | None = None,
               process: bool = True, dtype: torch.dtype = torch.float32, init: bool = False, seed: int = 0):
    """A HookedTransformer of `spec` (see `resolve`), in eval mode; with `init`, the same architecture at
    initialisation instead (ours: its training seed's init; Hugging Face: the architecture's own initialisation
    drawn with `seed`), the control every analysis is compared with.

    Ours: the exact twin of our Transformer (lib.core.model.to_hooked). Hugging Face: TransformerLens's conversion;
    with `process` (default) LayerNorm is folded into the next weights, writing weights and the unembedding are
    centred and value biases folded, TransformerLens's defaults, which change no log-probability (logits shift by a
    per-position constant); process=False keeps the raw weights (logits equal Hugging Face's).
    """
    folder = resolve(spec, revision)
    if _is_ours(folder):
        model, cfg = load_ours(folder, device=device)
        if init:
            model = init_model(cfg).to(device).eval()
        hooked = to_hooked(model, tokenizer=hf_tokenizer(get_tokenizer(cfg.data)))
        return hooked if dtype == torch.float32 else hooked.to(dtype)
    return _load_hf(folder, device, process, dtype, seed if init else None)


def _load_hf(folder: Path, device, process: bool, dtype: torch.dtype, init_seed: int | None = None):
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    c = _hf_config(folder)
    arch = (c.get("architectures") or [None])[0]
    if arch not in HF_ARCHITECTURES:
        raise ArchitectureError(f"{folder}: architecture {arch!r} (config.json 'architectures') is not one "
                                f"TransformerLens's HookedTransformer converts; supported: {', '.join(HF_ARCHITECTURES)}")
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if init_seed is None:
            hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype).eval()
        else:
            torch.manual_seed(init_seed)
            hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, local_files_only=True),
                                                  dtype=dtype).eval()
    # TransformerLens reads the config through a folder path and picks some branches by the path's name ('llama',
    # 'gemma' in it select hard-coded configs), and its GPT-2 branch reads n_ctx, which transformers 5 no longer
    # writes: so it gets a neutral copy of config.json with n_ctx filled in.
    if c.get("model_type") == "gpt2":
        c.setdefault("n_ctx", c.get("n_positions"))
    with tempfile.TemporaryDirectory() as tmp:
        neutral = Path(tmp) / "model"
        neutral.mkdir()
        (neutral / "config.json").write_text(json.dumps(c))
        cfg = loading.get_pretrained_model_config(str(neutral), hf_cfg=hf.config.to_dict(), fold_ln=process,
                                                  device=str(device), dtype=dtype)
        state = loading.get_pretrained_state_dict(str(neutral), cfg, hf, dtype=dtype)
    cfg.model_name = folder.name if folder.parent.name != "snapshots" else folder.parent.parent.name
    cfg.tokenizer_name = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer.model")):
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    else:
        tok = hf_tokenizer(load_tokenizer(folder))
    model = quiet_hooked(cfg, tokenizer=tok)
    layer_norm = cfg.normalization_type in ("LN", "LNPre")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_and_process_state_dict(state, fold_ln=process, center_writing_weights=process and layer_norm,
                                          center_unembed=process, fold_value_biases=process)
    return model.to(device).eval()


def load(spec: str | os.PathLike, device: str | torch.device = "cpu", *, revision: str | None = None,
         process: bool = True, dtype: torch.dtype = torch.float32, init: bool = False, seed: int = 0):
    """(load_model(spec, ...), load_tokenizer(spec)) of one model."""
    return (load_model(spec, device, revision=revision, process=process, dtype=dtype, init=init, seed=seed),
            load_tokenizer(spec, revision))


def load_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", fold_ln: bool = True):
    """A HookedTransformer for a local Hugging Face model (kept name; `load_model` is the general loader)."""
    return load_model(name_or_path, device, process=fold_ln)


# ----------------------------------------------------------------------------------------------- what it has


@dataclass(frozen=True)
class Architecture:
    """What a HookedTransformer has, in the terms the methods ask for."""

    name: str  # the original architecture (ours: 'ours')
    mlp: str  # 'none' (attention-only), 'plain' (W_in, act, W_out) or 'gated' (act(W_gate x) * W_in x)
    attention: str  # 'multi-head' or 'grouped-query'
    positions: str  # 'learned' (absolute) or 'rotary', ...
    residual: str  # 'sequential' (attention, then MLP) or 'parallel' (both read the block's input)
    normalization: str  # 'LayerNorm' or 'RMSNorm' (folded or not)

    def row(self) -> dict[str, str]:
        return {"architecture": self.name, "MLP": self.mlp, "attention": self.attention,
                "positions": self.positions, "residual": self.residual, "normalization": self.normalization}


def architecture(model) -> Architecture:
    c = model.cfg
    mlp = "none" if c.attn_only else "gated" if c.gated_mlp else "plain"
    attention = "grouped-query" if c.n_key_value_heads not in (None, c.n_heads) else "multi-head"
    positions = {"standard": "learned"}.get(c.positional_embedding_type, c.positional_embedding_type)
    norm = {"LN": "LayerNorm", "LNPre": "LayerNorm", "RMS": "RMSNorm", "RMSPre": "RMSNorm"}.get(
        str(c.normalization_type), str(c.normalization_type))
    return Architecture(c.original_architecture or "ours", mlp, attention, positions,
                        "parallel" if c.parallel_attn_mlp else "sequential", norm)


def require(model, method: str, *, mlp: bool = False, plain_mlp: bool = False, sequential: bool = False,
            multi_head: bool = False) -> None:
    """Refuse `method` on a model that lacks what it needs, naming the method and the missing part.

    mlp: an MLP in every block; plain_mlp: an ungated one (W_in, act, W_out); sequential: attention then MLP (a
    resid_mid between them); multi_head: one key and value per head (no grouped-query attention).
    """
    a = architecture(model)
    missing = []
    if (mlp or plain_mlp) and a.mlp == "none":
        missing.append("MLP layers (this model is attention-only)")
    if plain_mlp and a.mlp == "gated":
        missing.append("an ungated MLP (this model's MLP is gated: act(W_gate x) * (W_in x))")
    if sequential and a.residual == "parallel":
        missing.append("sequential blocks with a resid_mid between attention and MLP (this model's attention and "
                       "MLP run in parallel)")
    if multi_head and a.attention == "grouped-query":
        missing.append(f"one key/value per head (this model uses grouped-query attention, "
                       f"{model.cfg.n_key_value_heads} key/value heads for {model.cfg.n_heads})")
    if missing:
        raise ArchitectureError(f"{method} needs {' and '.join(missing)}; {a.name} does not have it")
