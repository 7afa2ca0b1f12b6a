"""Training: schedule, determinism, exact resume, atomic checkpoints, DDP equals single-process."""

import os
import subprocess
import sys

import pytest
import torch

from lib.core import artifacts, runs
from lib.core.config import resolve
from lib.core.data import load_token_data
from lib.core.train import batch_indices, init_model, list_checkpoints, load_checkpoint_weights, lr_at, train

OVERRIDES = dict(max_steps=12, eval_every=4, checkpoint_every=4, warmup_steps=3, batch_size=8)


@pytest.fixture(scope="module")
def smoke(artifacts_tmp):
    cfg = resolve("smoke", **OVERRIDES)
    return cfg, load_token_data(cfg.data)


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_lr_schedule_warmup_then_cosine():
    tc = resolve("smoke", max_steps=100, warmup_steps=10, lr=1e-3, min_lr_frac=0.1).train
    assert lr_at(0, tc) == pytest.approx(1e-4) and lr_at(9, tc) == pytest.approx(1e-3)
    assert lr_at(100, tc) == pytest.approx(1e-4)
    lrs = [lr_at(s, tc) for s in range(10, 101)]
    assert all(x >= y for x, y in zip(lrs, lrs[1:]))


def test_batches_depend_on_seed_and_step_only():
    tc = resolve("smoke").train
    assert torch.equal(batch_indices(5, 1000, tc), batch_indices(5, 1000, tc))
    assert not torch.equal(batch_indices(5, 1000, tc), batch_indices(6, 1000, tc))


def test_deterministic_for_a_seed(smoke):
    cfg, data = smoke
    a, ha = train(cfg, data=data, progress=False)
    b, hb = train(cfg, data=data, progress=False)
    c, _ = train(cfg.replace(seed=1), data=data, progress=False)
    assert _same_weights(a, b) and not _same_weights(a, c)
    assert ha["val_loss"].tolist() == hb["val_loss"].tolist()
    assert ha["val_loss"].iloc[-1] < ha["val_loss"].iloc[0]  # it learns


def test_resume_after_interrupt_equals_uninterrupted(smoke, tmp_path):
    cfg, data = smoke
    cfg = cfg.replace(dropout=0.1)  # dropout makes the RNG state part of what must be restored
    full, h_full = train(cfg, data=data, progress=False)
    part, _ = train(cfg, ckpt_dir=tmp_path, data=data, progress=False, stop_after=6)  # interrupted mid-interval
    assert [p.name for p in list_checkpoints(tmp_path)][-1] == "step_0000006"
    assert not _same_weights(part, full)
    resumed, h_res = train(cfg, ckpt_dir=tmp_path, data=data, progress=False)
    assert _same_weights(resumed, full)
    cols = ["step", "loss", "val_loss", "val_accuracy"]
    assert h_res[cols].equals(h_full[cols])


def test_checkpoints_are_complete_pruned_and_loadable(smoke, tmp_path):
    cfg, data = smoke
    model, _ = train(cfg, ckpt_dir=tmp_path, data=data, progress=False, keep_checkpoints=2, checkpoint_steps=(2,))
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_0000002", "step_0000008", "step_0000012"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    extra = artifacts.load_torch(tmp_path / "step_0000012" / "optimizer.pt")  # weights_only=True
    assert "optimizer" in extra and "rng" in extra


def test_get_or_train_trains_once_then_loads(smoke):
    cfg, _ = smoke
    m1, h1, d1 = runs.get_or_train(cfg, name="test", progress=False)
    mtime = (d1 / "weights.safetensors").stat().st_mtime_ns
    m2, h2, d2 = runs.get_or_train(cfg, name="test", progress=False)
    assert d1 == d2 and (d2 / "weights.safetensors").stat().st_mtime_ns == mtime
    assert _same_weights(m1, m2) and h1["val_loss"].tolist() == h2["val_loss"].tolist()


def test_evaluation_schedule_does_not_change_the_weights(smoke):
    """What lets report 6 reuse notebook 1's run although report 6 evaluates less often: evaluation draws no
    random numbers and leaves train mode as it found it, so the weights are bit-identical (dropout on, so a
    stray RNG draw or a left-over eval mode would show)."""
    cfg, data = smoke
    cfg = cfg.replace(dropout=0.1)
    a, ha = train(cfg, data=data, progress=False)
    b, hb = train(cfg.replace(eval_every=cfg.train.max_steps, eval_batches=1), data=data, progress=False)
    assert _same_weights(a, b) and len(ha) > len(hb) == 2


def test_get_or_train_keeps_the_asked_checkpoints_for_a_later_analysis(smoke):
    """checkpoint_steps (0 = the initialisation) are kept beside the model, pruning the rest as usual;
    kept_checkpoints lists them, and says None when a step was not kept (the caller then trains it itself)."""
    cfg, data = smoke
    cfg = cfg.replace(seed=3)
    _, _, d = runs.get_or_train(cfg, name="test-dense", progress=False, checkpoint_steps=(0, 3, 5))
    kept = runs.kept_checkpoints(d, [5, 0, 3])
    assert [p.name for p in kept] == ["step_0000000", "step_0000003", "step_0000005"]
    assert runs.kept_checkpoints(d, [0, 1]) is None and runs.kept_checkpoints(d, []) is None
    assert [p.name for p in list_checkpoints(d / "checkpoints")][-2:] == ["step_0000008", "step_0000012"]
    assert _same_weights(load_checkpoint_weights(kept[0])[0], init_model(cfg))
    mid, step = load_checkpoint_weights(kept[2])
    full, _ = train(cfg, data=data, progress=False, stop_after=5)
    assert step == 5 and _same_weights(mid, full)  # the run's own state at step 5, not another run's


def test_ddp_two_processes_equals_single_process(smoke, tmp_path):
    cfg, data = smoke
    single, _ = train(cfg, data=data, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [f"{k}={v}" for k, v in OVERRIDES.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "lib.core.runs", "--preset", "smoke", "--out", str(tmp_path / "ddp"), "--set", *sets]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, ddp_cfg = runs.load_model(tmp_path / "ddp")
    assert ddp_cfg == cfg
    # The all-reduce sums the two halves' gradients in another order than one process does: the gradients agree
    # to float32 rounding. AdamW's step is smooth in the gradient except near 0, where an entry within rounding
    # of 0 can take a different step of up to lr (bias-corrected m/sqrt(v) is ±1 at step 1). So: nearly every
    # weight agrees to 1e-4 (≪ one step, lr), and none differs by more than 2·lr per step. A real DDP bug
    # (a wrong shard, a missed all-reduce, a skipped step) moves most weights by about a step each.
    diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(single.state_dict().values(), ddp.state_dict().values())])
    assert (diffs > 1e-4).float().mean() < 1e-3, float(diffs.max())
    assert diffs.max() <= 2 * cfg.train.lr * cfg.train.max_steps
