"""Training throughput of our Transformer vs the same weights as a TransformerLens HookedTransformer, and MFU.

Every repetition runs, round-robin, `--steps-per-rep` full training steps (bf16 autocast or fp32 forward, loss,
backward, gradient clipping, AdamW) on one fixed batch for each variant, plus a square matmul in fp32 and in bf16
(the peaks MFU is measured against), so that load from other processes hits all of them alike. Ratios and MFU are
medians of per-repetition values. Then (unless --quality-steps 0) lib.core.train.train runs fp32 and bf16 on the
preset's data for several seeds and compares final validation losses.

    python bench/train_throughput.py --preset cpu
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import pandas as pd
import torch

from lib.core import bench
from lib.core.config import resolve
from lib.core.model import Transformer

PEAK_N = {"cpu": 2048, "cuda": 8192}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BASELINE = "hooked fp32"
TARGETS = [("ours fp32", "ratio", 1.2), ("ours bf16", "ratio", 1.5), ("ours bf16", "mfu", 0.40)]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=["cpu", "smoke", "gpu"])
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--attention-only", dest="kinds", action="store_const", const=[True], help="only attn-only")
    kind.add_argument("--mlp", dest="kinds", action="store_const", const=[False], help="only the model with MLPs")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (each runs every variant once)")
    ap.add_argument("--steps-per-rep", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--quality-steps", type=int, default=300, help="training steps of the quality check; 0 skips it")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="add variants of ours with forward+loss torch.compile'd")
    ap.add_argument("--bf16", action="store_true", help="time bf16 even where the CPU only emulates it (very slow)")
    args = ap.parse_args()
    args.kinds = args.kinds or [True, False]
    emulated = args.device == "cpu" and not bench.bf16_native()
    args.precisions = ("fp32",) if emulated and not args.bf16 else tuple(DTYPES)
    return args


def omp_note(device: str) -> str:
    """The OpenMP wait policy, and a warning when other processes share the cores while our threads spin-wait."""
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    line = f"OMP_WAIT_POLICY={policy}"
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    if device == "cpu" and busy and torch.get_num_threads() > 1 and policy.upper() != "PASSIVE":
        line += ("  [load > cores: libgomp threads spin-wait and a 2-thread step ran up to 10x slower here; "
                 "OMP_WAIT_POLICY=PASSIVE or --threads 1 measure the code rather than the contention]")
    return line


def step_tasks(cfg, device: str, args) -> tuple[dict, torch.Tensor]:
    """Step closures of every variant (warmed up) and the fixed batch."""
    model = Transformer(cfg.model)
    model.reset_parameters(torch.Generator().manual_seed(0))
    steps = bench.training_steps(model, cfg.train, args.precisions, device)
    if args.compile:
        for prec in args.precisions:
            steps[f"ours {prec} compiled"] = bench.make_step(copy.deepcopy(model).to(device), cfg.train, prec,
                                                             device, compile=True)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.model.d_vocab, (cfg.train.batch_size, cfg.model.n_ctx), generator=g).to(device)
    for name, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(3):
            step(tokens)
        if "compiled" in name:
            print(f"  {name}: compilation + 3 warm-up steps took {time.perf_counter() - t0:.1f} s")
    return steps, tokens


def throughput(cfg, device: str, args) -> pd.DataFrame:
    """The round-robin timing of all variants and both peaks -> bench.throughput_frame."""
    steps, tokens = step_tasks(cfg, device, args)
    n_tok, k, fpt = tokens.numel(), args.steps_per_rep, bench.model_flops_per_token(cfg.model)
    tasks = {name: (lambda s=s: n_tok * k / bench.time_steps(s, tokens, k, device)) for name, s in steps.items()}
    n, gemms = PEAK_N[torch.device(device).type], bench.training_gemms(cfg.model, cfg.train.batch_size)
    for prec in args.precisions:
        dtype = DTYPES[prec]
        bench.matmul_flops(dtype, n, device)  # warm-up
        tasks[f"peak {prec}"] = lambda d=dtype: bench.matmul_flops(d, n, device, iters=4)
        # the step's matrix products alone, as tokens/s: a ceiling for any implementation at these shapes
        tasks[f"matmuls only {prec}"] = lambda d=dtype: bench.gemm_flops(gemms, d, device, iters=k) / fpt
    res = bench.round_robin(tasks, args.reps)
    peaks = {prec: res.pop(f"peak {prec}") for prec in args.precisions}
    precision = {name: next(p for p in args.precisions if p in name.split()) for name in res}
    return bench.throughput_frame(res, peaks, precision, fpt, BASELINE)


def print_throughput(df: pd.DataFrame, cfg, args) -> None:
    fpt = bench.model_flops_per_token(cfg.model)
    print(f"  FLOPs/token (training) = 6*N + 12*L*T*H*d_head = 6*{bench.matmul_params(cfg.model):,} + "
          f"12*{cfg.model.n_layers}*{cfg.model.n_ctx}*{cfg.model.n_heads}*{cfg.model.d_head} = {fpt:,}")
    print(f"  peaks (square {PEAK_N[torch.device(args.device).type]} matmul, median over reps): "
          + ", ".join(f"{p}: {df.loc[df.variant.str.endswith(p), 'peak_gflop_per_s'].iloc[0]:.0f} GFLOP/s"
                      for p in args.precisions))
    out = df.rename(columns={"tokens_per_s": "tok/s", "tokens_per_s_iqr": "tok/s IQR", "gflop_per_s": "GFLOP/s",
                             df.columns[3]: f"x {BASELINE}", "ratio_iqr": "x IQR", "mfu": "MFU", "mfu_iqr": "MFU IQR"})
    out = out.drop(columns=["peak_gflop_per_s"])
    print(f"  ratios and MFU measured on: {bench.cpu_capability() if args.device == 'cpu' else args.device}")
    print(out.to_string(index=False, float_format=lambda v: f"{v:,.3f}" if abs(v) < 10 else f"{v:,.0f}"))


def check_targets(df: pd.DataFrame, device: str) -> list[str]:
    """PASS/FAIL lines for the issue's speed targets (SKIP for a variant that was not timed)."""
    lines, by = [], df.set_index("variant")
    where = bench.cpu_capability() if device == "cpu" else device
    for variant, what, target in TARGETS:
        if variant not in by.index:
            lines.append(f"  SKIP  {variant}: not timed [{where}]")
            continue
        value = by.loc[variant, df.columns[3] if what == "ratio" else "mfu"]
        label = f"{variant} / {BASELINE} >= {target}" if what == "ratio" else f"{variant} MFU >= {target:.0%}"
        lines.append(f"  {'PASS' if value >= target else 'FAIL'}  {label}: {value:.3f} [{where}]")
    return lines


def quality(cfg, device: str, args) -> list[str]:
    """Train fp32 and bf16 for --quality-steps over --seeds; print per-run losses, return the verdict line."""
    from lib.core.data import load_token_data

    qcfg = cfg.replace(max_steps=args.quality_steps, eval_every=args.quality_steps,
                       warmup_steps=min(cfg.train.warmup_steps, args.quality_steps // 3))
    df = bench.quality_runs(qcfg, load_token_data(qcfg.data), tuple(args.seeds), ("fp32", "bf16"), device)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    piv = df.pivot(index="seed", columns="precision", values="val_loss_fp32_eval")
    paired = piv["bf16"] - piv["fp32"]  # same seed: same init and batches, only the precision differs
    spread = piv["fp32"].max() - piv["fp32"].min()
    ok = paired.mean() <= spread
    return [f"  {'PASS' if ok else 'FAIL'}  quality: bf16 - fp32 val loss (fp32 eval), mean over seeds "
            f"{paired.mean():+.4f} (per seed {', '.join(f'{d:+.4f}' for d in paired)}) vs fp32 seed spread "
            f"(max - min) {spread:.4f}"]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(bench.machine(args.device))
    print(bench.load())
    print(omp_note(args.device))
    if args.precisions == ("fp32",):
        print(f"bf16 is emulated on this CPU ({bench.cpu_capability()}): the bf16 variants, peaks and quality check are "
              "skipped (bench/bf16_step.py measures how much slower bf16 is here); --bf16 times "
              "them anyway")
    verdicts = []
    for attn_only in args.kinds:
        cfg = resolve(args.preset, attention_only=attn_only)
        m = cfg.model
        title = (f"{args.preset} preset, {'attention-only' if attn_only else 'with MLP'}: {m.n_layers}L d{m.d_model} "
                 f"{m.n_heads}h d_mlp {m.d_mlp} vocab {m.d_vocab} n_ctx {m.n_ctx}, batch {cfg.train.batch_size}")
        print(f"\n== {title}\n  throughput: {args.reps} reps x {args.steps_per_rep} steps, {bench.load()}")
        df = throughput(cfg, args.device, args)
        print_throughput(df, cfg, args)
        verdicts += [f"[{'attn-only' if attn_only else 'mlp'}]"] + check_targets(df, args.device)
        if args.quality_steps > 0 and "bf16" in args.precisions:
            print(f"  quality: {args.quality_steps} steps, seeds {args.seeds}, val loss of the last eval "
                  f"(at training precision) and re-evaluated in fp32 on 2048 val windows; {bench.load()}")
            verdicts += quality(cfg, args.device, args)
    print("\n== targets\n" + "\n".join(verdicts))
    print(bench.load())


if __name__ == "__main__":
    main()
