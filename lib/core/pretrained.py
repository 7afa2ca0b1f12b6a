"""Pretrained models from local weights only (never the hub), as TransformerLens HookedTransformers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from lib.core import artifacts
from lib.core.data import gpt2_tokenizer
from lib.core.model import quiet_hooked


def hf_tokenizer(tok):
    """One of our lib.core.data Tokenizers as a transformers tokenizer (for HookedTransformer's string APIs).

    TransformerLens reloads tokenizers by name, so the wrapper is saved once as an artifact and loaded from there.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    spec = tok.hf.to_str()
    folder = artifacts.path("tokenizers", "hf", spec)
    if not (folder / "tokenizer.json").exists():
        eos = "<|endoftext|>"
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=eos, bos_token=eos, pad_token=eos)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        wrapped.save_pretrained(tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; its folder is equivalent
            shutil.rmtree(tmp, ignore_errors=True)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _find_local(name_or_path: str | os.PathLike) -> Path:
    """A local folder holding a saved Hugging Face model: the path itself or the HF cache snapshot."""
    p = Path(name_or_path).expanduser()
    if p.is_dir() and (p / "config.json").exists():
        return p
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(str(name_or_path), local_files_only=True))
        if (snap / "config.json").exists():
            return snap
    except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
        pass
    raise FileNotFoundError(
        f"no local weights for {str(name_or_path)!r}: this project never downloads. Put a Hugging Face model "
        f"saved with save_pretrained() in a folder and pass its path, or fill the Hugging Face cache "
        f"(~/.cache/huggingface/hub, or $HF_HOME) on a machine with network and copy it here."
    )


def load_pretrained(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", fold_ln: bool = True):
    """A HookedTransformer for a local GPT-2-architecture model (distilgpt2, gpt2, ... or a saved folder)."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import AutoTokenizer, GPT2LMHeadModel

    folder = _find_local(name_or_path)
    hf = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)
    c = hf.config
    if c.model_type != "gpt2":
        raise ValueError(f"model_type={c.model_type!r} is not supported: only GPT-2-architecture models ('gpt2')")
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head, n_heads=c.n_head,
        d_mlp=c.n_inner or 4 * c.n_embd, d_vocab=c.vocab_size, act_fn="gelu_new", eps=c.layer_norm_epsilon,
        normalization_type="LNPre" if fold_ln else "LN", positional_embedding_type="standard",
        original_architecture="GPT2LMHeadModel", model_name=folder.name, device=str(device),
        default_prepend_bos=True, init_weights=False,
    )
    if (folder / "tokenizer.json").exists() or (folder / "vocab.json").exists():
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    else:  # weights saved without a tokenizer: GPT-2's shipped vocabulary
        tok = hf_tokenizer(gpt2_tokenizer())
    hooked = quiet_hooked(cfg, tokenizer=tok)
    hooked.load_and_process_state_dict(
        convert_gpt2_weights(hf, cfg), fold_ln=fold_ln, center_writing_weights=fold_ln, center_unembed=fold_ln,
        fold_value_biases=fold_ln,
    )
    return hooked.to(device).eval()
