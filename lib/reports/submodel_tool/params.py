"""Report 7's parameters: the methods, the concepts' windows and prompts, validation, latents, the sparse layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.analysis.kwta import SPARSE_LAYER, SparseLayerParams
from lib.analysis.prompts import KEYWORDS, KeywordParams
from lib.core import params
from lib.core.checks import check
from lib.core.params import Params
from lib.reports.submodel_tool.kernel import KINDS, METHODS


@dataclass(frozen=True)
class SubmodelParams(Params):
    """Sub-models per concept (DBpedia classes; toxic vs harmless), found on n_windows fit-split windows per concept
    and validated on the held-out keyword prompts (n_prompts per topic, half of them for the Shapley game); frac =
    units per hook; latent_k latents per concept of an SAE (sae_d_latent active of a 4x dictionary) or an InfoVAE
    (infovae_d_latent) at the last MLP's output; layer: report 5's focus layer (reused when report 5 trained it);
    n_random size-matched random sub-models per validation."""

    keywords: KeywordParams
    layer: SparseLayerParams
    methods: tuple[str, ...]
    n_prompts: int
    n_windows: int
    frac: float
    n_random: int
    kind: Literal["zero", "mean", "noise"]
    intensity: float
    n_permutations: int
    latent_k: int
    sae_d_latent: int
    infovae_d_latent: int
    latent_steps: int
    n_shown: int
    n_boot: int

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        check(not unknown, "SubmodelParams.methods", self.methods, f"a tuple of {METHODS}")
        check(self.kind in KINDS, "SubmodelParams.kind", self.kind, f"one of {KINDS}")
        params.shares(self, "frac")
        params.at_least(self, 0, "intensity")
        params.at_least(self, 1, "n_prompts", "n_windows", "n_random", "n_permutations", "latent_k", "sae_d_latent",
                        "infovae_d_latent", "latent_steps", "n_shown", "n_boot")


ALL = ("selectivity", "shapley", "sae", "infovae", "sparse")
PRESETS = {
    "smoke": SubmodelParams(keywords=KEYWORDS["smoke"], layer=SPARSE_LAYER["smoke"], methods=ALL, n_prompts=6,
                            n_windows=4, frac=0.1, n_random=4, kind="zero", intensity=1.0, n_permutations=2, latent_k=2,
                            sae_d_latent=4, infovae_d_latent=4, latent_steps=20, n_shown=1, n_boot=200),
    "cpu": SubmodelParams(keywords=KEYWORDS["cpu"], layer=SPARSE_LAYER["cpu"], methods=ALL, n_prompts=48, n_windows=32,
                          frac=0.025, n_random=20, kind="zero", intensity=1.0, n_permutations=10, latent_k=4,
                          sae_d_latent=8, infovae_d_latent=16, latent_steps=600, n_shown=1, n_boot=1000),
    "gpu": SubmodelParams(keywords=KEYWORDS["gpu"], layer=SPARSE_LAYER["gpu"], methods=ALL, n_prompts=128,
                          n_windows=128, frac=0.025, n_random=100, kind="zero", intensity=1.0, n_permutations=50,
                          latent_k=8, sae_d_latent=32, infovae_d_latent=32, latent_steps=3000, n_shown=2, n_boot=1000),
}


def resolve(preset: str, **overrides) -> SubmodelParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
