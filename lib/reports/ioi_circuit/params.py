"""Report 8's parameters: the IOI data (names, templates, mixing fraction), the runs and their checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lib.core import params
from lib.core.checks import check
from lib.core.params import Params

DATA_FIELDS = ("n_names", "n_heldout_names", "heldout_names", "n_places", "n_objects", "n_heldout_templates",
               "min_count", "ioi_frac", "data_seed")


@dataclass(frozen=True)
class IOIParams(Params):
    """run: overrides of the preset's training config; n_names first names from the corpus (n_heldout_names of them
    never in a training sentence: a random draw, or the ones used most in the corpus text, whose tokens natural
    text trains best), n_places / n_objects corpus words, each used >= min_count times in the corpus;
    n_heldout_templates templates never in a training sentence; ioi_frac: the fraction of training windows that
    carry one IOI sentence (only windows without a planted repeat); data_seed: the IOI data (the same for every
    training seed); n_eval prompts per evaluation set; n_log / n_linear: the dense checkpoint schedule; n_seeds
    attention-only training seeds and mlp_seeds with-MLP ones (0: none).

    The circuit: n_patch prompts per patching run (held-out templates); n_movers heads with the largest direct effect
    taken as the receivers of path patching; min_effect, the fraction of the logit difference a head must carry
    (total, direct or through the receivers) to join the circuit, fixed before looking; n_random same-size head
    sets for faithfulness (all of them, and an exact p, when there are fewer); formed_acc, the held-out-template
    accuracy that counts as formed. Attribution (TracIn as report 6): n_attr training windows of which attr_ioi_frac
    carry an IOI sentence, n_tracin checkpoints, the pre-registered top fraction top_frac."""

    run: dict[str, Any]
    n_names: int
    n_heldout_names: int
    heldout_names: Literal["random", "frequent"]
    n_places: int
    n_objects: int
    n_heldout_templates: int
    min_count: int
    ioi_frac: float
    data_seed: int
    n_eval: int
    n_log: int
    n_linear: int
    n_seeds: int
    mlp_seeds: int
    n_patch: int
    n_movers: int
    min_effect: float
    n_random: int
    formed_acc: float
    n_attr: int
    attr_ioi_frac: float
    n_tracin: int
    top_frac: float

    def validate(self) -> None:
        check(isinstance(self.run, dict), "IOIParams.run", self.run, "a dict of training-config overrides")
        params.at_least(self, 1, "n_places", "n_objects", "n_heldout_templates", "min_count", "n_eval", "n_seeds")
        params.at_least(self, 0, "n_log", "n_linear", "data_seed")
        params.at_least(self, 5, "n_heldout_names")
        check(self.n_names >= self.n_heldout_names + 5, "IOIParams.n_names", self.n_names,
              f">= n_heldout_names + 5 = {self.n_heldout_names + 5} (each split needs 5 distinct names)")
        params.shares(self, "ioi_frac", "min_effect", "formed_acc", "attr_ioi_frac", "top_frac")
        params.at_least(self, 0, "mlp_seeds")
        params.at_least(self, 1, "n_movers", "n_random", "n_tracin")
        params.at_least(self, 8, "n_patch", "n_attr")

    def data_key(self) -> dict[str, Any]:
        """The fields that decide the IOI data (what its artifacts are keyed by, with the data config)."""
        return {k: getattr(self, k) for k in DATA_FIELDS}


# cpu follows bench/results/ioi_recipe_cpu.txt: no planted repeats and half the windows carrying an IOI sentence;
# held-out-template accuracy passed 0.8 at step 1,600 and 2,300 (2-layer attention-only, seeds 0 and 1), 1,800
# (3 layers) and 3,600 (2 layers with MLPs), on a cosine schedule of 6,000 steps, the one kept here. smoke needs
# n_ctx 64 (its 300-token BPE spells a sentence in up to 46 tokens). gpu is not measured.
PRESETS = {
    "smoke": IOIParams(run=dict(n_ctx=64, plant_frac=0.0, max_steps=40, warmup_steps=5, eval_every=20,
                                checkpoint_every=20),
                       n_names=20, n_heldout_names=6, heldout_names="random", n_places=6, n_objects=6,
                       n_heldout_templates=26, min_count=5, ioi_frac=0.5, data_seed=0, n_eval=32, n_log=4, n_linear=4,
                       n_seeds=2, mlp_seeds=1, n_patch=16, n_movers=2, min_effect=0.1, n_random=20, formed_acc=0.8, n_attr=64, attr_ioi_frac=0.1, n_tracin=3, top_frac=0.1),
    "cpu": IOIParams(run=dict(plant_frac=0.0, max_steps=6000), n_names=100, n_heldout_names=20,
                     heldout_names="random", n_places=16, n_objects=16, n_heldout_templates=26, min_count=20,
                     ioi_frac=0.5, data_seed=0, n_eval=512, n_log=20, n_linear=30, n_seeds=3,
                     mlp_seeds=1, n_patch=256, n_movers=2, min_effect=0.1, n_random=1000, formed_acc=0.8, n_attr=2000, attr_ioi_frac=0.1, n_tracin=8, top_frac=0.1),
    "gpu": IOIParams(run=dict(n_ctx=128, d_model=256, n_heads=8, d_head=32, vocab_size=4096, tokenizer="bpe",
                              task="windows", plant_frac=0.0, batch_size=64, max_steps=12000, lr=1e-3,
                              warmup_steps=300, dropout=0.0),
                     n_names=100, n_heldout_names=20, heldout_names="random", n_places=16, n_objects=16,
                     n_heldout_templates=26, min_count=20, ioi_frac=0.5, data_seed=0, n_eval=2048, n_log=30,
                     n_linear=60, n_seeds=5, mlp_seeds=3, n_patch=512, n_movers=3, min_effect=0.1, n_random=1000, formed_acc=0.8, n_attr=8000, attr_ioi_frac=0.1, n_tracin=12, top_frac=0.1),
}


def resolve(preset: str, **overrides) -> IOIParams:
    """The preset's parameters with every override that is not None applied."""
    return params.resolve(PRESETS, preset, **overrides)
