"""Resuming a pre-LayerNorm forward pass: the pieces that let batched evaluations (the impairment sweep, the
neuron game) start from cached clean activations at one layer and unembed only the positions that predict each
prompt's keyword (its last `width` real positions)."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

from lib.analysis.prompts import KeywordPrompts, tail


def prompt_chunks(prompts: KeywordPrompts, max_tokens: int) -> list[Tensor]:
    """Prompt indices sorted by length (longest first) and cut into chunks of at most max_tokens padded tokens."""
    order = prompts.lengths.argsort(descending=True, stable=True)
    chunks, start = [], 0
    while start < len(order):
        size = max(1, max_tokens // int(prompts.lengths[order[start]]))
        chunks.append(order[start : start + size])
        start += size
    return chunks


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


def mlp_half(block, resid_mid: Tensor) -> Tensor:
    """The second half of a pre-LN block (ln2, MLP, residual add), firing its hooks."""
    return block.hook_resid_post(resid_mid + block.apply_mlp(block.ln2(resid_mid)))


def tail_query_block(block, x: Float[Tensor, "batch pos d_model"], lengths: Int[Tensor, " batch"],
                     width: int) -> Float[Tensor, "batch width d_model"]:
    """A block's output at each row's last `width` real positions only: those queries, keys and values up to each
    (causal), so that the keyword's tokens are scored without running the block over the whole prompt."""
    h = block.ln1(x)
    q, k, v = block.attn.calculate_qkv_matrices(tail(h, lengths, width), h, h)
    return _tail_rest(block, q, k, v, tail(x, lengths, width), lengths, width)


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
                        width: int) -> Float[Tensor, "rows width d_model"]:
    """`tail_query_block` of the input x' = x + change @ basis (x clean, repeated rows // batch times along the batch;
    `change` of rank k per position) without forming x' at every position: LayerNorm's centring is linear and its
    scale needs only |x'_c|^2 = |x_c|^2 + 2 change·(x_c @ basis_cᵀ) + change G changeᵀ (basis_c the centred basis,
    G = basis_c basis_cᵀ), so every position's keys and values cost k·d_model instead of d_model². Exact up to
    float rounding (a test compares the per-condition loop)."""
    attn, ln = block.attn, block.ln1
    r = change.shape[0] // x.shape[0]
    d = x.shape[-1]
    w = ln.w if hasattr(ln, "w") else torch.ones(d, dtype=x.dtype, device=x.device)
    beta = ln.b if hasattr(ln, "b") else torch.zeros(d, dtype=x.dtype, device=x.device)
    n_heads, d_head = attn.W_K.shape[0], attn.W_K.shape[-1]
    w_kv = torch.cat([attn.W_K, attn.W_V], 0).permute(1, 0, 2).reshape(d, 2 * n_heads * d_head)
    b_kv = torch.cat([attn.b_K, attn.b_V], 0).reshape(-1) + beta @ w_kv
    xc = x - x.mean(-1, keepdim=True)
    uc = basis - basis.mean(-1, keepdim=True)
    rep = lambda t: t.repeat(r, *([1] * (t.dim() - 1)))  # noqa: E731 - clean tensors, one copy per condition
    sq = rep((xc * xc).sum(-1)) + 2 * (change * rep(xc @ uc.T)).sum(-1) + ((change @ (uc @ uc.T)) * change).sum(-1)
    scale = (sq / d + ln.eps).sqrt()[..., None]
    kv = (rep((xc * w) @ w_kv) + change @ ((uc * w) @ w_kv)) / scale + b_kv
    k, v = (t.reshape(*kv.shape[:2], n_heads, d_head) for t in kv.split(n_heads * d_head, -1))
    k, v = attn.hook_k(k), attn.hook_v(v)
    x_tail = tail(rep(x), lengths, width) + tail(change, lengths, width) @ basis
    q = attn.hook_q(torch.einsum("bpd,hde->bphe", ln(x_tail), attn.W_Q) + attn.b_Q)
    return _tail_rest(block, q, k, v, x_tail, lengths, width)
