"""Report 5's parameters: the k grid, the trained layers, unit measures, the hypothesis-B test, the pretrained path."""

from __future__ import annotations

from dataclasses import dataclass

from lib.analysis.kwta import SPARSE_LAYER, SparseLayerParams
from lib.analysis.prompts import KEYWORDS, KeywordParams
from lib.core import params
from lib.core.params import Params


@dataclass(frozen=True)
class SparseParams(Params):
    """layer: the trained k-WTA layer's knobs (shared with report 7, which reuses the focus layer at layer.k_frac);
    k_fracs: winners as a share of the layer's units; seeds: the layers' training seeds; n_train / n_eval: training
    and held-out windows; n_top: top activations per unit for the monosemanticity score; keywords / n_prompts /
    frac / n_random / noise_*: the hypothesis-B test, as in report 3; n_rotations: random rotations per basis (the
    basis control); n_shuffles: window-level label shuffles (the monosemanticity null)."""

    layer: SparseLayerParams
    keywords: KeywordParams
    k_fracs: tuple[float, ...]
    seeds: tuple[int, ...]
    n_eval: int
    n_windows: int
    n_top: int
    n_shown: int
    n_contexts: int
    n_prompts: int
    frac: float
    n_random: int
    noise_intensities: tuple[float, ...]
    noise_seeds: tuple[int, ...]
    n_boot: int
    pretrained_steps: int
    pretrained_windows: int
    n_rotations: int = 3
    n_shuffles: int = 100

    def validate(self) -> None:
        params.shares(self, "k_fracs", "frac")
        params.at_least(self, 0, "seeds", "noise_intensities", "noise_seeds")
        params.at_least(self, 1, "n_eval", "n_windows", "n_top", "n_shown", "n_contexts", "n_prompts", "n_random",
                        "n_boot", "pretrained_steps", "pretrained_windows", "n_rotations", "n_shuffles")


PRESETS = {
    "smoke": SparseParams(layer=SPARSE_LAYER["smoke"], keywords=KEYWORDS["smoke"], k_fracs=(0.05, 0.25), seeds=(0, 1),
                          n_eval=16, n_windows=6, n_top=20, n_shown=2, n_contexts=3, n_prompts=8, frac=0.1, n_random=4,
                          noise_intensities=(0.0, 1.0, 4.0), noise_seeds=(0, 1), n_boot=200, pretrained_steps=5,
                          pretrained_windows=16, n_rotations=1, n_shuffles=10),
    "cpu": SparseParams(layer=SPARSE_LAYER["cpu"], keywords=KEYWORDS["cpu"], k_fracs=(0.01, 0.02, 0.05, 0.1, 0.25),
                        seeds=(0, 1), n_eval=256, n_windows=32, n_top=100, n_shown=3, n_contexts=5, n_prompts=60,
                        frac=0.025, n_random=24, noise_intensities=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), noise_seeds=(0, 1, 2),
                        n_boot=1000, pretrained_steps=200, pretrained_windows=1024),
    "gpu": SparseParams(layer=SPARSE_LAYER["gpu"], keywords=KEYWORDS["gpu"], k_fracs=(0.01, 0.02, 0.05, 0.1, 0.25),
                        seeds=(0, 1, 2), n_eval=1024, n_windows=256, n_top=200, n_shown=4, n_contexts=6, n_prompts=200,
                        frac=0.025, n_random=100, noise_intensities=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0),
                        noise_seeds=(0, 1, 2, 3, 4), n_boot=1000, pretrained_steps=2000, pretrained_windows=8192),
}


def resolve(preset: str, steps: int | None = None, **overrides) -> SparseParams:
    """The preset's parameters with every override that is not None applied; `steps` sets layer.steps (the
    notebook's parameters cell exposes it flat)."""
    nb = params.resolve(PRESETS, preset, **overrides)
    return nb if steps is None else nb.replace(layer=nb.layer.replace(steps=steps))
