"""Speed kernels: FLOP counting against a brute-force count, peaks, step closures, summaries (no timing asserts)."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import bf16_tol, fp32_tol
from lib.core.bench import (
    arg_parser,
    begin,
    gemm_flops,
    make_step,
    matmul_flops,
    matmul_peak,
    model_flops_per_token,
    round_robin,
    summarize,
    throughput_frame,
    training_gemms,
    training_steps,
)
from lib.core.config import ModelConfig, resolve
from lib.core.model import Transformer, _attend, loss_fn, to_hooked


def _cfg(attention_only: bool, **kw) -> ModelConfig:
    return ModelConfig(**{**dict(n_layers=2, n_heads=4, d_model=16, d_vocab=50, n_ctx=24,
                                 attention_only=attention_only), **kw})


def _counted_flops(model: torch.nn.Module, tokens: torch.Tensor, precision: str = "fp32") -> int:
    """FLOPs that torch's FlopCounterMode sees in one forward + backward of the training loss."""
    with FlopCounterMode(display=False) as counter:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(tokens)
        loss_fn(logits, tokens).backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("attention_only", [True, False])
@pytest.mark.parametrize("d_head", [None, 6])  # derived (d_model / n_heads) and an explicit, different d_head
def test_flops_per_token_matches_flop_counter_on_the_hooked_twin(attention_only, d_head):
    cfg = _cfg(attention_only, d_head=d_head, d_mlp=None if attention_only else 40)
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx))
    counted = _counted_flops(to_hooked(Transformer(cfg)).train(), tokens)  # einsum attention: counted as bmm
    assert counted == pytest.approx(model_flops_per_token(cfg) * tokens.numel(), rel=0.02)


@pytest.mark.parametrize("attention_only", [True, False])
def test_flops_per_token_matches_flop_counter_on_our_model(attention_only):
    cfg = _cfg(attention_only)
    tokens = torch.randint(0, cfg.d_vocab, (2, cfg.n_ctx))
    # bf16 on CPU takes our explicit-matmul attention, which the counter sees in full
    assert _counted_flops(Transformer(cfg), tokens, "bf16") == pytest.approx(
        model_flops_per_token(cfg) * tokens.numel(), rel=0.02)


@pytest.mark.parametrize("preset", ["smoke", "cpu", "gpu"])
def test_training_gemms_sum_to_model_flops(preset):
    for attention_only in (True, False):
        cfg = resolve(preset, attention_only=attention_only)
        gemms = training_gemms(cfg.model, cfg.train.batch_size)
        total = sum(2 * c * m * k * n for c, m, k, n in gemms)
        assert total == model_flops_per_token(cfg.model) * cfg.train.batch_size * cfg.model.n_ctx


def test_peaks_are_positive_and_finite():
    for dtype in (torch.float32, torch.bfloat16):
        for value in (matmul_flops(dtype, 64, iters=2), matmul_peak(dtype, 64, repeats=2)):
            assert math.isfinite(value) and value > 0
    value = gemm_flops(training_gemms(_cfg(False), 2), torch.bfloat16, iters=1)
    assert math.isfinite(value) and value > 0


def test_ours_and_hooked_train_alike_for_a_few_steps():
    """Same weights, batch and optimiser: the losses of make_step stay equal (the twins train identically)."""
    cfg = resolve("smoke")
    model = Transformer(cfg.model)
    model.reset_parameters(torch.Generator().manual_seed(0))
    steps = training_steps(model, cfg.train, ("fp32",))
    tokens = torch.randint(0, cfg.model.d_vocab, (4, cfg.model.n_ctx))
    ours = [steps["ours fp32"](tokens) for _ in range(4)]
    hooked = [steps["hooked fp32"](tokens) for _ in range(4)]
    assert ours[-1] < ours[0] - 0.01  # it learns the batch
    # The twins' gradients differ by float32 rounding (other attention kernels). AdamW can turn a rounding-level
    # gradient entry into a step of up to lr in that entry, but the loss moves only by gradient x step, so the
    # losses stay within float32 rounding of a ~ln(d_vocab) loss; a real difference (another init, a missing
    # parameter in the optimiser) moves them by >= 1e-2.
    assert ours == pytest.approx(hooked, abs=fp32_tol(max(hooked), ulps=1024))


def test_bf16_step_runs_and_learns():
    cfg = resolve("smoke")
    step = make_step(Transformer(cfg.model), cfg.train, "bf16")
    tokens = torch.randint(0, cfg.model.d_vocab, (4, cfg.model.n_ctx))
    losses = [step(tokens) for _ in range(5)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


@pytest.mark.parametrize("t, s", [(24, 24), (5, 24), (1, 24)])  # full causal, a chunk after a cache, one token
def test_bf16_attention_path_agrees_with_fp32_sdpa(t, s):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (t, s, s))
    causal = t == s
    mask = None if causal or t == 1 else torch.ones(t, s, dtype=torch.bool).tril(s - t)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    out = _attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, causal, 0.0)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max().item() < bf16_tol(v)  # a convex combination of v's rows


def test_bf16_model_matches_fp32_logits_closely():
    model = Transformer(_cfg(False)).eval()
    tokens = torch.randint(0, 50, (2, 24))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(tokens).float()
    with torch.no_grad():
        full = model(tokens)
    assert (low - full).abs().max().item() < bf16_tol(full)


def test_summarize_and_round_robin():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.q1, s.q3, s.iqr, s.n) == (3.0, 2.0, 4.0, 2.0, 5)
    calls = []
    res = round_robin({"a": lambda: calls.append("a") or 1.0, "b": lambda: calls.append("b") or 2.0}, 3)
    assert res == {"a": [1.0] * 3, "b": [2.0] * 3}
    assert calls == ["a", "b", "b", "a", "a", "b"]  # start rotated every repetition


def test_throughput_frame_ratios_and_mfu():
    tps = {"hooked fp32": [100.0, 50.0], "ours fp32": [150.0, 75.0], "ours bf16": [200.0, 100.0]}
    peaks = {"fp32": [1000.0, 500.0], "bf16": [4000.0, 2000.0]}
    prec = {name: name.split()[1] for name in tps}
    df = throughput_frame(tps, peaks, prec, flops_per_token=2.0, baseline="hooked fp32").set_index("variant")
    assert df.loc["hooked fp32", "ratio_vs_hooked_fp32"] == 1.0
    assert df.loc["ours fp32", "ratio_vs_hooked_fp32"] == pytest.approx(1.5)
    assert df.loc["ours fp32", "mfu"] == pytest.approx(0.3)  # 150 tok/s * 2 FLOP/tok / 1000 FLOP/s, each rep
    assert df.loc["ours bf16", "mfu"] == pytest.approx(0.1)
    assert df.loc["ours bf16", "tokens_per_s"] == pytest.approx(150.0)


def test_the_shared_bench_command_line_sets_threads_and_refuses_a_bad_preset(capsys):
    args = arg_parser("doc", reps=5).parse_args(["--threads", "1"])
    assert (args.preset, args.reps, args.threads) == ("cpu", 5, 1)
    old = torch.get_num_threads()
    try:
        begin(args)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
    assert "torch thread" in capsys.readouterr().out  # the machine line
    with pytest.raises(SystemExit):
        arg_parser("doc").parse_args(["--preset", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
