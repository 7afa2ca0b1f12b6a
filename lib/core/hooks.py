"""TransformerLens hook names, built in one place."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor

HookFn = Callable[[Tensor, Any], Tensor]  # a TransformerLens hook function: (activation, hook) -> activation

_BLOCK_HOOKS = {
    "resid_pre": "hook_resid_pre",
    "resid_mid": "hook_resid_mid",
    "resid_post": "hook_resid_post",
    "attn_out": "hook_attn_out",
    "mlp_out": "hook_mlp_out",
    "mlp_pre": "mlp.hook_pre",
    "mlp_post": "mlp.hook_post",
    "pattern": "attn.hook_pattern",
    "attn_scores": "attn.hook_attn_scores",
    "q": "attn.hook_q",
    "k": "attn.hook_k",
    "v": "attn.hook_v",
    "z": "attn.hook_z",
    "ln1": "ln1.hook_normalized",
    "ln2": "ln2.hook_normalized",
}
_GLOBAL_HOOKS = {"embed": "hook_embed", "pos_embed": "hook_pos_embed", "ln_final": "ln_final.hook_normalized",
                 # lib.analysis.kwta's residual sparse layer before the final norm: its units before/after k-WTA, its write
                 "sparse_pre": "ln_final.sparse.mlp.hook_pre", "sparse_post": "ln_final.sparse.mlp.hook_post",
                 "sparse_out": "ln_final.sparse.hook_out"}
KINDS = tuple(_BLOCK_HOOKS) + tuple(_GLOBAL_HOOKS)


def name(kind: str, layer: int | None = None) -> str:
    """TransformerLens hook name, e.g. name('mlp_post', 1) -> 'blocks.1.mlp.hook_post'."""
    if kind in _GLOBAL_HOOKS:
        if layer is not None:
            raise ValueError(f"hook kind {kind!r} takes no layer (got layer={layer!r})")
        return _GLOBAL_HOOKS[kind]
    if kind not in _BLOCK_HOOKS:
        raise ValueError(f"unknown hook kind {kind!r}; allowed: {', '.join(KINDS)}")
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise ValueError(f"hook kind {kind!r} needs a layer index >= 0 (got layer={layer!r})")
    return f"blocks.{layer}.{_BLOCK_HOOKS[kind]}"


def hook_label(hook: str) -> str:
    """A short readable name: 'blocks.1.hook_attn_out' -> 'attn out L1'."""
    layer = layer_of(hook)
    for kind in KINDS:
        try:
            if name(kind, layer) == hook:
                return kind.replace("_", " ") + ("" if layer is None else f" L{layer}")
        except ValueError:
            continue
    return hook


def layer_of(hook: str) -> int | None:
    """Block index of a 'blocks.{l}.…' hook name, else None (global hooks)."""
    parts = hook.split(".")
    return int(parts[1]) if parts[0] == "blocks" else None
