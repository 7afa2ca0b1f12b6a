"""Training-data attribution over checkpoints, shared by the reports: checkpoint schedules and loading,
per-example gradients (torch.func vmap(grad), or one batched backward for attention weights), random projection,
TracIn over checkpoints (per checkpoint or per training visit), enrichment of an attribution against labels, caches."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

from lib.analysis.stats import binomial_ci, hypergeom_tail_p
from lib.core import artifacts, pretrained, train as tr
from lib.core.model import hooked_state_dict, to_hooked
from lib.core.train import load_checkpoint_weights

Objective = Callable[..., Tensor]  # hooked -> scalar tensor (differentiable)


# ---------------------------------------------------------------------------------------------
# Checkpoints: schedules, sampling, loading


def checkpoint_schedule(max_steps: int, n_log: int, n_linear: int) -> list[int]:
    """Checkpoint steps: 0, n_log log-spaced steps in [1, max_steps] and n_linear evenly spaced ones (deduplicated)."""
    if max_steps < 1 or n_log < 0 or n_linear < 0:
        raise ValueError(f"max_steps={max_steps}, n_log={n_log}, n_linear={n_linear} are not allowed: "
                         "max_steps >= 1 and counts >= 0")
    log = np.unique(np.round(np.logspace(0, math.log10(max_steps), n_log)).astype(int)) if n_log else []
    lin = np.round(np.linspace(0, max_steps, n_linear + 1)[1:]).astype(int) if n_linear else []
    return sorted({0, max_steps, *map(int, log), *map(int, lin)})


def pick_checkpoints(paths: Sequence[Path], n: int) -> list[Path]:
    """n checkpoints as evenly spaced in step as the available ones allow (first and last included)."""
    steps = np.array([checkpoint_step(p) for p in paths])
    targets = np.linspace(steps[0], steps[-1], n)
    chosen = sorted({int(np.abs(steps - t).argmin()) for t in targets})
    return [paths[i] for i in chosen]


def stratified_sample(labels: Bool[Tensor, " n"], n: int, frac_true: float, seed: int = 0) -> Int[Tensor, " m"]:
    """Indices of n examples, round(frac_true * n) with a True label and the rest False, without replacement, shuffled."""
    g = torch.Generator().manual_seed(seed)
    pos, neg = torch.nonzero(labels).flatten(), torch.nonzero(~labels).flatten()
    k = round(frac_true * n)
    if k > len(pos) or n - k > len(neg):
        raise ValueError(f"n={n}, frac_true={frac_true} are not allowed: need {k} True and {n - k} False labels, "
                         f"have {len(pos)} and {len(neg)}")
    out = torch.cat([pos[torch.randperm(len(pos), generator=g)[:k]], neg[torch.randperm(len(neg), generator=g)[: n - k]]])
    return out[torch.randperm(n, generator=g)]  # mixed order, so that no ranking tie favours one label


def attention_weight_names(layer: int) -> list[str]:
    """HookedTransformer parameter names of one layer's attention weights (W_Q, W_K, W_V, W_O)."""
    return [f"blocks.{layer}.attn.W_{m}" for m in "QKVO"]


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder step_XXXXXXX."""
    return int(Path(path).name.split("_")[1])


def load_hooked(path: Path, hooked=None, device: str | torch.device = "cpu"):
    """(HookedTransformer, step) for a checkpoint folder; reuses `hooked` (same architecture) if given."""
    model, step = load_checkpoint_weights(path, device)
    if hooked is None:
        return to_hooked(model.eval()), step
    hooked.load_state_dict(hooked_state_dict(model), strict=False)
    return hooked.eval(), step


# ---------------------------------------------------------------------------------------------
# Per-example gradients


_ATTN_WEIGHT = re.compile(r"^blocks\.(\d+)\.attn\.(W_Q|W_K|W_V|W_O)$")


def param_subset(model: torch.nn.Module, names: Sequence[str]) -> dict[str, Tensor]:
    """The named parameters (detached), in the order given; ValueError naming what exists."""
    grouped = getattr(getattr(model, "cfg", None), "n_key_value_heads", None) is not None
    for n in names:
        m = _ATTN_WEIGHT.match(n)
        if grouped and m and m.group(2) in ("W_K", "W_V"):
            # grouped-query attention stores one key/value per group (attn._W_K); attn.W_K is a per-head copy
            pretrained.require(model, f"per-example gradients of {n} (one per query head)", multi_head=True)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing or not names:
        raise ValueError(f"parameter names {missing or list(names)!r} are not allowed: choose from {sorted(params)}")
    return {n: params[n].detach() for n in names}


def lm_example_loss(logits: Float[Tensor, "1 pos d_vocab"], tokens: Int[Tensor, "pos"]) -> Tensor:
    """The training loss of one sequence: mean next-token cross-entropy."""
    return F.cross_entropy(logits[0, :-1].float(), tokens[1:])


ExampleLoss = Callable[..., Tensor]  # (model output on example[None], *example tensors) -> scalar


def per_example_grads(model: torch.nn.Module, names: Sequence[str], *tensors: Tensor,
                      loss: ExampleLoss = lm_example_loss, chunk: int = 32,
                      projection: Float[Tensor, "d k"] | None = None,
                      method: str = "auto") -> Float[Tensor, "n d_or_k"]:
    """Gradient of each example's loss w.r.t. the named parameters, flattened: [n, d] ([n, k] projected). The model
    reads tensors[0][i][None]; loss(output, *(t[i] for t in tensors)) is one example's loss. method "vmap":
    vmap(grad); "attention": one batched backward (`per_example_grads_attention`, attention weights only); "auto":
    the second where it applies (`attention_fast_path_ok`), else the first."""
    if method not in ("auto", "vmap", "attention"):
        raise ValueError(f"method={method!r} is not allowed: 'auto', 'vmap' or 'attention'")
    if method == "attention" or (method == "auto" and attention_fast_path_ok(model, names)):
        g = per_example_grads_attention(model, names, *tensors, loss=loss, chunk=chunk)
        return g if projection is None else g @ projection
    params = param_subset(model, names)
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}

    def one(p: dict[str, Tensor], *example: Tensor) -> Tensor:
        return loss(functional_call(model, {**frozen, **p}, (example[0][None],)), *example)

    per_ex = vmap(grad(one), in_dims=(None,) + (0,) * len(tensors))
    out = []
    for i in range(0, len(tensors[0]), chunk):
        gs = per_ex(params, *(t[i : i + chunk] for t in tensors))
        g = torch.cat([gs[n].flatten(1) for n in names], dim=1)
        out.append(g if projection is None else g @ projection)
    return torch.cat(out)


def attention_fast_path_ok(model: torch.nn.Module, names: Sequence[str]) -> bool:
    """Whether `per_example_grads_attention` applies: every name is an attention weight W_Q/W_K/W_V/W_O of a plain
    multi-head attention layer of a HookedTransformer (no split or grouped q/k/v input, no per-head result hook
    path, no 4-bit weights)."""
    c = getattr(model, "cfg", None)
    if c is None or not hasattr(model, "blocks") or not names or not all(_ATTN_WEIGHT.match(n) for n in names):
        return False
    if any(int(_ATTN_WEIGHT.match(n).group(1)) >= len(model.blocks) for n in names):
        return False
    # also not where the attention's input is not ln1's output or its output not hook_attn_out's input: a norm
    # after the attention (Gemma 2, OLMo 2), shortformer positions added to the queries and keys
    flags = ("use_split_qkv_input", "use_attn_in", "use_attn_result", "load_in_4bit", "use_qk_norm",
             "use_normalization_before_and_after")
    return (not any(getattr(c, f, False) for f in flags) and getattr(c, "n_key_value_heads", None) is None
            and getattr(c, "positional_embedding_type", "standard") != "shortformer"
            and getattr(c, "original_architecture", None) not in POST_NORM_ARCHITECTURES)


def per_example_grads_attention(model: torch.nn.Module, names: Sequence[str], *tensors: Tensor,
                                loss: ExampleLoss = lm_example_loss, chunk: int = 32) -> Float[Tensor, "n d"]:
    """`per_example_grads` for attention weights in one batched forward and backward per chunk: q = x W_Q + b_Q is
    applied position by position, so each example's gradient is Σ_pos x[pos]ᵀ ∂loss/∂q[pos] (and likewise for W_K,
    W_V; for W_O, Σ_pos z[pos]ᵀ ∂loss/∂out[pos]); examples do not interact (LayerNorm is per position), so the
    gradient of the summed loss with respect to the activations holds every example's own. Exact up to float
    rounding (a test compares the per-example loop in float64)."""
    check_fast = attention_fast_path_ok(model, names)
    if not check_fast:
        raise ValueError(f"parameter names {list(names)!r} are not allowed here: attention weights "
                         "blocks.L.attn.W_Q/W_K/W_V/W_O of a plain HookedTransformer attention")
    layers = sorted({int(_ATTN_WEIGHT.match(n).group(1)) for n in names})
    out = []
    for i in range(0, len(tensors[0]), chunk):
        ex = [t[i : i + chunk] for t in tensors]
        acts: dict[tuple[int, str], Tensor] = {}

        def keep(key):
            def fn(x, hook=None):
                acts[key] = x
                return x
            return fn

        fwd = []
        for L in layers:
            fwd += [(f"blocks.{L}.attn.hook_{k}", keep((L, k))) for k in ("q", "k", "v", "z")]
            x_name = f"blocks.{L}.ln1.hook_normalized" if hasattr(model.blocks[L].ln1, "hook_normalized") else \
                f"blocks.{L}.hook_resid_pre"  # no LayerNorm: the block's input is the attention's
            fwd += [(x_name, keep((L, "x"))), (f"blocks.{L}.hook_attn_out", keep((L, "o")))]
        with torch.no_grad():  # the layers below the first attributed one need no graph
            resid = model(ex[0], stop_at_layer=layers[0]) if layers[0] > 0 else None
        with torch.enable_grad(), model.hooks(fwd_hooks=fwd):
            logits = model(ex[0]) if resid is None else model(resid, start_at_layer=layers[0])
            if loss is lm_example_loss and len(ex) == 1:  # the sum of each sequence's mean loss, in one call
                total = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ex[0][:, 1:].flatten(),
                                        reduction="sum") / (ex[0].shape[1] - 1)
            else:  # unbind, not slicing: a slice's backward fills a zero tensor of the whole batch's logits
                total = sum(loss(lj[None], *(t[j] for t in ex)) for j, lj in enumerate(logits.unbind(0)))
            wanted = [acts[(L, k)] for L in layers for k in ("q", "k", "v", "o")]
            grads = dict(zip([(L, k) for L in layers for k in ("q", "k", "v", "o")],
                             torch.autograd.grad(total, wanted)))
        parts = {}
        with torch.no_grad():  # the parameters (LayerNorm's gain) must not put the result in a graph
            for L in layers:
                ln = model.blocks[L].ln1
                x = acts[(L, "x")].detach()
                x = x * ln.w + ln.b if hasattr(ln, "w") and hasattr(ln, "hook_normalized") else x  # gain and bias
                for k, w in (("q", "W_Q"), ("k", "W_K"), ("v", "W_V")):
                    parts[f"blocks.{L}.attn.{w}"] = torch.einsum("bpd,bphe->bhde", x, grads[(L, k)])
                parts[f"blocks.{L}.attn.W_O"] = torch.einsum("bphe,bpd->bhed", acts[(L, "z")].detach(),
                                                             grads[(L, "o")])
            out.append(torch.cat([parts[n].flatten(1) for n in names], dim=1))
    return torch.cat(out)


def _flat_grad(value: Tensor, params: dict[str, Tensor], names: Sequence[str]) -> Tensor:
    gs = torch.autograd.grad(value, [params[n] for n in names], allow_unused=True)
    return torch.cat([(torch.zeros_like(params[n]) if g is None else g).flatten() for n, g in zip(names, gs)])


def per_example_grads_loop(model: torch.nn.Module, names: Sequence[str], *tensors: Tensor,
                           loss: ExampleLoss = lm_example_loss) -> Float[Tensor, "n d"]:
    """The same gradients by one ordinary backward pass per example (the reference vmap must equal)."""
    param_subset(model, names)
    params = dict(model.named_parameters())
    out = []
    for i in range(len(tensors[0])):
        example = [t[i] for t in tensors]
        out.append(_flat_grad(loss(model(example[0][None]), *example), params, names).detach())
    return torch.stack(out)


def objective_grad(model: torch.nn.Module, objective: Objective, names: Sequence[str]) -> Float[Tensor, "d"]:
    """Gradient of a scalar objective(model) w.r.t. the named parameters, flattened (zeros where unused)."""
    param_subset(model, names)  # validates the names
    with torch.enable_grad():
        return _flat_grad(objective(model), dict(model.named_parameters()), names).detach()


def random_projection(d: int, k: int, seed: int = 0) -> Float[Tensor, "d k"]:
    """Gaussian Johnson-Lindenstrauss matrix N(0, 1/k): inner products of projected vectors are unbiased."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, k, generator=g) / math.sqrt(k)


# ---------------------------------------------------------------------------------------------
# TracIn over checkpoints


def checkpoint_intervals(steps: Sequence[int], end: int | None) -> np.ndarray:
    """Edges of the steps each checkpoint stands for: checkpoint k covers [edges[k], edges[k + 1]), between the
    midpoints to its neighbours (the first from its own step, the last up to `end`, default its own step)."""
    s = np.asarray(steps, dtype=float)
    if s.ndim != 1 or len(s) == 0 or np.any(np.diff(s) <= 0):
        raise ValueError(f"steps={list(steps)!r} are not allowed: a non-empty increasing sequence")
    bounds = np.concatenate([[s[0]], (s[1:] + s[:-1]) / 2, [s[-1] if end is None else end]])
    return np.ceil(bounds).astype(int)


def tracin_weights(steps: Sequence[int], lr_at: Callable[[int], float], end: int | None = None) -> Float[Tensor, "k"]:
    """Weight of each checkpoint in the TracIn sum: the learning rate summed over the steps it stands for.

    Checkpoint k stands for the steps between the midpoints to its neighbours (the first from its own step,
    the last up to `end`, default its own step): equally spaced checkpoints get lr x spacing, as in Pruthi et al.
    """
    edges = checkpoint_intervals(steps, end)
    # an empty range (a lone checkpoint with no `end`) stands for its own step
    w = [sum(lr_at(t) for t in range(a, b)) if b > a else lr_at(int(t0))
         for a, b, t0 in zip(edges[:-1], edges[1:], steps)]
    return torch.tensor(w, dtype=torch.float64)


def visit_weights(sample: Int[Tensor, " m"], n: int, tc, steps: Sequence[int], end: int | None = None,
                  window: tuple[float, float] | None = None) -> Float[Tensor, "k m"]:
    """Per-sequence checkpoint weights for TracIn over what training did: W[k, j] = the learning rate summed over
    the visits of training window sample[j] (of n) during the steps checkpoint k stands for (`tracin_weights`'
    intervals), so that score(z) = sum_k W[k, z] <grad loss(z; theta_k), grad objective(theta_k)> approximates
    per-visit TracIn (Pruthi et al.'s ideal: one term per step z was in the batch, at that step's learning rate)
    with the gradient of the nearest checkpoint. A sequence never visited scores 0. Batches are a function of
    (seed, step) (`lib.core.train.batch_indices`), so the visits are replayed. `window` = (lo, hi): only steps in
    [lo, hi) count (one phase of training). Column sums over all n windows: batch_size x `tracin_weights`."""
    edges = checkpoint_intervals(steps, end)
    lo, hi = (edges[0], edges[-1]) if window is None else (max(edges[0], math.ceil(window[0])),
                                                           min(edges[-1], math.ceil(window[1])))
    sample = torch.as_tensor(sample, dtype=torch.long)
    where = torch.full((n,), -1, dtype=torch.long)
    where[sample] = torch.arange(len(sample))
    out = torch.zeros(len(edges) - 1, len(sample), dtype=torch.float64)
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        for t in range(max(a, lo), min(b, hi)):
            j = where[tr.batch_indices(t, n, tc)]
            j = j[j >= 0]
            out[k].index_add_(0, j, torch.full((len(j),), tr.lr_at(t, tc), dtype=torch.float64))
    return out


def visits(n: int, tc, start: int = 0, stop: int | None = None) -> Int[Tensor, " n"]:
    """How many times each of the n training windows was in a training batch over steps [start, stop) (default:
    the whole run): the batch of a step is a function of (seed, step) only (`lib.core.train.batch_indices`), so
    this replays the draws without training. Batches are drawn with replacement, so many windows are never
    visited; an attribution to them says nothing about what training did."""
    stop = tc.max_steps if stop is None else stop
    counts = torch.zeros(n, dtype=torch.long)
    for step in range(start, stop):
        counts.index_add_(0, tr.batch_indices(step, n, tc), torch.ones(tc.batch_size, dtype=torch.long))
    return counts


@dataclass(frozen=True)
class TracIn:
    """TracIn per objective: `scores[name]` [n] = sum_k weights[k] * dots[name][k] (weights [k], or [k, n] per
    sequence: `visit_weights`), `per_checkpoint[name]` [k, n] the weighted terms; the unweighted per-checkpoint
    gradient dot products `dots[name]` and cosines `cosines[name]` [k, n], and the gradient norms `norms` [k, n] of
    the n sequences, so that any other weighting (one phase of training, the cosine variant, a gradient-norm
    baseline) is a weighted sum of these without new gradients."""

    steps: list[int]
    weights: Float[Tensor, "k"] | Float[Tensor, "k n"]
    scores: dict[str, Float[Tensor, "n"]]
    per_checkpoint: dict[str, Float[Tensor, "k n"]]
    projected: dict[str, Float[Tensor, "n"]] | None = None
    dots: dict[str, Float[Tensor, "k n"]] | None = None
    cosines: dict[str, Float[Tensor, "k n"]] | None = None
    norms: Float[Tensor, "k n"] | None = None

    def weighted(self, weights: Float[Tensor, "k"] | Float[Tensor, "k n"], kind: str = "dots",
                 objective: str | None = None) -> Float[Tensor, "n"]:
        """sum_k weights ⊙ terms: kind 'dots' (TracIn), 'cosines' (the normalised variant) or 'norms' (a score that
        only knows each sequence's gradient size)."""
        terms = self.norms if kind == "norms" else getattr(self, kind)[objective or next(iter(self.scores))]
        w = torch.as_tensor(weights, dtype=torch.float64)
        return ((w[:, None] if w.dim() == 1 else w) * terms).sum(0)


def hooked_checkpoints(paths: Sequence[Path], device: str | torch.device = "cpu"
                       ) -> Iterator[tuple[int, torch.nn.Module]]:
    """(step, HookedTransformer) for each checkpoint folder, loaded lazily into one reused model."""
    hooked = None
    for path in paths:
        hooked, step = load_hooked(path, hooked, device)
        yield step, hooked


def tracin(checkpoints: Iterable[tuple[int, torch.nn.Module]], names: Sequence[str], tensors: Sequence[Tensor],
           objectives: Mapping[str, Objective], weights: Float[Tensor, "k"] | Float[Tensor, "k n"],
           loss: ExampleLoss = lm_example_loss, chunk: int = 32, projection: Float[Tensor, "d k_proj"] | None = None,
           progress: bool = True) -> TracIn:
    """TracIn-CP: score(z) = sum_k w_k <grad loss(z; theta_k), grad objective(theta_k)> over (step, model) checkpoints;
    weights [k] (one per checkpoint: `tracin_weights`) or [k, n] (one per checkpoint and sequence: `visit_weights`).

    With an objective that *falls* as the mechanism forms, a positive score means a gradient step on z pushes it
    to form (Pruthi et al.'s proponents). With `projection`, `projected` holds the sums on projected gradients.
    """
    n = len(tensors[0])
    weights = torch.as_tensor(weights, dtype=torch.float64)
    k = len(weights)
    if weights.dim() == 2 and weights.shape[1] != n:
        raise ValueError(f"weights of shape {tuple(weights.shape)} are not allowed: [k] or [k, {n}] for {n} examples")
    dots = {key: torch.zeros(k, n, dtype=torch.float64) for key in objectives}
    cosines = {key: torch.zeros(k, n, dtype=torch.float64) for key in objectives}
    norms = torch.zeros(k, n, dtype=torch.float64)
    proj = {key: torch.zeros(n, dtype=torch.float64) for key in objectives} if projection is not None else None
    steps = []
    for i, (step, model) in enumerate(tqdm(checkpoints, total=k, desc="TracIn", disable=not progress, leave=False)):
        if i >= k:
            raise ValueError(f"more checkpoints than the {k} weights given: one weight per checkpoint")
        steps.append(step)
        m = torch.stack([objective_grad(model, f, names) for f in objectives.values()], dim=1)  # [d, n_obj]
        m_norm = m.double().norm(dim=0)
        pm = None if projection is None else projection.T @ m  # [k_proj, n_obj]
        for j in range(0, n, chunk):
            g = per_example_grads(model, names, *(t[j : j + chunk] for t in tensors), loss=loss, chunk=chunk)
            d = (g @ m).double().cpu()
            g_norm = g.double().norm(dim=1).cpu()
            gp = None if projection is None else g @ projection
            norms[i, j : j + chunk] = g_norm
            w = weights[i] if weights.dim() == 1 else weights[i, j : j + chunk]
            for o, key in enumerate(objectives):
                dots[key][i, j : j + chunk] = d[:, o]
                cosines[key][i, j : j + chunk] = d[:, o] / (g_norm * float(m_norm[o])).clamp(min=1e-300)
                if proj is not None:
                    proj[key][j : j + chunk] += (gp @ pm[:, o]).double().cpu() * w
    if len(steps) != k:
        raise ValueError(f"{len(steps)} checkpoints but {k} weights: one weight per checkpoint")
    wk = weights[:, None] if weights.dim() == 1 else weights
    per = {key: wk * v for key, v in dots.items()}
    return TracIn(steps, weights, {key: v.sum(0) for key, v in per.items()}, per, proj, dots, cosines, norms)


# ---------------------------------------------------------------------------------------------
# Scoring an attribution against labelled examples (a planted ground truth)


def _top(scores: Tensor | np.ndarray, k: int) -> np.ndarray:
    s = np.asarray(scores, dtype=float)
    return np.argsort(-s, kind="stable")[:k]


def n_top(n: int, frac: float) -> int:
    """Number of examples in the top `frac` of n (at least 1)."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"frac={frac!r} is not allowed: a float in (0, 1]")
    return max(1, round(frac * n))


def precision_at_k(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray, k: int) -> float:
    """Fraction of the k highest-scored examples whose label is True."""
    lab = np.asarray(labels, dtype=bool)
    if not 1 <= k <= len(lab):
        raise ValueError(f"k={k!r} is not allowed: 1 <= k <= {len(lab)}")
    return float(lab[_top(scores, k)].mean())


def enrichment(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray, frac: float = 0.01) -> float:
    """Precision among the top `frac` of scores divided by the base rate of True labels (1 = no enrichment)."""
    lab = np.asarray(labels, dtype=bool)
    if not lab.any():
        raise ValueError("labels has no True entry: the base rate is 0, so enrichment is undefined")
    return precision_at_k(scores, lab, n_top(len(lab), frac)) / float(lab.mean())


def bootstrap_enrichment(scores, labels, frac: float = 0.01, n_boot: int = 1000, seed: int = 0,
                         alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `enrichment`, resampling examples with their labels."""
    s, lab = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(s), len(s))
        if lab[idx].any():
            stats.append(enrichment(s[idx], lab[idx], frac))
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def shuffled_enrichment(labels, frac: float = 0.01, n_perm: int = 1000, seed: int = 0) -> np.ndarray:
    """Enrichment of random scores (labels permuted): the null distribution, mean 1."""
    lab = np.asarray(labels, dtype=bool)
    rng = np.random.default_rng(seed)
    return np.array([enrichment(rng.random(len(lab)), lab, frac) for _ in range(n_perm)])


def enrichment_curve(scores, labels, fracs: Sequence[float]) -> pd.DataFrame:
    """Precision and enrichment at each top fraction, with the exact test of each point: columns frac, k, hits
    (labelled items among the top k), precision, enrichment, ci_low / ci_high (enrichment's exact Clopper-Pearson
    95% interval: the precision's, over the base rate; it never collapses to a point at 0 hits) and p (exact
    hypergeometric tail P(hits or more among k random items))."""
    lab = np.asarray(labels, dtype=bool)
    base, rows = float(lab.mean()), []
    for f in fracs:
        k = n_top(len(lab), f)
        hits = int(round(precision_at_k(scores, lab, k) * k))
        lo, hi = binomial_ci(hits, k)
        rows.append({"frac": f, "k": k, "hits": hits, "precision": hits / k, "enrichment": hits / k / base,
                     "ci_low": lo / base, "ci_high": hi / base,
                     "p": hypergeom_tail_p(hits, len(lab), int(lab.sum()), k)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Caches (keyed by the caller through the path, e.g. artifacts.path("dynamics", "tracin", key))


def cached_tracin(path: Path, compute: Callable[[], TracIn]) -> TracIn:
    """compute() once and store it at `path` (torch file of tensors); later calls load it."""
    path = Path(path)
    if not path.exists():
        r = compute()
        artifacts.save_torch(path, {"steps": torch.tensor(r.steps), "weights": r.weights, "scores": r.scores,
                                    "per_checkpoint": r.per_checkpoint, "projected": r.projected or {},
                                    "dots": r.dots, "cosines": r.cosines, "norms": r.norms})
    d = artifacts.load_torch(path)
    return TracIn(d["steps"].tolist(), d["weights"], d["scores"], d["per_checkpoint"], d["projected"] or None,
                  d["dots"], d["cosines"], d["norms"])


def cached_frames(folder: Path, compute: Callable[[], tuple[pd.DataFrame, ...]]) -> tuple[pd.DataFrame, ...]:
    """compute() once and store its DataFrames as folder/0.csv, 1.csv, ...; later calls load them."""
    folder = Path(folder)
    if not (folder / "done.json").exists():
        frames = compute()
        for i, df in enumerate(frames):
            artifacts.save_dataframe(folder / f"{i}.csv", df)
        artifacts.write_json(folder / "done.json", {"n": len(frames)})
    n = artifacts.read_json(folder / "done.json")["n"]
    return tuple(pd.read_csv(folder / f"{i}.csv") for i in range(n))
