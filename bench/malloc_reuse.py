"""Reusing freed memory (lib.core.memory.keep_freed_memory) vs glibc's default, side by side.

    python bench/malloc_reuse.py              # cpu preset, 3 repetitions
    python bench/malloc_reuse.py --reps 5 --threads 1

The setting is process-wide, so each variant runs in a fresh worker process (this script with --worker); the
repetitions run the two workers in turn (round robin) and ratios are taken within a repetition. Each worker times,
on the preset's with-MLP architecture at initialisation (speed does not depend on the weights):
1. notebook 4's neuron game of the last MLP layer (lib.analysis.shapley.NeuronGame.scores, its default passes of
   16,384 rows: 64 MiB of logits at a 1,024-token vocabulary), coalitions/s;
2. lib.analysis.prompts.evaluate of the same 224 keyword prompts (passes of 128 prompts), evaluations/s;
3. a training step (lib.core.bench.make_step, fp32, the preset's batch), steps/s.
Prints each figure, the ratio keep / default, and the scores' agreement (the same computation: identical values).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from lib.analysis import prompts, shapley
from lib.core import bench, config, data, memory, model, train
from lib.reports.neuron_shapley import params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
FIGURES = ("game coalitions/s", "evaluations/s", "training steps/s")


def parse_args() -> argparse.Namespace:
    ap = bench.arg_parser(__doc__, reps=3)
    ap.add_argument("--coalitions", type=int, default=512, help="coalitions per game timing")
    ap.add_argument("--worker", choices=("default", "keep"), help=argparse.SUPPRESS)
    return ap.parse_args()


def _rate(fn, n: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def worker(args: argparse.Namespace) -> dict:
    """One variant's figures (and a checksum of the game's scores)."""
    applied = memory.keep_freed_memory() if args.worker == "keep" else False
    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = config.resolve(args.preset, attention_only=False)
    nb = report_params.resolve(args.preset)
    hooked = model.to_hooked(train.init_model(cfg).eval())
    tok = data.get_tokenizer(cfg.data)
    pr = nb.keywords.prompts(tok, nb.keywords.keywords(tok, "dbpedia"), "dbpedia", nb.n_prompts, cfg.model.n_ctx)
    game = shapley.neuron_game(hooked, pr, [cfg.model.n_layers - 1])
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(args.coalitions, game.n_players, generator=g) < torch.rand(args.coalitions, 1, generator=g)
    loss = game.scores(masks)["loss"]
    step = bench.make_step(train.init_model(cfg), cfg.train, "fp32")
    batch = torch.randint(0, cfg.model.d_vocab, (cfg.train.batch_size, cfg.model.n_ctx), generator=g)
    return {"applied": applied, "checksum": float(loss.double().sum()), "prompts": len(pr),
            FIGURES[0]: args.coalitions * _rate(lambda: game.scores(masks), 1),
            FIGURES[1]: _rate(lambda: prompts.evaluate(hooked, pr), 3),
            FIGURES[2]: _rate(lambda: step(batch), 10)}


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    bench.begin(args)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--coalitions", str(args.coalitions)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    res: dict[str, list[dict]] = {"default": [], "keep": []}
    for _ in range(args.reps):
        for v in res:
            out = subprocess.run(cmd + ["--worker", v], capture_output=True, text=True, check=True).stdout
            res[v].append(json.loads(out.strip().splitlines()[-1]))
    same = len({r["checksum"] for rs in res.values() for r in rs}) == 1
    print(f"{args.preset}: notebook 4's {res['default'][0]['prompts']} keyword prompts; keep_freed_memory applied in "
          f"the keep worker: {res['keep'][0]['applied']}; the game's scores identical in every worker: {same}")
    print(f"{'figure':<20}{'default':>10}{'keep':>10}{'keep/default':>14}{'IQR':>7}   ({bench.cpu_capability()})")
    for f in FIGURES:
        d, k = ([r[f] for r in res[v]] for v in ("default", "keep"))
        r = bench.summarize([a / b for a, b in zip(k, d)])
        print(f"{f:<20}{bench.summarize(d).median:>10.2f}{bench.summarize(k).median:>10.2f}{r.median:>14.2f}"
              f"{r.iqr:>7.2f}")
    print(f"\n({bench.load()})")


if __name__ == "__main__":
    main()
