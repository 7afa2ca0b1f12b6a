"""IOI runs: the tokenizer with single-token names, token data with IOI sentences mixed in, training with dense
checkpoints through lib.core.train, and the logit-difference / accuracy metrics over prompt sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from lib.core import artifacts, train as tr
from lib.core.checks import check
from lib.core.config import RunConfig
from lib.core.data import (
    PLANT_SEED,
    TokenData,
    Tokenizer,
    beginnings,
    corpus_texts,
    get_tokenizer,
    lm_windows,
    load_articles,
    plant_repeats,
)
from lib.reports.ioi_circuit import data as D
from lib.reports.ioi_circuit.params import IOIParams

CACHE_VERSION = 1  # part of every artifact key here: bump when the data or a cached analysis changes
EVAL_SETS = ("heldout", "train", "heldout_names", "heldout_templates")  # (templates, names) of each evaluation set
_EVAL_PARTS = {"heldout": ("templates_heldout", "names_heldout"), "train": ("templates_train", "names_train"),
               "heldout_names": ("templates_train", "names_heldout"),
               "heldout_templates": ("templates_heldout", "names_train")}
Model = Callable[[Tensor], Tensor]  # tokens -> logits: our Transformer or a HookedTransformer


# ------------------------------------------------------------------------------------------ setup


@dataclass(frozen=True)
class IOISetup:
    """The tokenizer (the preset's plus single-token IOI words), the IOI vocabulary, and the run's config."""

    tokenizer: Tokenizer
    vocab: D.IOIVocab
    cfg: RunConfig  # the preset's config with vocab_size = the tokenizer's
    base_cfg: RunConfig  # the preset's config (its tokenizer is the base of ours)
    p: IOIParams


def setup(base_cfg: RunConfig, p: IOIParams) -> IOISetup:
    """Names, places and objects from the corpus made single tokens (a BPE gains merges; GPT-2's keeps the words that
    already are) and split into train / held-out; the run config takes the tokenizer's vocabulary size."""
    base = get_tokenizer(base_cfg.data)
    counts = D.word_counts(corpus_texts(base_cfg.data))
    names = D.first_names(load_articles("dbpedia14_train"), counts, p.min_count)
    places = D.corpus_words(D.PLACE_CANDIDATES, counts, p.n_places, p.min_count)
    objects = D.corpus_words(D.OBJECT_CANDIDATES, counts, p.n_objects, p.min_count)
    if base_cfg.data.tokenizer == "gpt2":
        tok = base
        names = [w for w in names if len(tok.encode(" " + w)) == 1][: p.n_names]
    else:
        names = names[: p.n_names]
        tok, single = D.extend_bpe(base, names + places + objects)
        names = [w for w in names if w in single]
    single = [w for w in names + places + objects if len(tok.encode(" " + w)) == 1]
    missing = sorted(set(places + objects) - set(single))
    if missing or len(names) < p.n_names:
        raise ValueError(f"only {len(names)} of n_names={p.n_names} names are single tokens (words not single: "
                         f"{missing}); lower n_names or min_count")
    if p.heldout_names == "frequent":  # most used in the corpus text first (stable: ties keep the title order)
        names = sorted(names, key=lambda w: -counts[w])
    vocab = D.split_vocab(names, places, objects, p.n_heldout_names, p.n_heldout_templates, p.data_seed,
                          heldout_first=p.heldout_names == "frequent")
    return IOISetup(tokenizer=tok, vocab=vocab, cfg=base_cfg.replace(vocab_size=tok.vocab_size), base_cfg=base_cfg,
                    p=p)


def eval_prompts(s: IOISetup, n: int, seed: int = 1) -> dict[str, D.IOIPrompts]:
    """n fresh prompts per evaluation set (EVAL_SETS: held-out templates and names, training ones, and each alone)."""
    v = s.vocab
    return {name: D.make_prompts(s.tokenizer, getattr(v, t), getattr(v, nm), v.places, v.objects, n,
                                 seed=s.p.data_seed * 1000 + seed * 10 + i)
            for i, (name, (t, nm)) in enumerate(_EVAL_PARTS.items())}


# ------------------------------------------------------------------------------------------ token data


def _natural_key(s: IOISetup) -> dict:
    return {"data": s.cfg.data.to_dict(), "words": list(s.vocab.names + s.vocab.places + s.vocab.objects),
            "vocab_size": s.tokenizer.vocab_size, "version": CACHE_VERSION}


def natural_tokens(s: IOISetup, progress: bool = False) -> dict[str, Tensor]:
    """The corpus and test split under our tokenizer: train windows (repeats planted as the preset says), val
    windows and beginnings (cached as an artifact)."""
    key = _natural_key(s)
    dest = artifacts.path("ioi", "tokens", key) / "tokens.safetensors"
    with artifacts.lock(dest.parent):
        if not (dest.parent / artifacts.MANIFEST).is_file():
            artifacts.save_tensors(dest, {k: v.int() if v.dtype == torch.long else v
                                          for k, v in _tokenize(s, progress).items()})
            artifacts.write_manifest(dest.parent, [dest.name], key)
    artifacts.verify(dest.parent, key)
    return {k: v.long() if v.dtype == torch.int32 else v for k, v in artifacts.load_tensors(dest).items()}


def _tokenize(s: IOISetup, progress: bool) -> dict[str, Tensor]:
    dc, tok = s.cfg.data, s.tokenizer
    train_ids = tok.encode_batch(corpus_texts(dc))
    test_ids = tok.encode_batch(load_articles("dbpedia14_test")["text"].tolist())
    train = lm_windows(train_ids, dc.n_ctx, tok.eos_id)
    planted = torch.zeros(len(train), dtype=torch.bool)
    spans = torch.full((len(train), 3), -1, dtype=torch.long)
    if dc.plant_frac > 0:
        train, planted, spans = plant_repeats(train, dc.plant_frac, dc.plant_min, dc.plant_max,
                                              torch.Generator().manual_seed(PLANT_SEED))
    return {"train": train, "planted": planted, "spans": spans, "val": lm_windows(test_ids, dc.n_ctx, tok.eos_id),
            "val_beginnings": beginnings(test_ids, dc.beginning_tokens),
            "train_beginnings": beginnings(train_ids, dc.beginning_tokens)}


@dataclass(frozen=True)
class IOITrainData:
    """What a run trains on (`tokens`, for lib.core.train.train(data=...)), where its IOI sentences are, and the
    prompts they were made from (training templates and names only)."""

    tokens: TokenData
    mix: D.IOIMix
    prompts: D.IOIPrompts


def train_data(s: IOISetup, progress: bool = False) -> IOITrainData:
    """Natural-text windows with round(ioi_frac * n) of the unplanted ones carrying one IOI sentence each."""
    nat = natural_tokens(s, progress)
    k = D.n_mixed(len(nat["train"]), s.p.ioi_frac)
    v, tok = s.vocab, s.tokenizer
    prompts = D.make_prompts(tok, v.templates_train, v.names_train, v.places, v.objects, max(k, 1),
                             seed=s.p.data_seed * 1000)
    sentences = prompts.sentences(tok.encode(".")[0], tok.eos_id)
    mix = D.mix_sentences(nat["train"], sentences, s.p.ioi_frac, torch.Generator().manual_seed(s.p.data_seed),
                          exclude=nat["planted"])
    tokens = TokenData(train=mix.windows, planted=nat["planted"], spans=nat["spans"], val=nat["val"],
                       val_beginnings=nat["val_beginnings"], train_beginnings=nat["train_beginnings"],
                       vocab_size=tok.vocab_size, eos_id=tok.eos_id)
    return IOITrainData(tokens=tokens, mix=mix, prompts=prompts)


# ------------------------------------------------------------------------------------------ metrics


@torch.no_grad()
def end_logits(model: Model, prompts: D.IOIPrompts, batch_size: int = 256,
               corrupted: bool = False) -> Float[Tensor, "n d_vocab"]:
    """Logits at each prompt's last position (the clean or the ABC prompts), in eval mode (restored afterwards)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    tokens = prompts.corrupted if corrupted else prompts.tokens
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        logits = model(tokens[i : i + batch_size].to(device)).float()
        out.append(logits[torch.arange(len(logits)), prompts.end[i : i + batch_size].to(device)].cpu())
    if hasattr(model, "train"):
        model.train(was_training)
    return torch.cat(out)


def logit_diff(logits: Float[Tensor, "n d_vocab"], io: Int[Tensor, " n"], s: Int[Tensor, " n"]) -> Float[Tensor, " n"]:
    """logit(IO) - logit(S) per prompt."""
    rows = torch.arange(len(logits))
    return logits[rows, io] - logits[rows, s]


def summarize(logits: Float[Tensor, "n d_vocab"], prompts: D.IOIPrompts) -> dict[str, float]:
    """Mean logit difference IO - S (and its standard error), accuracy (IO above S), top-1 (IO is the argmax) and
    name top-1 (the argmax is IO or S: the model copies a name from the prompt, right or wrong)."""
    ld, top = logit_diff(logits, prompts.io, prompts.s), logits.argmax(-1)
    return {"logit_diff": ld.mean().item(), "logit_diff_sem": (ld.std() / len(ld) ** 0.5).item() if len(ld) > 1
            else float("nan"), "accuracy": (ld > 0).float().mean().item(),
            "top1": (top == prompts.io).float().mean().item(),
            "name_top1": ((top == prompts.io) | (top == prompts.s)).float().mean().item(), "n": len(ld)}


def score(model: Model, prompts: D.IOIPrompts, batch_size: int = 256, corrupted: bool = False) -> dict[str, float]:
    """`summarize` of the model's final-position logits (on the ABC prompts: still IO vs S of the clean ones)."""
    return summarize(end_logits(model, prompts, batch_size, corrupted), prompts)


def patching_metric(prompts: D.IOIPrompts, clean: float, corrupted: float) -> Callable[[Tensor], Tensor]:
    """logits [n, pos, d_vocab] -> (mean logit diff IO - S at the ends - corrupted) / (clean - corrupted): 1 on the
    clean run, 0 on the ABC run (the metric transformer_lens.patching takes)."""
    check(clean != corrupted, "clean", clean, f"different from corrupted={corrupted} (the metric divides by it)")
    rows = torch.arange(len(prompts))

    def metric(logits: Float[Tensor, "n pos d_vocab"]) -> Tensor:
        end = logits[rows, prompts.end.to(logits.device)].float()
        return (logit_diff(end, prompts.io.to(end.device), prompts.s.to(end.device)).mean() - corrupted) / (
            clean - corrupted)

    return metric


def score_sets(model: Model, sets: Mapping[str, D.IOIPrompts], batch_size: int = 256) -> pd.DataFrame:
    """One row per prompt set: `score` on its clean prompts, and the logit difference on its ABC prompts."""
    rows = []
    for name, prompts in sets.items():
        row = {"set": name, **score(model, prompts, batch_size)}
        row["abc_logit_diff"] = score(model, prompts, batch_size, corrupted=True)["logit_diff"]
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ runs


def run_dir(s: IOISetup, steps: Sequence[int]) -> Path:
    """Artifact folder of one dense-checkpoint run: its config, the IOI data and the checkpoint steps."""
    return artifacts.path("ioi", "run", {"config": s.cfg.to_dict(), "ioi": s.p.data_key(),
                                         "checkpoint_steps": list(map(int, steps)), "version": CACHE_VERSION})


def train_dense(s: IOISetup, data: IOITrainData, ckpt_dir: Path, steps: Sequence[int], progress: bool = True,
                device: str | torch.device = "cpu", stop_after: int | None = None) -> list[Path]:
    """Train s.cfg on data keeping a checkpoint at every step in `steps` (0 = the init); resumes, so a finished run
    is only listed. Returns the saved checkpoints' folders among `steps`."""
    ckpt_dir = Path(ckpt_dir)
    if 0 in steps and not (ckpt_dir / "step_0000000").exists():
        model = tr.init_model(s.cfg, device)
        tr.save_checkpoint(ckpt_dir, 0, model, tr.make_optimizer(model, s.cfg.train), [], s.cfg)
    done = [checkpoint_step(p) for p in tr.list_checkpoints(ckpt_dir)]
    if max(done, default=0) < s.cfg.train.max_steps:
        tr.train(s.cfg, ckpt_dir=ckpt_dir, checkpoint_steps=[x for x in steps if x > 0], keep_checkpoints=None,
                 progress=progress, device=device, data=data.tokens, stop_after=stop_after)
    wanted = set(steps)
    return [p for p in tr.list_checkpoints(ckpt_dir) if checkpoint_step(p) in wanted]


def scores_dir(key: Mapping) -> Path:
    """Artifact folder of an analysis cached over a run's checkpoints (`key`: what decides it)."""
    return artifacts.path("ioi", "scores", dict(key))


def tracin_path(key: Mapping) -> Path:
    """Artifact file of a cached TracIn of an IOI run (`key`: what decides it)."""
    return artifacts.path("ioi", "tracin", dict(key)) / "tracin.pt"


def ld_objective(prompts: D.IOIPrompts, negate: bool = True) -> Callable[[torch.nn.Module], Tensor]:
    """hooked -> mean logit difference IO - S at the prompts' ends, with grad (negate: minus it, an objective that
    falls as the behaviour forms, the convention of lib.analysis.attribution.tracin)."""
    rows = torch.arange(len(prompts))

    def objective(hooked) -> Tensor:
        device = next(hooked.parameters()).device
        logits = hooked(prompts.tokens.to(device)).float()[rows, prompts.end.to(device)]
        value = logit_diff(logits, prompts.io.to(device), prompts.s.to(device)).mean()
        return -value if negate else value

    return objective


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder step_XXXXXXX."""
    return int(Path(path).name.split("_")[1])


def checkpoint_scores(paths: Sequence[Path], sets: Mapping[str, D.IOIPrompts], batch_size: int = 256,
                      device: str | torch.device = "cpu") -> pd.DataFrame:
    """`score_sets` at every checkpoint: one row per (step, set), with the tokens seen."""
    frames = []
    for path in paths:
        model, step = tr.load_checkpoint_weights(path, device)
        cfg = RunConfig.from_dict(artifacts.read_json(Path(path) / "state.json")["config"])
        frame = score_sets(model, sets, batch_size)
        frame.insert(0, "step", step)
        frame.insert(1, "tokens", step * cfg.train.batch_size * cfg.data.n_ctx)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
