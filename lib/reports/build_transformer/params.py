"""Report 1's parameters (besides the model, data and training configs of `lib.core.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from lib.core import params
from lib.core.params import Params
from lib.core.runs import BENCH_STEPS


@dataclass(frozen=True)
class BuildParams(Params):
    """The benchmark grid (depth x MLP x seed, a short fixed budget each), induction-score sequences, samples."""

    bench_layers: tuple[int, ...]
    bench_seeds: tuple[int, ...]
    bench_steps: int  # lib.core.runs.BENCH_STEPS: report 3 reuses these runs as its early model
    n_induction_seqs: int
    n_samples: int

    def validate(self) -> None:
        params.at_least(self, 1, "bench_layers", "bench_steps", "n_induction_seqs", "n_samples")
        params.at_least(self, 0, "bench_seeds")


PRESETS = {
    "smoke": BuildParams(bench_layers=(1, 2), bench_seeds=(0, 1), bench_steps=BENCH_STEPS["smoke"], n_induction_seqs=16,
                         n_samples=2),
    "cpu": BuildParams(bench_layers=(1, 2, 3), bench_seeds=(0, 1), bench_steps=BENCH_STEPS["cpu"], n_induction_seqs=200,
                       n_samples=3),
    "gpu": BuildParams(bench_layers=(1, 2, 3), bench_seeds=(0, 1, 2), bench_steps=BENCH_STEPS["gpu"],
                       n_induction_seqs=500, n_samples=3),
}


def resolve(preset: str, **overrides) -> BuildParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
