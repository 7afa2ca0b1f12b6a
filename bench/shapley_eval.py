"""Neuron Shapley costs, measured side by side in one run.

    python bench/shapley_eval.py                       # cpu preset, 3 repetitions
    python bench/shapley_eval.py --threads 1 --reps 5

1. Coalition evaluation: the batched game (lib.analysis.shapley.NeuronGame.scores: many coalitions per forward pass,
   resuming from cached clean activations) versus one full run_with_hooks forward per coalition (scores_loop),
   on notebook 4's keyword prompts (every DBpedia topic), for the notebook's player layers and for all layers.
   Speed does not depend on the weights, so the model is the preset's architecture at initialisation. The
   repetitions run the variants in turn (round robin); ratios are taken within a repetition. Prints
   coalitions/s and the ratio, and checks that the two agree.
2. Evaluations to the same top-k, TMAB versus TMC. (a) Games whose Shapley values are known exactly: n players
   with heavy-tailed additive weights (w = z^3, like the tail of notebook 4's Fig. 1) plus random pairwise
   interactions that make the marginals noisy (Shapley value of i = w_i + half of every interaction involving
   i); the reference is the exact top-k. (b) The trained model's single-topic keyword games (notebook 4's
   players and game prompts; trained by get_or_train if absent); the reference is TMC's top-k after its whole
   budget. TMC: evaluations after which its running top-k equals the reference for good; TMAB: all the
   evaluations it used before stopping, counted only when its final top-k equals the reference. TMAB may take
   up to 10x as many permutations as TMC (a TMAB permutation evaluates only the coalitions around the few
   players still in doubt).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch

from lib.analysis import shapley
from lib.core import bench, config, data, model, train
from lib.core.runs import get_or_train
from lib.reports.neuron_shapley import params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
TARGET = 10.0  # the issue's aim: batched >= 10x the loop on CPU


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES)
    ap.add_argument("--reps", type=int, default=3, help="repetitions (each runs every variant once)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--coalitions", type=int, default=256, help="coalitions per batched timing")
    ap.add_argument("--loop-coalitions", type=int, default=16, help="coalitions per loop timing")
    ap.add_argument("--games", type=int, default=5, help="synthetic games (seeds) for TMAB vs TMC")
    ap.add_argument("--players", type=int, default=512, help="players of a synthetic game")
    ap.add_argument("--k", type=int, default=10, help="top-k for TMAB vs TMC")
    ap.add_argument("--interaction", type=float, default=3.0, help="sd of a synthetic pairwise interaction")
    ap.add_argument("--max-permutations", type=int, default=300, help="TMC's permutation budget (TMAB: 10x)")
    ap.add_argument("--model-topics", type=int, default=4, help="trained-model topic games (0 skips part 2b)")
    return ap.parse_args()


def setup(preset: str):
    """Model at initialisation and notebook 4's game prompts (n_prompts per DBpedia topic)."""
    cfg = config.resolve(preset, attention_only=False)
    nb = report_params.resolve(preset)
    hooked = model.to_hooked(train.init_model(cfg).eval())
    tok = data.get_tokenizer(cfg.data)
    kw = nb.keywords.keywords(tok, "dbpedia")
    pr = nb.keywords.prompts(tok, kw, "dbpedia", nb.n_prompts, cfg.model.n_ctx)
    return cfg, nb, hooked, pr


def coalition_speed(hooked, pr, layers, args) -> None:
    """Batched vs loop coalitions/s for one player set."""
    game = shapley.neuron_game(hooked, pr, layers)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(args.coalitions, game.n_players, generator=g) < torch.rand(args.coalitions, 1, generator=g)
    small = masks[: args.loop_coalitions]
    diff = (game.scores(small)["loss"] - game.scores_loop(small)["loss"]).abs().max()

    def timed(fn, m):
        t0 = time.perf_counter()
        fn(m)
        return len(m) / (time.perf_counter() - t0)

    res = bench.round_robin({"loop": lambda: timed(game.scores_loop, small),
                             "batched": lambda: timed(game.scores, masks)}, args.reps)
    ratios = [a / b for a, b in zip(res["batched"], res["loop"])]
    lay = "all layers" if layers is None else f"layers {list(layers)}"
    print(f"\n{lay}: {game.n_players} players; max |loss batched - loop| = {diff:.2e}")
    print(f"  {'variant':<10}{'coalitions/s':>14}{'IQR':>9}")
    for name, vals in res.items():
        s = bench.summarize(vals)
        print(f"  {name:<10}{s.median:>14.1f}{s.iqr:>9.1f}")
    r = bench.summarize(ratios)
    print(f"  {'PASS' if r.median >= TARGET else 'FAIL'}  batched / loop >= {TARGET:g}: {r.median:.1f} "
          f"(IQR {r.iqr:.1f}) [{bench.cpu_capability()}]")


def pairwise_game(n: int, seed: int, scale: float):
    """(value_fn, exact Shapley values) of an additive game with random pairwise interactions."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64) ** 3  # heavy tails: a few players stand out
    c = torch.zeros(n, n, dtype=torch.float64)
    i, j = torch.randint(0, n, (2, 4 * n), generator=g)
    keep = i != j
    c[i[keep], j[keep]] = scale * torch.randn(int(keep.sum()), generator=g, dtype=torch.float64)
    c = (c + c.T) / 2  # v(S) = w.m + (1/2) m'Cm: the pair (i, j) adds C_ij, shared equally
    phi = w + c.sum(1) / 2
    return (lambda masks: masks.double() @ w + 0.5 * ((masks.double() @ c) * masks.double()).sum(1)), phi


def compare(fn, n: int, k: int, ref: frozenset | None, seed: int, max_perm: int, delta: float = 0.05) -> dict:
    """TMC and TMAB on one game: evaluations to the reference top-k (TMC's final top-k if ref is None)."""
    tmc = shapley.tmc_shapley(fn, n, max_perm, generator=torch.Generator().manual_seed(seed))
    ref = ref if ref is not None else frozenset(tmc.top(k).tolist())
    tmab = shapley.tmab_shapley(fn, n, k, delta=delta, max_permutations=10 * max_perm,
                                generator=torch.Generator().manual_seed(seed))
    e_tmc = shapley.evals_to_reach(tmc.trace_evals.tolist(), tmc.trace_top(k), ref)
    e_tmab = shapley.evals_to_reach(tmab.trace_evals.tolist(), tmab.trace_top(k), ref)
    exact = frozenset(tmab.top(k).tolist()) == ref
    ratio = e_tmc / tmab.n_evals if exact and np.isfinite(e_tmc) else float("nan")
    return {"tmc": e_tmc, "tmab": tmab.n_evals, "perms": len(tmab.trace_evals), "exact": exact, "ratio": ratio,
            "tmab_reach": e_tmab, "reach_ratio": e_tmc / e_tmab if exact and np.isfinite(e_tmc) else float("nan")}


def report(name: str, rows: dict[str, dict], k: int) -> None:
    print(f"  {name:<16}{'TMC to ref':>11}{'TMAB stop':>11}{'(perms)':>9}{'TMAB = ref':>12}{'ratio':>7}"
          f"{'TMAB to ref':>13}{'ratio':>7}")
    for game, r in rows.items():
        print(f"  {game:<16}{r['tmc']:>11,.0f}{r['tmab']:>11,}{r['perms']:>9}{str(r['exact']):>12}{r['ratio']:>7.1f}"
              f"{r['tmab_reach']:>13,.0f}{r['reach_ratio']:>7.1f}")
    for col, what in (("ratio", "TMC to ref / TMAB until it stops"), ("reach_ratio", "TMC / TMAB to ref (hindsight)")):
        ok = np.array([r[col] for r in rows.values()])
        ok = ok[np.isfinite(ok)]
        med = float(np.median(ok)) if len(ok) else float("nan")
        print(f"  {what}, top-{k}: median {med:.1f} over {len(ok)} of {len(rows)} games [{bench.cpu_capability()}]")


def tmab_vs_tmc(args) -> None:
    """(a) synthetic games with exact answers."""
    print(f"\n2a. TMAB vs TMC: {args.games} synthetic games of {args.players} players (interaction sd "
          f"{args.interaction:g}), top-{args.k}; reference = exact top-{args.k}")
    rows = {}
    for seed in range(args.games):
        fn, phi = pairwise_game(args.players, seed, args.interaction)
        rows[f"synthetic {seed}"] = compare(fn, args.players, args.k, frozenset(shapley.top_k(phi, args.k).tolist()),
                                           seed, args.max_permutations)
    report("game", rows, args.k)


def model_tmab_vs_tmc(args, cfg, nb, pr) -> None:
    """(b) the trained model's single-topic games."""
    trained = model.to_hooked(get_or_train(cfg, progress=False)[0])
    topics = list(dict.fromkeys(pr.topics))[: args.model_topics]
    k = nb.k
    print(f"\n2b. TMAB vs TMC: trained model, single-topic games ({', '.join(topics)}), top-{k}; reference = TMC's "
          f"top-{k} after {args.max_permutations} permutations")
    rows = {}
    for t in topics:
        game = shapley.neuron_game(trained, pr.subset([t]), nb.layers)
        rows[t] = compare(game.single(t), game.n_players, k, None, 0, args.max_permutations, nb.tmab_delta)
    report("topic", rows, k)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{bench.machine()}; {bench.load()}")
    cfg, nb, hooked, pr = setup(args.preset)
    m = cfg.model
    print(f"{args.preset}: {m.n_layers}L d_model {m.d_model} d_mlp {m.d_mlp} vocab {m.d_vocab}; {len(pr)} prompts "
          f"(mean {pr.lengths.float().mean():.1f}, max {pr.tokens.shape[1]} tokens, {len(set(pr.topics))} topics)")
    print("\n1. Coalition evaluation, batched vs one forward per coalition")
    for layers in dict.fromkeys([nb.layers, None]):
        coalition_speed(hooked, pr, layers, args)
    tmab_vs_tmc(args)
    if args.model_topics:
        model_tmab_vs_tmc(args, cfg, nb, pr)
    print(f"\nload average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
