"""Frozen configs per concern, the presets, and `resolve` (preset + overrides -> RunConfig)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from lib.core.checks import check, positive_int

PRESET_NAMES = ("smoke", "cpu", "gpu")




@dataclass(frozen=True)
class ModelConfig:
    """Shape of our decoder-only transformer; `d_head`/`d_mlp` None = derived (d_model/n_heads, 4*d_model)."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 128
    d_head: int | None = None
    d_mlp: int | None = None
    d_vocab: int = 1024
    n_ctx: int = 64
    attention_only: bool = False
    dropout: float = 0.0
    act_fn: str = "gelu"
    ln_eps: float = 1e-5
    init_range: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_vocab", "n_ctx"):
            positive_int(name, getattr(self, name))
        if self.d_head is None:
            check(self.d_model % self.n_heads == 0, "d_head", None,
                   f"an explicit d_head when d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        positive_int("d_head", self.d_head)
        if self.attention_only:
            check(self.d_mlp in (None, 0), "d_mlp", self.d_mlp, "None or 0 for an attention-only model")
            object.__setattr__(self, "d_mlp", 0)
        else:
            if self.d_mlp is None:
                object.__setattr__(self, "d_mlp", 4 * self.d_model)
            positive_int("d_mlp", self.d_mlp)
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "a float in [0, 1)")
        check(self.act_fn in ("gelu", "gelu_new", "relu"), "act_fn", self.act_fn, "'gelu', 'gelu_new' or 'relu'")

    @property
    def n_params(self) -> int:
        """Parameter count (embeddings included)."""
        d, h, dh = self.d_model, self.n_heads, self.d_head
        attn = 4 * h * dh * d + 3 * h * dh + d
        mlp = 0 if self.attention_only else 2 * d * self.d_mlp + self.d_mlp + d
        lns = (2 if self.attention_only else 4) * d
        per_layer = attn + mlp + lns
        return self.n_layers * per_layer + 2 * d + self.d_vocab * d * 2 + self.d_vocab + self.n_ctx * d


@dataclass(frozen=True)
class DataConfig:
    """What the model reads: tokenizer, sample format, planted repeats (induction bait)."""

    tokenizer: str = "bpe"  # "bpe" (trained here) | "gpt2" (shipped vocabulary)
    vocab_size: int = 1024  # for "bpe"; "gpt2" is always 50257
    task: str = "windows"  # "windows" (LM windows of n_ctx tokens) | "beginnings" (article openings)
    n_ctx: int = 64
    beginning_tokens: int = 20  # the report's sample: an article's first tokens, predict each next one
    plant_frac: float = 0.5  # fraction of training windows that carry an adjacent repeated span
    plant_min: int = 16
    plant_max: int = 32
    corpus: tuple[str, ...] = ("dbpedia14_train", "dbpedia14_extra", "dbpedia_l2")

    def __post_init__(self) -> None:
        check(self.tokenizer in ("bpe", "gpt2"), "tokenizer", self.tokenizer, "'bpe' or 'gpt2'")
        check(self.task in ("windows", "beginnings"), "task", self.task, "'windows' or 'beginnings'")
        if self.tokenizer == "gpt2":
            object.__setattr__(self, "vocab_size", 50257)
        check(isinstance(self.vocab_size, int) and self.vocab_size >= 260, "vocab_size", self.vocab_size,
               "an integer >= 260 (256 bytes plus special tokens)")
        for name in ("n_ctx", "beginning_tokens", "plant_min", "plant_max"):
            positive_int(name, getattr(self, name))
        check(0.0 <= self.plant_frac <= 1.0, "plant_frac", self.plant_frac, "a float in [0, 1]")
        check(self.plant_min <= self.plant_max, "plant_min", self.plant_min, f"<= plant_max={self.plant_max}")
        check(2 * self.plant_max <= self.n_ctx or self.plant_frac == 0.0, "plant_max", self.plant_max,
               f"at most n_ctx/2={self.n_ctx / 2} so that a span and its copy fit in a window")
        object.__setattr__(self, "corpus", tuple(self.corpus))


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule, evaluation and checkpoint cadence."""

    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    warmup_steps: int = 100
    max_steps: int = 1000
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 250
    seed: int = 0
    precision: str = "fp32"  # "fp32" | "bf16" (autocast)

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "eval_every", "eval_batches", "checkpoint_every"):
            positive_int(name, getattr(self, name))
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps",
               self.warmup_steps, "a non-negative integer")
        check(self.lr > 0, "lr", self.lr, "a positive float")
        check(0.0 <= self.min_lr_frac <= 1.0, "min_lr_frac", self.min_lr_frac, "a float in [0, 1]")
        check(self.precision in ("fp32", "bf16"), "precision", self.precision, "'fp32' or 'bf16'")


@dataclass(frozen=True)
class RunConfig:
    """One training run: model, data and training configs together (what artifacts are keyed by)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check(self.model.n_ctx == self.data.n_ctx, "model.n_ctx", self.model.n_ctx,
               f"equal to data.n_ctx={self.data.n_ctx}")
        check(self.model.d_vocab == self.data.vocab_size, "model.d_vocab", self.model.d_vocab,
               f"equal to data.vocab_size={self.data.vocab_size}")

    def to_dict(self) -> dict:
        """Plain nested dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Inverse of `to_dict`."""
        return cls(model=ModelConfig(**d["model"]), data=DataConfig(**d["data"]), train=TrainConfig(**d["train"]))

    def replace(self, **overrides: Any) -> "RunConfig":
        """A copy with flat overrides applied (same names as `resolve`)."""
        return _apply(self, overrides)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys) used for hashing."""
        return json.dumps(self.to_dict(), sort_keys=True)


# Flat parameter values per preset. `cpu` follows ../shared/NOTES.md: vocab-1024 BPE, n_ctx 64,
# d_model 128 with 4 heads and half the windows carrying an adjacent repeated span is what formed
# induction heads within minutes on 2 cores. `gpu` is the report's exact model size. Its step count is
# measured, not the report's: the shipped corpus has 50,956 training beginnings (1.0M tokens); on an H200
# the 20,000-step run (25 epochs) reached held-out loss 4.90 at step 1,500 and 6.67 at 20,000 (train 0.66).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(n_layers=2, n_heads=2, d_model=32, d_mlp=64, tokenizer="bpe", vocab_size=300, task="windows",
                  n_ctx=32, plant_frac=0.5, plant_min=4, plant_max=8, batch_size=8, max_steps=20,
                  warmup_steps=5, eval_every=10, eval_batches=2, checkpoint_every=10, dropout=0.0,
                  corpus=("dbpedia14_train",)),
    "cpu": dict(n_layers=2, n_heads=4, d_model=128, d_mlp=512, tokenizer="bpe", vocab_size=1024, task="windows",
                n_ctx=64, plant_frac=0.5, plant_min=16, plant_max=32, batch_size=32, max_steps=3000,
                lr=3e-3, warmup_steps=100, eval_every=150, eval_batches=8, checkpoint_every=300, dropout=0.0),
    "gpu": dict(n_layers=2, n_heads=12, d_model=768, d_head=64, d_mlp=3072, tokenizer="gpt2", task="beginnings",
                n_ctx=20, plant_frac=0.0, plant_min=4, plant_max=8, batch_size=64, max_steps=1500, lr=6e-4,
                warmup_steps=150, eval_every=100, eval_batches=20, checkpoint_every=500, dropout=0.1, precision="bf16"),
}


def _owners(key: str) -> list[str]:
    """Which sub-configs of RunConfig have a field called `key`."""
    owners = []
    for part, cls in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        if key in {f.name for f in fields(cls)}:
            owners.append(part)
    if key == "vocab_size":
        owners.append("model")  # d_vocab follows the tokenizer
    return owners


def _apply(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply flat overrides; n_ctx goes to model and data, vocab_size to data and model.d_vocab."""
    parts = {"model": dataclasses.asdict(cfg.model), "data": dataclasses.asdict(cfg.data),
             "train": dataclasses.asdict(cfg.train)}
    for key, value in overrides.items():
        owners = _owners(key)
        if not owners:
            allowed = sorted({f.name for c in (ModelConfig, DataConfig, TrainConfig) for f in fields(c)})
            raise ValueError(f"unknown parameter {key!r}; allowed: {', '.join(allowed)}")
        for part in owners:
            parts[part]["d_vocab" if (part == "model" and key == "vocab_size") else key] = value
    data = DataConfig(**parts["data"])
    parts["model"]["d_vocab"] = data.vocab_size
    if parts["model"].get("attention_only"):
        parts["model"]["d_mlp"] = None
    elif parts["model"].get("d_mlp") == 0:
        parts["model"]["d_mlp"] = None  # back from attention-only: derive 4 * d_model
    return RunConfig(model=ModelConfig(**parts["model"]), data=data, train=TrainConfig(**parts["train"]))


def resolve(preset: str = "cpu", **overrides: Any) -> RunConfig:
    """Preset values, then every override that is not None (papermill passes None for 'use the preset')."""
    check(preset in PRESETS, "preset", preset, f"one of {PRESET_NAMES}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _apply(RunConfig(), values)


# Notebook-level knobs per preset (what a notebook does besides training its base models).
NOTEBOOK_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "01_build_transformer": {
        "smoke": dict(bench_layers=(1, 2), bench_seeds=(0, 1), bench_steps=10, n_induction_seqs=16, n_samples=2),
        "cpu": dict(bench_layers=(1, 2, 3), bench_seeds=(0, 1), bench_steps=300, n_induction_seqs=200, n_samples=3),
        "gpu": dict(bench_layers=(1, 2, 3), bench_seeds=(0, 1, 2), bench_steps=1000, n_induction_seqs=500,
                    n_samples=3),
    },
    # 02: hooks are (base model "attn" | "mlp", lib.hooks kind, layer); sizes None = powers of two up to d_model;
    # seeds are the compressors' seeds, model_seeds the base models' training seeds (extra ones train if absent).
    "02_compression_infovae": {
        "smoke": dict(hooks=(("attn", "attn_out", 0), ("attn", "attn_out", 1), ("mlp", "mlp_out", 1)),
                      latent_hook=("mlp", "mlp_out", 1), sizes=(1, 8, 32), seeds=(0, 1), model_seeds=(0, 1),
                      n_fit=64, n_eval=32, steps=60, d_hidden=32, batch_size=128, lr=3e-3, lambda_mmd=1.0, beta=0.0,
                      kernel="rbf", sae_expansion=4, n_per_topic=6, probe_steps=50, n_traverse=4, n_keyword_prompts=3,
                      pretrained_n_sizes=3, pretrained_n_fit=32, pretrained_n_eval=16),
        "cpu": dict(hooks=(("attn", "attn_out", 0), ("attn", "attn_out", 1), ("mlp", "mlp_out", 1)),
                    latent_hook=("mlp", "mlp_out", 1), sizes=None, seeds=(0, 1), model_seeds=(0,),
                    n_fit=1024, n_eval=256, steps=600, d_hidden=128, batch_size=256, lr=3e-3, lambda_mmd=1.0,
                    beta=0.0, kernel="rbf", sae_expansion=4, n_per_topic=40, probe_steps=200, n_traverse=8,
                    n_keyword_prompts=20, pretrained_n_sizes=6, pretrained_n_fit=512, pretrained_n_eval=128),
        "gpu": dict(hooks=(("attn", "attn_out", 0), ("attn", "attn_out", 1), ("mlp", "mlp_out", 0),
                           ("mlp", "mlp_out", 1)),
                    latent_hook=("mlp", "mlp_out", 1), sizes=None, seeds=(0, 1, 2), model_seeds=(0, 1, 2),
                    n_fit=4096, n_eval=1024, steps=3000, d_hidden=512, batch_size=1024, lr=1e-3, lambda_mmd=1.0,
                    beta=0.0, kernel="rbf", sae_expansion=4, n_per_topic=150, probe_steps=300, n_traverse=16,
                    n_keyword_prompts=50, pretrained_n_sizes=10, pretrained_n_fit=2048, pretrained_n_eval=512),
    },
    # 03: frac = units per layer in a cluster; kw_* = keyword extraction (lib.prompts.keywords); intensities of
    # noise are in units of each unit's activation sd, of scale the fraction removed (factor 1 - intensity).
    "03_neuron_impairment": {
        "smoke": dict(frac=0.1, n_keywords=5, kw_mode="word_start", kw_min_count=5, kw_min_ratio=0.0,
                      kw_min_chars=1, kw_exclusive=False, kw_max_texts=300, n_prompts=8, n_windows=6,
                      noise_intensities=(0.0, 1.0, 4.0), scale_intensities=(0.0, 0.5, 1.0), noise_seeds=(0, 1, 2),
                      n_random=4, tolerance_intensities=(0.0, 2.0, 8.0, 32.0), early_steps=10, n_match_windows=4,
                      n_boot=200),
        "cpu": dict(frac=0.025, n_keywords=10, kw_mode="whole_word", kw_min_count=20, kw_min_ratio=2.0,
                    kw_min_chars=3, kw_exclusive=True, kw_max_texts=None, n_prompts=60, n_windows=48,
                    noise_intensities=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                    scale_intensities=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), noise_seeds=(0, 1, 2), n_random=24,
                    tolerance_intensities=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), early_steps=300,
                    n_match_windows=24, n_boot=1000),
        "gpu": dict(frac=0.025, n_keywords=20, kw_mode="whole_word", kw_min_count=50, kw_min_ratio=2.0,
                    kw_min_chars=3, kw_exclusive=True, kw_max_texts=None, n_prompts=200, n_windows=256,
                    noise_intensities=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
                    scale_intensities=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), noise_seeds=(0, 1, 2, 3, 4), n_random=100,
                    tolerance_intensities=(0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0), early_steps=3000,
                    n_match_windows=128, n_boot=1000),
    },
    # 05: k_fracs = winners as a share of the layer's units; k_focus = the share studied in sections 2-4; steps etc.
    # train the new layer (lib.sparse.FitConfig) on n_train training windows, losses on n_eval held-out windows;
    # boost_* / duty_cycle_period (tokens) are lib.sparse.KWinners'; n_top = top activations per unit for the
    # monosemanticity score; kw_* / n_prompts / frac / n_random / noise_* as in 03 (hypothesis-B test).
    "05_sparse_layers": {
        "smoke": dict(k_fracs=(0.05, 0.25), k_focus=0.25, seeds=(0, 1), steps=8, batch_size=8, lr=3e-3,
                      objective="lm", boost_strength=1.5, boost_strength_factor=0.9, duty_cycle_period=2000,
                      n_train=32, n_eval=16, n_windows=6, n_top=20, n_shown=2, n_contexts=3, n_keywords=5,
                      kw_mode="word_start", kw_min_count=5, kw_min_ratio=0.0, kw_min_chars=1, kw_exclusive=False,
                      kw_max_texts=300, n_prompts=8, frac=0.1, n_random=4, noise_intensities=(0.0, 1.0, 4.0),
                      noise_seeds=(0, 1), n_boot=200, pretrained_steps=5, pretrained_windows=16),
        "cpu": dict(k_fracs=(0.01, 0.02, 0.05, 0.1, 0.25), k_focus=0.05, seeds=(0, 1), steps=200, batch_size=32,
                    lr=3e-3, objective="lm", boost_strength=1.5, boost_strength_factor=0.9, duty_cycle_period=20000,
                    n_train=4096, n_eval=256, n_windows=32, n_top=100, n_shown=3, n_contexts=5, n_keywords=10,
                    kw_mode="whole_word", kw_min_count=20, kw_min_ratio=2.0, kw_min_chars=3, kw_exclusive=True,
                    kw_max_texts=None, n_prompts=60, frac=0.025, n_random=24,
                    noise_intensities=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), noise_seeds=(0, 1, 2), n_boot=1000,
                    pretrained_steps=200, pretrained_windows=1024),
        "gpu": dict(k_fracs=(0.01, 0.02, 0.05, 0.1, 0.25), k_focus=0.05, seeds=(0, 1, 2), steps=3000, batch_size=64,
                    lr=1e-3, objective="distill", boost_strength=1.5, boost_strength_factor=0.9,
                    duty_cycle_period=50000, n_train=16384, n_eval=1024, n_windows=256, n_top=200, n_shown=4,
                    n_contexts=6, n_keywords=20, kw_mode="whole_word", kw_min_count=50, kw_min_ratio=2.0,
                    kw_min_chars=3, kw_exclusive=True, kw_max_texts=None, n_prompts=200, frac=0.025, n_random=100,
                    noise_intensities=(0.0, 0.5, 1.0, 2.0, 4.0, 8.0), noise_seeds=(0, 1, 2, 3, 4), n_boot=1000,
                    pretrained_steps=2000, pretrained_windows=8192),
    },
    # 04: layers = the MLP layers whose neurons are players (None = all; the cpu preset takes the last layer, whose
    # coalitions cost one position per prompt); n_prompts per topic define the game, n_eval_prompts (other held-out
    # articles) measure removals; kw_* as in 03; n_permutations for the trained model's TMC run (every topic at
    # once), n_permutations_control for the seed-1 and init runs; k = top-k for specificity, seeds and TMAB;
    # cost_* = the single-topic TMAB vs TMC comparison.
    "04_neuron_shapley": {
        "smoke": dict(layers=None, n_keywords=5, kw_mode="word_start", kw_min_count=5, kw_min_ratio=0.0,
                      kw_min_chars=1, kw_exclusive=False, kw_max_texts=300, n_prompts=4, n_eval_prompts=4,
                      n_windows=6, ablation="zero", truncation_tol=0.0, n_permutations=3, n_permutations_control=2,
                      k=4, removal_ks=(0, 1, 2, 4, 8, 16, 32), n_random=3, cost_topics=("Athlete", "Album"),
                      cost_permutations=8, tmab_delta=0.1, n_match_windows=4, n_boot=200),
        "cpu": dict(layers=(1,), n_keywords=10, kw_mode="whole_word", kw_min_count=20, kw_min_ratio=2.0,
                    kw_min_chars=3, kw_exclusive=True, kw_max_texts=None, n_prompts=16, n_eval_prompts=24,
                    n_windows=48, ablation="zero", truncation_tol=0.0, n_permutations=100,
                    n_permutations_control=50, k=10, removal_ks=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256), n_random=10,
                    cost_topics=("Athlete", "Album", "Animal", "Artist"), cost_permutations=200, tmab_delta=0.05,
                    n_match_windows=24, n_boot=1000),
        "gpu": dict(layers=None, n_keywords=20, kw_mode="whole_word", kw_min_count=50, kw_min_ratio=2.0,
                    kw_min_chars=3, kw_exclusive=True, kw_max_texts=None, n_prompts=32, n_eval_prompts=64,
                    n_windows=256, ablation="zero", truncation_tol=0.0, n_permutations=200,
                    n_permutations_control=100, k=20, removal_ks=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                    n_random=20, cost_topics=("Athlete", "Album", "Animal", "Artist", "Company", "Film"),
                    cost_permutations=300, tmab_delta=0.05, n_match_windows=128,
                    n_boot=1000),
    },
    # 06: `run` overrides the preset's training config (attention-only is set by the notebook); n_log/n_linear
    # give the dense checkpoint schedule of the main run and of the control, *_extra that of the other seeds,
    # which train for extra_max_steps (None: as long as the main run); min_jump: the smallest rise of the max
    # induction score that counts as a phase change.
    "06_training_dynamics": {
        "smoke": dict(run=dict(max_steps=60, warmup_steps=10), extra_max_steps=None, min_jump=0.0, n_seeds=3,
                      n_log=6, n_linear=8, n_log_extra=4, n_linear_extra=5, n_probe=16, n_eval=32, n_attr=96,
                      attr_planted_frac=0.25, n_tracin=3, chunk=32, proj_dim=64, n_dstar=96, n_show=2,
                      rep_threshold=0.2),
        "cpu": dict(run=dict(max_steps=3000), extra_max_steps=5000, min_jump=0.1, n_seeds=3, n_log=20, n_linear=40,
                    n_log_extra=12, n_linear_extra=20, n_probe=48, n_eval=192, n_attr=1024, attr_planted_frac=0.1,
                    n_tracin=8, chunk=32, proj_dim=512, n_dstar=512, n_show=4, rep_threshold=0.2),
        "gpu": dict(run=dict(n_ctx=128, plant_min=32, plant_max=64, d_model=256, n_heads=8, d_head=32, vocab_size=4096,
                             tokenizer="bpe", task="windows", plant_frac=0.5, batch_size=64, max_steps=12000, lr=1e-3,
                             warmup_steps=300, dropout=0.0),
                    extra_max_steps=None, min_jump=0.1, n_seeds=5, n_log=30, n_linear=80, n_log_extra=20,
                    n_linear_extra=40, n_probe=200, n_eval=512, n_attr=8192, attr_planted_frac=0.1, n_tracin=20,
                    chunk=128, proj_dim=2048, n_dstar=2048, n_show=6, rep_threshold=0.2),
    },
    # 07: sub-models per concept (DBpedia classes; toxic vs harmless), found on n_windows fit-split windows per
    # concept and validated on the held-out keyword prompts (n_prompts per topic, half of them for the Shapley game);
    # frac = units per hook; latent_k latents per concept of an SAE (sae_d_latent active of a 4x dictionary) or an
    # InfoVAE (infovae_d_latent) at the last MLP's output; sparse_* = report 5's focus layer (same keys: its trained
    # layer is reused when present); n_random size-matched random sub-models per validation; kw_* as in 03.
    "07_submodel_tool": {
        "smoke": dict(methods=("selectivity", "shapley", "sae", "infovae", "sparse"), n_keywords=5,
                      kw_mode="word_start", kw_min_count=5, kw_min_ratio=0.0, kw_min_chars=1, kw_exclusive=False,
                      kw_max_texts=300, n_prompts=6, n_windows=4, frac=0.1, n_random=4, kind="zero", intensity=1.0,
                      n_permutations=2, latent_k=2, sae_d_latent=4, infovae_d_latent=4, latent_steps=20,
                      sparse_k_frac=0.25, sparse_steps=8, sparse_batch_size=8, sparse_lr=3e-3, sparse_objective="lm",
                      sparse_n_train=32, boost_strength=1.5, boost_strength_factor=0.9, duty_cycle_period=2000,
                      n_shown=1, n_boot=200),
        "cpu": dict(methods=("selectivity", "shapley", "sae", "infovae", "sparse"), n_keywords=10, kw_mode="whole_word",
                    kw_min_count=20, kw_min_ratio=2.0, kw_min_chars=3, kw_exclusive=True, kw_max_texts=None,
                    n_prompts=48, n_windows=32, frac=0.025, n_random=20, kind="zero", intensity=1.0,
                    n_permutations=10, latent_k=4, sae_d_latent=8, infovae_d_latent=16, latent_steps=600,
                    sparse_k_frac=0.05, sparse_steps=200, sparse_batch_size=32, sparse_lr=3e-3, sparse_objective="lm",
                    sparse_n_train=4096, boost_strength=1.5, boost_strength_factor=0.9, duty_cycle_period=20000,
                    n_shown=1, n_boot=1000),
        "gpu": dict(methods=("selectivity", "shapley", "sae", "infovae", "sparse"), n_keywords=20, kw_mode="whole_word",
                    kw_min_count=50, kw_min_ratio=2.0, kw_min_chars=3, kw_exclusive=True, kw_max_texts=None,
                    n_prompts=128, n_windows=128, frac=0.025, n_random=100, kind="zero", intensity=1.0,
                    n_permutations=50, latent_k=8, sae_d_latent=32, infovae_d_latent=32, latent_steps=3000,
                    sparse_k_frac=0.05, sparse_steps=3000, sparse_batch_size=64, sparse_lr=1e-3,
                    sparse_objective="distill", sparse_n_train=16384, boost_strength=1.5, boost_strength_factor=0.9,
                    duty_cycle_period=50000, n_shown=2, n_boot=1000),
    },
}


def notebook_params(notebook: str, preset: str, **overrides: Any) -> dict[str, Any]:
    """A notebook's own knobs for a preset, with every non-None override applied (unknown names rejected)."""
    check(notebook in NOTEBOOK_PRESETS, "notebook", notebook, f"one of {sorted(NOTEBOOK_PRESETS)}")
    check(preset in PRESETS, "preset", preset, f"one of {PRESET_NAMES}")
    values = dict(NOTEBOOK_PRESETS[notebook][preset])
    for key, value in overrides.items():
        check(key in values, "parameter", key, f"one of {sorted(values)}")
        if value is not None:
            values[key] = value
    return values
