"""Forward time of a k-WTA layer (lib.analysis.kwta.SparseMLP) versus the dense MLP it replaces, side by side.

    python bench/kwta_forward.py                          # cpu preset sizes, 5 repetitions
    python bench/kwta_forward.py --threads 1 --reps 7
    python bench/kwta_forward.py --preset gpu --device cuda

The dense reference is the preset model's own TransformerLens MLP (GELU) at initialisation; the k-WTA layers
have the same width, at several k, with eval-mode boosting from (skewed) duty cycles and without boosting.
Every variant sees the same input (batch x n_ctx tokens of d_model); the repetitions run the variants in turn
(round robin), and ratios are taken within a repetition, so load shared by a repetition cancels. Speed does not
depend on the weights. Prints forward tokens/s and the time ratio to the dense MLP (> 1 = slower than dense).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from lib.analysis import kwta
from lib.core import bench, config, model, train

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES)
    ap.add_argument("--k-fracs", type=float, nargs="+", default=[0.01, 0.05, 0.25], help="winners as shares of units")
    ap.add_argument("--batch", type=int, default=None, help="sequences per forward (default: the preset's batch)")
    ap.add_argument("--iters", type=int, default=20, help="forwards per measurement")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (each runs every variant once)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    return ap.parse_args()


def variants(dense: torch.nn.Module, d_model: int, d_mlp: int, k_fracs: list[float], device: str) -> dict:
    """name -> module: the dense MLP, then k-WTA SparseMLPs (boosted in eval from skewed duty cycles, and plain)."""
    out = {"dense MLP (GELU)": dense}
    g = torch.Generator().manual_seed(0)
    for frac in k_fracs:
        k = kwta.k_for(frac, d_mlp)
        for boost in (1.5, 0.0):
            m = kwta.SparseMLP(d_model, d_mlp, k, boost_strength=boost, generator=g)
            m.kwta.duty_cycle.copy_(torch.rand(d_mlp, generator=g) * 2 * k / d_mlp)
            out[f"k-WTA k={k} ({frac:.0%}), {'boosted' if boost else 'no boost'}"] = m.to(device).eval()
    return out


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config.resolve(args.preset, attention_only=False)
    m = cfg.model
    batch = args.batch or cfg.train.batch_size
    print(f"{bench.machine(args.device)}; device {args.device}; {bench.load()}")
    hooked = model.to_hooked(train.init_model(cfg).eval()).to(args.device)
    mods = variants(hooked.blocks[-1].mlp, m.d_model, m.d_mlp, args.k_fracs, args.device)
    x = torch.randn(batch, m.n_ctx, m.d_model, device=args.device)
    n_tok = batch * m.n_ctx
    print(f"{args.preset}: d_model {m.d_model}, d_mlp {m.d_mlp}; input {batch} x {m.n_ctx} tokens; "
          f"{args.iters} forwards per measurement, {args.reps} repetitions")

    def timed(mod) -> float:
        with torch.no_grad():
            mod(x)  # warm-up
            bench._sync(torch.device(args.device))
            t0 = time.perf_counter()
            for _ in range(args.iters):
                mod(x)
            bench._sync(torch.device(args.device))
        return (time.perf_counter() - t0) / args.iters

    res = bench.round_robin({name: (lambda mod=mod: timed(mod)) for name, mod in mods.items()}, args.reps)
    base = res["dense MLP (GELU)"]
    print(f"\n{'layer':<34}{'ms / forward':>14}{'tokens/s':>12}{'x dense time':>14}{'IQR':>8}   "
          f"({bench.cpu_capability() if args.device == 'cpu' else args.device})")
    for name, vals in res.items():
        s, r = bench.summarize(vals), bench.summarize([a / b for a, b in zip(vals, base)])
        print(f"{name:<34}{1e3 * s.median:>14.3f}{n_tok / s.median:>12,.0f}{r.median:>14.2f}{r.iqr:>8.2f}")
    print(f"({bench.load()})")


if __name__ == "__main__":
    main()
