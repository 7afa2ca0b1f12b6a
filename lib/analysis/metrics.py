"""Model metrics: per-head induction and previous-token scores, n-gram baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lib.core import hooks


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


# ---------------------------------------------------------------------------------------------
# Training dynamics (report 6): prefix matching, in-context learning, phase-change detection


def induction_from_patterns(patterns: Float[Tensor, "... q k"]) -> Float[Tensor, "..."]:
    """Induction score from attention patterns on [r; r] sequences (differentiable; keeps the leading axes)."""
    half = patterns.shape[-1] // 2
    return _diag_score(patterns, half - 1, half)


def prefix_matching_score(
    patterns: Float[Tensor, "layer batch head q k"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "layer head"]:
    """Attention from each token to the tokens that *followed* its earlier occurrences, on any text.

    For query i the matching keys are j < i with tokens[j-1] == tokens[i]; the score is the attention mass on
    them, averaged over the queries that have at least one match (0 where no query has one). On [r; r] with
    distinct tokens in r it equals the induction score.
    """
    t = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :-1]  # [batch, i, j-1]: token i equals token j-1
    match = torch.zeros(tokens.shape[0], t, t, dtype=torch.bool, device=tokens.device)
    match[:, :, 1:] = same
    match &= torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril(-1)  # keys j < i
    has = match.any(-1)  # [batch, q]
    mass = (patterns * match[None, :, None]).sum(-1)  # [layer, batch, head, q]
    n = has.sum().clamp_min(1)
    return (mass * has[None, :, None]).sum(dim=(1, 3)) / n


def icl_score(
    per_token_loss: Float[Tensor, "batch pos"], early: int, late: int, width: int = 2
) -> Float[Tensor, "batch"]:
    """In-context-learning score: mean loss at positions late±width minus at early±width (negative = ICL).

    Olsson et al. (2022) use token 500 minus token 50 of 512; here positions index the per-token loss.
    """
    n = per_token_loss.shape[1]
    if not (0 <= early - width and early + width < late - width and late + width < n):
        raise ValueError(f"early={early}, late={late}, width={width} are not allowed: need "
                         f"0 <= early-width, early+width < late-width, late+width < {n}")
    lo, hi = per_token_loss[:, early - width : early + width + 1], per_token_loss[:, late - width : late + width + 1]
    return hi.mean(1) - lo.mean(1)


@dataclass(frozen=True)
class PhaseChange:
    """A detected phase change: the step of steepest change, the 10%-90% window of the jump, its size.

    found is False when the jump is below the detector's min_jump: the curve has no phase change.
    """

    step: float
    start: float
    end: float
    jump: float
    low: float
    high: float
    found: bool = True


def _smooth(y: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing with edge padding (sigma in samples; 0 = none)."""
    if sigma <= 0:
        return y
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return np.convolve(np.pad(y, r, mode="edge"), k / k.sum(), mode="valid")


def phase_change(steps, values, increasing: bool = True, smooth_frac: float = 0.03, n_grid: int = 1000,
                 min_jump: float = 0.0) -> PhaseChange:
    """Detect the phase change of a metric over training: the step of its steepest rise (or fall).

    The curve is interpolated onto a uniform step grid (checkpoints may be log-spaced), smoothed with a Gaussian of
    width smooth_frac x the step range, and differentiated. `jump` is high - low of the smoothed curve around that
    step (low: its extreme before, high: after), signed so that a rise in the expected direction is positive;
    `found` says whether it exceeds min_jump.
    """
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 4 or np.any(np.diff(x) <= 0) or not np.isfinite(y).all():
        raise ValueError("steps and values must be equal-length 1-D, finite, with >= 4 increasing steps")
    grid = np.linspace(x[0], x[-1], n_grid)
    sign = 1.0 if increasing else -1.0
    ys = sign * _smooth(np.interp(grid, x, y), smooth_frac * n_grid)
    i = int(np.argmax(np.gradient(ys)))
    low, high = ys[: i + 1].min(), ys[i:].max()
    jump = high - low
    before = np.nonzero(ys[: i + 1] <= low + 0.1 * jump)[0]
    after = np.nonzero(ys[i:] >= low + 0.9 * jump)[0]
    start = grid[before[-1]] if len(before) else grid[0]
    end = grid[i + after[0]] if len(after) else grid[-1]
    return PhaseChange(step=float(grid[i]), start=float(start), end=float(end), jump=float(jump),
                       low=float(sign * low), high=float(sign * high), found=bool(jump > 0 and jump >= min_jump))


def repeated_ngram_mask(tokens: Int[Tensor, "pos"], n: int) -> Bool[Tensor, "pos"]:
    """Tokens that belong to an n-gram occurring more than once in the sequence."""
    if n < 1:
        raise ValueError(f"n={n!r} is not allowed: an n-gram length >= 1")
    t = tokens.tolist()
    grams: dict[tuple, list[int]] = {}
    for i in range(len(t) - n + 1):
        grams.setdefault(tuple(t[i : i + n]), []).append(i)
    mask = torch.zeros(len(t), dtype=torch.bool)
    for starts in grams.values():
        if len(starts) > 1:
            for s in starts:
                mask[s : s + n] = True
    return mask
