"""Our decoder-only transformer (fast, for training) and its exact TransformerLens twin."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from lib.core.config import ModelConfig

KVCache = list[tuple[Tensor, Tensor]]
_ACT = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


class Attention(nn.Module):
    """Causal multi-head self-attention with a fused QKV projection and SDPA."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        inner = cfg.n_heads * cfg.d_head
        self.qkv = nn.Linear(cfg.d_model, 3 * inner)
        self.out = nn.Linear(inner, cfg.d_model)

    def forward(
        self, x: Float[Tensor, "batch pos d_model"], past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Float[Tensor, "batch pos d_model"], tuple[Tensor, Tensor]]:
        """Attention output and this layer's (k, v) including `past`."""
        b, t, _ = x.shape
        h, dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = self.qkv(x).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        mask, causal = None, past is None
        if past is not None and t > 1:  # several new queries after a cache: causal mask offset by the cache length
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
        p = self.cfg.dropout if self.training else 0.0
        z = _attend(q, k, v, mask, causal, p)
        return self.out(z.transpose(1, 2).reshape(b, t, h * dh)), (k, v)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, p: float) -> Tensor:
    """softmax(q k^T / sqrt(d_head)) v with a causal or boolean mask -> (B, nh, T, hs)."""
    if not (q.dtype == torch.bfloat16 and q.device.type == "cpu"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
    # PyTorch's bf16 SDPA on CPU runs several times slower than its fp32 kernel (its backward worst):
    # spell it out with bf16 matmuls and an fp32 softmax instead.
    if causal:
        mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
    bias = torch.zeros(q.shape[2], k.shape[2], device=q.device)
    if mask is not None:
        bias = bias.masked_fill(~mask, float("-inf"))
    # one pass: scale, mask and cast to fp32 (type promotion with the fp32 bias)
    scores = torch.add(bias, q @ k.transpose(-2, -1), alpha=q.shape[-1] ** -0.5)  # (B, nh, T, S)
    probs = F.dropout(scores.softmax(-1), p)
    return probs.to(v.dtype) @ v


class MLP(nn.Module):
    """Two-layer MLP with the configured nonlinearity."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.act = _ACT[cfg.act_fn]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: attention, then (unless attention-only) MLP."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        if not cfg.attention_only:
            self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
            self.mlp = MLP(cfg)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        a, kv = self.attn(self.ln1(x), past)
        x = x + self.drop(a)
        if hasattr(self, "mlp"):
            x = x + self.drop(self.mlp(self.ln2(x)))
        return x, kv


class Transformer(nn.Module):
    """Decoder-only transformer; forward(tokens) -> logits [batch, pos, d_vocab]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """GPT-2 init: N(0, init_range), residual-writing projections scaled by 1/sqrt(2 n_layers), zero biases."""
        std_out = self.cfg.init_range / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name.split(".")[-2]:
                nn.init.ones_(p)
            else:
                std = std_out if name.endswith(("out.weight", "fc_out.weight")) else self.cfg.init_range
                with torch.no_grad():
                    p.normal_(0.0, std, generator=generator)

    def forward(
        self, tokens: Int[Tensor, "batch pos"], past: KVCache | None = None, return_cache: bool = False
    ) -> Float[Tensor, "batch pos d_vocab"] | tuple[Tensor, KVCache]:
        """Logits; with return_cache also the per-layer (k, v) for incremental decoding."""
        start = 0 if past is None else past[0][0].shape[2]
        t = tokens.shape[1]
        if start + t > self.cfg.n_ctx:
            raise ValueError(f"sequence length {start + t} exceeds n_ctx={self.cfg.n_ctx}")
        pos = torch.arange(start, start + t, device=tokens.device)
        x = self.drop(self.embed(tokens) + self.pos_embed(pos))
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i])
            cache.append(kv)
        logits = self.unembed(self.ln_final(x))
        return (logits, cache) if return_cache else logits


def loss_fn(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Mean next-token cross-entropy (logits at position i predict token i+1)."""
    # Shift the targets, not the logits: slicing logits[:, :-1] copies them forward and scatters their
    # gradient into a zeroed full-size tensor backward; the last position is ignored instead.
    targets = F.pad(tokens[:, 1:], (0, 1), value=-100)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)


@torch.no_grad()
def generate(
    model: Transformer,
    tokens: Int[Tensor, "batch pos"],
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Int[Tensor, "batch pos_out"]:
    """Append max_new_tokens sampled tokens (temperature 0 = greedy); the KV cache avoids recomputation."""
    total = tokens.shape[1] + max_new_tokens
    if total > model.cfg.n_ctx:
        raise ValueError(f"prompt length {tokens.shape[1]} + max_new_tokens {max_new_tokens} exceeds n_ctx={model.cfg.n_ctx}")
    if temperature < 0:
        raise ValueError(f"temperature={temperature!r} is not allowed: a float >= 0 (0 = greedy)")
    past, new = None, tokens
    for _ in range(max_new_tokens):
        if use_cache:
            logits, past = model(new, past=past, return_cache=True)
        else:
            logits = model(tokens)
        last = logits[:, -1].float()
        if temperature == 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            nxt = torch.multinomial(F.softmax(last / temperature, -1), 1, generator=generator)
        tokens, new = torch.cat([tokens, nxt], dim=1), nxt
    return tokens


# ---------------------------------------------------------------------------------------------
# TransformerLens twin


def hooked_config(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """The HookedTransformerConfig with our architecture."""
    from transformer_lens import HookedTransformerConfig

    return HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_ctx=cfg.n_ctx, d_head=cfg.d_head, n_heads=cfg.n_heads,
        d_mlp=None if cfg.attention_only else cfg.d_mlp, d_vocab=cfg.d_vocab, act_fn=cfg.act_fn,
        attn_only=cfg.attention_only, normalization_type="LN", eps=cfg.ln_eps, positional_embedding_type="standard",
        default_prepend_bos=False, device=str(device), init_weights=False, seed=None,
    )


def hooked_state_dict(model: Transformer) -> dict[str, Tensor]:
    """Our weights renamed and reshaped to TransformerLens' layout (W_Q [n_heads, d_model, d_head] etc.)."""
    cfg, sd = model.cfg, {}
    h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    sd["embed.W_E"] = model.embed.weight
    sd["pos_embed.W_pos"] = model.pos_embed.weight
    for i, blk in enumerate(model.blocks):
        p = f"blocks.{i}."
        sd[p + "ln1.w"], sd[p + "ln1.b"] = blk.ln1.weight, blk.ln1.bias
        w = blk.attn.qkv.weight.view(3, h, dh, d).permute(0, 1, 3, 2)  # (3, nh, d_model, hs)
        b = blk.attn.qkv.bias.view(3, h, dh)
        for j, m in enumerate("QKV"):
            sd[p + f"attn.W_{m}"], sd[p + f"attn.b_{m}"] = w[j], b[j]
        sd[p + "attn.W_O"] = blk.attn.out.weight.view(d, h, dh).permute(1, 2, 0)
        sd[p + "attn.b_O"] = blk.attn.out.bias
        if not cfg.attention_only:
            sd[p + "ln2.w"], sd[p + "ln2.b"] = blk.ln2.weight, blk.ln2.bias
            sd[p + "mlp.W_in"], sd[p + "mlp.b_in"] = blk.mlp.fc_in.weight.T, blk.mlp.fc_in.bias
            sd[p + "mlp.W_out"], sd[p + "mlp.b_out"] = blk.mlp.fc_out.weight.T, blk.mlp.fc_out.bias
    sd["ln_final.w"], sd["ln_final.b"] = model.ln_final.weight, model.ln_final.bias
    sd["unembed.W_U"], sd["unembed.b_U"] = model.unembed.weight.T, model.unembed.bias
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def quiet_hooked(cfg, tokenizer=None):
    """Construct a HookedTransformer without its 3.9 deprecation chatter."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
        return HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=True)


def to_hooked(model: Transformer, tokenizer=None):
    """A TransformerLens HookedTransformer carrying the same weights (identical logits in eval mode)."""
    device = next(model.parameters()).device
    hooked = quiet_hooked(hooked_config(model.cfg, device), tokenizer=tokenizer)
    missing, unexpected = hooked.load_state_dict(hooked_state_dict(model), strict=False)
    missing = [k for k in missing if not k.endswith(("IGNORE", "mask"))]
    if missing or unexpected:
        raise RuntimeError(f"weight conversion mismatch: missing={missing}, unexpected={unexpected}")
    return hooked.eval()
