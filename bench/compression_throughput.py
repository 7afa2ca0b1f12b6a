"""Throughput of notebook 02's two costly kernels: activation caching and compressor training.

Activation caching (activations/s = tokens/s, one d_model vector per token): lib.analysis.units.collect_activations,
which stops the forward pass after the hook's block, against a full `run_with_cache` forward (unembedding included),
at the attention output of the first and the last layer. Compressor training (samples/s = minibatch rows per second
of optimisation): the InfoVAE at two latent sizes, the TopK SAE, and a PCA fit (activations/s of the fit set). Every
repetition runs all variants round-robin, so load from other processes hits them alike; figures are medians over
repetitions and ratios are taken within a repetition.

    python bench/compression_throughput.py --preset cpu --reps 5
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
import torch

from lib.analysis import compressors, units
from lib.core import bench, hooks
from lib.core.config import resolve
from lib.core.model import Transformer, to_hooked
from lib.reports.compression_infovae import params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--reps", type=int, default=5, help="repetitions (each runs every variant once)")
    ap.add_argument("--windows", type=int, default=256, help="windows of n_ctx tokens cached per timing")
    ap.add_argument("--steps", type=int, default=50, help="optimisation steps per compressor timing")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return ap.parse_args()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cache_tasks(hooked, tokens: torch.Tensor, n_layers: int) -> dict:
    """Activations/s of collect_activations (stops after the block) and of a full run_with_cache forward."""
    tasks = {}
    for layer in (0, n_layers - 1):
        hook = hooks.name("attn_out", layer)

        def full(hook=hook):
            with torch.no_grad():
                for i in range(0, len(tokens), 64):
                    hooked.run_with_cache(tokens[i : i + 64], names_filter=[hook])

        tasks[f"cache L{layer}: collect_activations (stops after block)"] = (
            lambda hook=hook: tokens.numel() / timed(lambda: units.collect_activations(hooked, tokens, hook)))
        tasks[f"cache L{layer}: full run_with_cache forward"] = lambda full=full: tokens.numel() / timed(full)
    return tasks


def fit_tasks(acts: torch.Tensor, nb: report_params.CompressionParams, steps: int) -> dict:
    """Samples/s of compressor training (InfoVAE at two sizes, TopK SAE) and activations/s of a PCA fit."""
    base = compressors.CompressorConfig(d_hidden=nb.d_hidden, batch_size=nb.batch_size, lr=nb.lr,
                                        steps=steps, sae_expansion=nb.sae_expansion)
    d = acts.shape[-1]
    cfgs = {f"InfoVAE k={k}": base.replace(method="infovae", d_latent=k) for k in (8, d // 2)}
    cfgs["TopK SAE k=8"] = base.replace(method="sae", d_latent=8)
    tasks = {name: (lambda c=c: steps * c.batch_size / timed(lambda: compressors.fit(acts, c)))
             for name, c in cfgs.items()}
    tasks[f"PCA fit k={d // 2} (activations/s)"] = lambda: len(acts) / timed(
        lambda: compressors.fit(acts, base.replace(method="pca", d_latent=d // 2)))
    return tasks


def table(res: dict[str, list[float]], baseline: str | None, unit: str) -> pd.DataFrame:
    rows = []
    for name, values in res.items():
        s = bench.summarize(values)
        row = {"variant": name, f"{unit} (median)": s.median, "IQR": s.iqr}
        if baseline is not None:
            ratios = [a / b for a, b in zip(values, res[baseline])]
            row[f"x {baseline.split(': ')[-1]}"] = bench.summarize(ratios).median
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args.preset, attention_only=True)
    nb = report_params.resolve(args.preset)
    print(bench.machine())
    model = Transformer(cfg.model)
    model.reset_parameters(torch.Generator().manual_seed(0))
    hooked = to_hooked(model.eval())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.model.d_vocab, (args.windows, cfg.model.n_ctx), generator=g)
    m = cfg.model
    print(f"\n== activation caching: {args.preset} preset attention-only model ({m.n_layers}L d{m.d_model} vocab "
          f"{m.d_vocab}), {args.windows} x {m.n_ctx} tokens per timing, {args.reps} reps; {bench.load()}")
    tasks = cache_tasks(hooked, tokens, cfg.model.n_layers)
    for t in tasks.values():
        t()  # warm-up
    res = bench.round_robin(tasks, args.reps)
    for layer in (0, cfg.model.n_layers - 1):
        sub = {k: v for k, v in res.items() if k.startswith(f"cache L{layer}:")}
        print(table(sub, f"cache L{layer}: full run_with_cache forward", "activations/s").to_string(
            index=False, float_format=lambda v: f"{v:,.2f}" if abs(v) < 10 else f"{v:,.0f}"))
    acts = units.collect_activations(hooked, tokens, hooks.name("attn_out", 0)).flatten(0, 1)
    print(f"\n== compressor training on {len(acts):,} activations of d={acts.shape[-1]} ({args.preset} preset: "
          f"d_hidden {nb.d_hidden}, batch {nb.batch_size}, {args.steps} steps per timing), {args.reps} reps; "
          f"{bench.load()}")
    tasks = fit_tasks(acts, nb, args.steps)
    res = bench.round_robin(tasks, args.reps)
    first = next(iter(res))
    print(table(res, None, "samples/s").to_string(index=False, float_format=lambda v: f"{v:,.0f}"))
    steps_per_fit = nb.steps
    print(f"\n  => one {first} fit of the notebook ({steps_per_fit} steps x batch {nb.batch_size}) takes "
          f"≈ {steps_per_fit * nb.batch_size / bench.summarize(res[first]).median:.1f} s here")
    print(bench.load())


if __name__ == "__main__":
    main()
