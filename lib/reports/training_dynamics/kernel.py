"""Training dynamics: dense checkpoints (and refined windows of them), per-checkpoint curves, the objectives
attribution explains, data dimensionality D*. The attribution machinery (per-example gradients, TracIn, enrichment,
checkpoint schedules and caches) lives in lib.analysis.attribution; its names are re-exported here."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from lib.analysis import metrics
from lib.analysis.attribution import (  # noqa: F401 - re-exported: callers read them as kernel.<name>
    ExampleLoss,
    Objective,
    TracIn,
    attention_fast_path_ok,
    attention_weight_names,
    bootstrap_enrichment,
    cached_frames,
    cached_tracin,
    checkpoint_intervals,
    checkpoint_schedule,
    checkpoint_step,
    enrichment,
    enrichment_curve,
    hooked_checkpoints,
    lm_example_loss,
    load_hooked,
    n_top,
    objective_grad,
    param_subset,
    per_example_grads,
    per_example_grads_attention,
    per_example_grads_loop,
    pick_checkpoints,
    precision_at_k,
    random_projection,
    shuffled_enrichment,
    stratified_sample,
    tracin,
    tracin_weights,
    visit_weights,
    visits,
)
from lib.core import artifacts, config, hooks, train as tr
from lib.core.config import RunConfig

CACHE_VERSION = 2  # part of every cache key built by callers: bump when a cached analysis changes


# ---------------------------------------------------------------------------------------------
# Dense checkpoints


def main_run(preset: str, nb, seed: int = 0, **user) -> tuple[RunConfig, list[int]]:
    """Report 6's main run and its dense checkpoint steps: the preset's attention-only training config with
    nb.run (DynamicsParams) and `user`'s overrides, its evaluation schedule left as the preset's. With the cpu
    preset this is exactly notebook 1's attention-only model (the same config, so the same artifact): notebook 1
    keeps these checkpoints when it trains it (lib.core.runs.get_or_train's checkpoint_steps), and report 6
    reuses that run instead of training it again."""
    cfg = config.resolve(preset, **{**nb.run, **user}, attention_only=True, seed=seed)
    return cfg, checkpoint_schedule(cfg.train.max_steps, nb.n_log, nb.n_linear)


def train_dense(cfg: RunConfig, ckpt_dir: Path, steps: Sequence[int], progress: bool = True,
                device: str | torch.device = "cpu", data=None) -> list[Path]:
    """Train cfg keeping a checkpoint at every step in `steps` (step 0 = the init) and return their folders.

    Resumes from the newest checkpoint in ckpt_dir, so a finished run is only listed.
    """
    ckpt_dir = Path(ckpt_dir)
    if 0 in steps and not (ckpt_dir / "step_0000000").exists():
        model = tr.init_model(cfg, device)
        tr.save_checkpoint(ckpt_dir, 0, model, tr.make_optimizer(model, cfg.train), [], cfg)
    done = [int(p.name.split("_")[1]) for p in tr.list_checkpoints(ckpt_dir)]
    if max(done, default=0) < cfg.train.max_steps:
        tr.train(cfg, ckpt_dir=ckpt_dir, checkpoint_steps=[s for s in steps if s > 0], keep_checkpoints=None,
                 progress=progress, device=device, data=data)
    wanted = set(steps)
    return [p for p in tr.list_checkpoints(ckpt_dir) if int(p.name.split("_")[1]) in wanted]


def run_dir(cfg: RunConfig, steps: Sequence[int]) -> Path:
    """Artifact folder of a dense-checkpoint run, keyed by its config and checkpoint steps."""
    return artifacts.path("dynamics", "run", {"config": cfg.to_dict(), "checkpoint_steps": list(map(int, steps))})


def dense_window(cfg: RunConfig, paths: Sequence[Path], ckpt_dir: Path, start: float, end: float, n: int,
                 progress: bool = True, device: str | torch.device = "cpu", data=None) -> list[Path]:
    """n more checkpoints evenly spaced inside [start, end] (a phase-change window) of a finished run, by exact
    resume: the saved checkpoint at or before `start` is copied to ckpt_dir and training reruns from it up to the
    last wanted step, saving each one (the batches are a function of (seed, step) and the optimizer and RNG state
    are restored, so the new checkpoints are those the run passed through). Returns the new checkpoints' folders
    (steps already saved in `paths` are not repeated); a finished refinement is only listed."""
    saved = {checkpoint_step(p): Path(p) for p in paths}
    if not saved or not 0 <= start <= end <= cfg.train.max_steps or n < 1:
        raise ValueError(f"start={start}, end={end}, n={n} are not allowed: 0 <= start <= end <= "
                         f"max_steps={cfg.train.max_steps}, n >= 1, and saved checkpoints to resume from")
    a = max(s for s in saved if s <= start)
    want = sorted({int(round(x)) for x in np.linspace(start, end, n)} - set(saved) - {a})
    ckpt_dir = Path(ckpt_dir)
    if not want or all((ckpt_dir / f"step_{s:07d}").exists() for s in want):
        return [ckpt_dir / f"step_{s:07d}" for s in want]
    if not tr.list_checkpoints(ckpt_dir):  # seed the folder with the checkpoint to resume from (atomically)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=ckpt_dir, prefix=f".step_{a:07d}."))
        try:
            shutil.copytree(saved[a], tmp, dirs_exist_ok=True)
            os.replace(tmp, ckpt_dir / saved[a].name)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    newest = checkpoint_step(tr.list_checkpoints(ckpt_dir)[-1])
    tr.train(cfg, ckpt_dir=ckpt_dir, checkpoint_steps=want, keep_checkpoints=None, stop_after=max(want) - newest,
             progress=progress, device=device, data=data)
    missing = [s for s in want if not (ckpt_dir / f"step_{s:07d}").exists()]
    if missing:
        raise RuntimeError(f"dense_window: steps {missing} were not saved in {ckpt_dir}")
    return [ckpt_dir / f"step_{s:07d}" for s in want]


# ---------------------------------------------------------------------------------------------
# Curves over checkpoints


@dataclass(frozen=True)
class Probes:
    """Fixed evaluation inputs for every checkpoint: repeated random tokens, held-out text, planted held-out text."""

    repeated: Int[Tensor, "n_rep two_half"]
    held_out: Int[Tensor, "n_val pos"]
    planted: Int[Tensor, "n_pl pos"]
    copy_mask: Bool[Tensor, "n_pl pos_minus_1"]  # loss positions that predict a copied, predictable token


def copy_target_mask(spans: Int[Tensor, "n 3"], n_ctx: int) -> Bool[Tensor, "n pos_minus_1"]:
    """Per-token-loss positions whose target lies in a planted copy after its first token (predictable by induction).

    spans rows are (start, length, copy_start) as in lib.core.data.plant_repeats; -1 rows give all False.
    """
    target = torch.arange(1, n_ctx)[None]  # loss index t predicts token t + 1
    s, length = spans[:, 0:1], spans[:, 1:2]
    return (spans[:, :1] >= 0) & (target > s + length) & (target < s + 2 * length)


def curve_row(hooked, probes: Probes, step: int, early: int, late: int, width: int) -> tuple[dict, list[dict]]:
    """One checkpoint's scalar metrics and its per-head scores (tidy rows)."""
    scores = metrics.head_scores(hooked, probes.repeated)
    pats = metrics.attention_patterns(hooked, probes.planted)
    prefix = metrics.prefix_matching_score(pats, probes.planted)
    held = metrics.per_token_loss(hooked, probes.held_out)
    planted = metrics.per_token_loss(hooked, probes.planted)
    row = {"step": step, "held_out_loss": float(held.mean()),
           "icl_score": float(metrics.icl_score(held, early, late, width).mean()),
           "icl_score_planted": float(metrics.icl_score(planted, early, late, width).mean()),
           "copy_loss": float(planted[probes.copy_mask].mean()),
           "other_loss": float(planted[~probes.copy_mask].mean()),
           "max_induction": float(scores["induction"].max()), "max_prev_token": float(scores["prev_token"].max()),
           "max_prefix_matching": float(prefix.max())}
    heads = [{"step": step, "layer": layer, "head": head, "head_name": f"L{layer}H{head}",
              "induction": float(scores["induction"][layer, head]), "prev_token": float(scores["prev_token"][layer, head]),
              "prefix_matching": float(prefix[layer, head])}
             for layer in range(scores["induction"].shape[0]) for head in range(scores["induction"].shape[1])]
    return row, heads


def checkpoint_curves(paths: Sequence[Path], probes: Probes, early: int, late: int, width: int = 2,
                      progress: bool = True, device: str | torch.device = "cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics at every checkpoint -> (one row per step, one row per step and head); probes on `device`."""
    rows, heads, hooked = [], [], None
    for path in tqdm(paths, desc="checkpoints", disable=not progress, leave=False):
        hooked, step = load_hooked(path, hooked, device)
        row, head_rows = curve_row(hooked, probes, step, early, late, width)
        rows.append(row)
        heads += head_rows
    return pd.DataFrame(rows), pd.DataFrame(heads)


# ---------------------------------------------------------------------------------------------
# Objectives (what attribution explains): differentiable scalars of a HookedTransformer


def induction_objective(tokens: Int[Tensor, "batch two_half"], layer: int, head: int | None = None,
                        negate: bool = False) -> Objective:
    """hooked -> mean induction score of one head (or the sum over the layer's heads) on [r; r] tokens, with grad.

    negate: return minus the score, an objective that falls as the head forms (the convention of `tracin`).
    """

    def objective(hooked) -> Tensor:
        store = {}
        hooked.run_with_hooks(tokens, return_type=None, stop_at_layer=layer + 1,
                              fwd_hooks=[(hooks.name("pattern", layer), lambda t, hook: store.setdefault("p", t))])
        score = metrics.induction_from_patterns(store["p"]).mean(0)  # [head]
        value = score.sum() if head is None else score[head]
        return -value if negate else value

    return objective


def icl_objective(tokens: Int[Tensor, "batch pos"], early: int, late: int, width: int = 2) -> Objective:
    """hooked -> mean in-context-learning score (loss late minus loss early) on `tokens`, with grad."""

    def objective(hooked) -> Tensor:
        logits = hooked(tokens).float()
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
        return metrics.icl_score(loss, early, late, width).mean()

    return objective


# ---------------------------------------------------------------------------------------------
# Data dimensionality D* (Henighan et al. 2023, "Superposition, Memorization, and Double Descent")


@torch.no_grad()
def sequence_representations(hooked, tokens: Int[Tensor, "n pos"], layer: int | None = None,
                             chunk: int = 128) -> Float[Tensor, "n d_model"]:
    """Residual stream after `layer` (default: the last) averaged over positions, one vector per sequence."""
    layer = hooked.cfg.n_layers - 1 if layer is None else layer
    name = hooks.name("resid_post", layer)
    out = []
    for i in range(0, len(tokens), chunk):
        _, cache = hooked.run_with_cache(tokens[i : i + chunk], names_filter=lambda n: n == name,
                                         stop_at_layer=layer + 1)
        out.append(cache[name].mean(1))
    return torch.cat(out)


def data_dimensionality(h: Float[Tensor, "n d"], center: bool = True) -> Float[Tensor, "n"]:
    """D*_i = ||h_i||^2 / sum_j (h_i_hat . h_j)^2 per example (1 = orthogonal to every other; sum <= rank)."""
    h = h.double()
    if center:
        h = h - h.mean(0)
    gram = h @ h.T
    sq = gram.diagonal()
    return (sq**2 / (gram**2).sum(1).clamp_min(1e-300)).float()
