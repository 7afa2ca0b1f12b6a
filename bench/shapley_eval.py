"""Neuron Shapley costs, measured side by side in one run.

    python bench/shapley_eval.py                       # cpu preset, 3 repetitions
    python bench/shapley_eval.py --threads 1 --reps 5

1. Coalition evaluation: the batched game (lib.shapley.NeuronGame.scores: many coalitions per forward pass,
   resuming from cached clean activations) versus one full run_with_hooks forward per coalition (scores_loop),
   on notebook 4's keyword prompts (every DBpedia topic), for the notebook's player layers and for all layers.
   Speed does not depend on the weights, so the model is the preset's architecture at initialisation. The
   repetitions run the variants in turn (round robin); ratios are taken within a repetition. Prints
   coalitions/s and the ratio, and checks that the two agree.
2. Evaluations to the same top-k: TMAB versus TMC on games whose Shapley values are known exactly (n players
   with additive weights plus random pairwise interactions, which make the marginals noisy; Shapley value of
   player i = w_i + half of every interaction involving i). TMC: value-function evaluations after which its
   running top-k equals the exact top-k for good; TMAB: evaluations when it stops, if its top-k is exact.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

from lib import bench, config, data, model, prompts, shapley, train

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
TARGET = 10.0  # the aim: batched >= 10x the loop on CPU


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
    ap.add_argument("--max-permutations", type=int, default=300, help="permutation budget of both estimators")
    return ap.parse_args()


def setup(preset: str):
    """Model at initialisation and notebook 4's game prompts (n_prompts per DBpedia topic)."""
    cfg = config.resolve(preset, attention_only=False)
    nb = config.notebook_params("04_neuron_shapley", preset)
    hooked = model.to_hooked(train.init_model(cfg).eval())
    tok = data.get_tokenizer(cfg.data)
    kw = prompts.keywords(tok, "dbpedia", nb["n_keywords"], nb["kw_min_count"], nb["kw_min_chars"], nb["kw_mode"],
                          min_ratio=nb["kw_min_ratio"], exclusive=nb["kw_exclusive"], max_per_topic=nb["kw_max_texts"])
    pr = prompts.keyword_prompts(tok, kw, "dbpedia", nb["n_prompts"], cfg.model.n_ctx, mode=nb["kw_mode"],
                                 min_chars=nb["kw_min_chars"])
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
          f"(IQR {r.iqr:.1f})")


def pairwise_game(n: int, seed: int):
    """(value_fn, exact Shapley values) of an additive game with random pairwise interactions."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64) ** 3  # heavy tails: a few players stand out
    c = torch.zeros(n, n, dtype=torch.float64)
    i, j = torch.randint(0, n, (2, 4 * n), generator=g)
    keep = i != j
    c[i[keep], j[keep]] = torch.randn(int(keep.sum()), generator=g, dtype=torch.float64)
    c = (c + c.T) / 2  # v(S) = w.m + (1/2) m'Cm: the pair (i, j) adds C_ij, shared equally
    phi = w + c.sum(1) / 2
    return (lambda masks: masks.double() @ w + 0.5 * ((masks.double() @ c) * masks.double()).sum(1)), phi


def tmab_vs_tmc(args) -> None:
    """Evaluations to reach the exact top-k, TMAB vs TMC, per synthetic game."""
    print(f"\nTMAB vs TMC: {args.games} games of {args.players} players, top-{args.k}, "
          f"up to {args.max_permutations} permutations each")
    print(f"  {'game':<6}{'TMC evals':>12}{'TMAB evals':>12}{'TMAB exact':>12}{'ratio':>8}")
    ratios = []
    for seed in range(args.games):
        fn, phi = pairwise_game(args.players, seed)
        ref = frozenset(shapley.top_k(phi, args.k).tolist())
        tmc = shapley.tmc_shapley(fn, args.players, args.max_permutations, generator=torch.Generator().manual_seed(seed))
        tmab = shapley.tmab_shapley(fn, args.players, args.k, delta=0.05, max_permutations=args.max_permutations,
                                    generator=torch.Generator().manual_seed(seed))
        e_tmc = shapley.evals_to_reach(tmc.trace_evals.tolist(), tmc.trace_top(args.k), ref)
        exact = frozenset(tmab.top(args.k).tolist()) == ref
        ratio = e_tmc / tmab.n_evals if exact and np.isfinite(e_tmc) else float("nan")
        ratios.append(ratio)
        print(f"  {seed:<6}{e_tmc:>12,.0f}{tmab.n_evals:>12,}{str(exact):>12}{ratio:>8.1f}")
    ok = np.array(ratios)[np.isfinite(ratios)]
    med = float(np.median(ok)) if len(ok) else float("nan")
    print(f"  TMC / TMAB evaluations to the exact top-{args.k}: median {med:.1f} over {len(ok)} of {args.games} games "
          "where both reached it")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"{cpu}, torch {torch.__version__}; load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    cfg, nb, hooked, pr = setup(args.preset)
    m = cfg.model
    print(f"{args.preset}: {m.n_layers}L d_model {m.d_model} d_mlp {m.d_mlp} vocab {m.d_vocab}; {len(pr)} prompts "
          f"(mean {pr.lengths.float().mean():.1f}, max {pr.tokens.shape[1]} tokens, {len(set(pr.topics))} topics)")
    for layers in dict.fromkeys([nb["layers"], None]):
        coalition_speed(hooked, pr, layers, args)
    tmab_vs_tmc(args)
    print(f"\nload average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
