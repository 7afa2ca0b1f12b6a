"""Batched impairment sweep (lib.analysis.impairment.sweep) vs the per-condition loop on the same grid, side by side.

    python bench/impairment_sweep.py                    # cpu preset, notebook 3's grid, 3 repetitions
    python bench/impairment_sweep.py --threads 1 --reps 5

Every variant evaluates the same conditions (notebook 3's dose grid for one Athlete cluster at each location)
on the same keyword prompts; the repetitions run the variants in turn (round robin), and ratios are taken
within a repetition, so load shared by a repetition cancels. Speed does not depend on the weights, so the
model is the preset's architecture at initialisation (nothing is trained). Prints conditions/s and the ratio
to the loop, and checks that the tables agree.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from lib.analysis import impairment, prompts, units
from lib.core import bench, config, data, model, train
from lib.reports.neuron_impairment import params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
TOPICS = ("Athlete", "Artist", "Company")
TARGET = 10.0  # issue 19: batched >= 10x the per-condition loop


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES)
    ap.add_argument("--reps", type=int, default=3, help="repetitions (each runs every variant once)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per topic (default: notebook 3's n_prompts)")
    return ap.parse_args()


def setup(preset: str, n_prompts: int | None):
    """Model (at initialisation), the Athlete/Artist/Company prompts, one cluster per location, the grid."""
    cfg = config.resolve(preset, attention_only=False)
    nb = report_params.resolve(preset)
    hooked = model.to_hooked(train.init_model(cfg).eval())
    tok = data.get_tokenizer(cfg.data)
    kw = nb.keywords.keywords(tok, "dbpedia")
    pr = nb.keywords.prompts(tok, kw, "dbpedia", n_prompts or nb.n_prompts, cfg.model.n_ctx, TOPICS)
    windows = prompts.topic_windows(tok, "dbpedia", "fit", cfg.model.n_ctx, nb.n_windows, TOPICS)
    stats = units.topic_stats(hooked, windows, units.LOCATIONS, progress=False)
    clusters = {loc: impairment.selective_cluster(stats[loc], "Athlete", nb.frac) for loc in units.LOCATIONS}
    grid = impairment.dose_grid(clusters, nb.noise_intensities, nb.scale_intensities, nb.noise_seeds)
    return cfg, hooked, pr, clusters, grid


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{bench.machine()}; {bench.load()}")
    cfg, hooked, pr, clusters, grid = setup(args.preset, args.prompts)
    m = cfg.model
    print(f"{args.preset}: {m.n_layers}L d_model {m.d_model} d_mlp {m.d_mlp} vocab {m.d_vocab}; {len(pr)} prompts "
          f"(mean {pr.lengths.float().mean():.1f}, max {pr.tokens.shape[1]} tokens); {len(grid)} conditions "
          f"({len(clusters)} clusters x kinds x intensities x noise seeds); cluster sizes "
          + ", ".join(f"{k}: {c.sizes}" for k, c in clusters.items()))
    variants = {
        "per-condition loop": lambda: impairment.sweep_loop(hooked, pr, clusters, grid, progress=False),
        "batched, generic path": lambda: impairment.sweep(hooked, pr, clusters, grid, fast=False, progress=False),
        "batched": lambda: impairment.sweep(hooked, pr, clusters, grid, progress=False),
    }
    tables = {name: fn() for name, fn in variants.items()}  # warm-up, and the tables to compare
    ref = tables["per-condition loop"]
    for name, df in tables.items():
        print(f"  {name}: max |loss - loop loss| = {np.abs(df.loss.to_numpy() - ref.loss.to_numpy()).max():.2e}")

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return len(grid) / (time.perf_counter() - t0)

    res = bench.round_robin({name: (lambda f=fn: timed(f)) for name, fn in variants.items()}, args.reps)
    base = res["per-condition loop"]
    print(f"\n{'variant':<24}{'conditions/s':>14}{'IQR':>8}{'x loop':>9}{'IQR':>8}   ({bench.cpu_capability()})")
    for name, vals in res.items():
        s, r = bench.summarize(vals), bench.summarize([a / b for a, b in zip(vals, base)])
        print(f"{name:<24}{s.median:>14.2f}{s.iqr:>8.2f}{r.median:>9.2f}{r.iqr:>8.2f}")
    ratio = bench.summarize([a / b for a, b in zip(res["batched"], base)]).median
    print(f"\n{'PASS' if ratio >= TARGET else 'FAIL'}  batched / loop >= {TARGET:g}: {ratio:.2f} "
          f"[{bench.cpu_capability()}]   ({bench.load()})")
    # per location: where the batched path resumes decides what it must recompute (after the nonlinearity only
    # the cluster's units change; before the MLP, the whole MLP runs again at every position)
    per = {}
    for loc, cl in clusters.items():
        g = [c for c in grid if c.cluster == loc]
        one = {loc: cl}
        per[loc] = bench.round_robin({
            "loop": lambda one=one, g=g: len(g) / bench.seconds(
                lambda: impairment.sweep_loop(hooked, pr, one, g, progress=False)),
            "batched": lambda one=one, g=g: len(g) / bench.seconds(
                lambda: impairment.sweep(hooked, pr, one, g, progress=False)),
        }, args.reps)
    print(f"\n{'location':<12}{'loop cond/s':>13}{'batched cond/s':>16}{'x loop':>9}")
    for loc, r in per.items():
        lo, ba = bench.summarize(r["loop"]).median, bench.summarize(r["batched"]).median
        x = bench.summarize([a / b for a, b in zip(r["batched"], r["loop"])]).median
        print(f"{loc:<12}{lo:>13.2f}{ba:>16.2f}{x:>9.2f}")


if __name__ == "__main__":
    main()
