"""Per-example gradients for TracIn: one batched backward through the attention activations
(`per_example_grads_attention`, what notebook 06 uses) and torch.func vmap(grad), against a Python loop of
single-example backward passes.

Both compute the gradient of each sequence's training loss with respect to the same parameter subset (default:
layer-1 attention weights, as notebook 06 uses) on the preset's attention-only model as a HookedTransformer.
Every repetition runs each variant once on the same batch, round-robin (start rotated), so that load from other
processes hits them alike; ratios are taken within a repetition, then the median over repetitions is reported.

    python bench/per_example_grads.py --preset cpu
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from lib.core import bench
from lib.core.config import resolve
from lib.core.model import to_hooked
from lib.core.train import init_model
from lib.reports.training_dynamics import kernel as attribution

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)
TARGET = 5.0  # issue 16: per-example gradients >= 5x the loop
LAYER1_ATTN = ("blocks.1.attn.W_Q", "blocks.1.attn.W_K", "blocks.1.attn.W_V", "blocks.1.attn.W_O")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--examples", type=int, default=64, help="sequences per timing")
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 64], help="vmap chunk sizes to compare")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--params", nargs="+", default=list(LAYER1_ATTN), help="parameter names (HookedTransformer)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args.preset, attention_only=True)
    hooked = to_hooked(init_model(cfg).eval())
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.model.d_vocab, (args.examples, cfg.model.n_ctx), generator=g)
    d = sum(p.numel() for p in attribution.param_subset(hooked, args.params).values())
    ref = attribution.per_example_grads_loop(hooked, args.params, tokens[:4])
    for chunk in args.chunks:  # warm-up, and the check that the variants agree
        for method in ("vmap", "attention"):
            fast = attribution.per_example_grads(hooked, args.params, tokens[:4], chunk=chunk, method=method)
            assert torch.allclose(fast, ref, atol=1e-6, rtol=1e-4), f"{method} and loop gradients differ"

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return args.examples / (time.perf_counter() - t0)

    tasks = {"loop": lambda: timed(lambda: attribution.per_example_grads_loop(hooked, args.params, tokens))}
    for chunk in args.chunks:
        tasks[f"vmap chunk {chunk}"] = lambda c=chunk: timed(
            lambda: attribution.per_example_grads(hooked, args.params, tokens, chunk=c, method="vmap"))
    for chunk in args.chunks:
        tasks[f"batched chunk {chunk}"] = lambda c=chunk: timed(
            lambda: attribution.per_example_grads(hooked, args.params, tokens, chunk=c, method="attention"))
    print(f"{args.preset} preset, attention-only {cfg.model.n_layers}L d{cfg.model.d_model} {cfg.model.n_heads}h "
          f"vocab {cfg.model.d_vocab} n_ctx {cfg.model.n_ctx}; {d:,} parameters ({', '.join(args.params)}); "
          f"{args.examples} sequences per timing, {args.reps} reps")
    print(f"{bench.machine()}; before: {bench.load()}")
    res = bench.round_robin(tasks, args.reps)
    print(f"{'variant':<20}{'examples/s (median)':>22}{'IQR':>10}{'x loop (median)':>18}{'IQR':>8}   "
          f"({bench.cpu_capability()})")
    for name, values in res.items():
        s = bench.summarize(values)
        r = bench.summarize([a / b for a, b in zip(values, res["loop"])])
        print(f"{name:<20}{s.median:>22.1f}{s.iqr:>10.1f}{r.median:>18.2f}{r.iqr:>8.2f}")
    best = max((k for k in res if k.startswith("batched")),
               key=lambda k: bench.summarize([a / b for a, b in zip(res[k], res["loop"])]).median)
    ratio = bench.summarize([a / b for a, b in zip(res[best], res["loop"])]).median
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"{verdict}  {best} / loop >= {TARGET:g}: {ratio:.2f} [{bench.cpu_capability()}]")
    print(f"after: {bench.load()}")


if __name__ == "__main__":
    main()
