"""Report 4 (neuron Shapley): gradient × activation, removal curves, specificity of top-k removal, split-half
reliability. The estimators and the neuron game are shared (lib.analysis.shapley)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lib.analysis.prompts import KeywordPrompts, keyword_scores, tail
from lib.analysis.shapley import NeuronGame, Players, ShapleyResult
from lib.core import hooks
from lib.core.checks import check


def grad_x_act(model, prompts: KeywordPrompts, players: Players, fill: Float[Tensor, "layer unit"] | None = None,
               batch_size: int = 64) -> Float[Tensor, "prompt n"]:
    """First-order estimate, per prompt, of how much each neuron's ablation lowers −(keyword loss):
    Σ_pos (act − fill) · ∂(−loss)/∂act over the prompt's positions (gradient × activation)."""
    fill = torch.zeros(model.cfg.n_layers, model.cfg.d_mlp) if fill is None else fill
    out = []
    for i in range(0, len(prompts), batch_size):
        part = prompts.select(torch.arange(i, min(i + batch_size, len(prompts))))
        acts: dict[int, Tensor] = {}

        def keep(x: Tensor, hook) -> Tensor:
            x.retain_grad()
            acts[hook.layer()] = x
            return x

        with torch.enable_grad():
            logits = model.run_with_hooks(part.tokens.to(model.cfg.device),
                                          fwd_hooks=[(hooks.name("mlp_post", layer), keep) for layer in players.layers])
            loss = keyword_scores(tail(logits, part.lengths, part.width), part.targets)["loss"].sum()
            loss.backward()
        out.append(torch.cat([(-(acts[layer] - fill[layer].to(acts[layer])) * acts[layer].grad).sum(1).detach().cpu()
                              for layer in players.layers], 1))
    model.zero_grad(set_to_none=True)
    return torch.cat(out)


def removal_masks(order: Int[Tensor, " n"], ks: Sequence[int], n_players: int) -> Bool[Tensor, "k n"]:
    """One coalition per k: every player except the first k of `order` (most important first)."""
    check(all(0 <= k <= n_players for k in ks), "ks", tuple(ks), f"integers in [0, {n_players}]")
    masks = torch.ones(len(ks), n_players, dtype=torch.bool)
    for row, k in enumerate(ks):
        masks[row, order[:k]] = False
    return masks


def specificity_gap(damage: Float[Tensor, "x y"]) -> Float[Tensor, " x"]:
    """Per row X of a topics × topics damage matrix: damage on X minus the mean damage on the other topics (same
    unit as the damage; 0 = no specificity; defined when off-target damage is 0 or negative, unlike the ratio)."""
    check(damage.dim() == 2 and damage.shape[0] == damage.shape[1] > 1, "damage.shape", tuple(damage.shape),
           "square (topics x topics), at least 2 topics")
    return damage.diagonal() - (damage.sum(1) - damage.diagonal()) / (len(damage) - 1)


def removal_table(game: NeuronGame, scores: Mapping[str, Float[Tensor, "n topics"]], ks: Sequence[int],
                  n_random: int, generator: torch.Generator) -> pd.DataFrame:
    """Keyword metrics on each topic's own prompts after removing its k highest-scoring players, for every score
    table (one column per game topic) and k, plus n_random uniformly random orders (the same for every topic).
    One row per (ordering, seed, topic, k, prompt): columns ordering, seed, topic, k, prompt, loss, top1, top5."""
    n, topics, blocks, masks = game.n_players, game.topics, [], []
    for name, sc in scores.items():
        check(tuple(sc.shape) == (n, len(topics)), f"scores[{name!r}].shape", tuple(sc.shape), f"({n}, {len(topics)})")
        for j, t in enumerate(topics):
            blocks.append((name, 0, (t,)))
            masks.append(removal_masks(torch.argsort(sc[:, j], descending=True, stable=True), ks, n))
    for r in range(n_random):
        blocks.append(("random", r, topics))
        masks.append(removal_masks(torch.randperm(n, generator=generator), ks, n))
    s = game.scores(torch.cat(masks))
    rows, b = [], 0
    for name, seed, ts in blocks:
        for t in ts:
            idx = game.topic_idx(t)
            for i, k in enumerate(ks):
                rows.append(pd.DataFrame({"ordering": name, "seed": seed, "topic": t, "k": k, "prompt": idx.numpy(),
                                          **{m: s[m][b + i, idx].numpy() for m in ("loss", "top1", "top5")}}))
        b += len(ks)
    return pd.concat(rows, ignore_index=True)


def destroy_k(df: pd.DataFrame, metric: str = "top5", frac: float = 0.5) -> pd.DataFrame:
    """Per (ordering, seed, topic) of a removal_table: the fewest removed players at which the mean `metric` is at
    most frac times its value with none removed (censored at the largest k, flagged), for topics above 0 at k=0."""
    rows = []
    for (o, s, t), part in df.groupby(["ordering", "seed", "topic"]):
        curve = part.groupby("k")[metric].mean()
        if curve.iloc[0] <= 0:
            continue
        hit = curve.index[curve.to_numpy() <= frac * curve.iloc[0]]
        rows.append({"ordering": o, "seed": s, "topic": t, "clean": float(curve.iloc[0]),
                     "k": int(hit[0]) if len(hit) else int(curve.index[-1]), "censored": not len(hit)})
    return pd.DataFrame(rows, columns=["ordering", "seed", "topic", "clean", "k", "censored"])


def split_half(res: ShapleyResult) -> tuple[Tensor, Tensor]:
    """Estimates from the first and the second half of a TMC run's permutations (from its trace)."""
    t = len(res.trace_values)
    check(t >= 2, "len(trace_values)", t, "at least 2 permutations")
    h = t // 2
    first = res.trace_values[h - 1].double()
    second = (res.trace_values[-1].double() * t - first * h) / (t - h)
    return first.float(), second.float()


def top_share(values: Float[Tensor, "n topics"], k: int) -> np.ndarray:
    """Per topic: the share of the total absolute credit held by the k players with the largest |value|."""
    a = values.abs()
    return (a.sort(0, descending=True).values[:k].sum(0) / a.sum(0)).numpy()
