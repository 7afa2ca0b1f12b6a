"""Partial impairment of unit clusters (used by reports 3, 5 and 7): impairments as TransformerLens hooks (noise,
scaling, zero and mean ablation), clusters of units, the condition grid, and the batched dose-response sweep."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lib.analysis.fastpath import fast_path_ok, low_rank_tail_block, prompt_chunks, require_fast_path, tail_query_block
from lib.analysis.prompts import KeywordPrompts, evaluate, keyword_scores, tail
from lib.analysis.stats import bootstrap, percentile_ci
from lib.analysis.units import LOCATIONS, TopicStats, layer_mask, n_units, require_hook, top_units
from lib.core import artifacts, hooks
from lib.core.checks import check
from lib.core.hooks import HookFn

KINDS = ("noise", "negative_noise", "scale", "zero", "mean")


NOISY = ("noise", "negative_noise")


ENDPOINTS = ("zero", "mean")  # full ablations: a sweep evaluates them at intensity 1 only


def _impaired(kind: str, x: Tensor, a: Tensor, eps: Tensor | None, sd: Tensor, mean: Tensor) -> Tensor:
    """The impaired values of the selected units (x: [..., k]; a broadcastable to x)."""
    if kind == "noise":
        return x + a * sd * eps
    if kind == "negative_noise":  # the same noise shifted down so that its maximum over the units is 0
        n = a * sd * eps
        return x + (n - n.amax(-1, keepdim=True))
    if kind in ("scale", "zero"):
        return x * (1 - a)
    return x + a * (mean - x)  # "mean"


def impairment(kind: str, units: Int[Tensor, " k"], intensity: float | Float[Tensor, " batch"], *,
               generator: torch.Generator | None = None, noise: Float[Tensor, "batch pos k"] | None = None,
               sd: Float[Tensor, " k"] | None = None, mean: Float[Tensor, " k"] | None = None) -> HookFn:
    """A (tensor, hook) -> tensor function impairing `units` (last axis) at `intensity` (a float or one per row).

    noise: x + a·sd·ε; negative_noise: x + (n − max_units n) with n = a·sd·ε (≤ 0 everywhere);
    scale: x·(1 − a); zero: x·(1 − a) (full ablation at a = 1); mean: x + a·(mean − x) (mean ablation at 1).
    ε ~ N(0, 1) is `noise` if given, else drawn from `generator` at each call. Intensity 0 is the identity.
    """
    check(kind in KINDS, "kind", kind, f"one of {KINDS}")
    check(kind not in NOISY or generator is not None or noise is not None, "generator", generator,
           f"a torch.Generator (or `noise`) for kind {kind!r}")
    check(kind != "mean" or mean is not None, "mean", mean, "the units' mean activations for kind 'mean'")
    units = torch.as_tensor(units, dtype=torch.long)

    def on_units(sel: Tensor) -> Tensor:  # the impaired values of the units' slice x[..., units]
        a = torch.as_tensor(intensity, dtype=sel.dtype, device=sel.device)
        a = a.view(-1, *([1] * (sel.dim() - 1))) if a.dim() else a
        eps = noise
        if kind in NOISY and eps is None:
            eps = torch.randn(sel.shape, generator=generator, dtype=sel.dtype)
        eps = eps.to(sel.device) if eps is not None else None
        s = sd.to(sel.device, sel.dtype) if sd is not None else torch.ones((), dtype=sel.dtype, device=sel.device)
        m = mean.to(sel.device, sel.dtype) if mean is not None else None
        return _impaired(kind, sel, a, eps, s, m)

    def hook_fn(x: Tensor, hook=None) -> Tensor:
        out = x.clone()
        out[..., units] = on_units(x[..., units])
        return out

    hook_fn.on_units = on_units  # the batched sweep impairs the units' slice alone (no full-width copy)
    return hook_fn


@dataclass(frozen=True)
class Cluster:
    """A set of units per layer at one location, with each unit's activation mean and sd (for `mean`, noise scale)."""

    mask: Bool[Tensor, "layer unit"]
    location: str
    mean: Float[Tensor, "layer unit"]
    sd: Float[Tensor, "layer unit"]
    name: str = ""
    method: str = ""

    def __post_init__(self) -> None:
        check(self.location in LOCATIONS, "location", self.location, f"one of {LOCATIONS}")
        check(self.mask.shape == self.mean.shape == self.sd.shape, "mask.shape", tuple(self.mask.shape),
               "equal to mean.shape and sd.shape")

    def units(self, layer: int) -> Int[Tensor, " k"]:
        """Indices of the cluster's units in `layer`."""
        return self.mask[layer].nonzero().flatten()

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers holding at least one unit, ascending."""
        return tuple(int(i) for i in self.mask.any(1).nonzero().flatten())

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of units in each layer."""
        return tuple(int(k) for k in self.mask.sum(1))

    @property
    def size(self) -> int:
        return int(self.mask.sum())

    def with_mask(self, mask: Bool[Tensor, "layer unit"], name: str, method: str) -> "Cluster":
        """The same location and unit statistics with another unit set."""
        return replace(self, mask=mask, name=name, method=method)


def base_cluster(stats: TopicStats, topics: Sequence[str] | None = None) -> Cluster:
    """An empty cluster carrying the pooled unit statistics of `stats`."""
    m, v = stats.pooled(topics)
    return Cluster(torch.zeros_like(m, dtype=torch.bool), stats.location, m, v.sqrt())


def selective_cluster(stats: TopicStats, topic: str, frac: float = 0.025,
                      layers: Sequence[int] | None = None) -> Cluster:
    """The top `frac` of units per layer by selectivity for `topic` (the report's method)."""
    k = n_units(frac, stats.mean.shape[-1])
    return base_cluster(stats).with_mask(top_units(stats.selectivity(topic), k, layers), f"{topic} selectivity", "selectivity")


def kmeans(x: Float[Tensor, "n d"], k: int, generator: torch.Generator, n_init: int = 4,
           iters: int = 50) -> tuple[Int[Tensor, " n"], Float[Tensor, "k d"]]:
    """Lloyd's k-means with k-means++ seeding, best of n_init runs (deterministic for the generator)."""
    best = None
    for _ in range(n_init):
        c = x[torch.randint(len(x), (1,), generator=generator)]
        for _ in range(k - 1):  # k-means++: next centre with probability proportional to squared distance
            d2 = torch.cdist(x, c).min(1).values ** 2
            c = torch.cat([c, x[torch.multinomial(d2 + 1e-12, 1, generator=generator)]])
        for _ in range(iters):
            labels = torch.cdist(x, c).argmin(1)
            new = torch.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(k)])
            if torch.allclose(new, c):
                break
            c = new
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, c)
    return best[1], best[2]


def signed_selectivity(stats: TopicStats) -> Float[Tensor, "topic layer unit"]:
    """Each unit's Cohen's d for every topic against the others (`TopicStats.selectivity`), signed and not
    rescaled: with two topics a unit's profile is (d, about -d), so its size still tells units apart (z-scoring the
    per-topic means across topics would leave every unit at +-1/sqrt(2))."""
    return torch.stack([stats.selectivity(t) for t in stats.topics])


def kmeans_cluster(stats: TopicStats, topic: str, frac: float = 0.025, n_clusters: int | None = None,
                   generator: torch.Generator | None = None, layers: Sequence[int] | None = None,
                   n_init: int = 8) -> Cluster:
    """Per layer: k-means of the units' signed-selectivity profiles (`signed_selectivity`: one coordinate per topic,
    so it works for two topics as for fourteen); the group whose centre is most selective for `topic`, capped at
    the top `frac` of units by their selectivity. The cluster is smaller than `frac` when the group is (its size is
    the data's, not a knob). n_clusters defaults to the number of topics + 1 (a group per topic and a background),
    at least 3."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    i, k = stats.topics.index(topic), n_units(frac, stats.mean.shape[-1])
    n_clusters = n_clusters or max(3, len(stats.topics) + 1)
    d = signed_selectivity(stats)
    mask = torch.zeros(stats.mean.shape[1:], dtype=torch.bool)
    for layer in torch.nonzero(layer_mask(*mask.shape, layers)).flatten().tolist():
        x = d[:, layer].T  # (unit, topic)
        labels, centres = kmeans(x, n_clusters, g, n_init=n_init)
        members = torch.nonzero(labels == centres[:, i].argmax()).flatten()
        mask[layer, members[x[members, i].argsort(descending=True)[:k]]] = True
    return base_cluster(stats).with_mask(mask, f"{topic} k-means", "kmeans")


def random_cluster(like: Cluster, generator: torch.Generator, name: str | None = None) -> Cluster:
    """Units drawn uniformly at random with the same number per layer as `like` (the control)."""
    mask = torch.zeros_like(like.mask)
    for layer, k in enumerate(like.sizes):
        mask[layer, torch.randperm(mask.shape[1], generator=generator)[:k]] = True
    return like.with_mask(mask, name or f"random like {like.name}", "random")


def cluster_hooks(cluster: Cluster, kind: str, intensity: float | Float[Tensor, " batch"],
                  generator: torch.Generator | None = None,
                  noise: Mapping[int, Tensor] | None = None) -> list[tuple[str, HookFn]]:
    """(hook name, hook fn) per layer of the cluster, in layer order (so one generator draws layer by layer)."""
    return [(hooks.name(cluster.location, layer),
             impairment(kind, cluster.units(layer), intensity, generator=generator,
                        noise=None if noise is None else noise[layer], sd=cluster.sd[layer, cluster.units(layer)],
                        mean=cluster.mean[layer, cluster.units(layer)]))
            for layer in cluster.layers]


@dataclass(frozen=True)
class Condition:
    """One impairment: which cluster, which kind, at which intensity, with which noise draw (seed)."""

    cluster: str
    kind: str
    intensity: float
    seed: int = 0


def grid(clusters: Iterable[str], kinds: Sequence[str], intensities: Sequence[float],
         seeds: Sequence[int] = (0,)) -> list[Condition]:
    """Conditions: clusters × kinds × intensities × seeds, without duplicates: deterministic kinds and
    intensity 0 take the first seed only; zero and mean ablation are taken at intensity 1 only."""
    out = []
    for c in clusters:
        for kind in kinds:
            check(kind in KINDS, "kind", kind, f"one of {KINDS}")
            for a in ((1.0,) if kind in ENDPOINTS else intensities):
                for s in (seeds if kind in NOISY and a != 0 else seeds[:1]):
                    out.append(Condition(c, kind, float(a), int(s)))
    return out


def dose_grid(clusters: Iterable[str], noise_intensities: Sequence[float], scale_intensities: Sequence[float],
              seeds: Sequence[int] = (0, 1, 2), kinds: Sequence[str] = KINDS) -> list[Condition]:
    """The report's grid: noisy kinds on the noise intensities × seeds, scale on its own intensities (fraction
    removed, in [0, 1]), and the zero / mean end-points."""
    clusters = list(clusters)
    return (grid(clusters, [k for k in kinds if k in NOISY], noise_intensities, seeds)
            + grid(clusters, [k for k in kinds if k == "scale"], scale_intensities)
            + grid(clusters, [k for k in kinds if k in ENDPOINTS], (1.0,)))


def draw_noise(cluster: Cluster, seed: int, n: int, pos: int) -> dict[int, Float[Tensor, "n pos k"]]:
    """The noise ε of draw `seed` for n prompts of pos tokens: per layer in order, from one generator.

    A single forward of all n prompts with cluster_hooks(..., generator=torch.Generator().manual_seed(seed))
    draws exactly these tensors.
    """
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(n, pos, cluster.sizes[layer], generator=g) for layer in cluster.layers}


def _clean_names(location: str, layer: int) -> list[str]:
    """What the fast path caches to resume at `location` of `layer`: after the nonlinearity, the clean resid_post
    and the hooked activation (only the cluster's units change, through W_out); elsewhere resid_mid and the
    hooked activation."""
    if location == "mlp_post":
        return [hooks.name("resid_post", layer), hooks.name(location, layer)]
    extra = [hooks.name("mlp_pre", layer)] if location == "ln2" else []  # before the nonlinearity: a low-rank update
    return [hooks.name("resid_mid", layer), hooks.name(location, layer), *extra]


def _resume(block, clean: Mapping[str, Tensor], cluster: Cluster, fn: HookFn, r: int) -> Tensor:
    """resid_post of the cluster's first layer from cached clean activations (repeated r times along the batch),
    applying the impairment fn directly: after the nonlinearity only the cluster's units are impaired and pass
    through W_out (the clean resid_post plus their change)."""
    layer, loc = cluster.layers[0], cluster.location
    if loc == "mlp_post":
        x, change, basis = _low_rank(block, clean, cluster, fn, r)
        return x.repeat(r, 1, 1) + change @ basis
    mid = clean[hooks.name("resid_mid", layer)]
    if loc == "mlp_out":
        return mid.repeat(r, 1, 1) + fn(clean[hooks.name(loc, layer)].repeat(r, 1, 1))
    # ln2: the hook sits before LayerNorm's gain and bias (LNPre has neither), so the impaired dimensions change the
    # MLP's pre-activation by a low-rank term: pre + (Δ·gain)[units] @ W_in[units]; the nonlinearity and W_out then
    # run in full (the MLP's internal hooks do not fire; none is registered by the sweep)
    mlp, units = block.mlp, cluster.units(layer).to(mid.device)
    sel = clean[hooks.name(loc, layer)][..., units].repeat(r, 1, 1)
    w_in = mlp.W_in[units] * block.ln2.w[units, None] if hasattr(block.ln2, "w") else mlp.W_in[units]
    n, pos, d = mid.shape  # rows are condition-major (row = condition * n + prompt): the clean terms broadcast
    pre = torch.matmul((fn.on_units(sel) - sel).view(r, n, pos, -1), w_in).add_(clean[hooks.name("mlp_pre", layer)])
    out = torch.addmm(mlp.b_out, mlp.act_fn(pre).view(-1, pre.shape[-1]), mlp.W_out).view(r, n, pos, d)
    return out.add_(mid).view(r * n, pos, d)


def _low_rank(block, clean: Mapping[str, Tensor], cluster: Cluster, fn: HookFn,
              r: int) -> tuple[Tensor, Tensor, Tensor]:
    """(clean resid_post of the cluster's first layer, the change of its units under fn for r conditions, the
    d_model directions they move): after the nonlinearity the units move resid_post along W_out[units]; at the
    MLP's output along the units' own axes."""
    layer, loc = cluster.layers[0], cluster.location
    units = cluster.units(layer).to(block.mlp.W_out.device)
    sel = clean[hooks.name(loc, layer)][..., units].repeat(r, 1, 1)
    change = fn.on_units(sel) - sel
    if loc == "mlp_post":
        return clean[hooks.name("resid_post", layer)], change, block.mlp.W_out[units]
    x = clean[hooks.name("resid_mid", layer)] + clean[hooks.name(loc, layer)]
    return x, change, torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)[units]


@torch.no_grad()
def _final_logits(model, clean: Mapping[str, Tensor], cluster: Cluster, lengths: Tensor,
                  fwd_hooks: list[tuple[str, HookFn]], r: int, fast: bool,
                  width: int, memo: dict | None = None) -> Float[Tensor, "batch width vocab"]:
    """Logits at each row's last `width` real positions (those that predict its keyword), resuming the model from
    cached clean activations with hooks.

    fast: the first impaired layer resumes at the hook itself (its hook fn applied directly) and the last block
    runs for those positions only; else blocks run whole from the first impaired layer's resid_pre. memo: kept
    across the batches of one chunk and cluster (`fastpath.low_rank_tail_block`'s clean terms).
    """
    n, start = model.cfg.n_layers, cluster.layers[0]
    with model.hooks(fwd_hooks=fwd_hooks[1:] if fast else fwd_hooks):
        if not fast:
            resid = clean[hooks.name("resid_pre", start)].repeat(r, 1, 1)
            h = tail(model(resid, start_at_layer=start, stop_at_layer=n), lengths, width)
        elif start == n - 1:
            last = {k: tail(v, lengths[: len(v)], width) for k, v in clean.items()}
            h = _resume(model.blocks[start], last, cluster, fwd_hooks[0][1], r)
        elif start == n - 2 and cluster.location in ("mlp_post", "mlp_out"):
            x, change, basis = _low_rank(model.blocks[start], clean, cluster, fwd_hooks[0][1], r)
            h = low_rank_tail_block(model.blocks[n - 1], x, change, basis, lengths, width, memo)
        else:
            x = _resume(model.blocks[start], clean, cluster, fwd_hooks[0][1], r)
            for layer in range(start + 1, n - 1):
                x = model.blocks[layer](x)
            h = tail_query_block(model.blocks[n - 1], x, lengths, width)
        if model.cfg.normalization_type is not None:
            h = model.ln_final(h)
        return model.unembed(h)


def _batch_hooks(cluster: Cluster, kind: str, conds: Sequence[Condition], noise: Mapping[int, dict], idx: Tensor,
                 lengths: Tensor, pos: int, last_only: int | None, width: int) -> list[tuple[str, HookFn]]:
    """Hooks for several conditions stacked along the batch (condition-major): per-row intensity and noise.
    Layer `last_only` runs at each prompt's last `width` positions only, so it gets those positions' noise."""
    a = torch.tensor([c.intensity for c in conds]).repeat_interleave(len(idx))
    eps = None
    if kind in NOISY:
        eps = {}
        for layer in cluster.layers:
            per = [noise[c.seed][layer][idx, :pos] for c in conds]
            if layer == last_only:
                per = [tail(e, lengths, width) for e in per]
            eps[layer] = torch.cat(per)
    return cluster_hooks(cluster, kind, a, noise=eps)


def _score_frame(scores: dict[str, Tensor], conds: Sequence[Condition], idx: Tensor,
                 prompts: KeywordPrompts) -> dict[str, np.ndarray]:
    """Columns (condition-major, then prompts in idx order) of a stacked batch's scores."""
    r, p = len(conds), len(idx)
    topics = np.asarray(prompts.topics, dtype=object)[idx.numpy()]
    return {
        "cluster": np.repeat(np.asarray([c.cluster for c in conds], dtype=object), p),
        "kind": np.repeat(np.asarray([c.kind for c in conds], dtype=object), p),
        "intensity": np.repeat([c.intensity for c in conds], p), "seed": np.repeat([c.seed for c in conds], p),
        "prompt": np.tile(idx.numpy(), r), "topic": np.tile(topics, r), **{k: v.numpy() for k, v in scores.items()}}


def _tidy(parts: list[dict[str, np.ndarray]]) -> pd.DataFrame:
    """One frame of every batch's columns (built once: a frame per batch costs more than the batch's scores),
    sorted by condition and prompt."""
    df = pd.DataFrame({k: np.concatenate([part[k] for part in parts]) for k in parts[0]})
    return df.sort_values(["cluster", "kind", "intensity", "seed", "prompt"], kind="stable", ignore_index=True)


def _clean(model, tokens: Tensor, clusters: Iterable[Cluster], fast: bool) -> dict[str, Tensor]:
    """One clean forward caching what every cluster's first impaired layer resumes from."""
    names = set()
    for c in clusters:
        names.update(_clean_names(c.location, c.layers[0]) if fast else [hooks.name("resid_pre", c.layers[0])])
    stop = max(c.layers[0] for c in clusters) + 1
    _, cache = model.run_with_cache(tokens, names_filter=sorted(names), stop_at_layer=stop)
    return {k: cache[k] for k in names}


def _batch_tokens(model, cluster: Cluster, fast: bool, max_tokens: int) -> int:
    """Tokens per stacked forward: max_tokens where the resumed tensors are about d_model wide (the low-rank
    paths), d_model/d_mlp of that where the MLP runs again at every position (ln2, the generic path), so that the
    working set stays about the same (measured in bench/impairment_sweep.py: larger batches then fall out of cache)."""
    n, start = model.cfg.n_layers, cluster.layers[0]
    if fast and (start == n - 1 or (start == n - 2 and cluster.location in ("mlp_post", "mlp_out"))):
        return max_tokens
    return max(1, max_tokens * model.cfg.d_model // max(model.cfg.d_mlp or model.cfg.d_model, model.cfg.d_model))


def _require_hooks(model, clusters: Mapping[str, Cluster], conditions: Sequence[Condition]) -> None:
    """Refuse, naming the missing part, a model where the conditions' cluster locations do not exist or never fire
    (every location is in or at the MLP: an attention-only model has none)."""
    for name in dict.fromkeys(c.cluster for c in conditions):
        cl = clusters[name]
        for layer in cl.layers:
            require_hook(model, hooks.name(cl.location, layer), f"the impairment sweep at {cl.location}")


def sweep(model, prompts: KeywordPrompts, clusters: Mapping[str, Cluster], conditions: Sequence[Condition],
          max_tokens: int = 32768, chunk_tokens: int = 4096, fast: bool | None = None, progress: bool = True,
          desc: str = "sweep") -> pd.DataFrame:
    """Keyword metrics for every prompt under every condition: one row per prompt × condition.

    Batched: prompts are sorted by length and cut into chunks of about `chunk_tokens` tokens; one clean
    forward per chunk caches what the clusters' first impaired layers resume from; the conditions of one
    (cluster, kind) share forward passes of about `max_tokens` tokens (`_batch_tokens`; the chunk repeated along the batch axis,
    a per-row intensity and noise inside one hook); only the positions that predict each prompt's keyword are
    unembedded. On GPT-2-style models (`fast_path_ok`; `fast=None` decides) the first impaired layer resumes at
    the hook itself (after the nonlinearity only the cluster's units go through W_out; at the MLP input a low-rank
    change of the pre-activation) and the last block runs for those positions only, its keys and values from a
    low-rank LayerNorm update when the cluster sits after the second-to-last layer's nonlinearity or at its MLP
    output (`fastpath.low_rank_tail_block`); elsewhere blocks run whole from the first impaired layer. Every impairment
    is position-wise, so this is exact up to float rounding. Noise is `draw_noise`'s, so the table equals
    `sweep_loop`'s. Columns: cluster, kind, intensity, seed, prompt, topic, loss, top1, top5.
    """
    _require_hooks(model, clusters, conditions)
    fast = fast_path_ok(model) if fast is None else fast
    if fast:
        require_fast_path(model, "the impairment sweep's fast path (fast=True)")
    device, n, pos_all, last = model.cfg.device, len(prompts), prompts.tokens.shape[1], model.cfg.n_layers - 1
    groups: dict[tuple[str, str], list[Condition]] = {}
    for c in conditions:
        groups.setdefault((c.cluster, c.kind), []).append(c)
    seeds = {(c.cluster, c.seed) for c in conditions if c.kind in NOISY}
    noise: dict[str, dict[int, dict]] = {}
    for name, seed in sorted(seeds):
        noise.setdefault(name, {})[seed] = draw_noise(clusters[name], seed, n, pos_all)
    parts, bar = [], tqdm(total=len(conditions) * n, desc=desc, disable=not progress, leave=False)
    for idx in prompt_chunks(prompts, chunk_tokens):
        pos, lengths, targets = int(prompts.lengths[idx].max()), prompts.lengths[idx], prompts.tail_targets(idx)
        width = targets.shape[1]
        clean = _clean(model, prompts.tokens[idx, :pos].to(device), [clusters[name] for name, _ in groups], fast)
        memos: dict[str, dict] = {}  # per cluster, for this chunk
        for (name, kind), conds in groups.items():
            cl = clusters[name]
            per_batch = max(1, _batch_tokens(model, cl, fast, max_tokens) // (len(idx) * pos))
            for j in range(0, len(conds), per_batch):
                part = conds[j : j + per_batch]
                fwd = _batch_hooks(cl, kind, part, noise.get(name, {}), idx, lengths, pos, last if fast else None,
                                   width)
                logits = _final_logits(model, clean, cl, lengths.repeat(len(part)), fwd, len(part), fast, width,
                                       memos.setdefault(name, {}))
                scores = keyword_scores(logits, targets.repeat(len(part), 1))
                parts.append(_score_frame(scores, part, idx, prompts))
                bar.update(len(part) * len(idx))
    bar.close()
    return _tidy(parts)


@torch.no_grad()
def sweep_loop(model, prompts: KeywordPrompts, clusters: Mapping[str, Cluster], conditions: Sequence[Condition],
               progress: bool = True) -> pd.DataFrame:
    """The same table as `sweep`, one full run_with_hooks forward of all prompts per condition (the reference)."""
    _require_hooks(model, clusters, conditions)
    parts = []
    tokens = prompts.tokens.to(model.cfg.device)
    for c in tqdm(conditions, desc="loop", disable=not progress, leave=False):
        g = torch.Generator().manual_seed(c.seed)
        logits = model.run_with_hooks(tokens, fwd_hooks=cluster_hooks(clusters[c.cluster], c.kind, c.intensity, g))
        scores = keyword_scores(tail(logits, prompts.lengths, prompts.width), prompts.tail_targets())
        parts.append(_score_frame(scores, [c], torch.arange(len(prompts)), prompts))
    return _tidy(parts)


def damage_sweep(model, prompts: KeywordPrompts, clusters: Mapping[str, Cluster], conditions: Sequence[Condition],
                 name: str | None = None, key=None, **kwargs) -> pd.DataFrame:
    """`sweep` plus damage against the unimpaired model (`with_damage`), saved with `save_sweep` if name is given."""
    df = with_damage(sweep(model, prompts, clusters, conditions, **kwargs), evaluate(model, prompts))
    if name is not None:
        save_sweep(df, name, key)
    return df


def save_sweep(df: pd.DataFrame, name: str, key) -> Path:
    """Write a sweep table to artifacts/impairment/<name>-<hash(key)>/sweep.csv (atomically); its path."""
    return artifacts.save_dataframe(artifacts.path("impairment", name, key) / "sweep.csv", df)


def with_damage(df: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """df plus damage columns: loss minus the clean loss, clean top-1/top-5 minus impaired (per prompt)."""
    base = clean.set_index("prompt")
    out = df.copy()
    out["d_loss"] = out["loss"] - out["prompt"].map(base["loss"])
    for m in ("top1", "top5"):
        out[f"d_{m}"] = out["prompt"].map(base[m]) - out[m]
    return out


def dynamic_range(df: pd.DataFrame, value: str = "d_loss", low: float = 0.1, flat: float = 0.9) -> tuple[float, ...]:
    """The intensities (> 0) of a dose-response where the mean damage over all rows responds and is still rising:
    at least `low` of its largest value on the grid, and the damage one intensity lower below `flat` of it (a curve
    that has flattened onto a plateau, every topic's keyword already destroyed, is saturated there). A difference
    read where damage is absent or saturated says nothing about specificity. Falls back to every intensity > 0 if
    none qualifies, so it is never empty."""
    m = df[df["intensity"] > 0].groupby("intensity")[value].mean().sort_index()
    check(len(m) > 0, "df", "no rows with intensity > 0", "a dose-response with at least one positive intensity")
    top = float(m.max())
    if not top > 0:
        return tuple(m.index.tolist())
    before = np.concatenate([[0.0], m.to_numpy()[:-1]])  # damage one intensity lower (none at intensity 0)
    keep = (m.to_numpy() >= low * top) & (before < flat * m.to_numpy())
    return tuple(m.index[keep].tolist()) if keep.any() else tuple(m.index.tolist())


def specificity_gap(df: pd.DataFrame, target: str, off_targets: Sequence[str], value: str = "d_loss",
                    intensities: Sequence[float] | None = None, n_boot: int = 1000,
                    seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Own-topic minus other-topic damage: the target's mean damage minus the mean of the off-target topics' mean
    damages (rows at `intensities`, default every intensity > 0, averaged per prompt over conditions), in the
    units of `value` (nats for d_loss), with a bootstrap 95% CI resampling prompts within each topic. 0 = the
    target suffers no more than the others; defined whatever the damage's size (no ratio, no floor)."""
    groups = _damage_groups(df, target, off_targets, value, intensities)
    boots = bootstrap(_gap, *groups, n_boot=n_boot, seed=seed, paired=False)
    return _gap(*groups), percentile_ci(boots)


def _damage_groups(df: pd.DataFrame, target: str, off_targets: Sequence[str], value: str,
                   intensities: Sequence[float] | None) -> list[np.ndarray]:
    """Per-prompt mean damage of the target topic, then of each off-target topic."""
    rows = df[df["intensity"] > 0] if intensities is None else df[df["intensity"].isin(list(intensities))]
    check(len(rows) > 0, "intensities", intensities, f"intensities of the sweep: {sorted(df['intensity'].unique())}")
    per = rows.groupby(["topic", "prompt"])[value].mean()
    missing = [t for t in (target, *off_targets) if t not in per.index.get_level_values(0)]
    check(not missing, "topics", missing, "topics present in the sweep's rows")
    return [per.loc[t].to_numpy() for t in (target, *off_targets)]


def _gap(*groups: np.ndarray) -> float:
    return float(groups[0].mean() - np.mean([g.mean() for g in groups[1:]]))


def specificity_gaps(df: pd.DataFrame, target: str, off_targets: Sequence[str], by: str = "cluster",
                     value: str = "d_loss", intensities: Sequence[float] | None = None) -> pd.Series:
    """`specificity_gap` (no CI) of every group of rows, e.g. of many random clusters: the null distribution."""
    return pd.Series({k: _gap(*_damage_groups(d, target, off_targets, value, intensities)) for k, d in df.groupby(by)})
