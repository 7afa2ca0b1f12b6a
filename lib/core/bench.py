"""Speed kernels: model FLOPs per token, matmul peak, one-training-step closures and timing summaries."""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from lib.core.config import PRESET_NAMES, ModelConfig, RunConfig, TrainConfig
from lib.core.model import loss_fn, to_hooked
from lib.core.train import autocast, evaluate, make_optimizer, train


def arg_parser(doc: str | None, reps: int = 3) -> argparse.ArgumentParser:
    """A bench's command line with the options every bench shares: its docstring as help, --preset (default cpu),
    --reps (repetitions, each running every variant once) and --threads (torch intra-op threads)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    ap.add_argument("--reps", type=int, default=reps, help="repetitions (each runs every variant once)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return ap


def begin(args: argparse.Namespace) -> None:
    """Apply --threads and print the machine and its load: every bench's first line."""
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{machine()}; {load()}")


def bf16_native() -> bool:
    """Whether this CPU runs bf16 matmuls natively (AVX512-BF16 or AMX dispatched), rather than emulating them."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa_ok = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() not in ("AVX2", "AVX", "SSE41")
    return ("amx_bf16" in flags or "avx512_bf16" in flags) and isa_ok and \
        torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def cpu_capability() -> str:
    """What the CPU's kernels run with, e.g. 'AVX512, bf16 native' or 'AVX2, bf16 emulated'.

    `torch.backends.cpu.get_cpu_capability()` names the vector ISA PyTorch dispatches to (ATEN_CPU_CAPABILITY can
    lower it); bf16 matmuls are fast only with AVX512-BF16 or AMX, else they are emulated and slow.
    """
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    amx = " + AMX" if "amx_bf16" in flags and bf16_native() else ""
    return f"{torch.backends.cpu.get_cpu_capability()}, bf16 {'native' if bf16_native() else 'emulated'}{amx}"


def machine(device: str | torch.device = "cpu") -> str:
    """One line on where a bench ran: CPU model and capability, cores, threads, torch; or the GPU's name."""
    if str(device).startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (f"CPU {platform.processor() or platform.machine()} ({cpu_capability()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")


def load() -> str:
    """The load average, to judge whether other work shared the cores."""
    return "load average (1/5/15 min): " + " / ".join(f"{x:.2f}" for x in os.getloadavg())


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that enter a matmul per token: QKV, attention out, MLP in/out per layer, plus the unembedding."""
    inner = cfg.n_heads * cfg.d_head
    per_layer = 4 * cfg.d_model * inner + 2 * cfg.d_model * cfg.d_mlp
    return cfg.n_layers * per_layer + cfg.d_model * cfg.d_vocab


def model_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> int:
    """Training FLOPs per token (forward + backward) = 6 N + 12 L T H d_head (PaLM appendix B convention).

    N = matmul_params(cfg): a weight costs 2 FLOPs per token forward (multiply-add) and 4 backward (grads of
    input and weight). Attention scores QK^T and the weighted sum AV cost 2 T d_head each per head and token
    forward, times 3 for training, counted over the full T x T square (the causal mask is not discounted).
    Embedding look-ups, biases, LayerNorm, softmax, GELU, cross-entropy and the optimiser are not counted.
    """
    t = cfg.n_ctx if seq_len is None else seq_len
    return 6 * matmul_params(cfg) + 12 * cfg.n_layers * t * cfg.n_heads * cfg.d_head


def training_gemms(cfg: ModelConfig, batch: int, seq_len: int | None = None) -> list[tuple[int, int, int, int]]:
    """The matrix products of one training step as (count, m, k, n): forward, input grad and weight grad each.

    Their FLOPs (2 count m k n summed) equal model_flops_per_token * batch * seq_len exactly.
    """
    t = cfg.n_ctx if seq_len is None else seq_len
    rows, inner = batch * t, cfg.n_heads * cfg.d_head
    linears = [(cfg.d_model, 3 * inner), (inner, cfg.d_model)]
    if not cfg.attention_only:
        linears += [(cfg.d_model, cfg.d_mlp), (cfg.d_mlp, cfg.d_model)]
    out = []
    for k, n in linears * cfg.n_layers + [(cfg.d_model, cfg.d_vocab)]:
        out += [(1, rows, k, n), (1, rows, n, k), (1, n, rows, k)]  # y = x W^T; dx = dy W; dW = dy^T x
    heads = cfg.n_layers * batch * cfg.n_heads
    for m, k, n in [(t, cfg.d_head, t), (t, t, cfg.d_head)]:  # scores q k^T and the mix p v
        out += [(heads, m, k, n), (heads, m, n, k), (heads, k, m, n)]
    return out


def gemm_flops(gemms: list[tuple[int, int, int, int]], dtype: torch.dtype, device: str | torch.device = "cpu",
               iters: int = 5) -> float:
    """Achieved FLOP/s of running just these products (batched where count > 1) on random `dtype` operands."""
    device = torch.device(device)
    ops = [(torch.randn(c, m, k, device=device).to(dtype), torch.randn(c, k, n, device=device).to(dtype))
           for c, m, k, n in gemms]
    flops = sum(2 * c * m * k * n for c, m, k, n in gemms) * iters
    for a, b in ops:
        torch.bmm(a, b)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        for a, b in ops:
            torch.bmm(a, b) if a.shape[0] > 1 else torch.mm(a[0], b[0])
    _sync(device)
    return flops / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(dtype: torch.dtype, n: int, device: str | torch.device = "cpu", iters: int = 10,
                 seed: int = 0) -> float:
    """Achieved FLOP/s of `iters` square n x n matmuls in `dtype` (one timing, after one warm-up matmul)."""
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    c = torch.empty(n, n, dtype=dtype, device=device)
    torch.mm(a, b, out=c)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        torch.mm(a, b, out=c)
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t0)


def matmul_peak(dtype: torch.dtype, n: int = 2048, device: str | torch.device = "cpu", repeats: int = 3) -> float:
    """Matmul peak FLOP/s: the best of `repeats` timings of `matmul_flops` (square n x n)."""
    return max(matmul_flops(dtype, n, device, iters=min(64, max(2, (4096 // n) ** 3))) for _ in range(repeats))


StepFn = Callable[[Tensor], float]


def make_step(model: torch.nn.Module, train_cfg: TrainConfig, precision: str, device: str | torch.device = "cpu",
              loss: Callable[[Tensor, Tensor], Tensor] = loss_fn, compile: bool = False) -> StepFn:
    """A closure doing one lib.train training step on a batch: autocast forward, loss, backward, clip, AdamW.

    Works for our Transformer and for a HookedTransformer (both map tokens to logits); returns the loss.
    With compile, torch.compile fuses forward and loss (compiled on the first call; backward follows).
    """
    optimizer = make_optimizer(model, train_cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()

    def forward_loss(tokens: Int[Tensor, "batch pos"]) -> Tensor:
        with autocast(precision, device):
            logits = model(tokens)
        return loss(logits, tokens)

    forward_loss = torch.compile(forward_loss) if compile else forward_loss

    def step(tokens: Int[Tensor, "batch pos"]) -> float:
        value = forward_loss(tokens)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        return value.item()

    return step


def time_steps(step: StepFn, tokens: Tensor, n_steps: int, device: str | torch.device = "cpu") -> float:
    """Wall seconds for n_steps calls of step(tokens) (the loss .item() syncs each step)."""
    device = torch.device(device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step(tokens)
    _sync(device)
    return time.perf_counter() - t0


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of fn."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def round_robin(tasks: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Call every task once per repetition, in turn (start rotated each repetition) -> {name: [value per rep]}."""
    names, out = list(tasks), {name: [] for name in tasks}
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(tasks[name]())
    return out


@dataclass(frozen=True)
class Summary:
    """Median and interquartile range of repeated measurements."""

    median: float
    q1: float
    q3: float
    n: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(values: list[float]) -> Summary:
    """Median and quartiles (linear interpolation) of a list of measurements."""
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return Summary(median=q[1], q1=q[0], q3=q[2], n=len(values))


def training_steps(model: torch.nn.Module, train_cfg: TrainConfig, precisions: tuple[str, ...] = ("fp32", "bf16"),
                   device: str | torch.device = "cpu", hooked: bool = True) -> dict[str, StepFn]:
    """Step closures on independent copies of one model's weights: 'ours <prec>' and 'hooked <prec>' (to_hooked)."""
    steps = {}
    for prec in precisions:
        steps[f"ours {prec}"] = make_step(copy.deepcopy(model).to(device), train_cfg, prec, device)
    if hooked:
        for prec in precisions:
            steps[f"hooked {prec}"] = make_step(to_hooked(model.to(device)), train_cfg, prec, device)
    return steps


def throughput_frame(tokens_per_s: dict[str, list[float]], peak_flops: dict[str, list[float]],
                     precision: dict[str, str], flops_per_token: float, baseline: str) -> pd.DataFrame:
    """One row per variant: tokens/s median and IQR, per-repetition ratio to `baseline`, GFLOP/s and MFU.

    Ratios and MFU are taken within each repetition (variant vs baseline, variant vs the peak timed beside it)
    and then the median over repetitions, so that load shared by a repetition cancels.
    """
    rows = []
    for name, tps in tokens_per_s.items():
        s = summarize(tps)
        peak = peak_flops[precision[name]]
        ratio = summarize([a / b for a, b in zip(tps, tokens_per_s[baseline])])
        mfu = summarize([a * flops_per_token / p for a, p in zip(tps, peak)])
        rows.append({"variant": name, "tokens_per_s": s.median, "tokens_per_s_iqr": s.iqr,
                     f"ratio_vs_{baseline.replace(' ', '_')}": ratio.median, "ratio_iqr": ratio.iqr,
                     "gflop_per_s": s.median * flops_per_token / 1e9, "mfu": mfu.median, "mfu_iqr": mfu.iqr,
                     "peak_gflop_per_s": summarize(peak).median / 1e9})
    return pd.DataFrame(rows)


def quality_runs(cfg: RunConfig, data, seeds: tuple[int, ...], precisions: tuple[str, ...] = ("fp32", "bf16"),
                 device: str | torch.device = "cpu", n_val: int = 2048) -> pd.DataFrame:
    """lib.core.train.train for each (seed, precision); final val loss as trained and re-evaluated in fp32 on n_val windows."""
    rows = []
    for seed in seeds:
        for prec in precisions:
            t0 = time.perf_counter()
            model, hist = train(cfg.replace(seed=seed, precision=prec), data=data, progress=False, device=device)
            seconds = time.perf_counter() - t0
            fp32 = evaluate(model, data.val[:n_val], cfg.train.batch_size, "fp32")
            rows.append({"precision": prec, "seed": seed, "val_loss": hist["val_loss"].iloc[-1],
                         "val_loss_fp32_eval": fp32["loss"], "seconds": seconds})
    return pd.DataFrame(rows)
