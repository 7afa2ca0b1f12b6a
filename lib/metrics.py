"""Model metrics: per-head induction and previous-token scores, n-gram baselines."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib import hooks


def repeated_tokens(
    n_seqs: int, half: int, pool: Int[Tensor, "n_pool"], generator: torch.Generator
) -> Int[Tensor, "n_seqs two_half"]:
    """Sequences [r; r] with r drawn uniformly from the token ids in `pool` (length 2*half)."""
    if half < 2:
        raise ValueError(f"half={half!r} is not allowed: at least 2 tokens")
    r = pool[torch.randint(0, len(pool), (n_seqs, half), generator=generator)]
    return torch.cat([r, r], dim=1)


def frequent_tokens(tokens: Int[Tensor, "..."], k: int, d_vocab: int) -> Int[Tensor, "k"]:
    """The k most frequent token ids in a token tensor (rare tokens' embeddings are barely trained)."""
    counts = torch.bincount(tokens.flatten(), minlength=d_vocab)
    return counts.argsort(descending=True)[:k]


@torch.no_grad()
def attention_patterns(hooked, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer batch head q k"]:
    """Attention patterns of every layer (run_with_cache on the pattern hooks only)."""
    names = [hooks.name("pattern", layer) for layer in range(hooked.cfg.n_layers)]
    _, cache = hooked.run_with_cache(tokens, names_filter=lambda n: n in names)
    return torch.stack([cache[n] for n in names])


def _diag_score(patterns: Tensor, offset: int, start: int) -> Float[Tensor, "layer batch head"]:
    """Mean attention from query i to key i - offset over queries i >= start, per sequence."""
    q = torch.arange(start, patterns.shape[-2])
    return patterns[..., q, q - offset].mean(dim=-1)


@torch.no_grad()
def head_scores(
    hooked, tokens: Int[Tensor, "batch two_half"], per_sequence: bool = False
) -> dict[str, Float[Tensor, "layer head"]]:
    """Induction score (attention from i to i-half+1 in the repeat) and previous-token score per head.

    With per_sequence the scores keep a batch axis: [batch, layer, head].
    """
    half = tokens.shape[1] // 2
    pat = attention_patterns(hooked, tokens)
    out = {"induction": _diag_score(pat, half - 1, half), "prev_token": _diag_score(pat, 1, 1)}
    return {k: v.transpose(0, 1) if per_sequence else v.mean(dim=1) for k, v in out.items()}


def repeat_of(windows: Int[Tensor, "n pos"], half: int) -> Int[Tensor, "n two_half"]:
    """[r; r] where r is the first `half` tokens of each window (repeated natural text)."""
    return torch.cat([windows[:, :half], windows[:, :half]], dim=1)


@torch.no_grad()
def per_token_loss(hooked, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """Next-token cross-entropy at each position."""
    logits = hooked(tokens).float()
    return torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def ngram_baseline(
    train: Int[Tensor, "n pos"], evaluate: Int[Tensor, "m pos"], d_vocab: int, order: int, k: float = 1.0
) -> dict[str, float]:
    """Loss and accuracy of a unigram (order 1) or bigram (order 2) model fitted on `train` sequences.

    Bigram probabilities shrink towards the unigram: p(b|a) = (c(a,b) + k p(b)) / (c(a) + k); unigram is add-one.
    """
    if order not in (1, 2):
        raise ValueError(f"order={order!r} is not allowed: 1 (unigram) or 2 (bigram)")
    uni = torch.bincount(train[:, 1:].flatten(), minlength=d_vocab).double() + 1.0
    p_uni = uni / uni.sum()
    prev, nxt = evaluate[:, :-1].flatten(), evaluate[:, 1:].flatten()
    if order == 1:
        p, pred = p_uni[nxt], torch.full_like(nxt, int(p_uni.argmax()))
    else:
        pair = (train[:, :-1] * d_vocab + train[:, 1:]).flatten()
        keys, counts = torch.unique(pair, return_counts=True)
        c_prev = torch.bincount(train[:, :-1].flatten(), minlength=d_vocab).double()
        query = prev * d_vocab + nxt
        pos = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
        c_pair = torch.where(keys[pos] == query, counts[pos], 0).double()
        p = (c_pair + k * p_uni[nxt]) / (c_prev[prev] + k)
        pred = _bigram_argmax(keys, counts, d_vocab, p_uni)[prev]
    return {"loss": float(-p.log().mean()), "accuracy": float((pred == nxt).double().mean())}


def _bigram_argmax(keys: Tensor, counts: Tensor, d_vocab: int, p_uni: Tensor) -> Int[Tensor, "d_vocab"]:
    """For each previous token, the most frequent next token (the unigram mode where unseen)."""
    a, b = keys // d_vocab, keys % d_vocab
    best = torch.zeros(d_vocab, dtype=counts.dtype).scatter_reduce(0, a, counts, "amax", include_self=True)
    is_best = counts == best[a]
    smallest = torch.full((d_vocab,), d_vocab, dtype=torch.long)  # ties: the smallest next-token id
    smallest = smallest.scatter_reduce(0, a[is_best], b[is_best], "amin", include_self=True)
    return torch.where(smallest < d_vocab, smallest, int(p_uni.argmax()))
