"""Resuming a pre-LayerNorm forward pass: the pieces that let batched evaluations (the impairment sweep, the
neuron game) start from cached clean activations at one layer and unembed only the positions that predict each
prompt's keyword (its last `width` real positions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.components import LayerNorm, LayerNormPre
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

from lib.analysis.prompts import KeywordPrompts, keyword_scores, tail
from lib.core import pretrained


def prompt_chunks(prompts: KeywordPrompts, max_tokens: int) -> list[Tensor]:
    """Prompt indices sorted by length (longest first) and cut into chunks of at most max_tokens padded tokens."""
    order = prompts.lengths.argsort(descending=True, stable=True)
    chunks, start = [], 0
    while start < len(order):
        size = max(1, max_tokens // int(prompts.lengths[order[start]]))
        chunks.append(order[start : start + size])
        start += size
    return chunks


def width_chunks(prompts: KeywordPrompts, max_tokens: int) -> list[Tensor]:
    """`prompt_chunks` within each keyword length: every chunk holds prompts whose keywords have the same number of
    tokens, so a pass that scores only the positions predicting the keywords (the last layer's tail) computes no
    padding rows (with mixed lengths a chunk is as wide as its longest keyword: 2.2x the rows for notebook 4's
    prompts). Returns indices into `prompts`."""
    out = []
    for w in prompts.word_lengths.unique().tolist():
        idx = (prompts.word_lengths == w).nonzero().flatten()
        out += [idx[c] for c in prompt_chunks(prompts.select(idx), max_tokens)]
    return out


def fast_path_ok(model) -> bool:
    """Whether `sweep` may run blocks piecewise: pre-LayerNorm GPT-2-style blocks (attention then an ungated MLP,
    learned absolute positions, plain causal multi-head attention). Other architectures take the generic path."""
    c = model.cfg
    plain = not any(getattr(c, f, False) for f in (
        "attn_only", "parallel_attn_mlp", "use_attn_in", "use_split_qkv_input", "use_normalization_before_and_after",
        "use_attn_result", "use_hook_mlp_in", "use_local_attn", "use_attention_sinks", "load_in_4bit", "gated_mlp"))
    return (plain and c.positional_embedding_type == "standard" and c.attention_dir == "causal"
            and c.n_key_value_heads is None and not (c.attn_scores_soft_cap or 0) > 0
            and c.original_architecture not in POST_NORM_ARCHITECTURES)


def require_fast_path(model, method: str) -> None:
    """Refuse `method` (a fast path asked for with fast=True) on a model `fast_path_ok` rejects, naming what it lacks:
    the fast paths compute GPT-2-style blocks by hand (resid_mid, W_in/W_out, per-head keys and values, positions
    added to the embedding), so elsewhere they would fail or silently compute another model."""
    if fast_path_ok(model):
        return
    pretrained.require(model, method, plain_mlp=True, sequential=True, multi_head=True)
    a = pretrained.architecture(model)
    raise pretrained.ArchitectureError(
        f"{method} needs learned absolute positions, plain causal pre-LayerNorm attention blocks and an ungated MLP "
        f"(lib.analysis.fastpath.fast_path_ok); {a.name} ({a.positions} positions, {a.attention} attention, "
        f"{a.normalization}) does not have them: leave fast=None for the generic path")


def mlp_half(block, resid_mid: Tensor) -> Tensor:
    """The second half of a pre-LN block (ln2, MLP, residual add), firing its hooks."""
    return block.hook_resid_post(resid_mid + block.apply_mlp(block.ln2(resid_mid)))


# hook points of the last block's MLP half (after `blocks.L.`): downstream of them every position is computed alone
LAST_MLP_POINTS = ("hook_resid_mid", "ln2.", "mlp.", "hook_mlp_out", "hook_resid_post")


def resumes_at_last_mlp(model, names: Iterable[str]) -> bool:
    """Whether hooks at these points can be scored from the last block's clean resid_mid at the keyword positions
    (`last_mlp_inputs`, `evaluate_from_last_mlp`) instead of a whole forward: every point is in the last block's MLP
    half (its resid_mid, ln2, MLP, output or resid_post) or in the final norm (where lib.analysis.kwta puts its
    residual k-WTA layer), so everything from it to the logits is position-wise, on a model `fast_path_ok` accepts
    with its final norm (where it has normalization) and an unembedding and no logit soft cap. A hook that mixes positions itself (one that
    draws noise per call, say) is the caller's to exclude."""
    c = model.cfg
    has_norm = c.normalization_type is None or hasattr(model, "ln_final")
    if not (fast_path_ok(model) and has_norm and hasattr(model, "unembed") and hasattr(model, "hooks")
            and not (getattr(c, "output_logits_soft_cap", 0) or 0) > 0 and c.n_layers >= 1):
        return False
    last = f"blocks.{c.n_layers - 1}."
    names = list(names)
    return bool(names) and all(isinstance(h, str) and (h.startswith("ln_final.") or (
        h.startswith(last) and h[len(last):].startswith(LAST_MLP_POINTS))) for h in names)


@torch.no_grad()
def last_mlp_inputs(model, prompts: KeywordPrompts, batch_size: int = 128) -> Float[Tensor, "n width d_model"]:
    """The clean `blocks.{L-1}.hook_resid_mid` (the last block's MLP input stream) at each prompt's last
    `prompts.width` real positions: the ones that predict its keyword's tokens."""
    name = f"blocks.{model.cfg.n_layers - 1}.hook_resid_mid"
    got: list[Tensor] = []

    def keep(x: Tensor, hook=None) -> Tensor:
        got.append(x)
        return x

    out = []
    for i in range(0, len(prompts), batch_size):
        part = prompts.select(torch.arange(i, min(i + batch_size, len(prompts))))
        got.clear()
        with model.hooks(fwd_hooks=[(name, keep)]):
            model(part.tokens.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
        out.append(tail(got[0], part.lengths, prompts.width))
    return torch.cat(out)


@torch.no_grad()
def evaluate_from_last_mlp(model, prompts: KeywordPrompts, resid_mid: Float[Tensor, "n width d_model"],
                           fwd_hooks: Sequence = (), batch_size: int = 512) -> pd.DataFrame:
    """lib.analysis.prompts.evaluate's table (prompt, topic, loss, top1, top5) with `fwd_hooks` on, resumed from
    `last_mlp_inputs`: the last block's MLP half, the final norm and the unembedding run on the keyword positions
    only, firing the hooks there. The same scores up to float rounding where `resumes_at_last_mlp` holds for the
    hooks' names (refused otherwise) and the hooks treat each position alone."""
    names = [h for h, _ in fwd_hooks]
    if names and not resumes_at_last_mlp(model, names):
        raise ValueError(f"hooks {names} cannot be resumed at the last block's MLP: every hook must sit in "
                         f"blocks.{model.cfg.n_layers - 1}'s MLP half ({', '.join(LAST_MLP_POINTS)}) or in ln_final, "
                         "on a model lib.analysis.fastpath.fast_path_ok accepts")
    if tuple(resid_mid.shape[:2]) != (len(prompts), prompts.width):
        raise ValueError(f"resid_mid of shape {tuple(resid_mid.shape)} does not fit {len(prompts)} prompts of keyword "
                         f"width {prompts.width}: give last_mlp_inputs(model, prompts)")
    block, targets, parts = model.blocks[-1], prompts.tail_targets(), []
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        for i in range(0, len(prompts), batch_size):
            x = mlp_half(block, block.hook_resid_mid(resid_mid[i : i + batch_size]))
            if model.cfg.normalization_type is not None:
                x = model.ln_final(x)
            parts.append(keyword_scores(model.unembed(x), targets[i : i + batch_size]))
    s = {k: torch.cat([p[k] for p in parts]) if parts else torch.empty(0) for k in ("loss", "top1", "top5")}
    return pd.DataFrame({"prompt": np.arange(len(prompts)), "topic": prompts.topics,
                         **{k: v.numpy() for k, v in s.items()}})


def tail_query_block(block, x: Float[Tensor, "batch pos d_model"], lengths: Int[Tensor, " batch"],
                     width: int) -> Float[Tensor, "batch width d_model"]:
    """A block's output at each row's last `width` real positions only: those queries, keys and values up to each
    (causal), so that the keyword's tokens are scored without running the block over the whole prompt."""
    attn = block.attn
    h = layer_norm(block.ln1, x)
    w_kv, b_kv, n_heads, d_head = _kv_weights(attn)
    kv = torch.addmm(b_kv, h.reshape(-1, h.shape[-1]), w_kv).view(*h.shape[:2], 2, n_heads, d_head)
    k, v = attn.hook_k(kv[:, :, 0]), attn.hook_v(kv[:, :, 1])  # one GEMM for both (keys and values at every position)
    q = attn.hook_q(torch.einsum("bpd,hde->bphe", tail(h, lengths, width), attn.W_Q) + attn.b_Q)
    return _tail_rest(block, q, k, v, tail(x, lengths, width), lengths, width)


def _kv_weights(attn) -> tuple[Tensor, Tensor, int, int]:
    """The keys' and values' weights side by side, [d_model, 2 · heads · d_head], their biases, heads, d_head: one GEMM
    gives both."""
    n_heads, d_head = attn.W_K.shape[0], attn.W_K.shape[-1]
    w_kv = torch.cat([attn.W_K, attn.W_V], 0).permute(1, 0, 2).reshape(-1, 2 * n_heads * d_head)
    return w_kv, torch.cat([attn.b_K, attn.b_V], 0).reshape(-1), n_heads, d_head


def layer_norm(ln, x: Tensor) -> Tensor:
    """ln(x) by one fused kernel where that is the same computation (TransformerLens LayerNorm / LayerNormPre with
    no hook on its scale or output); else the module itself."""
    if type(ln) not in (LayerNorm, LayerNormPre) or ln.hook_scale._forward_hooks or ln.hook_normalized._forward_hooks:
        return ln(x)
    return torch.nn.functional.layer_norm(x, x.shape[-1:], getattr(ln, "w", None), getattr(ln, "b", None), ln.eps)


def _tail_rest(block, q: Tensor, k: Tensor, v: Tensor, x_tail: Float[Tensor, "batch width d_model"],
               lengths: Int[Tensor, " batch"], width: int) -> Float[Tensor, "batch width d_model"]:
    """The rest of a block for the last `width` queries: causal attention over every key position (each query sees
    the keys up to its own position), W_O, the residual add and the MLP half, firing the block's hooks."""
    attn = block.attn
    scores = attn.calculate_attention_scores(q, k)  # (batch, head, width, pos)
    qpos = (lengths.to(k.device)[:, None] - width + torch.arange(width, device=k.device)).clamp(min=0)
    keep = torch.arange(k.shape[1], device=k.device)[None, None] <= qpos[:, :, None]  # (batch, width, pos)
    pattern = attn.hook_pattern(torch.softmax(scores.masked_fill(~keep[:, None], float("-inf")), -1))
    z = attn.calculate_z_scores(v, pattern)
    out = torch.nn.functional.linear(z.flatten(-2), attn.W_O.flatten(0, 1).T, attn.b_O)
    return mlp_half(block, block.hook_resid_mid(x_tail + block.hook_attn_out(out)))


def low_rank_tail_block(block, x: Float[Tensor, "batch pos d_model"], change: Float[Tensor, "rows pos k"],
                        basis: Float[Tensor, "k d_model"], lengths: Int[Tensor, " rows"],
                        width: int, memo: dict | None = None) -> Float[Tensor, "rows width d_model"]:
    """`tail_query_block` of the input x' = x + change @ basis (x clean, repeated rows // batch times along the batch;
    `change` of rank k per position) without forming x' at every position: LayerNorm's centring is linear and its
    scale needs only |x'_c|^2 = |x_c|^2 + 2 change·(x_c @ basis_cᵀ) + change G changeᵀ (basis_c the centred basis,
    G = basis_c basis_cᵀ), so every position's keys and values cost k·d_model instead of d_model². Exact up to
    float rounding (a test compares the per-condition loop). `memo`: a dict kept while x, basis and lengths[:batch]
    stay the same (one chunk of prompts, one cluster), so that the terms of the clean x are computed once for all
    its batches of conditions."""
    attn, ln = block.attn, block.ln1
    n, pos, d = x.shape
    r, k = change.shape[0] // n, change.shape[-1]
    memo = {} if memo is None else memo
    if not memo:
        w = ln.w if hasattr(ln, "w") else torch.ones(d, dtype=x.dtype, device=x.device)
        beta = ln.b if hasattr(ln, "b") else torch.zeros(d, dtype=x.dtype, device=x.device)
        w_kv, b_kv, n_heads, d_head = _kv_weights(attn)
        xc = x - x.mean(-1, keepdim=True)
        uc = basis - basis.mean(-1, keepdim=True)
        memo.update(sq=(xc * xc).sum(-1), cross=2 * (xc @ uc.T), gram=uc @ uc.T, kv=(xc * w) @ w_kv,
                    kv_basis=(uc * w) @ w_kv, b_kv=b_kv + beta @ w_kv,
                    x_tail=tail(x, lengths[:n], width), heads=(n_heads, d_head))
    m = memo
    # the clean terms broadcast over the r conditions (rows are condition-major: row = condition * n + prompt)
    ch = change.view(r, n, pos, k)
    sq = (ch * (m["cross"] + ch @ m["gram"])).sum(-1).add_(m["sq"])
    scale = (sq / d + ln.eps).sqrt_()[..., None]
    kv = torch.matmul(ch, m["kv_basis"]).add_(m["kv"]).div_(scale).add_(m["b_kv"]).view(r * n, pos, -1)
    n_heads, d_head = m["heads"]
    k_, v = (t.reshape(*kv.shape[:2], n_heads, d_head) for t in kv.split(n_heads * d_head, -1))
    k_, v = attn.hook_k(k_), attn.hook_v(v)
    x_tail = (tail(change, lengths, width) @ basis).view(r, n, width, d).add_(m["x_tail"]).view(r * n, width, d)
    q = attn.hook_q(torch.einsum("bpd,hde->bphe", ln(x_tail), attn.W_Q) + attn.b_Q)
    return _tail_rest(block, q, k_, v, x_tail, lengths, width)
