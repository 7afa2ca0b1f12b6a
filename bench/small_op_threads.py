"""Loops of small operations on one thread vs all of torch's threads, side by side in one run.

    python bench/small_op_threads.py                    # cpu preset, 5 repetitions
    python bench/small_op_threads.py --reps 3 --steps 100

The loops: compressor fits of notebooks 2 and 7 (InfoVAE at two latent sizes and the TopK SAE, batch 256 of
d_model-wide activations, lib.analysis.compressors.fit with max_threads=1, the default, against max_threads=None),
and, for contrast, a training step of the cpu preset's attention-only model (large enough matmuls that two threads
win). Repetitions run the variants in turn (round robin) and ratios are taken within a repetition. Prints
steps/s, the ratio one thread / all threads, and whether the fitted weights are bit-identical.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lib.analysis import compressors
from lib.core import bench, config, threads, train as tr
from lib.core.data import load_token_data
from lib.reports.compression_infovae import params as report_params


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES)
    ap.add_argument("--reps", type=int, default=5, help="repetitions (each runs every variant once)")
    ap.add_argument("--steps", type=int, default=100, help="optimisation steps per timing")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    print(f"{bench.machine()}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; {bench.load()}")
    cfg = config.resolve(args.preset, attention_only=True)
    nb = report_params.resolve(args.preset)
    acts = torch.randn(16384, cfg.model.d_model, generator=torch.Generator().manual_seed(0))
    base = compressors.CompressorConfig(d_hidden=nb.d_hidden, batch_size=nb.batch_size, lr=nb.lr, steps=args.steps,
                                        sae_expansion=nb.sae_expansion)
    d = cfg.model.d_model
    fits = {f"InfoVAE k={k}": base.replace(method="infovae", d_latent=k) for k in (8, d // 2)}
    fits["TopK SAE k=8"] = base.replace(method="sae", d_latent=8)
    print(f"\n== compressor fits ({args.preset}: d {d}, d_hidden {nb.d_hidden}, batch {nb.batch_size}), "
          f"{args.steps} steps per timing, {args.reps} reps")
    print(f"{'loop':<16}{'all threads':>13}{'1 thread':>11}{'x all':>8}{'IQR':>7}  weights identical")
    for name, c in fits.items():
        same = all(torch.equal(a, b) for a, b in zip(compressors.fit(acts, c, max_threads=None)[0].state_dict().values(),
                                                      compressors.fit(acts, c)[0].state_dict().values()))
        res = bench.round_robin({t: (lambda t=t, c=c: args.steps / bench.seconds(
            lambda: compressors.fit(acts, c, max_threads=t))) for t in (None, 1)}, args.reps)
        r = bench.summarize([a / b for a, b in zip(res[1], res[None])])
        print(f"{name:<16}{bench.summarize(res[None]).median:>13.1f}{bench.summarize(res[1]).median:>11.1f}"
              f"{r.median:>8.2f}{r.iqr:>7.2f}  {same}")
    data = load_token_data(cfg.data)
    model = tr.init_model(cfg)
    step = bench.make_step(model, cfg.train, "fp32")
    x = data.train[: cfg.train.batch_size]
    step(x)

    def train_steps(n_threads):
        with threads.at_most(n_threads or torch.get_num_threads()):
            t0 = time.perf_counter()
            for _ in range(20):
                step(x)
            return 20 / (time.perf_counter() - t0)

    res = bench.round_robin({t: (lambda t=t: train_steps(t)) for t in (None, 1)}, args.reps)
    r = bench.summarize([a / b for a, b in zip(res[1], res[None])])
    print(f"\n== for contrast: a training step of the {args.preset} attention-only model (batch "
          f"{cfg.train.batch_size} x {cfg.model.n_ctx} tokens)")
    print(f"{'train step':<16}{bench.summarize(res[None]).median:>13.1f}{bench.summarize(res[1]).median:>11.1f}"
          f"{r.median:>8.2f}{r.iqr:>7.2f}   (steps/s)")
    print(f"\n[{bench.cpu_capability()}; {torch.get_num_threads()} threads by default]  ({bench.load()})")


if __name__ == "__main__":
    main()
