"""Test helpers shared by several test modules: floating-point tolerances derived from the precision and the size of
the quantities, and small hand-built models.

Two evaluations of the same function that differ only in kernels (AVX2 vs AVX-512, MKL vs oneDNN), in batch
shape or in summation order (1 vs 2 threads) agree to a few units of rounding per accumulation. A tolerance must
follow from that and from the size of what is compared, never from what one CPU happened to give.

- **float32** (`fp32_tol`): unit roundoff u = 2^-24 ≈ 6e-8. The test models are tiny (d_model ≤ 32, ≤ 2 layers,
  reductions of ≤ ~100 terms), so a rounding difference stays within a few dozen u of the largest magnitude
  compared; 256 u (≈ 1.5e-5 relative) leaves a margin for growth through the layers and is still orders below
  what a real discrepancy (a missing bias, a wrong scale, a wrong mask: ≥ 1e-3 relative) produces.
- **float64** (`F64_RTOL`): u = 2^-53 ≈ 1e-16; the same argument gives ≲ 1e-13, and 1e-9 of the largest
  magnitude leaves 10^4 for growth while catching any discrepancy a float32 test could. Where a claim is "these
  two implementations compute the same function", tests check it in float64, where the answer does not depend
  on the CPU at all.
- **bfloat16** (`bf16_tol`): u = 2^-9 ≈ 2e-3, so a bf16 result is compared with its float32 reference at 16 u of
  the largest input or output magnitude: rounding the inputs alone costs a few u, and a real bug (a missing
  1/sqrt(d_head), a wrong mask) costs O(1).
- **Bitwise** (`torch.equal`) is claimed only where the same kernels run on the same inputs in the same order in
  one process (determinism for a seed, resume, hooks removed), which holds on any CPU.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from lib.analysis.prompts import IGNORE, KeywordPrompts
from lib.analysis.units import TopicStats, stats_from_acts
from lib.core import config, model, train
from lib.core.config import ModelConfig
from lib.core.model import Transformer

U32 = torch.finfo(torch.float32).eps / 2  # unit roundoff of float32, 2^-24
U_BF16 = 2.0**-9  # unit roundoff of bfloat16 (8 significand bits)
F64_RTOL = 1e-9


def _scale(reference) -> float:
    """The largest |reference|, at least 1 (the intermediates of these computations are O(1) or larger)."""
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().double().cpu().numpy()
    return max(float(np.max(np.abs(np.asarray(reference, dtype=np.float64)))), 1.0)


def fp32_tol(reference, ulps: float = 256) -> float:
    """Absolute tolerance for comparing float32 results: `ulps` units of roundoff at the largest |reference|."""
    return ulps * U32 * _scale(reference)


def bf16_tol(reference, ulps: float = 16) -> float:
    """Absolute tolerance for a bf16 result against its float32 reference: `ulps` bf16 roundoffs at max |reference|."""
    return ulps * U_BF16 * _scale(reference)


def f64_tol(reference) -> float:
    """Absolute tolerance for comparing float64 results: F64_RTOL of the largest |reference| (at least 1)."""
    return F64_RTOL * _scale(reference)


def float64(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of a module (the original is untouched)."""
    return copy.deepcopy(module).to(torch.float64)


def attn_model(d_model=64, d_head=32, d_vocab=40, n_ctx=32, seed=0) -> HookedTransformer:
    """A random 2-layer attention-only HookedTransformer without LayerNorm (2 heads per layer)."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=d_model, n_ctx=n_ctx, d_head=d_head, n_heads=2,
                                  d_vocab=d_vocab, attn_only=True, normalization_type=None, act_fn="relu",
                                  device="cpu", seed=seed)
    return HookedTransformer(cfg).eval()


def hand_induction_model(d_vocab=40, n_ctx=32) -> HookedTransformer:
    """Layer 0 head 0 copies the previous token into the residual; layer 1 head 0 attends where it matches."""
    model = attn_model(d_model=128, d_head=64, d_vocab=d_vocab, n_ctx=n_ctx)
    big = 200.0
    pos, tok, prev = slice(0, 32), slice(32, 32 + d_vocab), slice(72, 72 + d_vocab)  # residual layout
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.pos_embed.W_pos[:, pos] = torch.eye(n_ctx, 32)
        model.embed.W_E[:, tok] = torch.eye(d_vocab)
        a0, a1 = model.blocks[0].attn, model.blocks[1].attn
        a0.W_Q[0, pos, :32] = torch.eye(32) * big  # query: my position i
        a0.W_K[0, pos, :32] = torch.diag(torch.ones(31), 1)  # key at j carries position j+1: matches i = j+1
        a0.W_V[0, tok, :d_vocab] = torch.eye(d_vocab)
        a0.W_O[0, :d_vocab, prev] = torch.eye(d_vocab)  # writes the previous token into `prev`
        a1.W_Q[0, tok, :d_vocab] = torch.eye(d_vocab) * big  # query: my token
        a1.W_K[0, prev, :d_vocab] = torch.eye(d_vocab)  # key: the token before j
    return model


def random_transformer(cfg: ModelConfig, seed: int = 0, matrix_sd: float = 0.5, vector_sd: float = 0.2) -> Transformer:
    """Our Transformer with large random weights (not the small init), so that every component matters; eval mode."""
    m = Transformer(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (matrix_sd if p.dim() > 1 else vector_sd))
    return m.eval()


LAYER1_ATTENTION = ["blocks.1.attn.W_Q", "blocks.1.attn.W_K", "blocks.1.attn.W_V", "blocks.1.attn.W_O"]


def tiny_attention_hooked():
    """A random 2-layer attention-only model (2 heads, d_model 16, 30 tokens, n_ctx 12) as a HookedTransformer: the
    model the attribution tests take gradients of."""
    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_vocab=30, n_ctx=12, attention_only=True)
    return model.to_hooked(random_transformer(cfg, matrix_sd=0.3, vector_sd=0.1))


TEN_NEURONS = config.resolve("smoke", attention_only=False, n_layers=2, d_mlp=5, init_range=0.3)


def ten_neuron_model():
    """A HookedTransformer with 2 MLP layers of 5 neurons (10 players), large random init so every neuron matters."""
    return model.to_hooked(train.init_model(TEN_NEURONS).eval())


def random_prompts(n: int, min_len: int, d_vocab: int, seed: int = 1, max_word: int = 3) -> KeywordPrompts:
    """n right-padded random prompts of min_len.. tokens before keywords of 1..max_word random tokens (in turn), fed
    teacher-forced (prompt + keyword minus its last token), topics a, b, c in turn."""
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.arange(min_len, min_len + n)
    word_len = torch.arange(n) % max_word + 1
    lengths = prompt_len + word_len - 1
    tokens = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    targets = torch.full((n, max_word), IGNORE, dtype=torch.long)
    for i in range(n):
        p, w = int(prompt_len[i]), int(word_len[i])
        fed = torch.randint(1, d_vocab, (p + w,), generator=g)
        tokens[i, : p + w - 1] = fed[:-1]
        targets[i, max_word - w :] = fed[p:]
    return KeywordPrompts(tokens, lengths, targets, tuple("abc"[i % 3] for i in range(n)), ("x",) * n, torch.arange(n))


def nine_random_prompts() -> KeywordPrompts:
    """9 random prompts of 3..11 tokens before keywords of 1-3 tokens (`random_prompts`)."""
    return random_prompts(9, 3, TEN_NEURONS.model.d_vocab)


def planted_topic_stats() -> TopicStats:
    """TopicStats of 2 layers x 40 units over topics a, b, c: units 0-3, 4-7 and 8-11 fire on a, b and c."""
    mean = torch.zeros(3, 2, 40)
    mean[0, :, :4] = 3.0  # units 0-3 fire on topic "a"
    mean[1, :, 4:8] = 3.0
    mean[2, :, 8:12] = 3.0
    return TopicStats("mlp_post", ("a", "b", "c"), mean, torch.ones(3, 2, 40), torch.tensor([100, 100, 100]))


def planted_stats(n_topics: int, n_units: int = 512, planted: int = 13, windows_per_topic: int = 20,
                  shift: float = 2.0, seed: int = 0) -> TopicStats:
    """TopicStats (2 layers) over topics t0..t{n-1} computed from noisy synthetic window means: every unit's window
    means are N(0, 1); in each layer units planted*i .. planted*(i+1)-1 are `shift` sd higher on topic i's windows
    (for as many topics as fit in n_units). Cohen's d of a planted unit for its topic is about `shift`."""
    g = torch.Generator().manual_seed(seed)
    topics = tuple(f"t{i}" for i in range(n_topics))
    owner = torch.arange(n_topics).repeat_interleave(windows_per_topic)
    means = torch.randn(2, len(owner), n_units, generator=g)
    for i in range(min(n_topics, n_units // planted)):
        means[:, owner == i, planted * i : planted * (i + 1)] += shift
    layers = [stats_from_acts(means[layer], owner, topics) for layer in range(2)]
    return TopicStats("mlp_post", topics, torch.cat([st.mean for st in layers], 1),
                      torch.cat([st.var for st in layers], 1), layers[0].count)


def small_mlp_hooked():
    """A 2-layer random model with MLPs (d_model 16, vocab 50, n_ctx 12, large weights) as a HookedTransformer."""
    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=16, d_vocab=50, n_ctx=12, attention_only=False)
    return model.to_hooked(random_transformer(cfg))


def small_windows() -> torch.Tensor:
    """24 random token windows of 12 tokens for small_mlp_hooked."""
    return torch.randint(0, 50, (24, 12), generator=torch.Generator().manual_seed(1))


HF_KINDS = ("gpt2", "gpt_neox", "llama")  # one tiny model of each architecture family the loader is tested on


def save_tiny_hf(kind: str, folder, seed: int = 0, n_ctx: int = 64):
    """A tiny randomly initialised Hugging Face causal LM (hidden size 32, 2 layers, 4 heads) of `kind`, saved in
    `folder` with save_pretrained and a tokenizer built from the shipped GPT-2 vocabulary; returns the HF model.

    gpt_neox uses rotary positions on half of each head and parallel attention + MLP (Pythia's layout); llama a gated
    SiLU MLP, RMSNorm, rotary positions and grouped-query attention (2 key/value heads for 4 query heads). Weights
    are drawn with sd 0.1 (HF's default 0.02 leaves every logit near 0, which would make equivalence checks vacuous).
    """
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    from lib.core.data import EOS, gpt2_tokenizer

    tok = gpt2_tokenizer()
    common = dict(vocab_size=tok.vocab_size, initializer_range=0.1, bos_token_id=tok.eos_id, eos_token_id=tok.eos_id)
    if kind == "gpt2":
        cfg, cls = GPT2Config(n_positions=n_ctx, n_embd=32, n_layer=2, n_head=4, **common), GPT2LMHeadModel
    elif kind == "gpt_neox":
        cfg = GPTNeoXConfig(max_position_embeddings=n_ctx, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=128, rotary_pct=0.5, use_parallel_residual=True, **common)
        cls = GPTNeoXForCausalLM
    elif kind == "llama":
        cfg = LlamaConfig(max_position_embeddings=n_ctx, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=64, **common)
        cls = LlamaForCausalLM
    else:
        raise ValueError(f"kind={kind!r} is not one of {HF_KINDS}")
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    model.save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok.hf, eos_token=EOS, bos_token=EOS).save_pretrained(folder)
    return model
