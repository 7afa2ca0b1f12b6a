"""How fast bf16 is on this CPU: one training step of the cpu-preset MLP model in fp32 and in bf16 autocast, and a
square matmul in each dtype, side by side in one run.

Where the CPU has no native bf16 (AVX2 only; or AVX-512 forced down with ATEN_CPU_CAPABILITY=avx2
MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2) bf16 is emulated and far slower than fp32, which is why the
cpu preset trains in fp32.

    python bench/bf16_step.py [--preset cpu] [--seconds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from lib.core import bench
from lib.core.config import resolve
from lib.core.model import Transformer


def timed(fn, seconds: float, max_calls: int) -> float:
    """Seconds per call of fn (after one warm-up call), over about `seconds` or max_calls calls."""
    fn()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds and n < max_calls:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=["smoke", "cpu", "gpu"])
    ap.add_argument("--seconds", type=float, default=20.0, help="time budget per measurement")
    args = ap.parse_args()
    print(f"{bench.machine()}; {bench.load()}")
    cfg = resolve(args.preset, attention_only=False)
    tokens = torch.randint(0, cfg.model.d_vocab, (cfg.train.batch_size, cfg.model.n_ctx),
                           generator=torch.Generator().manual_seed(0))
    step_s = {}
    for prec in ("fp32", "bf16"):
        model = Transformer(cfg.model)
        model.reset_parameters(torch.Generator().manual_seed(0))
        step = bench.make_step(model, cfg.train, prec)
        step_s[prec] = timed(lambda: step(tokens), args.seconds, 20)
        print(f"  {prec} training step: {1e3 * step_s[prec]:8.1f} ms  ({tokens.numel() / step_s[prec]:,.0f} tokens/s)")
    mm = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(512, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
        mm[name] = 2 * 512**3 / timed(lambda: a @ b, args.seconds / 4, 10_000) / 1e9
        print(f"  {name} 512x512 matmul: {mm[name]:8.1f} GFLOP/s")
    print(f"bf16 step time / fp32 step time = {step_s['bf16'] / step_s['fp32']:.2f}; "
          f"bf16 / fp32 matmul throughput = {mm['bf16'] / mm['fp32']:.2f}  [{bench.cpu_capability()}]")


if __name__ == "__main__":
    main()
