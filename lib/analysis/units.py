"""Units and their activations: the one batched activation collector, per-topic activation statistics
(`TopicStats`, selectivity), unit matching across models, top-activating contexts, cached activations."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.core import artifacts, hooks, pretrained
from lib.core.checks import check

LOCATIONS = ("mlp_post", "mlp_out", "ln2")  # after the MLP nonlinearity, the MLP's output, the MLP's input
# what a block needs for its hook to exist and fire (TransformerLens keeps hook_mlp_out on attention-only blocks,
# where it never fires, and has no hook_resid_mid where attention and MLP run in parallel)
_HOOK_NEEDS = {"mlp_pre": dict(mlp=True), "mlp_post": dict(mlp=True), "mlp_out": dict(mlp=True),
               "ln2": dict(mlp=True), "resid_mid": dict(mlp=True, sequential=True)}


def require_hook(model, hook: str, method: str) -> None:
    """Refuse `method` at `hook` on a model where that hook does not exist or never fires: an
    ArchitectureError naming the part the architecture lacks, else a ValueError naming the hook."""
    layer = hooks.layer_of(hook)
    for kind, needs in _HOOK_NEEDS.items():
        if layer is not None and hook == hooks.name(kind, layer):
            pretrained.require(model, method, **needs)
    if hook not in model.hook_dict:
        like = sorted(h for h in model.hook_dict if hooks.layer_of(h) == layer)[:8]
        raise ValueError(f"hook={hook!r} is not allowed for {method}: this model has no such hook point "
                         f"(some it has: {like})")


@dataclass(frozen=True)
class TopicStats:
    """Per topic, layer and unit: mean and variance of the activation at `location` over all tokens of the topic."""

    location: str
    topics: tuple[str, ...]
    mean: Float[Tensor, "topic layer unit"]
    var: Float[Tensor, "topic layer unit"]
    count: Int[Tensor, " topic"]

    def pooled(self, topics: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        """Mean and variance [layer, unit] over the tokens of several topics (default: all)."""
        idx = [self.topics.index(t) for t in (topics if topics is not None else self.topics)]
        w = self.count[idx].double() / self.count[idx].sum()
        m = (w[:, None, None] * self.mean[idx]).sum(0)
        v = (w[:, None, None] * (self.var[idx] + (self.mean[idx] - m) ** 2)).sum(0)
        return m.float(), v.float()

    def selectivity(self, topic: str) -> Float[Tensor, "layer unit"]:
        """Standardised mean difference (Cohen's d) of each unit on `topic` versus the other topics pooled."""
        i = self.topics.index(topic)
        m_r, v_r = self.pooled([t for t in self.topics if t != topic])
        return (self.mean[i] - m_r) / torch.sqrt((self.var[i] + v_r) / 2 + 1e-8)


@torch.no_grad()
def unit_activations(model, tokens: Int[Tensor, "n pos"], location: str = "mlp_post",
                     batch_size: int = 64) -> Float[Tensor, "layer tokens unit"]:
    """Activations at `location` in every layer for all positions of `tokens`, flattened over (n, pos)."""
    return multi_activations(model, tokens, (location,), batch_size, progress=False)[location]


@torch.no_grad()
def multi_activations(model, tokens: Int[Tensor, "n pos"], locations: Sequence[str], batch_size: int = 64,
                      progress: bool = True) -> dict[str, Float[Tensor, "layer tokens unit"]]:
    """unit_activations at several locations from the same forward passes."""
    for loc in locations:
        check(loc in LOCATIONS, "location", loc, f"one of {LOCATIONS}")
        require_hook(model, hooks.name(loc, 0), f"unit activations at {loc}")
    names = {loc: [hooks.name(loc, layer) for layer in range(model.cfg.n_layers)] for loc in locations}
    out: dict[str, list[Tensor]] = {loc: [] for loc in locations}
    for i in tqdm(range(0, len(tokens), batch_size), desc="activations", disable=not progress, leave=False):
        _, cache = model.run_with_cache(tokens[i : i + batch_size].to(model.cfg.device), return_type=None,
                                        names_filter=[n for ns in names.values() for n in ns])
        for loc, ns in names.items():
            out[loc].append(torch.stack([cache[n].flatten(0, 1).cpu() for n in ns]))
    return {loc: torch.cat(v, 1) for loc, v in out.items()}


def topic_stats(model, windows: Mapping[str, Int[Tensor, "n pos"]], location: str | Sequence[str] = "mlp_post",
                batch_size: int = 64, progress: bool = True) -> TopicStats | dict[str, TopicStats]:
    """TopicStats from each topic's token windows (e.g. lib.analysis.prompts.topic_windows on the 'fit' split); for a
    sequence of locations, a dict location -> TopicStats from the same forward passes."""
    locations = (location,) if isinstance(location, str) else tuple(location)
    topics, tokens = list(windows), torch.cat(list(windows.values()))
    sizes = torch.tensor([w.numel() for w in windows.values()])
    owner = torch.repeat_interleave(torch.arange(len(topics)), sizes)  # topic of every flattened token
    acts = multi_activations(model, tokens, locations, batch_size, progress)
    out = {}
    for loc, a in acts.items():
        parts = [a[:, owner == i].double() for i in range(len(topics))]
        out[loc] = TopicStats(loc, tuple(topics), torch.stack([p.mean(1) for p in parts]).float(),
                              torch.stack([p.var(1, unbiased=False) for p in parts]).float(),
                              torch.tensor([p.shape[1] for p in parts]))
    return out[location] if isinstance(location, str) else out


def n_units(frac: float, width: int) -> int:
    """Units per layer for a fraction of a layer's width (at least 1)."""
    check(0.0 < frac <= 1.0, "frac", frac, "a float in (0, 1]")
    return max(1, round(frac * width))


def top_units(score: Float[Tensor, "layer unit"], k: int,
              layers: Sequence[int] | None = None) -> Bool[Tensor, "layer unit"]:
    """Mask of the k highest-scoring units in each selected layer."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    for layer in torch.nonzero(layer_mask(*score.shape, layers)).flatten().tolist():
        mask[layer, score[layer].topk(k).indices] = True
    return mask


def layer_mask(n_layers: int, width: int, layers: Sequence[int] | None) -> Bool[Tensor, " layer"]:
    use = torch.zeros(n_layers, dtype=torch.bool)
    use[list(layers) if layers is not None else slice(None)] = True
    return use


def match_units(acts_a: Float[Tensor, "tokens unit"], acts_b: Float[Tensor, "tokens unit"]) -> Int[Tensor, " unit"]:
    """perm with unit i of model a matched to unit perm[i] of model b: greedy one-to-one matching, most
    correlated (activation over the same tokens) pairs first."""
    za = (acts_a - acts_a.mean(0)) / (acts_a.std(0) + 1e-8)
    zb = (acts_b - acts_b.mean(0)) / (acts_b.std(0) + 1e-8)
    corr = za.T @ zb / len(za)
    perm = torch.full((corr.shape[0],), -1, dtype=torch.long)
    used_a, used_b = torch.zeros(corr.shape[0], dtype=torch.bool), torch.zeros(corr.shape[1], dtype=torch.bool)
    for flat in corr.flatten().argsort(descending=True).tolist():
        i, j = divmod(flat, corr.shape[1])
        if not used_a[i] and not used_b[j]:
            perm[i], used_a[i], used_b[j] = j, True, True
            if used_a.all():
                break
    return perm


@torch.no_grad()
def collect_activations(hooked, tokens: Int[Tensor, "n pos"], hook: str, batch_size: int = 64,
                        progress: bool = False) -> Float[Tensor, "n pos d"]:
    """Activations at `hook`, streamed in batches; the forward pass stops after the hook's block."""
    require_hook(hooked, hook, f"collecting activations at {hook}")
    layer = hooks.layer_of(hook)
    stop = None if layer is None or hook.startswith("ln_final") else layer + 1
    device = hooked.cfg.device
    out = []
    for i in tqdm(range(0, len(tokens), batch_size), desc=f"cache {hook}", disable=not progress, leave=False):
        _, cache = hooked.run_with_cache(tokens[i : i + batch_size].to(device), names_filter=[hook],
                                         stop_at_layer=stop, return_type=None)
        out.append(cache[hook].float().cpu())
    return torch.cat(out)


def fingerprint(model: nn.Module) -> str:
    """Short sha256 of a model's state dict (names, shapes, values): the model part of a cache key."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_hash(t: Tensor) -> str:
    """Short sha256 of a tensor's values and shape (the data-slice part of a cache key)."""
    data = t.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(str(tuple(t.shape)).encode() + data).hexdigest()[:16]


def activation_key(hooked, hook: str, tokens: Int[Tensor, "n pos"]) -> dict:
    """The cache key: (model fingerprint, hook name, data slice = hash and shape of the tokens)."""
    return {"model": fingerprint(hooked), "hook": hook, "tokens": tensor_hash(tokens), "shape": list(tokens.shape)}


def cache_activations(hooked, tokens: Int[Tensor, "n pos"], hook: str, label: str = "", batch_size: int = 64,
                      progress: bool = False) -> tuple[Float[Tensor, "n pos d"], dict]:
    """(activations, key): loaded from the artifact keyed by (model, hook, data slice), else collected and saved.

    `label` is a readable note stored beside the cache (not part of the key).
    """
    key = activation_key(hooked, hook, tokens)
    dest = artifacts.path("activations", hook, key) / "acts.safetensors"
    if dest.is_file():
        return artifacts.load_tensors(dest)["acts"], key
    acts = collect_activations(hooked, tokens, hook, batch_size, progress)
    artifacts.write_json(dest.parent / "config.json", {**key, "label": label})
    artifacts.save_tensors(dest, {"acts": acts})
    return acts, key


def top_contexts(values: Float[Tensor, "n pos"], tokens: Int[Tensor, "n pos"], tok, n_top: int = 5, before: int = 8,
                 sign: int = 1, topics: Sequence[str] | None = None) -> pd.DataFrame:
    """The n_top (window, position) pairs where `values` is highest (sign=-1: lowest): rank, value, the text of the
    `before` tokens up to it with the token itself in [brackets] (as `tok.display` shows them: a partial UTF-8
    character as byte escapes, not U+FFFD), and the window's topic when `topics` (one per window) is given."""
    check(values.shape == tokens.shape, "values.shape", tuple(values.shape), f"equal to tokens.shape {tuple(tokens.shape)}")
    check(sign in (1, -1), "sign", sign, "1 (highest) or -1 (lowest)")
    flat, rows = values.flatten(), []
    for rank, idx in enumerate((sign * flat).topk(min(n_top, flat.numel())).indices.tolist()):
        w, p = divmod(idx, values.shape[1])
        ctx = tok.display(tokens[w, max(0, p - before) : p].tolist()).replace("\n", " ")
        row = {"rank": rank + 1, "value": float(flat[idx]), "context": f"{ctx}[{tok.display([int(tokens[w, p])])}]"}
        if topics is not None:
            row["topic"] = topics[w]
        rows.append(row)
    return pd.DataFrame(rows)


def stats_from_acts(acts: Float[Tensor, "tokens unit"], owner: Int[Tensor, " tokens"],
                    topics: Sequence[str]) -> TopicStats:
    """TopicStats (one 'layer') of a unit basis from activations and each token's topic index."""
    parts = [acts[owner == i].double() for i in range(len(topics))]
    mean = torch.stack([p.mean(0) for p in parts])[:, None].float()
    var = torch.stack([p.var(0, unbiased=False) for p in parts])[:, None].float()
    return TopicStats("mlp_post", tuple(topics), mean, var, torch.tensor([len(p) for p in parts]))


def best_selectivity(stats: TopicStats) -> tuple[Float[Tensor, " unit"], Int[Tensor, " unit"]]:
    """Per unit: the largest Cohen's d of one topic versus the rest, and that topic's index (one-layer stats)."""
    d = torch.stack([stats.selectivity(t)[0] for t in stats.topics])  # (topic, unit)
    best, top = d.max(0)
    return best, top
