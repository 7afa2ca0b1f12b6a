"""Interruption and concurrency: two processes asking for the same model at once train it once and both get it;
pruning tolerates checkpoints another process removed; a lock is exclusive."""

import os
import shutil
import subprocess
import sys
import threading
import time

from lib.core import artifacts
from lib.core.config import resolve
from lib.core.runs import load_model
from lib.core.train import _prune, list_checkpoints, train

SCRIPT = """
import sys, time
from lib.core.config import resolve
from lib.core.runs import get_or_train
t0 = time.time()
model, history, d = get_or_train(resolve("smoke", max_steps=400, eval_every=100, checkpoint_every=100), name="race",
                                 progress=False)
print(d, history["seconds"].iloc[-1], time.time() - t0)
"""


def test_two_processes_training_the_same_model_train_it_once(tmp_path):
    env = {**os.environ, "ARTIFACTS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    dirs = {o[0].split()[0] for o in outs}
    assert len(dirs) == 1  # the same artifact
    directory = next(iter(dirs))
    train_seconds = {o[0].split()[1] for o in outs}
    assert len(train_seconds) == 1  # one training history: the second process loaded what the first trained
    load_model(directory)  # intact: the manifest verifies
    assert not [p for p in os.listdir(os.path.dirname(directory)) if p.endswith(".tmp")]


def test_the_artifact_lock_is_exclusive(tmp_path):
    target, order = tmp_path / "models" / "m-0123456789", []

    def hold():
        with artifacts.lock(target):
            order.append("a in")
            time.sleep(0.5)
            order.append("a out")

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.1)
    with artifacts.lock(target):
        order.append("b in")
    t.join()
    assert order == ["a in", "a out", "b in"]


def test_pruning_tolerates_checkpoints_that_vanished(tmp_path, monkeypatch):
    """Another process may delete a checkpoint between this one's listing and its deleting: no error."""
    cfg = resolve("smoke", max_steps=8, eval_every=4, checkpoint_every=2, warmup_steps=1)
    train(cfg, ckpt_dir=tmp_path, progress=False, keep_checkpoints=None)
    stale = list_checkpoints(tmp_path)
    assert [p.name for p in stale] == ["step_0000002", "step_0000004", "step_0000006", "step_0000008"]
    shutil.rmtree(stale[0])  # pruned by the other process
    monkeypatch.setattr("lib.core.train.list_checkpoints", lambda d: stale)  # this process listed before that
    _prune(tmp_path, 1, set())
    assert [p.name for p in sorted(tmp_path.glob("step_*"))] == ["step_0000008"]
