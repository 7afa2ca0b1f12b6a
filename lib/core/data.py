"""Shipped text corpora, tokenizers (GPT-2 and a locally trained byte-level BPE), LM windows and planted repeats."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import itertools
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Int
from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor
from tqdm.auto import tqdm

from lib.core import artifacts
from lib.core.config import DataConfig

DATA_ENV_VAR = "DATA_DIR"
DATA_DIR: Path = Path(os.environ.get(DATA_ENV_VAR) or Path(__file__).resolve().parents[2] / "data")
EOS = "<|endoftext|>"
PLANT_SEED = 1234  # planting is part of the data, not of a training run: the same for every training seed

# name -> (path under the data dir, columns the file must have)
FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dbpedia14_train": ("dbpedia14/train.csv.gz", ("label", "title", "text")),
    "dbpedia14_test": ("dbpedia14/test.csv.gz", ("label", "title", "text")),
    "dbpedia14_extra": ("dbpedia14/extra_untitled.csv.gz", ("label", "title", "text")),
    "dbpedia_l2": ("dbpedia_l2/dbpedia_l2.csv.gz", ("label", "text")),
    "toxic": ("comments/toxic.csv.gz", ("label", "text")),
    "wikitext2_test": ("wikitext2_raw/wiki.test.raw.gz", ()),
}
# allowed LM training corpora; "comments_fit" is the comments file minus its held-out split (`comments_heldout`)
CORPUS_NAMES = ("dbpedia14_train", "dbpedia14_extra", "dbpedia_l2", "comments_fit")
# The comments file has no split of its own: a comment is held out when crc32(text) % 10 < 3 (30%). The rule
# depends on the text only, so it is the same on every machine, for every row order and every preset.
COMMENTS_HELDOUT_MOD, COMMENTS_HELDOUT_BELOW = 10, 3
COLUMNS = ["label", "title", "text"]
_WIKI_TITLE = re.compile(r"^ = ([^=].*?) = $")  # top-level heading only; sub-headings read " = = X = = "


class DataError(FileNotFoundError, ValueError):
    """A shipped data file is missing or unreadable (catchable as FileNotFoundError or ValueError)."""


PROVENANCE = Path(__file__).resolve().parents[2] / "data" / "PROVENANCE.md"
_TABLE_ROW = re.compile(r"^\| `([^`]+)` \| ([\d,]+)[^|]*\| [\d,]+ \| `([0-9a-f]{64})` \|$")


@functools.lru_cache(maxsize=None)
def shipped() -> dict[str, tuple[int, str]]:
    """What data/PROVENANCE.md records of each shipped file: path under data/ -> (rows or lines, sha256)."""
    text = PROVENANCE.read_text() if PROVENANCE.is_file() else ""
    return {m.group(1): (int(m.group(2).replace(",", "")), m.group(3))
            for m in map(_TABLE_ROW.match, text.splitlines()) if m}


def _verify(p: Path, rel: str, n_rows: int | None) -> None:
    """Check a shipped file's row count (when given) and sha256 against data/PROVENANCE.md."""
    if rel not in shipped():
        return  # not one of the shipped files (a test's or a user's own data folder)
    rows, digest = shipped()[rel]
    if n_rows is not None and n_rows != rows:
        raise DataError(f"data file {p} has {n_rows:,} rows, but data/PROVENANCE.md lists {rows:,}: it is truncated "
                        f"or changed; {_restore_hint(rel)}")
    if artifacts.sha256(p) != digest:
        raise DataError(f"data file {p} is corrupt or changed: its sha256 differs from data/PROVENANCE.md's "
                        f"{digest[:12]}...; {_restore_hint(rel)}")


# ---------------------------------------------------------------------------------------------- files


def data_dir() -> Path:
    """The data folder: $DATA_DIR if set now, else DATA_DIR."""
    return Path(os.environ.get(DATA_ENV_VAR) or DATA_DIR)


def _restore_hint(rel: str) -> str:
    return f"copy it from ../shared/data/{rel} or `git checkout data/`"


def _data_file(rel: str, directory: str | Path | None = None) -> Path:
    """Absolute path of a shipped file (under directory, default data_dir()); DataError if it is missing."""
    p = Path(directory or data_dir()) / rel
    if not p.is_file():
        raise DataError(f"data file {p} is missing; {_restore_hint(rel)}")
    return p


def _read_csv(p: Path, rel: str, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a shipped csv.gz as strings ("" stays ""), check its columns, fill a missing title with ""."""
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, na_filter=False, compression="gzip")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"data file {p} is corrupt ({type(e).__name__}: {e}); {_restore_hint(rel)}") from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"data file {p} lacks columns {missing} (has {list(df.columns)}); {_restore_hint(rel)}")
    _verify(p, rel, len(df))
    if "title" not in df.columns:
        df["title"] = ""
    return df[COLUMNS].reset_index(drop=True)


def _split_wikitext(text: str) -> pd.DataFrame:
    """WikiText raw -> one row per top-level ' = Title = ' article (label "", stripped body lines joined by \\n)."""
    rows: list[dict[str, str]] = []
    for line in text.split("\n"):
        m = _WIKI_TITLE.match(line)
        if m:
            rows.append({"label": "", "title": m.group(1), "text": []})
        elif rows and line.strip():
            rows[-1]["text"].append(line.strip())
    return pd.DataFrame([{**r, "text": "\n".join(r["text"])} for r in rows], columns=COLUMNS)


def _read_wikitext(p: Path, rel: str) -> pd.DataFrame:
    """Read the gzipped WikiText raw file and split it into articles."""
    try:
        with gzip.open(p, "rb") as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="").read().replace("\r\n", "\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"data file {p} is corrupt ({type(e).__name__}: {e}); {_restore_hint(rel)}") from e
    _verify(p, rel, None)
    df = _split_wikitext(text)
    if df.empty:
        raise DataError(f"data file {p} has no ' = Title = ' article headings; {_restore_hint(rel)}")
    return df


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, directory: str) -> pd.DataFrame:
    rel, required = FILES[name]
    p = _data_file(rel, directory)
    return _read_wikitext(p, rel) if name == "wikitext2_test" else _read_csv(p, rel, required)


def load_articles(name: str) -> pd.DataFrame:
    """One shipped dataset as a DataFrame with str columns label, title, text (a copy; files are read once)."""
    if name not in FILES:
        raise ValueError(f"unknown dataset name={name!r}; allowed: {', '.join(FILES)}")
    return _load_cached(name, str(data_dir())).copy()


def topic_texts(split: str = "test") -> pd.DataFrame:
    """DBpedia-14 'train' or 'test' articles with columns label, title, text."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not allowed: 'train' or 'test'")
    return load_articles(f"dbpedia14_{split}")


def comments_heldout(texts) -> np.ndarray:
    """Boolean mask of the held-out comments (crc32 of the UTF-8 text mod 10 < 3)."""
    return np.array([zlib.crc32(t.encode()) % COMMENTS_HELDOUT_MOD < COMMENTS_HELDOUT_BELOW for t in texts], bool)


def corpus_articles(name: str) -> pd.DataFrame:
    """The articles of one training corpus: a shipped dataset, or "comments_fit" (the comments not held out)."""
    if name == "comments_fit":
        df = load_articles("toxic")
        return df[~comments_heldout(df["text"])].reset_index(drop=True)
    return load_articles(name)


def corpus_texts(cfg: DataConfig) -> list[str]:
    """Texts of the training corpora in cfg.corpus, in cfg.corpus order then file order."""
    bad = [c for c in cfg.corpus if c not in CORPUS_NAMES]
    if bad or not cfg.corpus or len(set(cfg.corpus)) != len(cfg.corpus):
        raise ValueError(f"corpus={cfg.corpus!r} is not allowed: a non-empty tuple of distinct names from "
                         f"{CORPUS_NAMES} (dbpedia14_test and the held-out comments are held out)")
    return [t for name in cfg.corpus for t in corpus_articles(name)["text"].tolist()]


# ------------------------------------------------------------------------------------------ tokenizers


class Tokenizer:
    """Thin wrapper around a Hugging Face `tokenizers.Tokenizer` (no special tokens added on encode).

    `eos` names the token that separates documents and starts every prompt (ours: '<|endoftext|>'; a loaded model's
    own, see lib.core.pretrained.load_tokenizer)."""

    def __init__(self, hf: HFTokenizer, eos: str = EOS) -> None:
        eos_id = hf.token_to_id(eos)
        if eos_id is None:
            raise ValueError(f"tokenizer has no {eos!r} token; it is required as the end-of-text id")
        self.hf = hf
        self.eos: str = eos
        self.vocab_size: int = hf.get_vocab_size()
        self.eos_id: int = eos_id

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id})"

    def encode(self, text: str) -> list[int]:
        """Token ids of one text."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of many texts (parallel in Rust)."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        """Text of a sequence of ids (list or 1-d tensor); special tokens are kept."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        return self.hf.decode(ids, skip_special_tokens=False)

    def id_to_token(self, i: int) -> str:
        """Readable text of one token, e.g. ' the' (a partial UTF-8 byte shows as U+FFFD)."""
        i = int(i)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id i={i} is out of range: 0 <= i < vocab_size={self.vocab_size}")
        return self.hf.decode([i], skip_special_tokens=False)

    def display(self, ids) -> str:
        """Text of ids for a reader: as `decode`, except that bytes which are not whole UTF-8 characters (a token
        holding part of a character, in a byte-level BPE) show as escapes like '\\xe2\\x80' instead of U+FFFD."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        text = self.hf.decode(ids, skip_special_tokens=False)
        if "\ufffd" not in text:
            return text
        raw = bytearray()
        for i in ids:
            piece = self.hf.id_to_token(int(i))
            if piece is not None and all(c in _UNICODE_TO_BYTE for c in piece):
                raw += bytes(_UNICODE_TO_BYTE[c] for c in piece)
            else:  # a special token, or a tokenizer that is not byte-level: its own text
                raw += self.hf.decode([int(i)], skip_special_tokens=False).encode("utf-8")
        return raw.decode("utf-8", errors="backslashreplace")

    def save(self, dest: Path) -> Path:
        """Atomically write tokenizer.json."""
        return artifacts.write_text(dest, self.hf.to_str())


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte in a byte-level BPE vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = chr(256 + extra), extra + 1
    return chars


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _byte_level(hf: HFTokenizer) -> HFTokenizer:
    """Attach GPT-2's byte-level pre-tokenizer (no prefix space) and decoder."""
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return hf


@functools.lru_cache(maxsize=None)
def _gpt2_cached(directory: str) -> Tokenizer:
    vocab, merges = (_data_file(f"gpt2_tokenizer/{f}", directory) for f in ("vocab.json", "merges.txt"))
    for path in (vocab, merges):
        _verify(path, f"gpt2_tokenizer/{path.name}", None)
    try:
        hf = _byte_level(HFTokenizer(models.BPE.from_file(str(vocab), str(merges))))
    except Exception as e:  # the Rust loader raises a bare Exception on malformed files
        raise DataError(f"GPT-2 tokenizer files in {vocab.parent} are corrupt ({e}); "
                        f"{_restore_hint('gpt2_tokenizer/')}") from e
    hf.add_special_tokens([EOS])  # already id 50256 in vocab.json; this only marks it special
    return Tokenizer(hf)


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's byte-level BPE from data/gpt2_tokenizer (vocab 50257, eos 50256)."""
    return _gpt2_cached(str(data_dir()))


def train_bpe(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on texts: 256 byte tokens, '<|endoftext|>', merges up to vocab_size (deterministic)."""
    if not isinstance(vocab_size, int) or vocab_size < 257:
        raise ValueError(f"vocab_size={vocab_size!r} is not allowed: an integer >= 257 (256 bytes plus {EOS!r})")
    hf = _byte_level(HFTokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return Tokenizer(hf)


def bpe_path(cfg: DataConfig) -> Path:
    """Artifact file of the BPE tokenizer trained for cfg (depends on vocab_size and corpus only)."""
    key = {"vocab_size": cfg.vocab_size, "corpus": list(cfg.corpus)}
    return artifacts.path("tokenizers", "bpe", key) / "tokenizer.json"


def get_tokenizer(cfg: DataConfig) -> Tokenizer:
    """cfg's tokenizer: GPT-2's, or a BPE trained on cfg.corpus (never the test split), cached as an artifact."""
    if cfg.tokenizer == "gpt2":
        return gpt2_tokenizer()
    dest = bpe_path(cfg)
    key = {"vocab_size": cfg.vocab_size, "corpus": list(cfg.corpus)}
    with artifacts.lock(dest.parent):
        if not (dest.parent / artifacts.MANIFEST).is_file():
            train_bpe(corpus_texts(cfg), cfg.vocab_size).save(dest)
            artifacts.write_manifest(dest.parent, [dest.name], key)
    artifacts.verify(dest.parent, key)
    try:
        return Tokenizer(HFTokenizer.from_file(str(dest)))
    except Exception as e:  # the Rust loader raises a bare Exception on malformed files
        raise artifacts.damaged(dest, f"not a tokenizer file ({e})") from e


# --------------------------------------------------------------------------------------- token tensors


def lm_windows(token_lists: list[list[int]], n_ctx: int, eos_id: int) -> Int[Tensor, "n n_ctx"]:
    """Articles each followed by eos, concatenated and cut into non-overlapping n_ctx windows (remainder dropped)."""
    if not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"n_ctx={n_ctx!r} is not allowed: a positive integer")
    flat = torch.tensor(list(itertools.chain.from_iterable(t + [eos_id] for t in token_lists)), dtype=torch.long)
    n = flat.numel() // n_ctx
    return flat[: n * n_ctx].reshape(n, n_ctx)


def beginnings(token_lists: list[list[int]], n_tokens: int) -> Int[Tensor, "n n_tokens"]:
    """First n_tokens of every article that has at least n_tokens tokens (shorter ones are dropped)."""
    if not isinstance(n_tokens, int) or n_tokens < 1:
        raise ValueError(f"n_tokens={n_tokens!r} is not allowed: a positive integer")
    rows = [t[:n_tokens] for t in token_lists if len(t) >= n_tokens]
    return torch.tensor(rows, dtype=torch.long) if rows else torch.empty((0, n_tokens), dtype=torch.long)


def _check_plant_args(n_ctx: int, frac: float, min_len: int, max_len: int) -> None:
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac={frac!r} is not allowed: a float in [0, 1]")
    if not (isinstance(min_len, int) and isinstance(max_len, int) and 1 <= min_len <= max_len):
        raise ValueError(f"min_len={min_len!r}, max_len={max_len!r} are not allowed: "
                         "integers with 1 <= min_len <= max_len")
    if 2 * max_len > n_ctx:
        raise ValueError(f"max_len={max_len} is not allowed: at most n_ctx/2={n_ctx / 2} so a span and its copy fit")


def plant_repeats(
    windows: Int[Tensor, "n n_ctx"], frac: float, min_len: int, max_len: int, generator: torch.Generator
) -> tuple[Int[Tensor, "n n_ctx"], Bool[Tensor, " n"], Int[Tensor, "n 3"]]:
    """Repeat a span in round(frac*n) windows right after itself -> (windows, planted, spans (s, L, s+L) or -1)."""
    n, n_ctx = windows.shape
    _check_plant_args(n_ctx, frac, min_len, max_len)
    k = round(frac * n)
    rows = torch.randperm(n, generator=generator)[:k]
    length = torch.randint(min_len, max_len + 1, (k,), generator=generator)
    n_starts = n_ctx - 2 * length + 1  # s in [0, n_ctx - 2L]
    start = (torch.rand(k, generator=generator) * n_starts).long().clamp(max=n_starts - 1)
    spans = torch.full((n, 3), -1, dtype=torch.long)
    spans[rows] = torch.stack([start, length, start + length], dim=1)
    pos = torch.arange(n_ctx).expand(k, n_ctx)
    in_copy = (pos >= (start + length)[:, None]) & (pos < (start + 2 * length)[:, None])
    src = torch.where(in_copy, pos - length[:, None], pos)  # copy region reads from the span one length back
    out = windows.clone()
    out[rows] = windows[rows].gather(1, src)
    planted = torch.zeros(n, dtype=torch.bool)
    planted[rows] = True
    return out, planted, spans


@dataclass(frozen=True)
class TokenData:
    """Token tensors for one DataConfig: train samples (+ planting record), held-out val, and article beginnings."""

    train: Int[Tensor, "n_train n_ctx"]
    planted: Bool[Tensor, " n_train"]
    spans: Int[Tensor, "n_train 3"]
    val: Int[Tensor, "n_val n_ctx"]
    val_beginnings: Int[Tensor, "n_val_b beginning_tokens"]
    train_beginnings: Int[Tensor, "n_train_b beginning_tokens"]
    vocab_size: int
    eos_id: int

    @property
    def n_train_tokens(self) -> int:
        """Number of tokens in the training samples."""
        return self.train.numel()


def tokens_path(cfg: DataConfig) -> Path:
    """Artifact file of the token tensors for cfg (keyed by the whole DataConfig)."""
    return artifacts.path("data", "tokens", cfg) / "tokens.safetensors"


def _encode(tok: Tokenizer, texts: list[str], desc: str, progress: bool, chunk: int = 4096) -> list[list[int]]:
    """encode_batch in chunks so a progress bar can move."""
    out: list[list[int]] = []
    for i in tqdm(range(0, len(texts), chunk), desc=desc, disable=not progress):
        out.extend(tok.encode_batch(texts[i : i + chunk]))
    return out


def _build(cfg: DataConfig, progress: bool) -> dict[str, Tensor]:
    """Tokenize the corpus and the test split and build every tensor of TokenData."""
    tok = get_tokenizer(cfg)
    train_ids = _encode(tok, corpus_texts(cfg), "tokenize train", progress)
    test_ids = _encode(tok, load_articles("dbpedia14_test")["text"].tolist(), "tokenize val", progress)
    if cfg.task == "beginnings":
        train, val = beginnings(train_ids, cfg.n_ctx), beginnings(test_ids, cfg.n_ctx)
    else:
        train, val = lm_windows(train_ids, cfg.n_ctx, tok.eos_id), lm_windows(test_ids, cfg.n_ctx, tok.eos_id)
    planted, spans = torch.zeros(len(train), dtype=torch.bool), torch.full((len(train), 3), -1, dtype=torch.long)
    if cfg.task == "windows" and cfg.plant_frac > 0:
        gen = torch.Generator().manual_seed(PLANT_SEED)
        train, planted, spans = plant_repeats(train, cfg.plant_frac, cfg.plant_min, cfg.plant_max, gen)
    return {"train": train, "planted": planted, "spans": spans, "val": val,
            "val_beginnings": beginnings(test_ids, cfg.beginning_tokens),
            "train_beginnings": beginnings(train_ids, cfg.beginning_tokens),
            "vocab_size": torch.tensor(tok.vocab_size), "eos_id": torch.tensor(tok.eos_id)}


def load_token_data(cfg: DataConfig, progress: bool = False) -> TokenData:
    """TokenData for cfg, loaded from its artifact or built (tokenizer trained if needed) and saved atomically."""
    dest = tokens_path(cfg)
    with artifacts.lock(dest.parent):
        if not (dest.parent / artifacts.MANIFEST).is_file():
            tensors = _build(cfg, progress)
            artifacts.write_json(dest.parent / "config.json", dataclasses.asdict(cfg))
            # int32 on disk halves the file (ids < 2**31); everything is long again in memory
            artifacts.save_tensors(dest, {k: v.int() if v.dtype == torch.long else v for k, v in tensors.items()})
            artifacts.write_manifest(dest.parent, [dest.name, "config.json"], cfg)
    artifacts.verify(dest.parent, cfg)
    tensors = {k: v.long() if v.dtype == torch.int32 else v for k, v in artifacts.load_tensors(dest).items()}
    missing = [f.name for f in dataclasses.fields(TokenData) if f.name not in tensors]
    if missing:
        raise artifacts.damaged(dest, f"lacks the tensors {missing}")
    fields = {k: (int(v.item()) if k in ("vocab_size", "eos_id") else v) for k, v in tensors.items()}
    return TokenData(**fields)
