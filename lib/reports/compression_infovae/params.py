"""Report 2's parameters: which components are compressed, the compressors' training, probes and traversals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lib.core import params
from lib.core.params import Params

Hook = tuple[str, str, int]  # (base model "attn" | "mlp", lib.core.hooks kind, layer)


@dataclass(frozen=True)
class CompressionParams(Params):
    """hooks: the compressed components; sizes: latent sizes (None = powers of two up to d_model); seeds: the
    compressors' seeds; model_seeds: the base models' training seeds (the extra ones train if absent)."""

    hooks: tuple[Hook, ...]
    latent_hook: Hook  # where the latent probes and traversals look
    sizes: tuple[int, ...] | None
    seeds: tuple[int, ...]
    model_seeds: tuple[int, ...]
    n_fit: int  # windows whose activations fit a compressor
    n_eval: int  # windows the splice is evaluated on
    steps: int
    d_hidden: int
    batch_size: int
    lr: float
    lambda_mmd: float
    beta: float
    kernel: Literal["rbf", "imq"]
    sae_expansion: int
    n_per_topic: int  # article openings per topic for the probes
    probe_steps: int
    n_traverse: int
    n_keyword_prompts: int
    pretrained_n_sizes: int
    pretrained_n_fit: int
    pretrained_n_eval: int

    def validate(self) -> None:
        params.at_least(self, 1, "n_fit", "n_eval", "steps", "d_hidden", "batch_size", "sae_expansion", "n_per_topic",
                        "probe_steps", "n_traverse", "n_keyword_prompts", "pretrained_n_sizes", "pretrained_n_fit",
                        "pretrained_n_eval")
        params.at_least(self, 0, "seeds", "model_seeds", "lambda_mmd", "beta")
        if self.sizes is not None:
            params.at_least(self, 1, "sizes")
        params.at_least(self, 1e-12, "lr")


HOOKS = (("attn", "attn_out", 0), ("attn", "attn_out", 1), ("mlp", "mlp_out", 1))
PRESETS = {
    "smoke": CompressionParams(hooks=HOOKS, latent_hook=("mlp", "mlp_out", 1), sizes=(1, 8, 32), seeds=(0, 1),
                               model_seeds=(0, 1), n_fit=64, n_eval=32, steps=60, d_hidden=32, batch_size=128, lr=3e-3,
                               lambda_mmd=1.0, beta=0.0, kernel="rbf", sae_expansion=4, n_per_topic=6, probe_steps=50,
                               n_traverse=4, n_keyword_prompts=3, pretrained_n_sizes=3, pretrained_n_fit=32,
                               pretrained_n_eval=16),
    "cpu": CompressionParams(hooks=HOOKS, latent_hook=("mlp", "mlp_out", 1), sizes=None, seeds=(0, 1), model_seeds=(0,),
                             n_fit=1024, n_eval=256, steps=600, d_hidden=128, batch_size=256, lr=3e-3, lambda_mmd=1.0,
                             beta=0.0, kernel="rbf", sae_expansion=4, n_per_topic=40, probe_steps=200, n_traverse=8,
                             n_keyword_prompts=20, pretrained_n_sizes=6, pretrained_n_fit=512, pretrained_n_eval=128),
    "gpu": CompressionParams(hooks=(*HOOKS[:2], ("mlp", "mlp_out", 0), HOOKS[2]), latent_hook=("mlp", "mlp_out", 1),
                             sizes=None, seeds=(0, 1, 2), model_seeds=(0, 1, 2), n_fit=4096, n_eval=1024, steps=3000,
                             d_hidden=512, batch_size=1024, lr=1e-3, lambda_mmd=1.0, beta=0.0, kernel="rbf",
                             sae_expansion=4, n_per_topic=150, probe_steps=300, n_traverse=16, n_keyword_prompts=50,
                             pretrained_n_sizes=10, pretrained_n_fit=2048, pretrained_n_eval=512),
}


def resolve(preset: str, **overrides) -> CompressionParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
