"""Frozen configs per concern, the presets, and `resolve` (preset + overrides -> RunConfig)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from lib.core.checks import check, positive_int
from lib.core.params import Params

PRESET_NAMES = ("smoke", "cpu", "gpu")




@dataclass(frozen=True)
class ModelConfig(Params):
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
    act_fn: Literal["gelu", "gelu_new", "relu"] = "gelu"
    ln_eps: float = 1e-5
    init_range: float = 0.02

    def validate(self) -> None:
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
        check(self.ln_eps > 0, "ln_eps", self.ln_eps, "a positive float (LayerNorm divides by sqrt(var + ln_eps))")
        check(self.init_range > 0, "init_range", self.init_range, "a positive float (the sd of the initial weights)")

    @property
    def derived_d_head(self) -> bool:
        """Whether d_head is the derived d_model // n_heads (so a change of either re-derives it)."""
        return self.d_head == self.d_model // self.n_heads

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
class DataConfig(Params):
    """What the model reads: tokenizer, sample format, planted repeats (induction bait)."""

    tokenizer: Literal["bpe", "gpt2"] = "bpe"  # "bpe" (trained here) | "gpt2" (shipped vocabulary)
    vocab_size: int = 1024  # for "bpe"; "gpt2" is always 50257
    task: Literal["windows", "beginnings"] = "windows"  # LM windows of n_ctx tokens | article openings
    n_ctx: int = 64
    beginning_tokens: int = 20  # the report's sample: an article's first tokens, predict each next one
    plant_frac: float = 0.5  # fraction of training windows that carry an adjacent repeated span
    plant_min: int = 16
    plant_max: int = 32
    # The DBpedia abstracts. Adding the comments' fit split ("comments_fit") delayed induction heads at the cpu
    # budget (bench/results/comments_corpus_cpu.txt), so the base models do not train on comments; report 3's
    # probe gate then leaves out the comment topics, which the model does not know.
    corpus: tuple[str, ...] = ("dbpedia14_train", "dbpedia14_extra", "dbpedia_l2")

    def validate(self) -> None:
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
        check(len(self.corpus) > 0, "corpus", self.corpus, "at least one training corpus")


@dataclass(frozen=True)
class TrainConfig(Params):
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
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast (fast only where the hardware has bf16)

    def validate(self) -> None:
        for name in ("batch_size", "max_steps", "eval_every", "eval_batches", "checkpoint_every"):
            positive_int(name, getattr(self, name))
        check(isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "warmup_steps",
               self.warmup_steps, "a non-negative integer")
        check(self.lr > 0, "lr", self.lr, "a positive float")
        check(0.0 <= self.min_lr_frac <= 1.0, "min_lr_frac", self.min_lr_frac, "a float in [0, 1]")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a float >= 0")
        check(self.grad_clip > 0, "grad_clip", self.grad_clip, "a positive float (the max gradient norm)")
        for name in ("beta1", "beta2"):
            check(0.0 <= getattr(self, name) < 1.0, name, getattr(self, name), "a float in [0, 1)")
        check(self.seed >= 0, "seed", self.seed, "an integer >= 0")


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
    """Apply flat overrides; n_ctx goes to model and data, vocab_size to data and model.d_vocab.

    d_head and d_mlp are re-derived (d_model // n_heads, 4 * d_model) unless an override gives them or `cfg`'s
    value differs from its own derivation (then it was explicit and is kept).
    """
    parts = {"model": dataclasses.asdict(cfg.model), "data": dataclasses.asdict(cfg.data),
             "train": dataclasses.asdict(cfg.train)}
    m = cfg.model
    if "d_head" not in overrides and m.derived_d_head:
        parts["model"]["d_head"] = None
    if "d_mlp" not in overrides and m.d_mlp in (0, 4 * m.d_model):
        parts["model"]["d_mlp"] = None
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
