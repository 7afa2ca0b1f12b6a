"""Report 4's parameters: the neuron game, the TMC runs, removal curves, specificity and the TMAB-vs-TMC cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.analysis.prompts import KEYWORDS, KeywordParams
from lib.core import params
from lib.core.checks import check
from lib.core.params import Params


@dataclass(frozen=True)
class ShapleyParams(Params):
    """layers: the MLP layers whose neurons are players (None = all; the cpu preset takes the last layer, whose
    coalitions cost one position per prompt); n_prompts per topic define the game, n_eval_prompts (other held-out
    articles) measure removals; n_permutations for the trained model's TMC run (every topic at once),
    n_permutations_control for the seed-1 and init runs; k = top-k for specificity, seeds and TMAB; cost_* = the
    single-topic TMAB vs TMC comparison; gate_probes: play only topics whose keyword probe beats a unigram baseline
    (report 3's gate; off only for `smoke`, a code check whose model knows nothing)."""

    keywords: KeywordParams
    layers: tuple[int, ...] | None
    n_prompts: int
    n_eval_prompts: int
    n_windows: int
    ablation: Literal["zero", "mean"]
    truncation_tol: float
    truncation_check_tols: tuple[float, ...]  # section 3's check: truncation at these tolerances on ...
    truncation_check_permutations: int  # ... this many walks, against the same walks untruncated
    n_permutations: int
    n_permutations_control: int
    k: int
    removal_ks: tuple[int, ...]
    n_random: int
    cost_topics: tuple[str, ...]
    cost_permutations: int
    tmab_delta: float
    stable_for: int  # TMC's stopping rule in the cost comparison: the top-k unchanged this many permutations
    n_match_windows: int
    n_boot: int
    gate_probes: bool = True
    n_random_sets: int = 39  # random k-sets of the specificity test: (1 + 39)^-1 = 0.025, so p can reach 0.05

    def validate(self) -> None:
        params.at_least(self, 1, "n_prompts", "n_eval_prompts", "n_windows", "n_permutations", "n_permutations_control",
                        "k", "n_random", "n_random_sets", "cost_permutations", "n_match_windows", "n_boot", "stable_for",
                        "truncation_check_permutations")
        params.at_least(self, 0, "removal_ks")
        if self.layers is not None:
            params.at_least(self, 0, "layers")
        check(0 <= self.truncation_tol < 1, "ShapleyParams.truncation_tol", self.truncation_tol, "a float in [0, 1)")
        for tol in self.truncation_check_tols:
            check(0 < tol < 1, "ShapleyParams.truncation_check_tols", self.truncation_check_tols, "floats in (0, 1)")
        check(0 < self.tmab_delta < 1, "ShapleyParams.tmab_delta", self.tmab_delta, "a float in (0, 1)")


PRESETS = {
    "smoke": ShapleyParams(keywords=KEYWORDS["smoke"], layers=None, n_prompts=4, n_eval_prompts=4, n_windows=6,
                           ablation="zero", truncation_tol=0.0, truncation_check_tols=(0.01, 0.2),
                           truncation_check_permutations=2, n_permutations=3, n_permutations_control=2, k=4,
                           removal_ks=(0, 1, 2, 4, 8, 16, 32), n_random=3, cost_topics=("Athlete", "Album"),
                           cost_permutations=8, tmab_delta=0.1, stable_for=3, n_match_windows=4, n_boot=200, gate_probes=False),
    "cpu": ShapleyParams(keywords=KEYWORDS["cpu"], layers=(1,), n_prompts=16, n_eval_prompts=24, n_windows=48,
                         ablation="zero", truncation_tol=0.0, truncation_check_tols=(0.01, 0.05, 0.2),
                         truncation_check_permutations=5, n_permutations=100, n_permutations_control=50, k=10,
                         removal_ks=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256), n_random=10,
                         cost_topics=("Athlete", "Album", "Animal", "Artist"), cost_permutations=200, tmab_delta=0.05,
                         stable_for=20, n_match_windows=24, n_boot=1000),
    "gpu": ShapleyParams(keywords=KEYWORDS["gpu"], layers=None, n_prompts=32, n_eval_prompts=64, n_windows=256,
                         ablation="zero", truncation_tol=0.0, truncation_check_tols=(0.01, 0.05, 0.2),
                         truncation_check_permutations=10, n_permutations=200, n_permutations_control=100, k=20,
                         removal_ks=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), n_random=20,
                         cost_topics=("Athlete", "Album", "Animal", "Artist", "Company", "Film"), cost_permutations=300,
                         tmab_delta=0.05, stable_for=20, n_match_windows=128, n_boot=1000),
}


def resolve(preset: str, **overrides) -> ShapleyParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
