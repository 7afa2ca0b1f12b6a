"""Topic keywords (log-odds with an informative Dirichlet prior) and held-out (prompt -> keyword) pairs with metrics."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from lib.analysis.stats import bootstrap_ci
from lib.analysis.units import require_hook
from lib.core import config, data
from lib.core.checks import check, is_int
from lib.core.data import comments_heldout, lm_windows, load_articles
from lib.core.params import Params

TOPIC_SETS = ("dbpedia", "comments")
SPLITS = ("fit", "heldout")
_SENTENCE_END = re.compile(r"[.!?](\s|$)")

HookList = Sequence[tuple[str, Callable]]


# ---------------------------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class TextTopics:
    """A topic set given as texts rather than one of the shipped sets (TOPIC_SETS): `frame` has one row per text,
    columns label (its topic), text, source, row and split ('fit' or 'heldout'; no text in both). Every function
    that takes a topic set name also takes one of these (see `concept_texts`)."""

    name: str
    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = {"label", "text", "source", "row", "split"} - set(self.frame.columns)
        check(not missing, "TextTopics.frame columns", sorted(self.frame.columns),
              "label, text, source, row and split (missing: " + ", ".join(sorted(missing)) + ")")
        bad = set(self.frame["split"]) - set(SPLITS)
        check(not bad, "TextTopics split", sorted(bad), f"one of {SPLITS}")


def set_name(topic_set: str | TextTopics) -> str:
    """The name a topic set's rows carry (keywords' topic_set column, prompts' lookup)."""
    return topic_set.name if isinstance(topic_set, TextTopics) else topic_set


def concept_texts(directory: str | Path, min_lines: int = 4) -> TextTopics:
    """The concepts of a folder: one `<Concept>.txt` per concept, one example text per line (blank lines skipped).

    Lines alternate between the 'fit' split (even lines: keywords, sub-models) and 'heldout' (odd lines: the
    validation prompts), so the two never share a text. At least two concepts (sub-models compete within their
    set) and `min_lines` texts per concept; errors name the file.
    """
    folder = Path(directory).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"concepts folder {folder} does not exist: make a folder with one <Concept>.txt per "
                                "concept, one example text per line")
    files = sorted(folder.glob("*.txt"))
    if len(files) < 2:
        raise ValueError(f"{folder} holds {len(files)} <Concept>.txt file(s): at least 2 concepts are needed (a "
                         "sub-model is found against the other concepts of its set)")
    rows = []
    for f in files:
        try:
            lines = [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError as e:
            raise ValueError(f"{f} is not UTF-8 text ({e})") from e
        lines = [ln for ln in lines if ln]
        if len(lines) < min_lines:
            raise ValueError(f"{f} has {len(lines)} non-empty line(s): at least {min_lines} example texts are needed "
                             "(half find the sub-model, half validate it)")
        rows += [{"label": f.stem, "text": t, "source": f.name, "row": i, "split": SPLITS[i % 2]}
                 for i, t in enumerate(lines)]
    return TextTopics(folder.name, pd.DataFrame(rows))


def source_name(topic_set: str, split: str) -> str:
    """The lib.core.data dataset a (topic set, split) reads: dbpedia fit/heldout = dbpedia14_train/test; comments = toxic."""
    _check_set_split(topic_set, split)
    if topic_set == "dbpedia":
        return "dbpedia14_train" if split == "fit" else "dbpedia14_test"
    return "toxic"


def _check_set_split(topic_set: str | TextTopics, split: str) -> None:
    if not isinstance(topic_set, TextTopics) and topic_set not in TOPIC_SETS:
        raise ValueError(f"topic_set={topic_set!r} is not allowed: one of {TOPIC_SETS}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not allowed: one of {SPLITS}")


def articles(topic_set: str | TextTopics, split: str) -> pd.DataFrame:
    """Texts of a topic set's split with columns label, text, source, row (row = index in the source dataset).

    'fit' (keywords, clusters) and 'heldout' (prompts) never share a text: DBpedia fit is the training split,
    held-out the test split; comments are split by `comments_heldout`; a TextTopics carries its own split.
    """
    if isinstance(topic_set, TextTopics):
        _check_set_split(topic_set, split)
        df = topic_set.frame
        return df.loc[df["split"] == split, ["label", "text", "source", "row"]].reset_index(drop=True)
    src = source_name(topic_set, split)
    df = data.load_articles(src)[["label", "text"]].assign(source=src)
    df["row"] = np.arange(len(df))
    if topic_set == "comments":
        held = comments_heldout(df["text"])
        df = df[held if split == "heldout" else ~held]
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------- word tables

IGNORE = -100  # padding of a prompt's target row (torch's cross-entropy ignore_index)

# Function words a probe must not use as a topic's keyword: articles, pronouns, prepositions, conjunctions,
# auxiliary and modal verbs, determiners and quantifiers, negation, common adverbs of degree and time, number and
# ordinal words, and the word pieces left by English contractions (" don" of "don't"). It contains the English
# stop list of NLTK (Bird, Klein & Loper 2009) except "won" (a verb here: "won the league"). Compared in lower case.
STOP_WORDS = frozenset([
    "a", "about", "above", "after", "again", "against", "ago", "ain", "all", "almost", "along", "already", "also",
    "although", "always", "am", "among", "an", "and", "another", "any", "anybody", "anyone", "anything", "anywhere",
    "are", "aren", "around", "as", "at", "away", "be", "because", "been", "before", "behind", "being", "below",
    "beside", "besides", "between", "beyond", "both", "but", "by", "can", "cannot", "could", "couldn", "did",
    "didn", "do", "does", "doesn", "doing", "don", "done", "down", "during", "each", "either", "else", "elsewhere",
    "enough", "etc", "even", "ever", "every", "everybody", "everyone", "everything", "everywhere", "few", "for",
    "from", "further", "had", "hadn", "has", "hasn", "have", "haven", "having", "he", "hence", "her", "here",
    "hers", "herself", "him", "himself", "his", "how", "however", "i", "if", "in", "indeed", "inside", "instead",
    "into", "is", "isn", "it", "its", "itself", "just", "least", "less", "let", "like", "ll", "many", "may",
    "maybe", "me", "might", "mightn", "mine", "more", "moreover", "most", "mostly", "much", "must", "mustn", "my",
    "myself", "near", "nearly", "needn", "neither", "never", "nevertheless", "no", "nobody", "none", "nor", "not",
    "nothing", "now", "nowhere", "of", "off", "often", "on", "once", "one", "ones", "only", "onto", "or", "other",
    "others", "otherwise", "ought", "our", "ours", "ourselves", "out", "outside", "over", "own", "per", "perhaps",
    "quite", "rather", "re", "same", "shall", "shan", "she", "should", "shouldn", "since", "so", "some", "somebody",
    "someone", "something", "sometimes", "somewhere", "soon", "still", "such", "than", "that", "the", "their",
    "theirs", "them", "themselves", "then", "there", "thereby", "therefore", "these", "they", "this", "those",
    "though", "through", "throughout", "thus", "till", "to", "together", "too", "toward", "towards", "under",
    "unless", "unlike", "until", "up", "upon", "us", "very", "ve", "via", "was", "wasn", "we", "were", "weren",
    "what", "whatever", "when", "whenever", "where", "whereas", "wherever", "whether", "which", "while", "who",
    "whoever", "whole", "whom", "whose", "why", "will", "with", "within", "without", "wouldn", "would", "yet",
    "you", "your", "yours", "yourself", "yourselves", "zero", "two", "three", "four", "five", "six", "seven",
    "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred",
    "hundreds", "thousand", "thousands", "million", "millions", "billion", "first", "second", "third", "fourth",
    "fifth", "sixth", "seventh", "eighth", "ninth", "tenth", "last", "next"
])


@dataclass(frozen=True)
class WordTables:
    """Per-token flags: `begins` (a space then a letter: starts a word), `continues` (starts with a letter or digit:
    glued to the token before it, so it does not start a new word) and `alpha` (letters only, after at most one
    leading space)."""

    begins: Bool[Tensor, " vocab"]
    continues: Bool[Tensor, " vocab"]
    alpha: Bool[Tensor, " vocab"]
    texts: tuple[str, ...]


def word_tables(tok: data.Tokenizer) -> WordTables:
    """WordTables of a tokenizer."""
    texts = tuple(tok.id_to_token(i) for i in range(tok.vocab_size))
    begins = torch.tensor([len(t) > 1 and t[0] == " " and t[1].isalpha() for t in texts])
    continues = torch.tensor([t[:1].isalnum() for t in texts])
    alpha = torch.tensor([(t[1:] if t[:1] == " " else t).isalpha() for t in texts])
    return WordTables(begins, continues, alpha, texts)


def word_spans(ids: Int[Tensor, " n"], tables: WordTables, max_tokens: int) -> tuple[Int[Tensor, " w"], Int[Tensor, " w"]]:
    """(start, n_tokens) of every whole word in ids: a token that begins a word and the tokens glued to it, all of
    them letters only, at most max_tokens tokens. ' foot' 'ball' ' team' '.' -> ' football' (2 tokens), ' team'."""
    n = len(ids)
    if n == 0:
        return ids.new_zeros(0), ids.new_zeros(0)
    new = ~tables.continues[ids]
    new[0] = True
    seg = torch.cumsum(new.long(), 0) - 1
    starts = new.nonzero().flatten()
    length = torch.diff(torch.cat([starts, starts.new_tensor([n])]))
    nonalpha = torch.zeros(len(starts), dtype=torch.long).index_add_(0, seg, (~tables.alpha[ids]).long())
    ok = tables.begins[ids[starts]] & (nonalpha == 0) & (length <= max_tokens)
    return starts[ok], length[ok]


def word_text(ids: Sequence[int], tables: WordTables) -> str:
    """The text of a word's tokens (with its leading space)."""
    return "".join(tables.texts[i] for i in ids)


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


def word_counts(tok: data.Tokenizer, texts: Sequence[str], labels: Sequence[str], topics: Sequence[str],
                max_tokens: int) -> pd.DataFrame:
    """Whole-word occurrences per topic: one row per (topic, word) with count (occurrences) and docs (texts that
    contain it); columns topic, word, token_ids (a tuple), count, docs. Texts whose label is not in topics are
    skipped."""
    tables = word_tables(tok)
    index = {t: i for i, t in enumerate(topics)}
    keep = [i for i, lab in enumerate(labels) if lab in index]
    token_lists = tok.encode_batch([texts[i] for i in keep])
    flat, owner = _flat_ids(token_lists, tok.eos_id)
    starts, lengths = word_spans(flat, tables, max_tokens)
    ids = flat.tolist()
    keys = [tuple(ids[s : s + n]) for s, n in zip(starts.tolist(), lengths.tolist())]
    df = pd.DataFrame({"token_ids": keys, "text": owner[starts].numpy()})
    df["topic"] = np.asarray([labels[i] for i in keep], dtype=object)[df["text"].to_numpy()]
    out = df.groupby(["topic", "token_ids"], sort=True).agg(count=("text", "size"), docs=("text", "nunique"))
    out = out.reset_index()
    out["word"] = [word_text(k, tables) for k in out["token_ids"]]
    return out[["topic", "word", "token_ids", "count", "docs"]]


def _flat_ids(token_lists: list[list[int]], eos_id: int) -> tuple[Tensor, Tensor]:
    """Concatenated ids (eos after each text) and the text index of every position."""
    flat = torch.tensor([i for t in token_lists for i in (*t, eos_id)], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(token_lists)), torch.tensor([len(t) + 1 for t in token_lists]))
    return flat, owner


KEYWORD_COLUMNS = ["topic_set", "topic", "word", "token", "token_ids", "n_tokens", "z", "count", "rate", "rate_rest",
                   "doc_share"]


def keywords(tok: data.Tokenizer, topic_set: str | TextTopics, n_per_topic: int = 10, min_count: int = 20, min_chars: int = 3,
             max_tokens: int = 4, prior_size: float = 1000.0, min_ratio: float = 2.0, common_share: float = 0.02,
             exclusive: bool = True, max_per_topic: int | None = None) -> pd.DataFrame:
    """Top content-word keywords per topic of a topic set, from its 'fit' split: one row per (topic, word).

    A keyword is a whole word (a word-initial token and the tokens glued to it, letters only, at most max_tokens
    tokens, at least min_chars letters) that is not a function word (STOP_WORDS), occurs at least min_count times in
    the topic, at least min_ratio times as often (per word) as in the set's other topics, and is not common in every
    topic (in at least common_share of the texts of each). Words are ranked by their log-odds z-score (topic vs the
    set's other topics, `log_odds_z`); with `exclusive` a word goes to one topic only (its highest z).

    Columns: topic_set, topic, word (its text, with the leading space; `token` is the same text), token_ids (a
    tuple: the probe's targets), n_tokens, z, count, rate (per 1,000 words of the topic), rate_rest, doc_share
    (share of the topic's texts containing it). `max_per_topic` caps the texts counted per topic.
    """
    df = articles(topic_set, "fit")
    if max_per_topic is not None:
        df = df.groupby("label", sort=False).head(max_per_topic)
    topics = sorted(df["label"].unique())
    wc = word_counts(tok, df["text"].tolist(), df["label"].tolist(), topics, max_tokens)
    n_texts = df["label"].value_counts()
    vocab = sorted(set(wc["token_ids"]))
    col = {k: j for j, k in enumerate(vocab)}
    counts = torch.zeros(len(topics), len(vocab), dtype=torch.float64)
    docs = torch.zeros_like(counts)
    ti = torch.tensor([topics.index(t) for t in wc["topic"]], dtype=torch.long)
    wi = torch.tensor([col[k] for k in wc["token_ids"]], dtype=torch.long)
    counts[ti, wi] = torch.tensor(wc["count"].to_numpy(), dtype=torch.float64)
    docs[ti, wi] = torch.tensor(wc["docs"].to_numpy(), dtype=torch.float64)
    tables = word_tables(tok)
    text = [word_text(k, tables) for k in vocab]
    content = torch.tensor([t.strip().lower() not in STOP_WORDS and len(t.strip()) >= min_chars for t in text])
    share = docs / torch.tensor([float(n_texts[t]) for t in topics], dtype=torch.float64)[:, None]
    common = (share >= common_share).all(0)
    z = log_odds_z(counts, prior_size)
    rate = counts / counts.sum(1, keepdim=True).clamp(min=1)
    rest = (counts.sum(0) - counts) / (counts.sum() - counts.sum(1, keepdim=True)).clamp(min=1)
    ok = (content & ~common)[None] & (counts >= min_count) & (rate >= min_ratio * rest)
    z = torch.where(ok, z, torch.tensor(float("-inf")))
    best = z.argmax(0)  # a word belongs to the topic where it is most over-represented
    rows = []
    for i, topic in enumerate(topics):
        zi = torch.where(best == i, z[i], torch.tensor(float("-inf"))) if exclusive else z[i]
        for j in zi.argsort(descending=True, stable=True)[:n_per_topic].tolist():
            if not np.isfinite(float(zi[j])):
                break
            n_rest = counts[:, j].sum() - counts[i, j]
            rows.append({"topic_set": set_name(topic_set), "topic": topic, "word": text[j], "token": text[j],
                         "token_ids": vocab[j], "n_tokens": len(vocab[j]), "z": float(zi[j]),
                         "count": int(counts[i, j]), "rate": float(1000 * counts[i, j] / counts[i].sum()),
                         "rate_rest": float(1000 * n_rest / (counts.sum() - counts[i].sum())),
                         "doc_share": float(share[i, j])})
    return pd.DataFrame(rows, columns=KEYWORD_COLUMNS)


# -------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class KeywordPrompts:
    """(prompt -> keyword) pairs, teacher-forced: row i's tokens are the prompt followed by the keyword's tokens
    except its last (right-padded; `lengths` real tokens); `targets` holds the keyword's tokens right-aligned
    (IGNORE to their left), so the last `width` positions of a row predict them: position lengths - width + j
    predicts targets[:, j]. A one-token keyword is the prompt and one target at its last position."""

    tokens: Int[Tensor, "n pos"]
    lengths: Int[Tensor, " n"]
    targets: Int[Tensor, "n width"]
    topics: tuple[str, ...]
    sources: tuple[str, ...]  # lib.core.data dataset of each prompt's article
    rows: Int[Tensor, " n"]  # row of the article in that dataset

    def __post_init__(self) -> None:
        check(self.targets.dim() == 2 and len(self.targets) == len(self.lengths), "targets.shape",
              tuple(self.targets.shape), f"(n={len(self.lengths)}, width): one row of keyword tokens per prompt")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def width(self) -> int:
        """The longest keyword, in tokens (the positions a row is scored at)."""
        return int(self.word_lengths.max()) if len(self) else 1

    @property
    def word_lengths(self) -> Int[Tensor, " n"]:
        """Tokens of each prompt's keyword."""
        return (self.targets != IGNORE).sum(1)

    @property
    def prompt_lengths(self) -> Int[Tensor, " n"]:
        """Tokens of each prompt before its keyword."""
        return self.lengths - self.word_lengths + 1

    def prompt(self, i: int) -> list[int]:
        """The tokens of prompt i before its keyword."""
        return self.tokens[i, : int(self.prompt_lengths[i])].tolist()

    def word(self, i: int) -> list[int]:
        """The tokens of prompt i's keyword."""
        t = self.targets[i]
        return t[t != IGNORE].tolist()

    def select(self, idx: Int[Tensor, " m"] | Sequence[int]) -> KeywordPrompts:
        """The prompts at idx (padding trimmed to the longest kept prompt and keyword)."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        pos = int(self.lengths[idx].max()) if len(idx) else 1
        width = int(self.word_lengths[idx].max()) if len(idx) else 1
        return KeywordPrompts(self.tokens[idx, :pos], self.lengths[idx], self.targets[idx, self.targets.shape[1] - width :],
                              tuple(self.topics[i] for i in idx.tolist()),
                              tuple(self.sources[i] for i in idx.tolist()), self.rows[idx])

    def tail_targets(self, idx: Int[Tensor, " m"] | None = None) -> Int[Tensor, "m width"]:
        """targets of the prompts at idx (default: all), trimmed to their longest keyword (the positions a batch of
        them is scored at)."""
        idx = torch.arange(len(self)) if idx is None else torch.as_tensor(idx, dtype=torch.long)
        width = int(self.word_lengths[idx].max())
        return self.targets[idx, self.targets.shape[1] - width :]

    def subset(self, topics: Sequence[str]) -> KeywordPrompts:
        """The prompts of the given topics (in this object's order)."""
        return self.select([i for i, t in enumerate(self.topics) if t in set(topics)])

    def frame(self) -> pd.DataFrame:
        """One row per prompt: prompt (index), topic, source, row, length (tokens fed), prompt_length, word (its
        token ids, a tuple), word_length."""
        return pd.DataFrame({"prompt": np.arange(len(self)), "topic": self.topics, "source": self.sources,
                             "row": self.rows.numpy(), "length": self.lengths.numpy(),
                             "prompt_length": self.prompt_lengths.numpy(),
                             "word": [tuple(self.word(i)) for i in range(len(self))],
                             "word_length": self.word_lengths.numpy()})


def concat(parts: Sequence[KeywordPrompts], pad_id: int = 0) -> KeywordPrompts:
    """Several prompt sets as one (re-padded with pad_id; targets left-padded with IGNORE)."""
    pos = max(p.tokens.shape[1] for p in parts)
    width = max(p.targets.shape[1] for p in parts)
    tokens = torch.cat([F.pad(p.tokens, (0, pos - p.tokens.shape[1]), value=pad_id) for p in parts])
    targets = torch.cat([F.pad(p.targets, (width - p.targets.shape[1], 0), value=IGNORE) for p in parts])
    return KeywordPrompts(tokens, torch.cat([p.lengths for p in parts]), targets,
                          sum((p.topics for p in parts), ()), sum((p.sources for p in parts), ()),
                          torch.cat([p.rows for p in parts]))


def keyword_prompts(tok: data.Tokenizer, kw: pd.DataFrame, topic_set: str | TextTopics, n_per_topic: int, max_len: int,
                    topics: Sequence[str] | None = None, min_context: int = 4, max_sentences: int = 3,
                    bos: bool = True, seed: int = 0) -> KeywordPrompts:
    """Up to n_per_topic held-out (prompt -> keyword) pairs per topic, one per article.

    The prompt is the article's opening (after eos if `bos`, as in LM windows) up to its first whole-word
    occurrence of a keyword of that topic (at least min_context tokens before it, inside the first max_sentences
    sentences, and prompt plus keyword within max_len tokens); articles are visited in a random order fixed by `seed`.
    """
    df = articles(topic_set, "heldout")
    name = set_name(topic_set)
    topics = list(topics) if topics is not None else sorted(kw.loc[kw.topic_set == name, "topic"].unique())
    tables = word_tables(tok)
    longest = int(kw["n_tokens"].max()) if len(kw) else 1
    parts = []
    for t_i, topic in enumerate(topics):
        allowed = set(kw.loc[(kw.topic_set == name) & (kw.topic == topic), "token_ids"].tolist())
        sub = df[df.label == topic]
        order = np.random.default_rng(seed + t_i).permutation(len(sub))
        rows, prompts, words = [], [], []
        for j in order if allowed else ():
            ids = [tok.eos_id] * bos + tok.encode(sub["text"].iloc[j])
            hit = _first_hit(ids, allowed, tables, min_context + bos, max_len, longest)
            if hit is None or len(_SENTENCE_END.findall(tok.decode(ids[int(bos) : hit[0]]))) >= max_sentences:
                continue
            s, n = hit
            rows.append(int(sub["row"].iloc[j]))
            prompts.append(ids[:s])
            words.append(ids[s : s + n])
            if len(rows) == n_per_topic:
                break
        parts.append(_pack(prompts, words, topic, sub["source"].iloc[0] if len(sub) else "", rows, tok.eos_id))
    return concat(parts, tok.eos_id)


def _first_hit(ids: list[int], allowed: set[tuple[int, ...]], tables: WordTables, min_start: int, max_len: int,
               max_tokens: int) -> tuple[int, int] | None:
    """(start, n_tokens) of the first allowed whole word starting at >= min_start whose prompt and word fit in max_len."""
    starts, lengths = word_spans(torch.tensor(ids), tables, max_tokens)
    for s, n in zip(starts.tolist(), lengths.tolist()):
        if s >= min_start and s + n - 1 <= max_len and tuple(ids[s : s + n]) in allowed:
            return s, n
    return None


def _pack(prompts: list[list[int]], words: list[list[int]], topic: str, source: str, rows: list[int],
          pad_id: int) -> KeywordPrompts:
    fed = [p + w[:-1] for p, w in zip(prompts, words)]
    pos, width = max((len(f) for f in fed), default=1), max((len(w) for w in words), default=1)
    tokens = torch.full((len(fed), pos), pad_id, dtype=torch.long)
    targets = torch.full((len(fed), width), IGNORE, dtype=torch.long)
    for i, (f, w) in enumerate(zip(fed, words)):
        tokens[i, : len(f)] = torch.tensor(f)
        targets[i, width - len(w) :] = torch.tensor(w)
    return KeywordPrompts(tokens, torch.tensor([len(f) for f in fed], dtype=torch.long), targets,
                          (topic,) * len(fed), (source,) * len(fed), torch.tensor(rows, dtype=torch.long))


# -------------------------------------------------------------------------------------------- metrics


def tail(x: Float[Tensor, "batch pos ..."], lengths: Int[Tensor, " batch"], width: int) -> Float[Tensor, "batch width ..."]:
    """Each row's values at its last `width` real positions (lengths - width .. lengths - 1, clamped at 0)."""
    pos = (lengths.to(x.device)[:, None] - width + torch.arange(width, device=x.device)).clamp(min=0)
    # gather, not x[rows, pos]: the same values, ~40x faster on CPU (advanced indexing over the batch axis is slow)
    idx = pos.view(*pos.shape, *([1] * (x.dim() - 2))).expand(*pos.shape, *x.shape[2:])
    return torch.gather(x, 1, idx)


def keyword_scores(logits: Float[Tensor, "n width vocab"], targets: Int[Tensor, "n width"]) -> dict[str, Tensor]:
    """Per-prompt keyword scores from the logits at the positions that predict its tokens (teacher forcing):
    loss = −Σ log p(token) over the keyword's tokens (nats; the word's log-probability), top1 = every token is
    an argmax (no token scores higher: greedy decoding writes the word; a tie for the maximum counts), top5 = fewer
    than 5 tokens score higher at each position (0/1 floats). IGNORE targets are skipped."""
    check(logits.dim() == 3 and tuple(targets.shape) == tuple(logits.shape[:2]), "logits/targets shapes",
          f"{tuple(logits.shape)} / {tuple(targets.shape)}", "(n, width, vocab) logits and (n, width) targets")
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up to fp32; float64 stays float64
    targets = targets.to(logits.device)
    valid = targets != IGNORE
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    # tokens scored strictly higher; counted in int32: a bool tensor's default sum first copies it to int64, which
    # took 6x the count itself and half of a neuron-game pass (bench/keyword_scores.py)
    above = (logits > logits.gather(-1, targets.clamp(min=0)[..., None])).sum(-1, dtype=torch.int32)
    top1 = ((above == 0) | ~valid).all(1)
    in5 = ((above < 5) | ~valid).all(1)
    return {"loss": loss.view(valid.shape).sum(1).cpu(), "top1": top1.float().cpu(), "top5": in5.float().cpu()}


@torch.no_grad()
def tail_logits(model, prompts: KeywordPrompts, fwd_hooks: HookList = (),
                batch_size: int = 128) -> Float[Tensor, "n width vocab"]:
    """Logits at the positions that predict each prompt's keyword tokens (the last prompts.width real positions;
    a full forward per batch, with fwd_hooks)."""
    _check_hooks(model, fwd_hooks, "tail_logits")
    out = []
    device, width = model.cfg.device, prompts.width
    for i in range(0, len(prompts), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(prompts)))
        part = prompts.select(idx)
        out.append(_tail_forward(model, part.tokens.to(device), part.lengths, width, fwd_hooks).cpu())
    return torch.cat(out) if out else torch.empty(0, width, model.cfg.d_vocab)


def _tail_forward(model, tokens: Int[Tensor, "n pos"], lengths: Int[Tensor, " n"], width: int,
                  fwd_hooks: HookList) -> Float[Tensor, "n width vocab"]:
    """Logits at each row's last `width` real positions: the blocks run over every position, the final norm and the
    unembedding only at those (position-wise, so the same logits; a 50k-token unembedding at every position costs
    tens of times the rest of a small model). A model whose final norm or unembedding is hooked, that caps its
    logits, or that is not a HookedTransformer takes the full forward."""
    names = [h for h, _ in fwd_hooks if isinstance(h, str)]
    plain = (hasattr(model, "ln_final") and hasattr(model, "unembed") and hasattr(model, "hooks")
             and all(isinstance(h, str) and not h.startswith(("ln_final", "unembed")) for h, _ in fwd_hooks)
             and not (getattr(model.cfg, "output_logits_soft_cap", 0) or 0) > 0)
    if not plain or len(names) != len(fwd_hooks):
        return tail(model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks)), lengths, width)
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        h = tail(model(tokens, stop_at_layer=model.cfg.n_layers), lengths, width)
        if model.cfg.normalization_type is not None:
            h = model.ln_final(h)
        return model.unembed(h)


def _check_hooks(model, fwd_hooks: HookList, method: str) -> None:
    """Every named hook exists and fires on this model (else an error naming it): a hook that never fires would
    leave the run unimpaired and read as 'no damage'."""
    for name in {h for h, _ in fwd_hooks if isinstance(h, str)}:
        require_hook(model, name, method)


@torch.no_grad()
def evaluate(model, prompts: KeywordPrompts, fwd_hooks: HookList = (), batch_size: int = 128) -> pd.DataFrame:
    """Keyword metrics per prompt: prompt, topic, loss (nats of the whole keyword), top1, top5."""
    _check_hooks(model, fwd_hooks, "evaluate")
    parts = []
    for i in range(0, len(prompts), batch_size):
        idx = torch.arange(i, min(i + batch_size, len(prompts)))
        part = prompts.select(idx)
        logits = _tail_forward(model, part.tokens.to(model.cfg.device), part.lengths, part.width, fwd_hooks)
        parts.append(keyword_scores(logits, part.targets))
    s = {k: torch.cat([p[k] for p in parts]) if parts else torch.empty(0) for k in ("loss", "top1", "top5")}
    return pd.DataFrame({"prompt": np.arange(len(prompts)), "topic": prompts.topics,
                         **{k: v.numpy() for k, v in s.items()}})


def summary(df: pd.DataFrame, by: Sequence[str] = ("topic",)) -> pd.DataFrame:
    """Mean keyword loss, top-1 and top-5 accuracy and prompt count per group."""
    return df.groupby(list(by)).agg(loss=("loss", "mean"), top1=("top1", "mean"), top5=("top5", "mean"),
                                    n=("loss", "size")).reset_index()


def unigram_logprobs(tok: data.Tokenizer, texts: Sequence[str]) -> Float[Tensor, " vocab"]:
    """log p(token) of the tokens of texts (eos after each), add-one smoothed: the unigram baseline of a probe."""
    flat, _ = _flat_ids(tok.encode_batch(list(texts)), tok.eos_id)
    counts = torch.bincount(flat, minlength=tok.vocab_size).double() + 1.0
    return (counts / counts.sum()).log().float()


def probe_margins(clean: pd.DataFrame, prompts: KeywordPrompts, unigram: Float[Tensor, " vocab"],
                  n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per topic: the model's keyword loss (an `evaluate` table), the baseline's, the margin (baseline minus model,
    nats; > 0: the model knows more than the baseline), its bootstrap 95% CI over prompts, and `usable` (the CI's
    low end above 0: the probe measures something the model has learnt). The baseline scores each keyword by the
    better of two predictors that know nothing of the prompt: its tokens' unigram frequencies
    (−Σ log p_unigram) and uniform guessing (n_tokens · ln V). Without the uniform one, an untrained model (close
    to uniform) would beat a unigram on keywords made of rare tokens."""
    uniform = float(np.log(len(unigram)))
    uni = np.array([min(-float(unigram[torch.tensor(prompts.word(i))].double().sum()), uniform * len(prompts.word(i)))
                    for i in range(len(prompts))])
    df = clean.assign(baseline=uni[clean["prompt"].to_numpy()])
    rows = []
    for topic, g in df.groupby("topic", sort=True):
        d = (g["baseline"] - g["loss"]).to_numpy()
        lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed) if len(d) >= 2 else (float("nan"), float("nan"))
        rows.append({"topic": topic, "n": len(d), "loss": float(g["loss"].mean()),
                     "baseline": float(g["baseline"].mean()), "margin": float(d.mean()), "ci_low": lo, "ci_high": hi,
                     "usable": bool(lo > 0)})
    return pd.DataFrame(rows)


def model_probe_margins(model, tok: data.Tokenizer, prompts: KeywordPrompts, corpus: Sequence[str],
                        n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """`probe_margins` of a model on prompts, with the unigram taken from its training corpus texts (the probe gate
    of reports 3, 4 and 7 and the sub-model command line)."""
    return probe_margins(evaluate(model, prompts), prompts, unigram_logprobs(tok, corpus), n_boot=n_boot, seed=seed)


def topic_windows(tok: data.Tokenizer, topic_set: str | TextTopics, split: str, n_ctx: int, n_windows: int,
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
    """How a report picks its topic keywords and builds its keyword prompts (shared by reports 3, 4, 5 and 7);
    see `keywords` for what each knob does."""

    n_keywords: int  # keywords per topic
    min_count: int  # occurrences in the topic's fit texts
    min_ratio: float  # rate in the topic / rate in the other topics
    min_chars: int  # letters in a keyword
    max_tokens: int  # tokens in a keyword
    common_share: float  # a word in at least this share of every topic's texts is no keyword
    exclusive: bool  # a word goes to at most one topic
    max_texts: int | None  # cap on the texts counted per topic (None: all)

    def validate(self) -> None:
        for name in ("n_keywords", "min_count", "min_chars", "max_tokens"):
            check(is_int(getattr(self, name)) and getattr(self, name) >= 1, f"KeywordParams.{name}",
                  getattr(self, name), "an integer >= 1")
        check(self.min_ratio >= 0, "KeywordParams.min_ratio", self.min_ratio, "a number >= 0")
        check(0 < self.common_share <= 1, "KeywordParams.common_share", self.common_share, "a share in (0, 1]")
        check(self.max_texts is None or self.max_texts >= 1, "KeywordParams.max_texts", self.max_texts,
              "None or an integer >= 1")

    def keywords(self, tok: data.Tokenizer, topic_set: str | TextTopics) -> pd.DataFrame:
        """`keywords` of one topic set with these knobs."""
        return keywords(tok, topic_set, n_per_topic=self.n_keywords, min_count=self.min_count,
                        min_chars=self.min_chars, max_tokens=self.max_tokens, min_ratio=self.min_ratio,
                        common_share=self.common_share, exclusive=self.exclusive, max_per_topic=self.max_texts)

    def prompts(self, tok: data.Tokenizer, kw: pd.DataFrame, topic_set: str | TextTopics, n_per_topic: int, max_len: int,
                topics: Sequence[str] | None = None, bos: bool = True, seed: int = 0) -> KeywordPrompts:
        """`keyword_prompts` of one topic set with these knobs."""
        return keyword_prompts(tok, kw, topic_set, n_per_topic, max_len, topics, bos=bos, seed=seed)


def keyword_probes(tok: data.Tokenizer, kp: KeywordParams, n_per_topic: int, max_len: int, bos: bool = True,
                   seed: int = 0, topic_sets: Sequence[str | TextTopics] = TOPIC_SETS
                   ) -> tuple[pd.DataFrame, dict[str, KeywordPrompts]]:
    """The keywords of every topic set (one frame) and each set's held-out keyword prompts (keyed by the set's
    name), with knobs kp."""
    kw = pd.concat([kp.keywords(tok, s) for s in topic_sets], ignore_index=True)
    return kw, {set_name(s): kp.prompts(tok, kw, s, n_per_topic, max_len, bos=bos, seed=seed) for s in topic_sets}


# a researcher's own concept texts (lib.analysis.prompts.concept_texts): tens of lines per concept, so counts are
# low; content words that are at least twice as frequent in the concept as in the others, whatever their spread
USER_KEYWORDS = KeywordParams(n_keywords=10, min_count=2, min_ratio=2.0, min_chars=3, max_tokens=4, common_share=1.0,
                              exclusive=True, max_texts=None)

KEYWORDS = {
    # smoke: a 300-token vocabulary and 300 texts per topic; the filters are loose so that every topic has probes
    "smoke": KeywordParams(n_keywords=5, min_count=5, min_ratio=1.0, min_chars=3, max_tokens=5, common_share=1.0,
                           exclusive=False, max_texts=300),
    "cpu": KeywordParams(n_keywords=10, min_count=20, min_ratio=2.0, min_chars=3, max_tokens=4, common_share=0.02,
                         exclusive=True, max_texts=None),
    "gpu": KeywordParams(n_keywords=20, min_count=50, min_ratio=2.0, min_chars=3, max_tokens=4, common_share=0.02,
                         exclusive=True, max_texts=None),
}


# ------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lib.prompts keywords --topic-set S --preset P`: one line per keyword, topic<TAB>keyword<TAB>score."""
    parser = argparse.ArgumentParser(prog="python -m lib.prompts", description="Inspect a topic set's keyword probes.")
    sub = parser.add_subparsers(dest="command", required=True)
    k = sub.add_parser("keywords", help="print each topic's keywords: topic<TAB>keyword<TAB>score (log-odds z)")
    k.add_argument("--topic-set", required=True, choices=TOPIC_SETS)
    k.add_argument("--preset", default="cpu", choices=tuple(KEYWORDS))
    args = parser.parse_args(list(argv) if argv is not None else None)
    tok = data.get_tokenizer(config.resolve(args.preset).data)
    kw = KEYWORDS[args.preset].keywords(tok, args.topic_set)
    for r in kw.itertuples():
        print(f"{r.topic}\t{r.word.strip()}\t{r.z:.2f}")


if __name__ == "__main__":
    main()
