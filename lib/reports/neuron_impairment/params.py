"""Report 3's parameters: clusters, the dose grid, the random-cluster null, the early model, matching, bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

from lib.analysis.prompts import KEYWORDS, KeywordParams
from lib.core import params
from lib.core.checks import check
from lib.core.params import Params
from lib.core.runs import BENCH_STEPS


@dataclass(frozen=True)
class ImpairmentParams(Params):
    """frac: units per layer in a cluster; noise intensities are in units of each unit's activation sd, scale
    intensities the fraction removed (factor 1 - intensity); early_steps: the early model is report 1's benchmark
    run of that many steps (lib.core.runs.BENCH_STEPS); tolerance_seeds: the training seeds of the final and of
    the early models compared by their tolerance (at least 3 each for a seed-to-seed spread); alpha: the level of
    every permutation test, fixed before looking; gate_probes: run a test only if its topics' probes beat the
    unigram baseline (off only for `smoke`, whose 20-step model is a code check and knows nothing)."""

    keywords: KeywordParams
    frac: float
    n_prompts: int  # keyword prompts per topic
    n_windows: int  # fit-split windows per topic for the activation statistics
    noise_intensities: tuple[float, ...]
    scale_intensities: tuple[float, ...]
    noise_seeds: tuple[int, ...]
    n_random: int  # random clusters of the same size (the null)
    tolerance_intensities: tuple[float, ...]
    early_steps: int
    tolerance_seeds: tuple[int, ...]
    n_match_windows: int
    n_boot: int
    alpha: float = 0.05
    gate_probes: bool = True

    def validate(self) -> None:
        params.shares(self, "frac")
        params.at_least(self, 0, "noise_intensities", "tolerance_intensities", "noise_seeds", "scale_intensities")
        params.at_least(self, 1, "n_prompts", "n_windows", "n_random", "early_steps", "n_match_windows", "n_boot")
        params.at_least(self, 0, "tolerance_seeds")
        check(len(set(self.tolerance_seeds)) >= 2, "ImpairmentParams.tolerance_seeds", self.tolerance_seeds,
              "at least 2 distinct seeds (3 or more for a spread worth reading)")
        check(0 < self.alpha < 1, "ImpairmentParams.alpha", self.alpha, "a level in (0, 1)")
        check(all(a <= 1 for a in self.scale_intensities), "ImpairmentParams.scale_intensities",
              self.scale_intensities, "fractions removed in [0, 1]")


NOISE = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SCALE = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TOLERANCE = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
PRESETS = {
    "smoke": ImpairmentParams(keywords=KEYWORDS["smoke"], frac=0.1, n_prompts=8, n_windows=6,
                              noise_intensities=(0.0, 1.0, 4.0), scale_intensities=(0.0, 0.5, 1.0), noise_seeds=(0, 1, 2),
                              n_random=4, tolerance_intensities=(0.0, 2.0, 8.0, 32.0), early_steps=BENCH_STEPS["smoke"],
                              tolerance_seeds=(0, 1, 2), n_match_windows=4, n_boot=200, gate_probes=False),
    "cpu": ImpairmentParams(keywords=KEYWORDS["cpu"], frac=0.025, n_prompts=60, n_windows=48, noise_intensities=NOISE,
                            scale_intensities=SCALE, noise_seeds=(0, 1, 2), n_random=24, tolerance_intensities=TOLERANCE,
                            early_steps=BENCH_STEPS["cpu"], tolerance_seeds=(0, 1, 2), n_match_windows=24, n_boot=1000),
    "gpu": ImpairmentParams(keywords=KEYWORDS["gpu"], frac=0.025, n_prompts=200, n_windows=256, noise_intensities=NOISE,
                            scale_intensities=SCALE, noise_seeds=(0, 1, 2, 3, 4), n_random=100,
                            tolerance_intensities=TOLERANCE, early_steps=BENCH_STEPS["gpu"], tolerance_seeds=(0, 1, 2),
                            n_match_windows=128,
                            n_boot=1000),
}


def resolve(preset: str, **overrides) -> ImpairmentParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
