"""Report 6's curves on a checkpointed suite someone else trained (Pythia's `step0` ... `step143000` revisions, or
any folder of per-step `save_pretrained` folders), read from local files only.

    steps = suite.suite_steps("EleutherAI/pythia-70m")           # the revisions in the local HF cache
    probes = suite.text_probes(tok, n_ctx=128, n=64)               # tok = pretrained.load_tokenizer(...)
    curves, heads = suite.suite_curves("EleutherAI/pythia-70m", probes, early=12, late=124)

The same metrics as `kernel.checkpoint_curves` on our own runs: induction, previous-token and prefix-matching scores
per head, held-out loss, the ICL score and the loss on planted copies, one row per revision.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from lib.analysis import metrics
from lib.core import data, pretrained
from lib.core.checks import check
from lib.reports.training_dynamics.kernel import Probes, copy_target_mask, curve_row


def suite_steps(spec: str | os.PathLike) -> list[tuple[int, str]]:
    """(training step, revision) of every local revision of a suite whose name ends in its step number
    ('step1000' -> 1000), sorted by step; FileNotFoundError when there are none."""
    out = []
    for r in pretrained.revisions(spec):
        m = re.search(r"(\d+)$", r)
        if m:
            out.append((int(m.group(1)), r))
    if not out:
        raise FileNotFoundError(f"no local revisions named by their step (e.g. 'step1000') for {str(spec)!r}: a "
                                "checkpointed suite is a folder of per-step save_pretrained folders, or a Hugging Face "
                                "cache entry with those revisions downloaded (huggingface-cli download NAME --revision "
                                f"step1000). {pretrained.HOW_TO_PROVIDE}")
    return sorted(out)


def suite_checkpoints(spec: str | os.PathLike, revisions: Sequence[str] | None = None,
                      device: str | torch.device = "cpu") -> Iterator[tuple[int, torch.nn.Module]]:
    """(step, HookedTransformer) of each revision (default: all local ones), loaded lazily one at a time: the
    iterator `kernel.tracin` and the curves take."""
    steps = dict((r, s) for s, r in suite_steps(spec))
    for r in revisions if revisions is not None else list(steps):
        check(r in steps, "revision", r, f"one of the local revisions {list(steps)}")
        yield steps[r], pretrained.load_model(spec, device, revision=r)


def text_probes(tok: data.Tokenizer, n_ctx: int, n: int = 64, n_repeat: int = 64, plant: tuple[int, int] = (4, 12),
                seed: int = 0, split: str = "wikitext2_test") -> Probes:
    """Report 6's probes in a loaded model's tokenizer: n held-out windows of shipped text (`split`), n more with a
    planted repeat of plant[0]..plant[1] tokens, and n_repeat repeated random sequences of the 300 most frequent
    tokens of that text. (A suite trained on web text may have seen WikiText: its "held-out" loss is then a lower
    bound; the head scores do not depend on it.)"""
    texts = data.load_articles(split)["text"].tolist()
    ids, total = [], 0
    for t in texts:  # encode only what the windows need
        ids.append(tok.encode(t))
        total += len(ids[-1]) + 1
        if total >= (2 * n + 1) * n_ctx:
            break
    windows = data.lm_windows(ids, n_ctx, tok.eos_id)
    check(len(windows) >= 2 * n, "n", n, f"at most {len(windows) // 2}: {split} gives {len(windows)} windows of "
          f"{n_ctx} tokens")
    g = torch.Generator().manual_seed(seed)
    pool = metrics.frequent_tokens(windows, min(300, tok.vocab_size), max(tok.vocab_size, int(windows.max()) + 1))
    repeated = metrics.repeated_tokens(n_repeat, n_ctx // 2, pool, g)
    planted, _, spans = data.plant_repeats(windows[n : 2 * n], 1.0, plant[0], plant[1], g)
    return Probes(repeated, windows[:n], planted, copy_target_mask(spans, n_ctx))


def suite_curves(spec: str | os.PathLike, probes: Probes, early: int, late: int, width: int = 2,
                 revisions: Sequence[str] | None = None, device: str | torch.device = "cpu",
                 progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`kernel.checkpoint_curves` over a suite's revisions -> (one row per step, one row per step and head); the
    rows also name their revision."""
    rows, heads = [], []
    todo = revisions if revisions is not None else [r for _, r in suite_steps(spec)]
    dev = {k: getattr(probes, k).to(device) for k in ("repeated", "held_out", "planted", "copy_mask")}
    for step, model in tqdm(suite_checkpoints(spec, todo, device), total=len(todo), desc="revisions",
                            disable=not progress, leave=False):
        row, head_rows = curve_row(model, Probes(**dev), step, early, late, width)
        rows.append(row)
        heads += head_rows
    names = dict((s, r) for s, r in suite_steps(spec))
    curves = pd.DataFrame(rows)
    return curves.assign(revision=curves.step.map(names)), pd.DataFrame(heads)
