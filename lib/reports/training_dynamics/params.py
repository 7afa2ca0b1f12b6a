"""Report 6's parameters: the dense-checkpoint runs, the probes, and training-data attribution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lib.core import params
from lib.core.checks import check
from lib.core.params import Params


@dataclass(frozen=True)
class DynamicsParams(Params):
    """run: overrides of the preset's training config (attention-only is set by the notebook); n_log / n_linear: the
    dense checkpoint schedule of the main run and of the control, *_extra that of the other seeds, which train for
    extra_max_steps (None: as long as the main run); min_jump: the smallest rise of the max induction score that
    counts as a phase change; n_dense: checkpoints added inside the main run's phase-change window (by exact resume),
    n_phase: checkpoints per phase before and after it for the per-phase TracIn (all saved ones inside it count);
    n_tracin: evenly spaced checkpoints of the other runs; llc_*: the local learning coefficient's SGLD grid (steps
    `llc_lrs` x localisations `llc_localizations`, chosen by `llc.choose` at the calibration checkpoints), chains,
    draws after `llc_burnin` burn-in steps, batch size, `llc_max_rise` the largest rise of the sampled loss over the
    checkpoint's (nats) that still counts as localised, n_llc checkpoints of the main run, n_llc_data sequences."""

    run: dict[str, Any]
    extra_max_steps: int | None
    min_jump: float
    n_seeds: int
    n_log: int
    n_linear: int
    n_log_extra: int
    n_linear_extra: int
    n_probe: int
    n_eval: int
    n_attr: int
    attr_planted_frac: float
    n_tracin: int
    n_dense: int
    n_phase: int
    chunk: int
    proj_dim: int
    n_dstar: int
    n_show: int
    rep_threshold: float
    llc_lrs: tuple[float, ...]
    llc_localizations: tuple[float, ...]
    llc_chains: int
    llc_draws: int
    llc_burnin: int
    llc_batch: int
    llc_max_rise: float
    n_llc: int
    n_llc_data: int

    def validate(self) -> None:
        check(isinstance(self.run, dict), "DynamicsParams.run", self.run, "a dict of training-config overrides")
        params.at_least(self, 1, "n_seeds", "n_log", "n_linear", "n_log_extra", "n_linear_extra", "n_probe", "n_eval",
                        "n_attr", "n_tracin", "n_dense", "n_phase", "chunk", "proj_dim", "n_dstar", "n_show",
                        "llc_draws", "llc_burnin", "n_llc", "n_llc_data")
        params.at_least(self, 2, "llc_chains", "llc_batch")
        check(len(self.llc_lrs) > 0 and all(x > 0 for x in self.llc_lrs), "DynamicsParams.llc_lrs", self.llc_lrs,
              "a non-empty tuple of positive SGLD step sizes")
        check(len(self.llc_localizations) > 0 and all(x >= 0 for x in self.llc_localizations),
              "DynamicsParams.llc_localizations", self.llc_localizations, "a non-empty tuple of localisations >= 0")
        check(self.llc_max_rise > 0, "DynamicsParams.llc_max_rise", self.llc_max_rise, "> 0 (nats)")
        params.at_least(self, 0, "min_jump")
        params.shares(self, "attr_planted_frac", "rep_threshold")
        if self.extra_max_steps is not None:
            params.at_least(self, 1, "extra_max_steps")


PRESETS = {
    "smoke": DynamicsParams(run=dict(max_steps=60, warmup_steps=10), extra_max_steps=None, min_jump=0.0, n_seeds=2,
                            n_log=6, n_linear=8, n_log_extra=4, n_linear_extra=5, n_probe=16, n_eval=32, n_attr=96,
                            attr_planted_frac=0.25, n_tracin=3, n_dense=3, n_phase=2, chunk=32, proj_dim=64, n_dstar=96,
                            n_show=2, rep_threshold=0.2, llc_lrs=(1e-4, 1e-3), llc_localizations=(1000.0,),
                            llc_chains=2, llc_draws=8, llc_burnin=2, llc_batch=8, llc_max_rise=1.0, n_llc=4,
                            n_llc_data=64),
    "cpu": DynamicsParams(run=dict(max_steps=3000), extra_max_steps=5000, min_jump=0.1, n_seeds=5, n_log=20,
                          n_linear=40, n_log_extra=12, n_linear_extra=20, n_probe=48, n_eval=192, n_attr=1024,
                          attr_planted_frac=0.1, n_tracin=8, n_dense=8, n_phase=4, chunk=64, proj_dim=512, n_dstar=512,
                          n_show=4, rep_threshold=0.2, llc_lrs=(1e-5, 1e-4, 1e-3), llc_localizations=(300.0, 3000.0),
                          llc_chains=3, llc_draws=80, llc_burnin=20, llc_batch=16, llc_max_rise=1.0, n_llc=12,
                          n_llc_data=2048),
    "gpu": DynamicsParams(run=dict(n_ctx=128, plant_min=32, plant_max=64, d_model=256, n_heads=8, d_head=32,
                                   vocab_size=4096, tokenizer="bpe", task="windows", plant_frac=0.5, batch_size=64,
                                   max_steps=12000, lr=1e-3, warmup_steps=300, dropout=0.0),
                          extra_max_steps=None, min_jump=0.1, n_seeds=5, n_log=30, n_linear=80, n_log_extra=20,
                          n_linear_extra=40, n_probe=200, n_eval=512, n_attr=8192, attr_planted_frac=0.1, n_tracin=20,
                          n_dense=16, n_phase=8,
                          chunk=128, proj_dim=2048, n_dstar=2048, n_show=6, rep_threshold=0.2,
                          llc_lrs=(1e-5, 3e-5, 1e-4, 3e-4, 1e-3), llc_localizations=(100.0, 300.0, 1000.0, 3000.0),
                          llc_chains=4, llc_draws=400, llc_burnin=100, llc_batch=32, llc_max_rise=1.0, n_llc=30,
                          n_llc_data=8192),
}


def resolve(preset: str, **overrides) -> DynamicsParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
