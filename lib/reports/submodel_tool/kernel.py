"""Sub-models: sets of units (or latent directions) that match a concept, found by one of several methods and
validated against random sets of the same size; `explain` reruns a prediction with chosen sub-models impaired.

Command line: `python -m lib.submodels explain --prompt "..." --ablate Athlete` (see `cli.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lib.analysis import compressors, kwta, shapley
from lib.analysis.fastpath import evaluate_from_last_mlp, fast_path_ok, last_mlp_inputs, resumes_at_last_mlp
from lib.analysis.impairment import NOISY, impairment
from lib.analysis.prompts import KeywordPrompts, evaluate
from lib.analysis.units import TopicStats, activation_key, fingerprint, n_units, tensor_hash
from lib.core import artifacts
from lib.core.checks import check
from lib.core.hooks import HookFn

METHODS = ("selectivity", "shapley", "sparse", "sae", "infovae")
STATUSES = ("validated", "failed", "unvalidated")
ALPHA = 0.05  # the pre-registered level of the random-sub-model test
CACHE_VERSION = 1  # part of the cached Shapley values' key: bump when the game or the estimator changes
KINDS = ("zero", "mean", "noise")  # zero: x -> (1 - a) x; mean: x -> x + a (mean - x); noise: x + a sd ε
SPARSE_HOOKS = ("ln_final.sparse.mlp.hook_post",)  # lib.analysis.kwta's residual layer (its block MLPs are checked too)
Data = KeywordPrompts | Mapping[str, Tensor]


# ----------------------------------------------------------------------------------------------- sub-models


@dataclass(frozen=True)
class SubModel:
    """A concept's units: per hook name, unit indices (or latent ids of `compressors[hook]`); per hook the mean and
    sd of every unit on the concept data (full width: mean ablation, noise scale, activity); the finding method and
    its validation `scores` (empty until `validate`)."""

    name: str
    method: str
    units: Mapping[str, Int[Tensor, " k"]]
    mean: Mapping[str, Float[Tensor, " width"]]
    sd: Mapping[str, Float[Tensor, " width"]]
    compressors: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for h, idx in self.units.items():
            check(h in self.mean and h in self.sd, "hook", h, f"a hook with unit statistics: {sorted(self.mean)}")
            check(idx.dim() == 1 and (len(idx) == 0 or int(idx.max()) < len(self.mean[h])), f"units[{h!r}]",
                   idx.tolist(), f"1-d indices below the width {len(self.mean[h])}")

    @property
    def size(self) -> int:
        """Number of units (or latents) over all hooks."""
        return sum(len(v) for v in self.units.values())

    @property
    def signature(self) -> tuple[tuple[str, int], ...]:
        """(hook, number of units) per hook: what a size-matched random sub-model keeps."""
        return tuple(sorted((h, len(v)) for h, v in self.units.items()))

    def with_units(self, units: Mapping[str, Tensor], name: str, method: str) -> "SubModel":
        """The same hooks, statistics and compressors with other units (and no scores)."""
        return replace(self, units=dict(units), name=name, method=method, scores={})

    @property
    def status(self) -> str:
        """'validated': ablating it hurts its own concept more than the others, by more than 95% of size-matched
        random sub-models do, and (where the initialisation control was run) by more than the same pipeline's
        sub-model at initialisation; 'failed': validated and not so; 'unvalidated': never validated."""
        return _status(self.scores)[0]

    @property
    def status_reason(self) -> str:
        """Why the status: the numbers it rests on."""
        return _status(self.scores)[1]


def _status(s: Mapping[str, float]) -> tuple[str, str]:
    if "probe_usable" in s and not s["probe_usable"]:
        return "unvalidated", (f"its keyword probe does not beat a unigram baseline (margin {s['probe_margin']:+.2f} "
                               "nats): validating on it would measure nothing the model knows")
    if "beats_random" not in s:
        return "unvalidated", "not validated: no damage measured against random sub-models"
    vs_random = f"gap {s['gap']:.3f} vs random 95th pct {s['random_q95']:.3f} (p = {s['p']:.3f})"
    if not s["gap"] > 0:
        return "failed", f"hurts the other concepts as much as its own: {vs_random}"
    if not s["beats_random"]:
        return "failed", f"no better than random at p <= {ALPHA}: {vs_random}"
    if "init_gap" in s and not s["gap"] > s["init_gap"]:
        return "failed", f"{vs_random}, but no better than at initialisation (gap {s['init_gap']:.3f})"
    init = f"; at initialisation {s['init_gap']:.3f}" if "init_gap" in s else "; initialisation control not run"
    return "validated", vs_random + init


def complement(sm: SubModel, name: str | None = None) -> SubModel:
    """Every unit (or latent) of sm's hooks that sm does not hold: ablating it keeps only sm (sufficiency)."""
    units = {}
    for h, idx in sm.units.items():
        keep = torch.ones(len(sm.mean[h]), dtype=torch.bool)
        keep[idx] = False
        units[h] = keep.nonzero().flatten()
    return sm.with_units(units, name or f"all but {sm.name}", "complement")


def empty(like: SubModel, name: str = "empty") -> SubModel:
    """A sub-model with no units at like's hooks (ablating it changes nothing)."""
    return like.with_units({h: torch.zeros(0, dtype=torch.long) for h in like.units}, name, "empty")


def random_like(like: SubModel, generator: torch.Generator, name: str | None = None) -> SubModel:
    """Units drawn uniformly at random with like's number per hook (the size-matched control)."""
    units = {h: torch.randperm(len(like.mean[h]), generator=generator)[: len(v)].sort().values
             for h, v in like.units.items()}
    return like.with_units(units, name or f"random like {like.name}", "random")


def check_hooks(model, names: Sequence[str]) -> None:
    """ValueError naming any hook name the model does not have, with examples of what it has."""
    have = model.hook_dict
    for h in names:
        if h not in have:
            mlp = [n for n in have if n.endswith(("mlp.hook_post", "hook_mlp_out", "hook_resid_post"))]
            raise ValueError(f"hook name {h!r} is not allowed: a hook of this model, e.g. {', '.join(mlp)} "
                             f"({len(have)} hooks in model.hook_dict)")


# ------------------------------------------------------------------------------------------------ impairing


def _latent_hook(comp, fn: Callable[[Tensor], Tensor]) -> HookFn:
    """x + decode(fn(z)) - decode(z), z = encode(x): impair latents, keep the compressor's reconstruction error."""
    def hook_fn(x: Tensor, hook=None) -> Tensor:
        z = comp.encode(x.float())
        return x + (comp.decode(fn(z)) - comp.decode(z)).to(x.dtype)
    return hook_fn


def submodel_hooks(sm: SubModel, kind: str = "zero", intensity: float = 1.0,
                   generator: torch.Generator | None = None) -> list[tuple[str, HookFn]]:
    """(hook name, hook fn) impairing the sub-model's units at `intensity` (1 = full ablation for zero / mean)."""
    check(kind in KINDS, "kind", kind, f"one of {KINDS}")
    check(0.0 <= float(intensity), "intensity", intensity, "a number >= 0 (1 = full ablation for zero/mean)")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    out = []
    for h, idx in sm.units.items():
        if len(idx) == 0:
            continue
        fn = impairment("scale" if kind == "zero" else kind, idx, float(intensity), generator=g,
                               sd=sm.sd[h][idx], mean=sm.mean[h][idx])
        out.append((h, _latent_hook(sm.compressors[h], fn) if h in sm.compressors else fn))
    return out


def combined_hooks(subs: Sequence[SubModel], kind: str = "zero", intensity: float = 1.0,
                   seed: int = 0) -> list[tuple[str, HookFn]]:
    """Hooks impairing several sub-models at once (hooks on one point compose)."""
    g = torch.Generator().manual_seed(seed)
    return [hk for sm in subs for hk in submodel_hooks(sm, kind, intensity, g)]


# ------------------------------------------------------------------------------------------------ activations


@torch.no_grad()
def activations(model, tokens: Int[Tensor, "n pos"], names: Sequence[str],
                batch_size: int = 64) -> dict[str, Float[Tensor, "tokens width"]]:
    """Activations at each hook for all positions of tokens, flattened over (n, pos)."""
    check_hooks(model, names)
    out: dict[str, list[Tensor]] = {h: [] for h in names}
    for i in range(0, len(tokens), batch_size):
        _, cache = model.run_with_cache(tokens[i : i + batch_size].to(model.cfg.device), return_type=None,
                                        names_filter=list(names))
        for h in names:
            out[h].append(cache[h].flatten(0, -2).float().cpu())
    return {h: torch.cat(v) for h, v in out.items()}


def _concept_acts(model, concepts: Mapping[str, Tensor], names: Sequence[str],
                  compressors: Mapping[str, Any]) -> dict[str, dict[str, Tensor]]:
    """concept -> hook -> activations (latent codes where the hook has a compressor)."""
    out = {}
    for c, tokens in concepts.items():
        acts = activations(model, tokens, names)
        out[c] = {h: (compressors[h].encode(a) if h in compressors else a) for h, a in acts.items()}
    return out


def concept_stats(acts: Mapping[str, Mapping[str, Tensor]], hook: str) -> TopicStats:
    """TopicStats (one 'layer') of one hook's units over the concepts' tokens."""
    parts = [acts[c][hook].double() for c in acts]
    return TopicStats(hook, tuple(acts), torch.stack([p.mean(0) for p in parts])[:, None].float(),
                             torch.stack([p.var(0, unbiased=False) for p in parts])[:, None].float(),
                             torch.tensor([len(p) for p in parts]))


def _pooled(acts: Mapping[str, Mapping[str, Tensor]], hook: str) -> tuple[Tensor, Tensor]:
    a = torch.cat([acts[c][hook] for c in acts])
    return a.mean(0), a.std(0).clamp_min(1e-6)


# ------------------------------------------------------------------------------------------------ finding


def _top(score: Float[Tensor, " width"], k: int) -> Int[Tensor, " k"]:
    return score.topk(min(k, len(score))).indices.sort().values


def _sparse_hooks(model) -> list[str]:
    """Hook names of lib.analysis.kwta k-WTA units in the model (residual layer, or replaced block MLPs)."""
    names = [h for h in SPARSE_HOOKS if h in model.hook_dict]
    names += [f"blocks.{i}.mlp.hook_post" for i, b in enumerate(model.blocks)
              if isinstance(b.mlp, kwta.SparseMLP) and b.mlp.kwta is not None]
    return names


def _method_hooks(model, method: str, hooks: Sequence[str] | None) -> list[str]:
    """Default hooks per method: MLP post-activations of every layer (selectivity), the last layer (shapley), the
    sparse layer's units (sparse), the last MLP's output (latents)."""
    if hooks is not None:
        names = list(hooks)
    elif method == "selectivity":
        names = [f"blocks.{i}.mlp.hook_post" for i in range(model.cfg.n_layers)]
    elif method == "shapley":
        names = [f"blocks.{model.cfg.n_layers - 1}.mlp.hook_post"]
    elif method == "sparse":
        names = _sparse_hooks(model)
        check(bool(names), "method", method, "'sparse' only for a model with a lib.analysis.kwta k-WTA layer "
               "(lib.analysis.kwta.surgery + fit); else one of 'selectivity', 'shapley', 'sae', 'infovae'")
    else:
        names = [f"blocks.{model.cfg.n_layers - 1}.hook_mlp_out"]
    check_hooks(model, names)
    return names


def _fit_compressors(model, method: str, names: Sequence[str], concepts: Mapping[str, Tensor],
                     compressor: Any, latent_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """One fitted lib.analysis.compressors compressor per hook (given, or fit on all concept tokens)."""
    check(len(names) == 1 or compressor is None, "hooks", list(names), "one hook when a compressor is given")
    if compressor is not None:
        return {names[0]: compressor}
    cfg = compressors.CompressorConfig(method="sae" if method == "sae" else "infovae", **dict(latent_cfg))
    tokens = torch.cat(list(concepts.values()))
    # fit once per (model, hook, concept tokens, config) and kept as an artifact: a rerun loads it
    return {h: compressors.get_or_fit(a, cfg, activation_key(model, h, tokens))[0]
            for h, a in activations(model, tokens, names).items()}


def _shapley_scores(model, names: Sequence[str], prompts: KeywordPrompts | None, concepts: Sequence[str],
                    n_permutations: int, seed: int) -> dict[str, dict[str, Tensor]]:
    """concept -> hook -> concept-specific Shapley value of each neuron (its value for the concept's keyword loss
    minus its mean value for the other concepts), by lib.analysis.shapley's TMC on the neuron game."""
    check(prompts is not None, "prompts", prompts, "KeywordPrompts of the concepts for method 'shapley'")
    check(all(h.endswith("mlp.hook_post") and h.startswith("blocks.") for h in names), "hooks", list(names),
           "blocks.L.mlp.hook_post names for method 'shapley' (its players are MLP neurons)")
    missing = [c for c in concepts if c not in prompts.topics]
    check(not missing, "concepts", missing, f"concepts with prompts: {sorted(set(prompts.topics))}")
    layers = [int(h.split(".")[1]) for h in names]
    key = {"model": fingerprint(model), "prompts": {f: tensor_hash(getattr(prompts, f)) for f in
                                                     ("tokens", "lengths", "targets", "rows")},
           "prompt_topics": list(prompts.topics), "concepts": list(concepts), "layers": layers,
           "n_permutations": n_permutations, "seed": seed, "version": CACHE_VERSION}

    def compute() -> shapley.ShapleyResult:
        game = shapley.neuron_game(model, prompts, layers, topics=list(concepts))
        return shapley.tmc_shapley(game, game.n_players, n_permutations, generator=torch.Generator().manual_seed(seed))

    res = shapley.cached(artifacts.path("submodels", "shapley", key), compute)  # a rerun loads the values
    v = res.values  # [players, concepts]
    spec = v - (v.sum(1, keepdim=True) - v) / max(len(concepts) - 1, 1)
    return {c: {h: spec[i * model.cfg.d_mlp : (i + 1) * model.cfg.d_mlp, j] for i, h in enumerate(names)}
            for j, c in enumerate(concepts)}


def find_submodels(model, concepts: Mapping[str, Int[Tensor, "n pos"]], method: str = "selectivity", *,
                   hooks: Sequence[str] | None = None, frac: float = 0.025, k: int | None = None,
                   prompts: KeywordPrompts | None = None, n_permutations: int = 20, compressor: Any = None,
                   latent_cfg: Mapping[str, Any] | None = None, validation: Data | None = None,
                   n_random: int = 20, kind: str = "zero", intensity: float = 1.0, seed: int = 0,
                   progress: bool = True) -> dict[str, SubModel]:
    """A SubModel per concept (concepts: name -> token windows, each scored against the others).

    Methods: 'selectivity' (top units by Cohen's d of the concept vs the other concepts, at `hooks`, default every
    MLP's post-activation), 'shapley' (top neurons by concept-specific Shapley value, lib.analysis.shapley TMC on `prompts`),
    'sparse' (selectivity on a lib.analysis.kwta k-WTA layer's units), 'sae' / 'infovae' (selectivity on the latents of a
    lib.analysis.compressors compressor at one hook: `compressor`, or one fit with `latent_cfg`). k units per hook (default
    `frac` of its width). With `validation` (KeywordPrompts or name -> windows), `validate` fills the scores.
    """
    check(method in METHODS, "method", method, f"one of {METHODS}")
    check(len(concepts) >= 2, "concepts", list(concepts), "at least two named concepts (each is scored vs the rest)")
    names = _method_hooks(model, method, hooks)
    comps = (_fit_compressors(model, method, names, concepts, compressor, latent_cfg or {})
             if method in ("sae", "infovae") else {})
    acts = _concept_acts(model, concepts, names, comps)
    stats = {h: concept_stats(acts, h) for h in names}
    pooled = {h: _pooled(acts, h) for h in names}
    if method == "shapley":
        score = _shapley_scores(model, names, prompts, list(concepts), n_permutations, seed)
    else:
        score = {c: {h: stats[h].selectivity(c)[0] for h in names} for c in concepts}
    out = {}
    for c in concepts:
        units = {h: _top(score[c][h], k or n_units(frac, len(score[c][h]))) for h in names}
        out[c] = SubModel(c, method, units, {h: p[0] for h, p in pooled.items()},
                          {h: p[1] for h, p in pooled.items()}, comps)
    if validation is not None:
        out = validate(model, out, validation, n_random=n_random, kind=kind, intensity=intensity, seed=seed,
                       progress=progress)
    return out


# ------------------------------------------------------------------------------------------------ validating


@torch.no_grad()
def concept_losses(model, data: Data, fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> pd.Series:
    """Mean loss per concept: keyword loss of KeywordPrompts, or next-token loss of each concept's windows."""
    if isinstance(data, KeywordPrompts):
        return evaluate(model, data, fwd_hooks).groupby("topic", sort=False).loss.mean()
    out = {}
    for c, tokens in data.items():
        losses = [model.run_with_hooks(tokens[i : i + 64].to(model.cfg.device), return_type="loss",
                                       fwd_hooks=list(fwd_hooks)).item() for i in range(0, len(tokens), 64)]
        out[c] = float(np.mean(losses))
    return pd.Series(out)


def _gaps(damage: pd.Series, concept: str) -> tuple[float, float]:
    """(own damage, mean damage on the other concepts)."""
    return float(damage[concept]), float(damage.drop(concept).mean())


def neuron_game_layers(model, subs: Sequence[SubModel], data: Data, kind: str, intensity: float) -> list[int] | None:
    """The MLP layers of `subs` if their damage can be scored as coalitions of lib.analysis.shapley's neuron game
    (one batched pass resuming from cached clean activations instead of a whole forward per sub-model): full zero
    ablation (kind 'zero', intensity 1) of plain `blocks.L.mlp.hook_post` units (no compressor latents), keyword
    prompts, and a model the game's fast path computes exactly (lib.analysis.fastpath.fast_path_ok); else None."""
    if not (isinstance(data, KeywordPrompts) and kind == "zero" and float(intensity) == 1.0 and fast_path_ok(model)):
        return None
    layers = set()
    for sm in subs:
        for h in sm.units:
            parts = h.split(".")
            if h in sm.compressors or len(parts) != 4 or parts[0] != "blocks" or parts[2:] != ["mlp", "hook_post"]:
                return None
            layers.add(int(parts[1]))
    return sorted(layers) or None


def resumes_at_last_mlp_of(model, subs: Sequence[SubModel], data: Data, kind: str) -> bool:
    """Whether the damage of `subs` can be scored from the last block's clean MLP input at the keyword positions
    (lib.analysis.fastpath.evaluate_from_last_mlp) instead of a whole forward per sub-model: keyword prompts, an
    impairment that draws no noise (noise draws depend on the shape they are drawn for), and every hook in the last
    block's MLP half or the final norm (`fastpath.resumes_at_last_mlp`), where report 7's latent (SAE, InfoVAE:
    blocks.L.hook_mlp_out) and sparse (the k-WTA layer in ln_final) sub-models sit."""
    return (isinstance(data, KeywordPrompts) and kind not in NOISY
            and resumes_at_last_mlp(model, [h for sm in subs for h in sm.units]))


def _damages(model, data: Data, subs: Sequence[SubModel], base: pd.Series, kind: str, intensity: float, seed: int,
             fast: bool | None, bar) -> list[pd.Series]:
    """Loss rise per concept when each sub-model is impaired (unless fast=False): batched neuron-game coalitions
    where `neuron_game_layers` allows it, else one pass per sub-model resumed at the last block's MLP where
    `resumes_at_last_mlp_of` allows it (both against their own path's clean loss); else one hooked forward per
    sub-model."""
    layers = neuron_game_layers(model, subs, data, kind, intensity) if fast is not False else None
    resume = fast is not False and layers is None and resumes_at_last_mlp_of(model, subs, data, kind)
    check(fast is not True or layers is not None or resume, "fast", fast,
          "None or False here: these sub-models have no fast path (it needs keyword prompts, and either full zero "
          "ablation of blocks.L.mlp.hook_post units or hooks in the last block's MLP half or the final norm, with no "
          "noise, on a GPT-2-style model)")
    if resume:
        mid = last_mlp_inputs(model, data)
        clean = evaluate_from_last_mlp(model, data, mid).groupby("topic", sort=False).loss.mean()
        out = []
        for sm in subs:
            hooks = combined_hooks([sm], kind, intensity, seed)
            out.append(evaluate_from_last_mlp(model, data, mid, hooks).groupby("topic", sort=False).loss.mean()
                       - clean)
            bar.update(1)
        return out
    if layers is None:
        out = []
        for sm in subs:
            out.append(concept_losses(model, data, combined_hooks([sm], kind, intensity, seed)) - base)
            bar.update(1)
        return out
    names = list(dict.fromkeys(data.topics))
    game = shapley.neuron_game(model, data, layers, topics=names)
    masks = torch.ones(len(subs) + 1, game.n_players, dtype=torch.bool)  # row 0: nothing ablated
    for i, sm in enumerate(subs, 1):
        for h, idx in sm.units.items():
            j = game.players.layers.index(int(h.split(".")[1]))
            masks[i, j * game.players.d_mlp + idx] = False
    loss = -game(masks).double()  # [1 + subs, concepts]: each concept's mean keyword loss
    bar.update(len(subs))
    return [pd.Series((loss[i] - loss[0]).numpy(), index=names) for i in range(1, len(subs) + 1)]


def validate(model, submodels: Mapping[str, SubModel], data: Data, n_random: int = 20, kind: str = "zero",
             intensity: float = 1.0, seed: int = 0, progress: bool = True,
             fast: bool | None = None) -> dict[str, SubModel]:
    """The sub-models with validation scores.

    Necessity: damage (loss rise) on their own concept when the sub-model is ablated, mean damage on the other
    concepts, the gap own − other, and the same gap for n_random size-matched random sub-models (shared by the
    sub-models of one size): its mean and 95th percentile, p = (1 + #random gaps >= the gap) / (1 + n_random) (a
    permutation p-value, never 0), beats_random: the gap is positive and p <= ALPHA (so it needs n_random >= 19:
    with fewer, no sub-model can pass).

    Sufficiency: keep only the sub-model's units and ablate every other unit of its hooks. kept = damage(all of
    the hooks' units) − damage(all but it), in nats of the concept's keyword loss: what the sub-model alone
    preserves of the layer's contribution; the same for the random sub-models (mean, 95th percentile, p = kept_p).
    sufficiency = kept / damage(all): 1 = it alone carries the layer's contribution to the concept, 0 = no better
    than nothing, above 1 when the rest of the layer hurts the concept; NaN where ablating the whole layer does not
    hurt it (and unstable where that damage is small: compare `kept` in nats there).

    fast: None scores every damage in one batched neuron-game pass where `neuron_game_layers` allows it, else resumed
    at the last block's MLP where `resumes_at_last_mlp_of` allows it (each the same values up to float rounding,
    bench/submodel_validate.py); True refuses sub-models with neither; False always runs one hooked forward per
    sub-model."""
    names = list(dict.fromkeys(data.topics)) if isinstance(data, KeywordPrompts) else list(data)
    bad = [c for c in submodels if c not in names]
    check(not bad, "concept", bad[0] if bad else None, f"one of the validation data's concepts {names}")
    check(len(names) >= 2, "validation concepts", names, "at least two (damage on a concept vs the others)")
    base = concept_losses(model, data)
    g = torch.Generator().manual_seed(seed)
    sigs = list(dict.fromkeys(sm.signature for sm in submodels.values()))
    rand: dict[tuple, list[SubModel]] = {}
    todo: list[SubModel] = []  # every sub-model whose damage is needed, in a fixed order
    for sig in sigs:
        like = next(sm for sm in submodels.values() if sm.signature == sig)
        rand[sig] = [random_like(like, g) for _ in range(n_random)]
        todo += [x for r in rand[sig] for x in (r, complement(r))] + [complement(empty(like))]
    for sm in submodels.values():
        todo += [sm, complement(sm)]
    bar = tqdm(total=len(todo), desc="validate", disable=not progress, leave=False)
    dmg = iter(_damages(model, data, todo, base, kind, intensity, seed, fast, bar))
    groups, whole = {}, {}
    for sig in sigs:
        groups[sig] = [(next(dmg), next(dmg)) for _ in rand[sig]]  # (ablated, all but it ablated)
        whole[sig] = next(dmg)  # every unit of the hooks ablated
    out = {}
    for c, sm in submodels.items():
        own, off = _gaps(next(dmg), c)
        rand_gaps = np.array([np.subtract(*_gaps(d, c)) for d, _ in groups[sm.signature]])
        q95 = float(np.quantile(rand_gaps, 0.95)) if len(rand_gaps) else float("nan")
        p = float((1 + np.sum(rand_gaps >= own - off)) / (1 + len(rand_gaps)))
        all_dmg = float(whole[sm.signature][c])
        kept = all_dmg - float(next(dmg)[c])  # nats of the concept's loss it alone preserves
        rand_kept = np.array([all_dmg - float(k[c]) for _, k in groups[sm.signature]])
        out[c] = replace(sm, scores={
            "own": own, "other": off, "gap": own - off, "clean_loss": float(base[c]),
            "random_mean": float(rand_gaps.mean()) if len(rand_gaps) else float("nan"), "random_q95": q95,
            "p": p, "beats_random": bool(own - off > 0 and p <= ALPHA), "size": sm.size,
            "layer_damage": all_dmg, "kept": kept,
            "kept_random_mean": float(rand_kept.mean()) if len(rand_kept) else float("nan"),
            "kept_random_q95": float(np.quantile(rand_kept, 0.95)) if len(rand_kept) else float("nan"),
            "kept_p": float((1 + np.sum(rand_kept >= kept)) / (1 + len(rand_kept))),
            "sufficiency": _share(kept, all_dmg),
            "sufficiency_random_mean": _share(float(rand_kept.mean()), all_dmg) if len(rand_kept) else float("nan"),
            "sufficiency_random_q95": _share(float(np.quantile(rand_kept, 0.95)), all_dmg) if len(rand_kept)
            else float("nan")})
    bar.close()
    return out


def _share(kept: float, all_damage: float) -> float:
    """kept / damage with every unit ablated (sufficiency); NaN if that damage is not > 0."""
    return kept / all_damage if all_damage > 0 else float("nan")


def with_init_control(trained: Mapping[str, SubModel], init: Mapping[str, SubModel]) -> dict[str, SubModel]:
    """The trained model's validated sub-models with the same pipeline's result at initialisation beside their own
    scores (init_gap, init_p, init_beats_random, init_kept): a sub-model is only 'validated' if its gap also
    exceeds the gap at initialisation."""
    out = {}
    for c, sm in trained.items():
        check(c in init and "gap" in init[c].scores, "concept", c,
              f"a concept validated at initialisation too: {sorted(k for k, v in init.items() if v.scores)}")
        check("gap" in sm.scores, "concept", c, "a validated sub-model of the trained model (run validate first)")
        i = init[c].scores
        out[c] = replace(sm, scores={**sm.scores, "init_gap": i["gap"], "init_p": i["p"],
                                     "init_beats_random": i["beats_random"], "init_kept": i["kept"]})
    return out


def with_probe_gate(submodels: Mapping[str, SubModel], margins: pd.DataFrame) -> dict[str, SubModel]:
    """The sub-models with their concept's probe margin (`lib.analysis.prompts.probe_margins`: nats the model beats a
    unigram baseline by on the concept's validation keywords) among their scores: a concept whose probe is not usable
    (margin CI not above 0) leaves its sub-model 'unvalidated', whatever its gap."""
    m = margins.set_index("topic")
    out = {}
    for c, sm in submodels.items():
        check(c in m.index, "concept", c, f"a topic of the probe margins: {sorted(m.index)}")
        out[c] = replace(sm, scores={**sm.scores, "probe_margin": float(m.loc[c, "margin"]),
                                     "probe_usable": bool(m.loc[c, "usable"])})
    return out


def scores_table(submodels: Mapping[str, SubModel]) -> pd.DataFrame:
    """One row per sub-model: concept, method, status, size and its validation scores."""
    return pd.DataFrame([{"concept": c, "method": sm.method, "status": sm.status, **sm.scores}
                         for c, sm in submodels.items()])


def validation_table(submodels: Mapping[str, SubModel]) -> pd.DataFrame:
    """What `explain` shows beside a prediction: per sub-model its status, why, and the main validation numbers."""
    cols = ["gap", "random_q95", "p", "init_gap", "kept", "kept_random_q95", "kept_p", "sufficiency"]
    return pd.DataFrame([{"submodel": n, "method": sm.method, "size": sm.size, "status": sm.status,
                          **{k: sm.scores.get(k, float("nan")) for k in cols}, "why": sm.status_reason}
                         for n, sm in submodels.items()]).set_index("submodel")


def cannot_do(table: pd.DataFrame) -> list[str]:
    """Concepts for which no sub-model in a scores table (any method) is validated."""
    ok = (table.status == "validated").groupby(table.concept, sort=False).any()
    return [c for c, v in ok.items() if not v]


# ------------------------------------------------------------------------------------------------ explaining


@dataclass(frozen=True)
class Explanation:
    """explain()'s result: the prompt's tokens, per-position activity of each sub-model, and the predictions."""

    tokens: tuple[str, ...]
    activity: pd.DataFrame  # position, token, submodel, activity (mean z-score of its units)
    predictions: pd.DataFrame  # ablated, intensity, rank, token_id, token, prob, clean_prob, change
    tracked: pd.DataFrame  # ablated, intensity, token_id, token, prob, clean_prob: the clean top-k under each ablation
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)  # validation_table of the sub-models shown

    def table(self) -> pd.DataFrame:
        """The predictions as a readable table (probabilities rounded), with the status of what was ablated."""
        return self.predictions.drop(columns=["token_id"]).round(4)

    def active(self) -> pd.DataFrame:
        """Activity as a [sub-model, position] table (columns labelled 'position: token')."""
        act = self.activity.assign(col=[f"{p}: {t!r}" for p, t in zip(self.activity.position, self.activity.token)])
        return act.pivot(index="submodel", columns="col", values="activity")[list(dict.fromkeys(act.col))]


def _as_tokens(prompt: str | Sequence[int] | Tensor, tokenizer, bos: bool) -> Int[Tensor, " pos"]:
    if isinstance(prompt, str):
        check(tokenizer is not None, "tokenizer", None, "a lib.core.data.Tokenizer to encode a text prompt")
        ids = [tokenizer.eos_id] * bos + tokenizer.encode(prompt)
    else:
        ids = torch.as_tensor(prompt, dtype=torch.long).flatten().tolist()
    check(len(ids) > 0, "prompt", prompt, "at least one token")
    return torch.tensor(ids, dtype=torch.long)


def _check_fits(model, tokens: Tensor) -> None:
    check(len(tokens) <= model.cfg.n_ctx, "prompt", f"<{len(tokens)} tokens>",
          f"at most the model's context of n_ctx={model.cfg.n_ctx} tokens")


def _conditions(submodels: Mapping[str, SubModel], ablate) -> list[tuple[str, ...]]:
    """Ablation sets: each sub-model alone (default), or the given names / tuples of names (combinations)."""
    sets = [(n,) for n in submodels] if ablate is None else [(a,) if isinstance(a, str) else tuple(a) for a in ablate]
    for s in sets:
        for n in s:
            check(n in submodels, "sub-model", n, f"one of {list(submodels)}")
    return sets


@torch.no_grad()
def _activity(model, tokens: Tensor, submodels: Mapping[str, SubModel], labels: Sequence[str]) -> pd.DataFrame:
    names = sorted({h for sm in submodels.values() for h in sm.units})
    acts = activations(model, tokens[None], names)
    rows = []
    for n, sm in submodels.items():
        z = torch.zeros(len(tokens))
        for h, idx in sm.units.items():
            a = sm.compressors[h].encode(acts[h]) if h in sm.compressors else acts[h]
            z += ((a[:, idx] - sm.mean[h][idx]) / sm.sd[h][idx]).sum(1)
        z /= max(sm.size, 1)
        rows += [{"position": p, "token": labels[p], "submodel": n, "activity": float(z[p])} for p in range(len(z))]
    return pd.DataFrame(rows)


def _next_token_probs(model, tokens: Tensor, ablated: Sequence[SubModel], kind: str, intensity: float,
                      seed: int) -> Float[Tensor, " vocab"]:
    """The next-token distribution at the last position, with the `ablated` sub-models impaired (none: clean)."""
    x = tokens[None].to(model.cfg.device)
    logits = model(x) if not ablated else model.run_with_hooks(
        x, fwd_hooks=combined_hooks(list(ablated), kind, intensity, seed))
    return torch.softmax(logits[0, -1].float(), -1).cpu()


@torch.no_grad()
def token_probs(model, prompt: str | Sequence[int] | Tensor, submodels: Mapping[str, SubModel],
                token_ids: Sequence[int], *, tokenizer=None, ablate: Sequence[str | Sequence[str]] | None = None,
                intensity: float = 1.0, kind: str = "zero", bos: bool = True, seed: int = 0) -> pd.DataFrame:
    """The next-token probabilities of `token_ids` (e.g. a prompt's keyword, whatever its rank) at the last position,
    clean (ablated = 'none') and with each ablation set impaired as in `explain`: columns ablated, token_id, token
    (as the tokenizer's `display` shows it; the id without one), prob, clean_prob, change."""
    tokens = _as_tokens(prompt, tokenizer, bos)
    _check_fits(model, tokens)
    ids = [int(i) for i in token_ids]
    check(len(ids) > 0 and all(0 <= i < model.cfg.d_vocab for i in ids), "token_ids", token_ids,
          f"at least one token id, each in [0, d_vocab={model.cfg.d_vocab})")
    sets = _conditions(submodels, ablate)
    check_hooks(model, sorted({h for s in sets for n in s for h in submodels[n].units}))
    show = (lambda i: _token_text(tokenizer, i)) if tokenizer is not None else str
    clean, rows = _next_token_probs(model, tokens, [], kind, intensity, seed), []
    for s in [()] + sets:
        p = clean if not s else _next_token_probs(model, tokens, [submodels[n] for n in s], kind, intensity, seed)
        rows += [{"ablated": " + ".join(s) or "none", "token_id": i, "token": show(i), "prob": float(p[i]),
                  "clean_prob": float(clean[i]), "change": float(p[i] - clean[i])} for i in ids]
    return pd.DataFrame(rows)


def _token_text(tokenizer, i: int) -> str:
    """One token as a reader sees it (`display`: a partial UTF-8 character as byte escapes, not U+FFFD); an id
    outside the vocabulary is an error (`id_to_token` checks it)."""
    tokenizer.id_to_token(i)
    return tokenizer.display([i])


@torch.no_grad()
def explain(model, prompt: str | Sequence[int] | Tensor, submodels: Mapping[str, SubModel], *, tokenizer=None,
            ablate: Sequence[str | Sequence[str]] | None = None, intensity: float = 1.0, kind: str = "zero",
            top_k: int = 5, bos: bool = True, seed: int = 0, allow_unvalidated: bool = True) -> Explanation:
    """Per position, how active each sub-model is (mean z-score of its units); then the next-token prediction at
    the last position clean and with each ablation set impaired at `intensity`: the top_k tokens with their
    probabilities after and before (clean_prob) as a tidy table (ablated = 'none' for the clean run; status = the
    validation status of what was ablated), and the clean top_k tokens' probabilities under every ablation
    (`tracked`); `validation` holds every sub-model's status and scores. With allow_unvalidated=False, ablating a
    sub-model that is not 'validated' is an error naming it and its status."""
    tokens = _as_tokens(prompt, tokenizer, bos)
    _check_fits(model, tokens)
    show = (lambda i: _token_text(tokenizer, i)) if tokenizer is not None else str
    labels = [show(int(i)) for i in tokens]
    sets = _conditions(submodels, ablate)
    if not allow_unvalidated:
        bad = sorted({n for s in sets for n in s if submodels[n].status != "validated"})
        check(not bad, "ablated sub-model", ", ".join(f"{n} ({submodels[n].status})" for n in bad),
              "validated sub-models only (allow_unvalidated=True, or --allow-unvalidated, ablates the others)")
    check_hooks(model, sorted({h for s in sets for n in s for h in submodels[n].units}))
    clean = _next_token_probs(model, tokens, [], kind, intensity, seed)
    clean_top = clean.topk(min(top_k, len(clean))).indices.tolist()
    rows, tracked = [], []
    for s in [()] + sets:
        p = clean if not s else _next_token_probs(model, tokens, [submodels[n] for n in s], kind, intensity, seed)
        name, a = " + ".join(s) or "none", 0.0 if not s else float(intensity)
        status = " + ".join(submodels[n].status for n in s) or "clean"
        top = p.topk(min(top_k, len(p)))
        for r, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            rows.append({"ablated": name, "status": status, "intensity": a, "rank": r + 1, "token_id": i,
                         "token": show(i), "prob": v, "clean_prob": float(clean[i]), "change": v - float(clean[i])})
        tracked += [{"ablated": name, "intensity": a, "token_id": i, "token": show(i), "prob": float(p[i]),
                     "clean_prob": float(clean[i])} for i in clean_top]
    return Explanation(tuple(labels), _activity(model, tokens, submodels, labels), pd.DataFrame(rows),
                       pd.DataFrame(tracked), validation_table(submodels))


@torch.no_grad()
def prompt_activity(model, prompts: KeywordPrompts, submodels: Mapping[str, SubModel]) -> pd.DataFrame:
    """Each sub-model's activity averaged over each prompt's positions before its keyword: prompt, topic, submodel,
    activity."""
    rows = []
    for i in range(len(prompts)):
        toks = torch.tensor(prompts.prompt(i))
        act = _activity(model, toks, submodels, [""] * len(toks)).groupby("submodel", sort=False).activity.mean()
        rows += [{"prompt": i, "topic": prompts.topics[i], "submodel": n, "activity": float(v)} for n, v in act.items()]
    return pd.DataFrame(rows)


def identification(activity: pd.DataFrame) -> pd.DataFrame:
    """Per prompt of a prompt_activity table: the most active sub-model and whether it is the prompt's topic."""
    top = activity.loc[activity.groupby("prompt").activity.idxmax()].rename(columns={"submodel": "most_active"})
    return top.assign(correct=top.most_active == top.topic)[["prompt", "topic", "most_active", "correct"]]


# ------------------------------------------------------------------------------------------------ concept sets


def find_in_sets(model, windows: Mapping[str, Mapping[str, Tensor]], validation: Mapping[str, KeywordPrompts],
                 game: Mapping[str, KeywordPrompts], method: str = "selectivity", **kwargs) -> dict[str, SubModel]:
    """`find_submodels` within each concept set (set -> concept -> windows), for the concepts that have both
    validation and game prompts; each set's sub-models are validated on that set's held-out prompts (and, for
    'shapley', ranked on its game prompts)."""
    out: dict[str, SubModel] = {}
    for s, concepts in windows.items():
        if method == "shapley":
            arts = [set(zip(p.sources, p.rows.tolist())) for p in (validation[s], game[s])]
            shared = arts[0] & arts[1]
            check(not shared, f"game and validation prompts of {s!r}", f"{len(shared)} shared articles",
                  "disjoint halves: Shapley ranks neurons on the game half and is validated on the other")
        ok = {c: w for c, w in concepts.items() if c in validation[s].topics and c in game[s].topics}
        extra = {"prompts": game[s].subset(list(ok))} if method == "shapley" else {}
        out.update(find_submodels(model, ok, method, validation=validation[s].subset(list(ok)), **extra, **kwargs))
    return out


def split_halves(by_set: Mapping[str, KeywordPrompts]) -> tuple[dict[str, KeywordPrompts], dict[str, KeywordPrompts]]:
    """(game, validation): alternate prompts of every topic, so the two halves hold different articles."""
    game, val = {}, {}
    for s, pr in by_set.items():
        half = pr.frame().groupby("topic").cumcount().to_numpy() % 2
        game[s], val[s] = (pr.select(torch.tensor(np.flatnonzero(half == h))) for h in (0, 1))
    return game, val


def set_of(submodels: Mapping[str, SubModel], windows: Mapping[str, Mapping[str, Tensor]],
           concept: str) -> dict[str, SubModel]:
    """The sub-models of a concept's own set (activity z-scores are comparable only within a set)."""
    return {c: submodels[c] for concepts in windows.values() if concept in concepts for c in concepts if c in submodels}


def validation_case(validation: Mapping[str, KeywordPrompts], topic: str,
                    i: int) -> tuple[Int[Tensor, " pos"], tuple[int, ...]]:
    """The i-th validation prompt of a topic, from whichever set has it: (its tokens before the keyword, the keyword's
    tokens, of which the first is the next-token prediction `explain` looks at)."""
    pr = next(p for p in validation.values() if topic in p.topics)
    idx = [j for j, t in enumerate(pr.topics) if t == topic][i]
    return torch.tensor(pr.prompt(idx)), tuple(pr.word(idx))