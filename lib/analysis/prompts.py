"""Topic keywords (log-odds with an informative Dirichlet prior) and held-out (prompt -> keyword) pairs with metrics."""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lib.core import data
from lib.core.checks import check
from lib.core.data import lm_windows, load_articles
from lib.core.params import Params

TOPIC_SETS = ("dbpedia", "comments")
SPLITS = ("fit", "heldout")
MODES = ("whole_word", "word_start")
# The comments file has no split of its own: a comment is held out when crc32(text) % 10 < 3 (30%). The rule
# depends on the text only, so it is the same on every machine, for every row order and every preset.
COMMENTS_HELDOUT_MOD, COMMENTS_HELDOUT_BELOW = 10, 3
_SENTENCE_END = re.compile(r"[.!?](\s|$)")

HookList = Sequence[tuple[str, Callable]]


# ---------------------------------------------------------------------------------------------- splits


def comments_heldout(texts: Iterable[str]) -> np.ndarray:
    """Boolean mask of the held-out comments (crc32 of the UTF-8 text mod 10 < 3)."""
    return np.array([zlib.crc32(t.encode()) % COMMENTS_HELDOUT_MOD < COMMENTS_HELDOUT_BELOW for t in texts], bool)


def source_name(topic_set: str, split: str) -> str:
    """The lib.core.data dataset a (topic set, split) reads: dbpedia fit/heldout = dbpedia14_train/test; comments = toxic."""
    _check_set_split(topic_set, split)
    if topic_set == "dbpedia":
        return "dbpedia14_train" if split == "fit" else "dbpedia14_test"
    return "toxic"


def _check_set_split(topic_set: str, split: str) -> None:
    if topic_set not in TOPIC_SETS:
        raise ValueError(f"topic_set={topic_set!r} is not allowed: one of {TOPIC_SETS}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed: one of {SPLITS}")


def articles(topic_set: str, split: str) -> pd.DataFrame:
    """Texts of a topic set's split with columns label, text, source, row (row = index in the source dataset).

    'fit' (keywords, clusters) and 'heldout' (prompts) never share a text: DBpedia fit is the training split,
    held-out the test split; comments are split by `comments_heldout`.
    """
    src = source_name(topic_set, split)
    df = data.load_articles(src)[["label", "text"]].assign(source=src)
    df["row"] = np.arange(len(df))
    if topic_set == "comments":
        held = comments_heldout(df["text"])
        df = df[held if split == "heldout" else ~held]
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------- word tables


@dataclass(frozen=True)
class WordTables:
    """Per-token flags: `begins` (a space then a letter: starts a word), `candidate` (begins, all letters,
    >= min_chars letters: may be a keyword) and `continues` (starts with a letter or digit: glued to the word
    before it)."""

    begins: Bool[Tensor, " vocab"]
    candidate: Bool[Tensor, " vocab"]
    continues: Bool[Tensor, " vocab"]


def word_tables(tok: data.Tokenizer, min_chars: int = 3) -> WordTables:
    """WordTables of a tokenizer (candidates: ' ' + at least min_chars letters, e.g. ' football')."""
    texts = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    begins = torch.tensor([len(t) > 1 and t[0] == " " and t[1].isalpha() for t in texts])
    candidate = torch.tensor([t[:1] == " " and t[1:].isalpha() and len(t) - 1 >= min_chars for t in texts])
    continues = torch.tensor([t[:1].isalnum() for t in texts])
    return WordTables(begins, candidate, continues)


def occurrences(ids: Int[Tensor, " n"], tables: WordTables, mode: str = "whole_word") -> Bool[Tensor, " n"]:
    """Where a candidate keyword occurs: as a whole word (next token starts a new word) or as a word's first token."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not allowed: one of {MODES}")
    hit = tables.candidate[ids]
    if mode == "word_start":
        return hit
    nxt = torch.cat([ids[1:], ids.new_zeros(1)])
    ends = ~tables.continues[nxt]
    ends[-1] = True
    return hit & ends


# ------------------------------------------------------------------------------------------- keywords


def log_odds_z(counts: Float[Tensor, "topic vocab"], prior_size: float = 1000.0) -> Float[Tensor, "topic vocab"]:
    """z-scored log-odds of each word in each topic versus all other topics (informative Dirichlet prior).

    Monroe, Colaresi & Quinn (2008), "Fightin' Words", eq. 16-22: the prior is the pooled word frequency
    scaled to `prior_size` pseudo-counts, which shrinks rare words towards no difference.
    """
    counts = counts.double()
    total = counts.sum(0)
    alpha = prior_size * (total + 1e-3) / (total + 1e-3).sum()
    a0 = alpha.sum()
    y_i, y_j = counts, total - counts
    n_i, n_j = y_i.sum(1, keepdim=True), y_j.sum(1, keepdim=True)
    delta = (torch.log((y_i + alpha) / (n_i + a0 - y_i - alpha))
             - torch.log((y_j + alpha) / (n_j + a0 - y_j - alpha)))
    return (delta / torch.sqrt(1.0 / (y_i + alpha) + 1.0 / (y_j + alpha))).float()


def _flat_ids(token_lists: list[list[int]], eos_id: int) -> tuple[Tensor, Tensor]:
    """Concatenated ids (eos after each text) and the text index of every position."""
    flat = torch.tensor([i for t in token_lists for i in (*t, eos_id)], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(token_lists)), torch.tensor([len(t) + 1 for t in token_lists]))
    return flat, owner


def keyword_counts(tok: data.Tokenizer, texts: Sequence[str], labels: Sequence[str], topics: Sequence[str],
                   tables: WordTables, mode: str = "whole_word") -> Float[Tensor, "topic vocab"]:
    """Occurrences of each candidate keyword token per topic (counted where `occurrences` says)."""
    flat, owner = _flat_ids(tok.encode_batch(list(texts)), tok.eos_id)
    hit = occurrences(flat, tables, mode)
    index = {t: i for i, t in enumerate(topics)}
    topic_of_text = torch.tensor([index.get(lab, -1) for lab in labels], dtype=torch.long)
    topic = topic_of_text[owner]
    keep = hit & (topic >= 0)
    out = torch.zeros(len(topics) * tok.vocab_size, dtype=torch.float64)
    out.index_add_(0, topic[keep] * tok.vocab_size + flat[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    return out.view(len(topics), tok.vocab_size)


def keywords(tok: data.Tokenizer, topic_set: str, n_per_topic: int = 10, min_count: int = 20, min_chars: int = 3,
             mode: str = "whole_word", prior_size: float = 1000.0, min_ratio: float = 2.0,
             exclusive: bool = True, max_per_topic: int | None = None) -> pd.DataFrame:
    """Top keywords per topic of a topic set, from its 'fit' split: one row per (topic, keyword token).

    Columns: topic, token_id, token, z (log-odds z-score, topic vs the set's other topics), count, rate (per
    1,000 candidate occurrences in the topic), rate_rest. With `exclusive`, a token goes to at most one topic
    (its highest z); tokens occurring fewer than min_count times in the topic, or less than min_ratio times as
    often (per candidate occurrence) as in the other topics, are skipped. `max_per_topic` caps the texts counted
    per topic.
    """
    df = articles(topic_set, "fit")
    if max_per_topic is not None:
        df = df.groupby("label", sort=False).head(max_per_topic)
    topics = sorted(df["label"].unique())
    tables = word_tables(tok, min_chars)
    counts = keyword_counts(tok, df["text"].tolist(), df["label"].tolist(), topics, tables, mode)
    z = log_odds_z(counts, prior_size)
    rate = counts / counts.sum(1, keepdim=True).clamp(min=1)
    rest = (counts.sum(0) - counts) / (counts.sum() - counts.sum(1, keepdim=True)).clamp(min=1)
    ok = tables.candidate[None] & (counts >= min_count) & (rate >= min_ratio * rest)
    z = torch.where(ok, z, torch.tensor(float("-inf")))
    best = z.argmax(0)  # a token belongs to the topic where it is most over-represented
    rows = []
    for i, topic in enumerate(topics):
        zi = torch.where(best == i, z[i], torch.tensor(float("-inf"))) if exclusive else z[i]
        for tid in zi.argsort(descending=True)[:n_per_topic].tolist():
            if not np.isfinite(float(zi[tid])):
                break
            rest = counts[:, tid].sum() - counts[i, tid]
            rows.append({"topic_set": topic_set, "topic": topic, "token_id": tid, "token": tok.id_to_token(tid),
                         "z": float(zi[tid]), "count": int(counts[i, tid]),
                         "rate": float(1000 * counts[i, tid] / counts[i].sum()),
                         "rate_rest": float(1000 * rest / (counts.sum() - counts[i].sum()))})
    return pd.DataFrame(rows, columns=["topic_set", "topic", "token_id", "token", "z", "count", "rate", "rate_rest"])


# -------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class KeywordPrompts:
    """(prompt -> keyword) pairs: right-padded prompt tokens (starting with eos), true lengths, keyword targets."""

    tokens: Int[Tensor, "n pos"]
    lengths: Int[Tensor, " n"]
    targets: Int[Tensor, " n"]
    topics: tuple[str, ...]
    sources: tuple[str, ...]  # lib.core.data dataset of each prompt's article
    rows: Int[Tensor, " n"]  # row of the article in that dataset

    def __len__(self) -> int:
        return len(self.targets)

    def select(self, idx: Int[Tensor, " m"] | Sequence[int]) -> "KeywordPrompts":
        """The prompts at idx (padding trimmed to the longest kept prompt)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        pos = int(self.lengths[idx].max()) if len(idx) else 1
        return KeywordPrompts(self.tokens[idx, :pos], self.lengths[idx], self.targets[idx],
                              tuple(self.topics[i] for i in idx.tolist()),
                              tuple(self.sources[i] for i in idx.tolist()), self.rows[idx])

    def subset(self, topics: Sequence[str]) -> "KeywordPrompts":
        """The prompts of the given topics (in this object's order)."""
        return self.select([i for i, t in enumerate(self.topics) if t in set(topics)])

    def frame(self) -> pd.DataFrame:
        """One row per prompt: prompt (index), topic, source, row, length, target."""
        return pd.DataFrame({"prompt": np.arange(len(self)), "topic": self.topics, "source": self.sources,
                             "row": self.rows.numpy(), "length": self.lengths.numpy(),
                             "target": self.targets.numpy()})


def concat(parts: Sequence[KeywordPrompts], pad_id: int = 0) -> KeywordPrompts:
    """Several prompt sets as one (re-padded with pad_id)."""
    pos = max(p.tokens.shape[1] for p in parts)
    tokens = torch.cat([F.pad(p.tokens, (0, pos - p.tokens.shape[1]), value=pad_id) for p in parts])
    return KeywordPrompts(tokens, torch.cat([p.lengths for p in parts]), torch.cat([p.targets for p in parts]),
                          sum((p.topics for p in parts), ()), sum((p.sources for p in parts), ()),
                          torch.cat([p.rows for p in parts]))


def _first_hit(ids: list[int], allowed: set[int], hits: Tensor, min_context: int, max_len: int) -> int | None:
    """Position of the first keyword occurrence with at least min_context tokens before it, inside max_len."""
    for i in range(min_context + 1, min(len(ids), max_len + 1)):
        if hits[i] and ids[i] in allowed:
            return i
    return None


def keyword_prompts(tok: data.Tokenizer, kw: pd.DataFrame, topic_set: str, n_per_topic: int, max_len: int,
                    topics: Sequence[str] | None = None, min_context: int = 4, max_sentences: int = 3,
                    mode: str = "whole_word", min_chars: int = 3, bos: bool = True, seed: int = 0) -> KeywordPrompts:
    """Up to n_per_topic held-out (prompt -> keyword) pairs per topic, one per article.

    The prompt is the article's opening (after eos if `bos`, as in LM windows) up to its first keyword of that
    topic (at least min_context tokens before it, at most max_len tokens in all, inside the first max_sentences
    sentences); articles are visited in a random order fixed by `seed`.
    """
    df = articles(topic_set, "heldout")
    topics = list(topics) if topics is not None else sorted(kw.loc[kw.topic_set == topic_set, "topic"].unique())
    tables = word_tables(tok, min_chars)
    parts = []
    for t_i, topic in enumerate(topics):
        allowed = set(kw.loc[(kw.topic_set == topic_set) & (kw.topic == topic), "token_id"].tolist())
        sub = df[df.label == topic]
        order = np.random.default_rng(seed + t_i).permutation(len(sub))
        rows, prompts, targets = [], [], []
        for j in order:
            ids = [tok.eos_id] * bos + tok.encode(sub["text"].iloc[j])
            hits = occurrences(torch.tensor(ids), tables, mode)
            i = _first_hit(ids, allowed, hits, min_context - 1 + bos, max_len) if allowed else None
            if i is None or len(_SENTENCE_END.findall(tok.decode(ids[int(bos) : i]))) >= max_sentences:
                continue
            rows.append(int(sub["row"].iloc[j]))
            prompts.append(ids[:i])
            targets.append(ids[i])
            if len(rows) == n_per_topic:
                break
        parts.append(_pack(prompts, targets, topic, sub["source"].iloc[0] if len(sub) else "", rows, tok.eos_id))
    return concat(parts, tok.eos_id)


def _pack(prompts: list[list[int]], targets: list[int], topic: str, source: str, rows: list[int],
          pad_id: int) -> KeywordPrompts:
    pos = max((len(p) for p in prompts), default=1)
    tokens = torch.full((len(prompts), pos), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        tokens[i, : len(p)] = torch.tensor(p)
    return KeywordPrompts(tokens, torch.tensor([len(p) for p in prompts], dtype=torch.long),
                          torch.tensor(targets, dtype=torch.long), (topic,) * len(prompts), (source,) * len(prompts),
                          torch.tensor(rows, dtype=torch.long))


# -------------------------------------------------------------------------------------------- metrics


def at_last(x: Float[Tensor, "batch pos ..."], lengths: Int[Tensor, " batch"]) -> Float[Tensor, "batch ..."]:
    """Each row's value at its last real position (lengths - 1)."""
    return x[torch.arange(x.shape[0], device=x.device), lengths.to(x.device) - 1]


def keyword_scores(logits: Float[Tensor, "n vocab"], targets: Int[Tensor, " n"]) -> dict[str, Tensor]:
    """Per-prompt keyword cross-entropy (nats), top-1 and top-5 hits (0/1 floats)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up to fp32; float64 stays float64
    loss = F.cross_entropy(logits, targets.to(logits.device), reduction="none")
    top5 = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
    hit = top5 == targets.to(logits.device)[:, None]
    return {"loss": loss.cpu(), "top1": hit[:, 0].float().cpu(), "top5": hit.any(-1).float().cpu()}


@torch.no_grad()
def last_logits(model, prompts: KeywordPrompts, fwd_hooks: HookList = (),
                batch_size: int = 128) -> Float[Tensor, "n vocab"]:
    """Logits at each prompt's last position (a full forward per batch, with fwd_hooks)."""
    out = []
    device = model.cfg.device
    for i in range(0, len(prompts), batch_size):
        part = prompts.select(torch.arange(i, min(i + batch_size, len(prompts))))
        logits = model.run_with_hooks(part.tokens.to(device), fwd_hooks=list(fwd_hooks))
        out.append(at_last(logits, part.lengths).cpu())
    return torch.cat(out) if out else torch.empty(0, model.cfg.d_vocab)


def evaluate(model, prompts: KeywordPrompts, fwd_hooks: HookList = (), batch_size: int = 128) -> pd.DataFrame:
    """Keyword metrics per prompt: prompt, topic, loss, top1, top5."""
    s = keyword_scores(last_logits(model, prompts, fwd_hooks, batch_size), prompts.targets)
    return pd.DataFrame({"prompt": np.arange(len(prompts)), "topic": prompts.topics,
                         **{k: v.numpy() for k, v in s.items()}})


def summary(df: pd.DataFrame, by: Sequence[str] = ("topic",)) -> pd.DataFrame:
    """Mean keyword loss, top-1 and top-5 accuracy and prompt count per group."""
    return df.groupby(list(by)).agg(loss=("loss", "mean"), top1=("top1", "mean"), top5=("top5", "mean"),
                                    n=("loss", "size")).reset_index()


def topic_windows(tok: data.Tokenizer, topic_set: str, split: str, n_ctx: int, n_windows: int,
                  topics: Sequence[str] | None = None) -> dict[str, Int[Tensor, "n n_ctx"]]:
    """Per topic, up to n_windows LM windows (texts joined by eos, as in training) of a split's texts."""
    df = articles(topic_set, split)
    out: dict[str, Tensor] = {}
    for topic in topics if topics is not None else sorted(df["label"].unique()):
        texts = df.loc[df.label == topic, "text"].tolist()
        need, ids, n_tok = n_windows * n_ctx, [], 0
        for t in texts:  # encode only as many texts as the windows need
            ids.append(tok.encode(t))
            n_tok += len(ids[-1]) + 1
            if n_tok >= need + n_ctx:
                break
        out[topic] = data.lm_windows(ids, n_ctx, tok.eos_id)[:n_windows]
    return out


def topic_openings(tok, n_ctx: int, n_per_topic: int, seed: int = 0, split: str = "dbpedia14_test"
                  ) -> tuple[Int[Tensor, "n n_ctx"], Int[Tensor, " n"], list[str]]:
    """The first n_ctx tokens of n_per_topic random articles per DBpedia topic (articles at least n_ctx long).

    `tok` is a lib.core.data Tokenizer (or anything with encode_batch). Returns (tokens, topic index per window, names).
    """
    df = load_articles(split)
    names = sorted(df["label"].unique())
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i, name in enumerate(names):
        texts = df.loc[df["label"] == name, "text"].tolist()
        ids = [t for t in tok.encode_batch([texts[j] for j in rng.permutation(len(texts))]) if len(t) >= n_ctx]
        if len(ids) < n_per_topic:
            raise ValueError(f"topic {name!r} has only {len(ids)} articles of >= {n_ctx} tokens; "
                             f"n_per_topic={n_per_topic} is too many")
        rows += [t[:n_ctx] for t in ids[:n_per_topic]]
        labels += [i] * n_per_topic
    return torch.tensor(rows), torch.tensor(labels), names


def lm_windows_for(hooked, texts: Sequence[str], n_ctx: int, max_windows: int | None = None) -> Int[Tensor, "n n_ctx"]:
    """Texts tokenised with the model's own (Hugging Face) tokenizer, eos-joined and cut into n_ctx windows."""
    tok = hooked.tokenizer
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    windows = lm_windows(ids, n_ctx, tok.eos_token_id)
    return windows[:max_windows] if max_windows is not None else windows


# ------------------------------------------------------------------------------------------- keyword probe knobs


@dataclass(frozen=True)
class KeywordParams(Params):
    """How a report picks its topic keywords and builds its keyword prompts (shared by reports 3, 4, 5 and 7)."""

    n_keywords: int  # keywords per topic
    mode: Literal["whole_word", "word_start"]
    min_count: int  # occurrences in the topic's fit texts
    min_ratio: float  # rate in the topic / rate in the other topics
    min_chars: int
    exclusive: bool  # a token goes to at most one topic
    max_texts: int | None  # cap on the texts counted per topic (None: all)

    def validate(self) -> None:
        for name in ("n_keywords", "min_count", "min_chars"):
            check(getattr(self, name) >= 1, f"KeywordParams.{name}", getattr(self, name), "an integer >= 1")
        check(self.min_ratio >= 0, "KeywordParams.min_ratio", self.min_ratio, "a number >= 0")
        check(self.max_texts is None or self.max_texts >= 1, "KeywordParams.max_texts", self.max_texts,
              "None or an integer >= 1")

    def keywords(self, tok: data.Tokenizer, topic_set: str) -> pd.DataFrame:
        """`keywords` of one topic set with these knobs."""
        return keywords(tok, topic_set, n_per_topic=self.n_keywords, min_count=self.min_count,
                        min_chars=self.min_chars, mode=self.mode, min_ratio=self.min_ratio, exclusive=self.exclusive,
                        max_per_topic=self.max_texts)

    def prompts(self, tok: data.Tokenizer, kw: pd.DataFrame, topic_set: str, n_per_topic: int, max_len: int,
                topics: Sequence[str] | None = None, bos: bool = True, seed: int = 0) -> KeywordPrompts:
        """`keyword_prompts` of one topic set with these knobs."""
        return keyword_prompts(tok, kw, topic_set, n_per_topic, max_len, topics, mode=self.mode,
                               min_chars=self.min_chars, bos=bos, seed=seed)


def keyword_probes(tok: data.Tokenizer, kp: KeywordParams, n_per_topic: int, max_len: int, bos: bool = True,
                   seed: int = 0, topic_sets: Sequence[str] = TOPIC_SETS) -> tuple[pd.DataFrame, dict[str, KeywordPrompts]]:
    """The keywords of every topic set (one frame) and each set's held-out keyword prompts, with knobs kp."""
    kw = pd.concat([kp.keywords(tok, s) for s in topic_sets], ignore_index=True)
    return kw, {s: kp.prompts(tok, kw, s, n_per_topic, max_len, bos=bos, seed=seed) for s in topic_sets}


KEYWORDS = {
    "smoke": KeywordParams(n_keywords=5, mode="word_start", min_count=5, min_ratio=0.0, min_chars=1, exclusive=False,
                           max_texts=300),
    "cpu": KeywordParams(n_keywords=10, mode="whole_word", min_count=20, min_ratio=2.0, min_chars=3, exclusive=True,
                         max_texts=None),
    "gpu": KeywordParams(n_keywords=20, mode="whole_word", min_count=50, min_ratio=2.0, min_chars=3, exclusive=True,
                         max_texts=None),
}
