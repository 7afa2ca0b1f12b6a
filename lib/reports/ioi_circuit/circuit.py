"""The IOI circuit in a trained model: which heads matter (activation patching from the ABC run), through which
path (path patching into the name movers' queries), what each head does (attention-based class scores), and
whether the heads found are the circuit (faithfulness under mean ablation, against random head sets of the same
size).

Every function takes a TransformerLens HookedTransformer (`lib.core.model.to_hooked` of our model) and IOIPrompts.
Heads are patched through `blocks.L.attn.hook_z` (a head's output before W_O), so a head is patched alone.
Scores are normalised as in Wang et al. (2022): the patching metric is 1 on the clean run and 0 on the ABC run, so
"effect" below is the fraction of the clean-minus-ABC logit difference that patching removes.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import patching

from lib.core.checks import check
from lib.reports.ioi_circuit import data as D
from lib.reports.ioi_circuit.kernel import logit_diff, patching_metric

Head = tuple[int, int]  # (layer, head)
CLASSES = ("name mover", "s-inhibition", "duplicate token", "induction", "previous token")


def _z(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def _end_ld(hm, tokens: Tensor, prompts: D.IOIPrompts, fwd_hooks=()) -> Float[Tensor, " n"]:
    """Logit difference IO - S at each prompt's end, under `fwd_hooks`."""
    logits = hm.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)).float()
    end = logits[torch.arange(len(prompts)), prompts.end.to(logits.device)]
    return logit_diff(end, prompts.io.to(end.device), prompts.s.to(end.device)).cpu()


@torch.no_grad()
def baselines(hm, prompts: D.IOIPrompts) -> tuple[float, float]:
    """Mean logit difference IO - S on the clean and on the ABC prompts (the patching metric's 1 and 0)."""
    return _end_ld(hm, prompts.tokens, prompts).mean().item(), _end_ld(hm, prompts.corrupted, prompts).mean().item()


# ------------------------------------------------------------------------------------------ activation patching


@torch.no_grad()
def head_patching(hm, prompts: D.IOIPrompts) -> Float[Tensor, "layer head"]:
    """Per head: the fraction of the clean-minus-ABC logit difference lost when that head's output (hook_z, every
    position) in the clean run is replaced by its output on the ABC prompt (TransformerLens's
    get_act_patch_attn_head_out_all_pos, run clean with the ABC cache patched in). 1: the head carries all of it."""
    clean, abc = baselines(hm, prompts)
    metric = patching_metric(prompts, clean, abc)
    _, abc_cache = hm.run_with_cache(prompts.corrupted, names_filter=lambda n: n.endswith("attn.hook_z"))
    # transformer_lens.patching draws a tqdm bar per call (a notebook widget each; report 8 makes ~200 calls):
    # silenced for this call only
    bar, patching.tqdm = patching.tqdm, _no_bar
    try:
        kept = patching.get_act_patch_attn_head_out_all_pos(hm, prompts.tokens, abc_cache, metric)
    finally:
        patching.tqdm = bar
    return (1.0 - kept).cpu()


def _no_bar(iterable, *args, **kwargs):
    return iterable


@torch.no_grad()
def path_patching(hm, prompts: D.IOIPrompts, senders: Sequence[Head], receivers: Sequence[Head] | None = None,
                  receiver_input: str = "q") -> Float[Tensor, "layer head"]:
    """Path patching (Wang et al. 2022, sec. 3.1) of each sender head, alone, from the ABC run into the clean run,
    through `receivers`' `receiver_input`: their queries ('q') at the prompt's end position, or their keys or values
    ('k', 'v') at every position (what the end attends to may sit anywhere before it) -- or, with receivers=None,
    straight into the logits (its direct effect). Every other head is frozen at its clean output
    (MLPs too), so the sender acts only along the path. Returns [layer, head], NaN for heads not in `senders`; the
    values are fractions of the clean-minus-ABC logit difference removed, as in `head_patching`."""
    check(receiver_input in ("q", "k", "v"), "receiver_input", receiver_input, "'q', 'k' or 'v'")
    cfg = hm.cfg
    clean, abc = baselines(hm, prompts)
    names = lambda n: n.endswith(("attn.hook_z", "hook_mlp_out"))  # noqa: E731
    _, c_cache = hm.run_with_cache(prompts.tokens, names_filter=names)
    _, a_cache = hm.run_with_cache(prompts.corrupted, names_filter=names)
    out = torch.full((cfg.n_layers, cfg.n_heads), float("nan"))
    rows = torch.arange(len(prompts))
    ends = prompts.end
    for layer, head in senders:
        def freeze(z, hook, layer=layer, head=head):
            z = c_cache[hook.name].clone()
            if hook.layer() == layer:
                z[:, :, head] = a_cache[hook.name][:, :, head]
            return z

        def freeze_mlp(x, hook):
            return c_cache[hook.name]

        frozen = [(_z(L), freeze) for L in range(cfg.n_layers)]
        if not cfg.attn_only:
            frozen += [(f"blocks.{L}.hook_mlp_out", freeze_mlp) for L in range(cfg.n_layers)]
        if receivers is None:
            # direct effect: every head frozen (the sender at its ABC output), the final LayerNorm recomputed
            ld = _end_ld(hm, prompts.tokens, prompts, frozen).mean().item()
        else:
            later = [(rl, rh) for rl, rh in receivers if rl > layer]
            if not later:
                continue
            site = {L: f"blocks.{L}.attn.hook_{receiver_input}" for L, _ in later}
            store: dict[str, Tensor] = {}

            def save(x, hook):
                store[hook.name] = x.clone()

            hm.run_with_hooks(prompts.tokens, fwd_hooks=frozen + [(n, save) for n in set(site.values())])

            def patch(x, hook):
                x = x.clone()
                for L, H in later:
                    if site[L] == hook.name:
                        if receiver_input == "q":
                            x[rows, ends, H] = store[hook.name][rows, ends, H]
                        else:
                            x[:, :, H] = store[hook.name][:, :, H]
                return x

            ld = _end_ld(hm, prompts.tokens, prompts, [(n, patch) for n in set(site.values())]).mean().item()
        out[layer, head] = 1.0 - (ld - abc) / (clean - abc)
    return out


# ------------------------------------------------------------------------------------------ what each head does


@torch.no_grad()
def attention_scores(hm, prompts: D.IOIPrompts) -> dict[str, Float[Tensor, "layer head"]]:
    """Mean attention probability, per head, of the pattern that defines each class (on the clean prompts):
    'end->IO' and 'end->S' (name movers attend from the end to the IO), 'S2->S1' (duplicate-token heads),
    'S2->S1+1' (induction heads: the token after the first S) and 'S1+1->S1' (previous-token heads)."""
    p = prompts
    pairs = {"end->IO": [(p.end, p.io_pos)], "end->S": [(p.end, p.s1_pos), (p.end, p.s2_pos)],  # either mention
             "S2->S1": [(p.s2_pos, p.s1_pos)], "S2->S1+1": [(p.s2_pos, p.s1_pos + 1)],
             "S1+1->S1": [(p.s1_pos + 1, p.s1_pos)]}
    return _mean_attention(_patterns(hm, p), pairs, hm.cfg.n_layers)


def _patterns(hm, prompts: D.IOIPrompts) -> dict:
    _, cache = hm.run_with_cache(prompts.tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    return cache


def _mean_attention(cache, pairs: dict[str, list[tuple[Tensor, Tensor]]], n_layers: int) -> dict[str, Tensor]:
    """Per key, [layer, head]: the attention from each prompt's dest to its src position(s), summed over the pairs
    and averaged over prompts."""
    rows = torch.arange(len(next(iter(pairs.values()))[0][0]))
    return {key: torch.stack([sum(cache[_pattern(L)][rows, :, dest, src].float() for dest, src in pos).mean(0).cpu()
                              for L in range(n_layers)]) for key, pos in pairs.items()}


@torch.no_grad()
def attention_table(hm, prompts: D.IOIPrompts, heads: Sequence[Head]) -> pd.DataFrame:
    """Where each of `heads` looks from the prompt's end and from end − 1 (which the end can read): its mean attention
    to the IO, to either mention of S, to the token after S1 (an induction head's target) and to end − 1. One row per
    head and query position."""
    p, cache = prompts, _patterns(hm, prompts)
    by_query = {q_name: _mean_attention(cache, {"to IO": [(q, p.io_pos)], "to S1 + S2": [(q, p.s1_pos), (q, p.s2_pos)],
                                                "to S1 + 1": [(q, p.s1_pos + 1)], "to end − 1": [(q, p.end - 1)]},
                                        hm.cfg.n_layers)
                for q_name, q in (("end", p.end), ("end − 1", p.end - 1))}
    return pd.DataFrame([{"head": head_name(h), "from": q_name, **{k: float(v[h]) for k, v in sc.items()}}
                         for h in heads for q_name, sc in by_query.items()])


@dataclass(frozen=True)
class HeadScores:
    """Per head [layer, head]: `total` effect (activation patching), `direct` effect on the logits (path patching),
    `via_movers` effect through the name movers' queries, the attention scores, and the class each head is given."""

    total: Tensor
    direct: Tensor
    via_movers: Tensor
    attention: dict[str, Tensor]
    movers: tuple[Head, ...]

    def table(self) -> pd.DataFrame:
        """One row per head."""
        L, H = self.total.shape
        rows = []
        for layer in range(L):
            for head in range(H):
                rows.append({"head": f"L{layer}H{head}", "layer": layer, "total effect": float(self.total[layer, head]),
                             "direct effect": float(self.direct[layer, head]),
                             "via name movers": float(self.via_movers[layer, head]),
                             **{k: float(v[layer, head]) for k, v in self.attention.items()}})
        return pd.DataFrame(rows)


def top_heads(scores: Tensor, k: int, min_value: float = 0.0) -> tuple[Head, ...]:
    """The k heads with the largest finite score above min_value, largest first."""
    flat = torch.nan_to_num(scores.flatten(), nan=-np.inf)
    order = torch.argsort(flat, descending=True)[:k]
    H = scores.shape[1]
    return tuple((int(i) // H, int(i) % H) for i in order if float(flat[i]) > min_value)


def head_scores(hm, prompts: D.IOIPrompts, n_movers: int = 2) -> HeadScores:
    """Every score of every head. The name movers are the `n_movers` heads with the largest positive direct effect
    on the logit difference; `via_movers` path-patches every earlier head into their queries at the end."""
    all_heads = [(L, H) for L in range(hm.cfg.n_layers) for H in range(hm.cfg.n_heads)]
    direct = path_patching(hm, prompts, all_heads, None)
    movers = top_heads(direct, n_movers)
    via = path_patching(hm, prompts, all_heads, movers, "q") if movers else torch.full_like(direct, float("nan"))
    return HeadScores(total=head_patching(hm, prompts), direct=direct, via_movers=via,
                      attention=attention_scores(hm, prompts), movers=movers)


def class_scores(hs: HeadScores) -> dict[str, float]:
    """One number per head class, the best head's: name mover = the largest direct effect among heads that attend
    from the end more to the IO than to S; s-inhibition = the largest effect through the name movers' queries;
    duplicate token, induction, previous token = the largest mean attention along the class's pattern."""
    att = hs.attention
    prefer_io = att["end->IO"] > att["end->S"]
    mover = torch.where(prefer_io, hs.direct, torch.full_like(hs.direct, float("nan")))
    best = lambda t: float(torch.nan_to_num(t, nan=-np.inf).max()) if torch.isfinite(t).any() else float("nan")  # noqa: E731
    return {"name mover": best(mover), "s-inhibition": best(hs.via_movers), "duplicate token": best(att["S2->S1"]),
            "induction": best(att["S2->S1+1"]), "previous token": best(att["S1+1->S1"])}


# ------------------------------------------------------------------------------------------ faithfulness


@torch.no_grad()
def template_means(hm, prompts: D.IOIPrompts) -> dict[str, Tensor]:
    """Each head's output (hook_z) averaged over the ABC prompts of the same template, position by position (prompts
    of one template share their layout): {hook name: [n, pos, head, d_head]}, prompt i's own template mean."""
    _, cache = hm.run_with_cache(prompts.corrupted, names_filter=lambda n: n.endswith("attn.hook_z"))
    out = {}
    for name, z in cache.items():
        mean = torch.empty_like(z)
        for t in prompts.template.unique():
            idx = (prompts.template == t).nonzero().flatten().to(z.device)
            mean[idx] = z[idx].mean(0, keepdim=True)
        out[name] = mean
    return out


@torch.no_grad()
def ablated_logit_diff(hm, prompts: D.IOIPrompts, keep: Sequence[Head], means: dict[str, Tensor]) -> float:
    """Mean logit difference IO - S when every head not in `keep` outputs its template mean (MLPs untouched)."""
    kept = set(map(tuple, keep))

    def ablate(z, hook):
        L = hook.layer()
        out = means[hook.name].clone()
        for (kl, kh) in kept:
            if kl == L:
                out[:, :, kh] = z[:, :, kh]
        return out

    hooks = [(_z(L), ablate) for L in range(hm.cfg.n_layers)]
    return _end_ld(hm, prompts.tokens, prompts, hooks).mean().item()


def faithfulness(hm, prompts: D.IOIPrompts, circuit: Sequence[Head], n_random: int, seed: int = 0) -> dict:
    """The logit difference kept by the circuit alone (every other head mean-ablated) as a fraction of the full
    model's, against head sets of the same size. When there are at most `n_random` such sets, every one is
    evaluated and p is exact: the share of all same-size sets (the circuit's own included) that keep at least as
    much. Otherwise `n_random` sets are drawn uniformly and p = (1 + #random >= circuit) / (1 + n_random).
    Returns full (the model's logit difference), none (fraction kept with every head ablated), circuit, random
    (the fractions of the other sets), p, exact, size and p_min, the smallest p the test can give (1 / (1 + sets
    compared)): above the level fixed before looking, the test cannot reject whatever the data."""
    check(n_random >= 1, "n_random", n_random, "a positive integer")
    heads = [(L, H) for L in range(hm.cfg.n_layers) for H in range(hm.cfg.n_heads)]
    check(1 <= len(circuit) <= len(heads), "circuit", circuit, f"1 to {len(heads)} heads")
    means = template_means(hm, prompts)
    full, _ = baselines(hm, prompts)
    none = ablated_logit_diff(hm, prompts, [], means)
    frac = ablated_logit_diff(hm, prompts, circuit, means) / full
    k, own = len(circuit), frozenset(map(tuple, circuit))
    exact = math.comb(len(heads), k) <= n_random
    if exact:
        sets = [c for c in itertools.combinations(heads, k) if frozenset(c) != own]
    else:
        g = torch.Generator().manual_seed(seed)
        sets = [[heads[i] for i in torch.randperm(len(heads), generator=g)[:k].tolist()] for _ in range(n_random)]
    rand = np.array([ablated_logit_diff(hm, prompts, c, means) / full for c in sets])
    p = (1 + np.sum(rand >= frac)) / (1 + len(rand))  # exact: the circuit is one of the 1 + len(rand) sets
    return {"full": full, "none": none / full, "circuit": frac, "random": rand, "p": float(p), "exact": exact,
            "size": k, "p_min": 1 / (1 + len(rand))}


def select_circuit(hs: HeadScores, min_effect: float) -> tuple[Head, ...]:
    """The heads whose total, direct or via-name-mover effect is at least `min_effect` (a fraction of the clean
    minus ABC logit difference, fixed before looking), by layer."""
    stack = torch.stack([hs.total, hs.direct, hs.via_movers])
    hit = torch.nan_to_num(stack, nan=-np.inf).max(0).values >= min_effect
    return tuple((int(L), int(H)) for L, H in hit.nonzero().tolist())


# ------------------------------------------------------------------------------------------ over training


def half_rise_step(steps: Sequence[int], values: Sequence[float]) -> float:
    """The first step at which a score has covered half its way from its value at the first step to its maximum
    (NaN if it never rises: max <= first)."""
    v = np.asarray(values, dtype=float)
    check(len(v) == len(steps) and len(v) >= 2, "values", len(v), f"{len(steps)} >= 2 values, one per step")
    if not np.isfinite(v[0]) or not np.isfinite(v).any():
        return float("nan")
    lo, hi = v[0], np.nanmax(v)
    if not hi > lo:
        return float("nan")
    return float(np.asarray(steps)[np.argmax(v >= lo + 0.5 * (hi - lo))])



def head_name(head: Head) -> str:
    """'L1H3' for (1, 3)."""
    return f"L{head[0]}H{head[1]}"


def role(hs: HeadScores, head: Head) -> str:
    """What a head of the circuit does, from its scores: 'direct' (most of its total effect reaches the logits
    directly) or 'through later heads' (it acts through the heads after it)."""
    L, H = head
    direct, total = float(hs.direct[L, H]), float(hs.total[L, H])
    return "direct" if abs(direct) >= 0.5 * abs(total) else "through later heads"


def scores_over_training(load: Sequence[tuple[int, object]], prompts: D.IOIPrompts, heads: Sequence[Head],
                         n_movers: int) -> pd.DataFrame:
    """At every (step, HookedTransformer) of `load`: the behaviour on `prompts` (logit difference, accuracy), the
    class scores (`class_scores`) and each head of `heads`' total and direct effect in nats of logit difference
    removed (the fractions times clean minus ABC: a fraction is unstable while the clean and ABC logit differences
    are both near 0, early in training). One row per checkpoint."""
    rows = []
    for step, hm in load:
        hs = head_scores(hm, prompts, n_movers)
        clean, abc = baselines(hm, prompts)
        ld = _end_ld(hm, prompts.tokens, prompts)
        row = {"step": int(step), "logit_diff": clean, "accuracy": float((ld > 0).float().mean()),
               **class_scores(hs)}
        for h in heads:
            row[f"{head_name(h)} total"] = float(hs.total[h]) * (clean - abc)
            row[f"{head_name(h)} direct"] = float(hs.direct[h]) * (clean - abc)
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def name_logit_attribution(hm, prompts: D.IOIPrompts, heads: Sequence[Head]) -> pd.DataFrame:
    """Each head's direct contribution, at the prompt's end, to logit(IO) and to logit(S) separately (its output
    through the final LayerNorm, with the scale of the clean run frozen, and the unembedding), mean over prompts: a
    head that raises the logit difference by *lowering* S's logit suppresses the subject instead of copying the IO."""
    _, cache = hm.run_with_cache(prompts.tokens, names_filter=lambda n: n.endswith(("attn.hook_z", "ln_final.hook_scale")))
    rows = torch.arange(len(prompts))
    end = prompts.end
    has_ln = "ln_final.hook_scale" in cache.cache_dict  # a model without a final LayerNorm writes logits directly
    scale = cache["ln_final.hook_scale"][rows, end] if has_ln else None  # [n, 1]
    w_ln = hm.ln_final.w if has_ln else None
    out = []
    for L, H in heads:
        h = cache[_z(L)][rows, end, H] @ hm.blocks[L].attn.W_O[H]  # [n, d_model]
        if has_ln:
            h = (h - h.mean(-1, keepdim=True)) / scale * w_ln
        logits = h @ hm.W_U  # [n, d_vocab]
        io, s = logits[rows, prompts.io], logits[rows, prompts.s]
        out.append({"head": head_name((L, H)), "to logit(IO)": io.mean().item(), "to logit(S)": s.mean().item(),
                    "to IO − S": (io - s).mean().item()})
    return pd.DataFrame(out)
