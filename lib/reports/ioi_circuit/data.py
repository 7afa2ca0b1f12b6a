"""IOI data: templates, corpus names/places/objects made single BPE tokens, prompts with their ABC counterparts,
and IOI sentences mixed into natural-text training windows."""

from __future__ import annotations

import collections
import json
import re
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import torch
from jaxtyping import Bool, Int
from tokenizers import Tokenizer as HFTokenizer
from torch import Tensor

from lib.core.checks import check
from lib.core.data import Tokenizer

# Slots: {A} and {B} are the first mentions in order, {S} the subject's second mention; the prompt ends right before
# the indirect object (IO). ABBA puts the IO first (A = IO, B = S), BABA second (A = S, B = IO). Every slot follows a
# space, so a name is the same " Name" token wherever it stands. A template is an introduction (both names, in the
# spirit of Wang et al. 2022's templates) followed by an action (the subject again, then "to"): 13 x 10 = 130, so a
# held-out template can be a new combination of an introduction and an action that training uses elsewhere.
INTROS: tuple[str, ...] = (
    "When {A} and {B} went to the {PLACE},",
    "After {A} and {B} went to the {PLACE},",
    "Then, {A} and {B} went to the {PLACE}.",
    "Then, {A} and {B} had a lot of fun at the {PLACE}.",
    "While {A} and {B} were working at the {PLACE},",
    "Yesterday {A} and {B} visited the {PLACE}, and",
    "Friends {A} and {B} met at the {PLACE}.",
    "Once {A} and {B} arrived at the {PLACE},",
    "Before {A} and {B} left the {PLACE},",
    "As {A} and {B} sat in the {PLACE},",
    "At the {PLACE}, {A} talked with {B} for hours. Then",
    "On Sunday {A} invited {B} to the {PLACE}, and",
    "The {PLACE} that {A} and {B} liked was closed, so",
)
ACTIONS: tuple[str, ...] = (
    "{S} gave a {OBJECT} to",
    "{S} handed a {OBJECT} to",
    "{S} decided to give a {OBJECT} to",
    "{S} sold a {OBJECT} to",
    "{S} showed a {OBJECT} to",
    "{S} passed the {OBJECT} to",
    "{S} threw the {OBJECT} to",
    "{S} lent a {OBJECT} to",
    "{S} offered a {OBJECT} to",
    "{S} said goodbye to",
)
TEMPLATES: tuple[str, ...] = tuple(f"{intro} {action}" for intro in INTROS for action in ACTIONS)
# Hand-written candidates, kept when the corpus uses them (see `corpus_words`); consonant-initial objects ("a X").
PLACE_CANDIDATES: tuple[str, ...] = (
    "store", "school", "park", "church", "river", "station", "hospital", "restaurant", "library", "museum", "market",
    "garden", "office", "hotel", "beach", "lake", "house", "farm", "castle", "airport", "stadium", "theatre",
    "harbour", "island", "forest", "bridge", "village", "city", "club", "temple", "palace", "mill", "shop", "cafe",
    "prison", "court", "factory", "zoo", "pub", "college", "hall", "tower")
OBJECT_CANDIDATES: tuple[str, ...] = (
    "book", "ring", "ball", "letter", "drink", "gift", "flower", "bottle", "bag", "basket", "computer", "key", "map",
    "coin", "hat", "necklace", "painting", "camera", "guitar", "medal", "ticket", "watch", "sword", "boat", "car",
    "horse", "dog", "cake", "knife", "pen", "phone", "shirt", "box", "lamp", "chair", "bicycle", "record", "photo",
    "song", "poem", "piano", "trophy", "flag", "stone", "cup")
PERSON_LABELS = ("Athlete", "Artist", "OfficeHolder")
MONTHS_DAYS = frozenset("January February March April May June July August September October November December "
                        "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())
_SLOT = re.compile(r"\{(A|B|S|PLACE|OBJECT)\}")
_WORD = re.compile(r"[A-Za-z]+")


# ------------------------------------------------------------------------------------------ corpus words


def word_counts(texts: Sequence[str]) -> collections.Counter:
    """How often each alphabetic word (case kept) occurs in texts."""
    counts: collections.Counter = collections.Counter()
    for t in texts:
        counts.update(_WORD.findall(t))
    return counts


def first_names(articles: pd.DataFrame, counts: collections.Counter, min_count: int = 20,
                max_lower_frac: float = 0.1) -> list[str]:
    """First names of person articles (title 'Given Family...', label in PERSON_LABELS), most frequent title first.

    Kept: alphabetic, capitalised, >= 3 letters, >= min_count uses in the corpus text, not a month or weekday, and
    not a common word (its lowercase form is used at most max_lower_frac times as often: 'Mark', 'Will', 'Bill' go).
    """
    people = articles[articles["label"].isin(PERSON_LABELS)]
    firsts = collections.Counter(t.split()[0] for t in people["title"] if len(t.split()) >= 2)
    keep = [n for n, _ in firsts.most_common()
            if re.fullmatch(r"[A-Z][a-z]{2,}", n) and counts[n] >= min_count and n not in MONTHS_DAYS
            and counts[n.lower()] <= max_lower_frac * counts[n]]
    return keep


def corpus_words(candidates: Sequence[str], counts: collections.Counter, n: int, min_count: int = 20) -> list[str]:
    """The n candidates used most often in the corpus (each at least min_count times), most frequent first."""
    used = sorted((w for w in candidates if counts[w] >= min_count), key=lambda w: (-counts[w], w))
    check(len(used) >= n, "n", n, f"at most {len(used)} (candidates used >= {min_count} times in the corpus)")
    return used[:n]


# ------------------------------------------------------------------------------------------ tokenizer


def extend_bpe(tok: Tokenizer, words: Sequence[str], rounds: int = 3) -> tuple[Tokenizer, list[str]]:
    """`tok` plus merges, appended after its own, that make each ' word' one token -> (tokenizer, words that are).

    The base merges keep priority, so text without these words tokenizes as before; a word's own pieces are
    chained into one token (new ids after the base vocabulary). A word still split after `rounds` is left out.
    """
    hf = tok.hf
    for _ in range(rounds):
        spec = json.loads(hf.to_str())
        vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
        known = {tuple(m) for m in merges}
        for w in words:
            pieces = [hf.id_to_token(i) for i in hf.encode(" " + w, add_special_tokens=False).ids]
            cur = pieces[0]
            for p in pieces[1:]:
                if (cur, p) not in known:
                    merges.append([cur, p])
                    known.add((cur, p))
                cur += p
                vocab.setdefault(cur, len(vocab))
        hf = HFTokenizer.from_str(json.dumps(spec))
    out = Tokenizer(hf, tok.eos)
    return out, [w for w in words if len(out.encode(" " + w)) == 1]


def token_id(tok: Tokenizer, word: str) -> int:
    """The id of ' word' (ValueError unless it is one token)."""
    ids = tok.encode(" " + word)
    check(len(ids) == 1, "word", word, f"a single token under this tokenizer (' {word}' is {len(ids)} tokens)")
    return ids[0]


# ------------------------------------------------------------------------------------------ vocabulary


@dataclass(frozen=True)
class IOIVocab:
    """Names, places, objects (single tokens) and templates, each split into train and held-out parts."""

    names_train: tuple[str, ...]
    names_heldout: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    templates_train: tuple[str, ...]
    templates_heldout: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.names_train + self.names_heldout

    def summary(self) -> dict[str, int]:
        """Counts of every part."""
        return {"names_train": len(self.names_train), "names_heldout": len(self.names_heldout),
                "places": len(self.places), "objects": len(self.objects),
                "templates_train": len(self.templates_train), "templates_heldout": len(self.templates_heldout)}


def split_vocab(names: Sequence[str], places: Sequence[str], objects: Sequence[str], n_heldout_names: int,
                n_heldout_templates: int, seed: int, templates: Sequence[str] = TEMPLATES,
                heldout_first: bool = False) -> IOIVocab:
    """Random held-out names (with heldout_first: the first n_heldout_names) and templates (`heldout_templates`),
    deterministic from seed; places and objects are shared."""
    check(len(set(names)) == len(names), "names", names, "distinct names")
    check(5 <= n_heldout_names <= len(names) - 5, "n_heldout_names", n_heldout_names,
          f"between 5 and {len(names) - 5} (each split needs 5 distinct names: IO, S and three ABC names)")
    g = torch.Generator().manual_seed(seed)
    pn = torch.randperm(len(names), generator=g).tolist()
    held_n = set(range(n_heldout_names)) if heldout_first else set(pn[:n_heldout_names])
    held_t = heldout_templates(templates, n_heldout_templates, g)
    return IOIVocab(
        names_train=tuple(n for i, n in enumerate(names) if i not in held_n),
        names_heldout=tuple(n for i, n in enumerate(names) if i in held_n),
        places=tuple(places), objects=tuple(objects),
        templates_train=tuple(t for i, t in enumerate(templates) if i not in held_t),
        templates_heldout=tuple(t for i, t in enumerate(templates) if i in held_t))


def template_parts(template: str) -> tuple[str, str]:
    """(introduction, action): the text before ' {S}' and from '{S}' on."""
    intro, sep, rest = template.partition(" {S}")
    check(bool(sep), "template", template, "text with a ' {S}' slot (the subject's second mention)")
    return intro, "{S}" + rest


def heldout_templates(templates: Sequence[str], n: int, generator: torch.Generator) -> set[int]:
    """n template indices, in random order, each held out only while its introduction and its action both keep at
    least one training template (so every held-out template combines parts that training has seen)."""
    check(1 <= n < len(templates), "n_heldout_templates", n, f"between 1 and {len(templates) - 1}")
    parts = [template_parts(t) for t in templates]
    left = collections.Counter(p for pair in parts for p in pair)
    held: set[int] = set()
    for i in torch.randperm(len(templates), generator=generator).tolist():
        if len(held) < n and all(left[p] > 1 for p in parts[i]):
            held.add(i)
            left.subtract(parts[i])
    check(len(held) == n, "n_heldout_templates", n, f"at most {len(held)} (each part must keep a training template)")
    return held


# ------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class IOIPrompts:
    """IOI prompts ('<eos>' + template up to the IO, right-padded with eos) and their ABC counterparts.

    `end` is the last prompt position (the IO is predicted there); io/s are token ids, *_pos positions; `abc` holds
    the corrupted prompt's ids at (IO, S1, S2): three names, all different from the clean IO and S; `template`
    indexes the `templates` the prompts were made from; `abba` is True when the IO is mentioned first."""

    tokens: Int[Tensor, "n pos"]
    corrupted: Int[Tensor, "n pos"]
    end: Int[Tensor, " n"]
    io: Int[Tensor, " n"]
    s: Int[Tensor, " n"]
    io_pos: Int[Tensor, " n"]
    s1_pos: Int[Tensor, " n"]
    s2_pos: Int[Tensor, " n"]
    abc: Int[Tensor, "n 3"]
    template: Int[Tensor, " n"]
    abba: Bool[Tensor, " n"]

    def __len__(self) -> int:
        return len(self.tokens)

    def select(self, idx: Tensor) -> "IOIPrompts":
        """The prompts at idx (indices or a boolean mask), padding trimmed to the longest kept."""
        fields = {k: getattr(self, k)[idx] for k in self.__dataclass_fields__}
        width = int(fields["end"].max()) + 1 if len(fields["end"]) else 1
        fields["tokens"], fields["corrupted"] = fields["tokens"][:, :width], fields["corrupted"][:, :width]
        return IOIPrompts(**fields)

    def sentences(self, period: int, eos: int) -> list[list[int]]:
        """Training sentences: each prompt, its IO, then `period` and `eos` ('<eos> ... to Mary.<eos>')."""
        return [self.tokens[i, : int(self.end[i]) + 1].tolist() + [int(self.io[i]), period, eos]
                for i in range(len(self))]


def _segments(tok: Tokenizer, template: str) -> list[list[int] | str]:
    """The template as token-id lists (literal text) and slot names, in order."""
    out: list[list[int] | str] = []
    pos = 0
    for m in _SLOT.finditer(template):
        if m.start() > pos:
            out.append(tok.encode(template[pos : m.start()].rstrip(" ")))  # the slot's token carries the space
        out.append(m.group(1))
        pos = m.end()
    if pos < len(template):
        out.append(tok.encode(template[pos:]))
    return out


def _render(segments: list, fill: dict[str, int]) -> tuple[list[int], dict[str, int]]:
    """Token ids of one filled template and the position of each name slot (after a leading eos)."""
    ids: list[int] = []
    where: dict[str, int] = {}
    for seg in segments:
        if isinstance(seg, str):
            where.setdefault(seg, len(ids) + 1)
            ids.append(fill[seg])
        else:
            ids.extend(seg)
    return ids, where


def _check_rendering(tok: Tokenizer, templates: Sequence[str], segs: list) -> None:
    """Piecewise tokenization equals tokenizing the whole text (slots are pre-token boundaries)."""
    probe = {"A": "Xq", "B": "Yq", "S": "Xq", "PLACE": "Zq", "OBJECT": "Wq"}
    for t, seg in zip(templates, segs):
        parts = [tok.encode(" " + probe[s]) if isinstance(s, str) else s for s in seg]
        check(sum(parts, []) == tok.encode(t.format(**probe)), "template", t,
              "text whose slots follow a space and end a word")


def make_prompts(tok: Tokenizer, templates: Sequence[str], names: Sequence[str], places: Sequence[str],
                 objects: Sequence[str], n: int, seed: int) -> IOIPrompts:
    """n prompts: templates in turn (random order), each in both orders (ABBA at even i, BABA at odd), random names
    (IO != S), place and object, and an ABC counterpart (deterministic from seed)."""
    check(len(set(names)) >= 5, "names", names, "at least 5 distinct names (IO, S and three ABC names)")
    check(n >= 1, "n", n, "a positive integer")
    g = torch.Generator().manual_seed(seed)
    name_ids = torch.tensor([token_id(tok, w) for w in names])
    place_ids, object_ids = [token_id(tok, w) for w in places], [token_id(tok, w) for w in objects]
    segs = [_segments(tok, t) for t in templates]
    _check_rendering(tok, templates, segs)
    t_order = torch.randperm(len(templates), generator=g).tolist()
    rows, corrupt, meta = [], [], []
    for i in range(n):
        t, abba = t_order[(i // 2) % len(templates)], i % 2 == 0
        io, s, x, y, z = name_ids[torch.randperm(len(names), generator=g)[:5]].tolist()
        place = place_ids[int(torch.randint(len(place_ids), (1,), generator=g))]
        obj = object_ids[int(torch.randint(len(object_ids), (1,), generator=g))]
        a, b, ca, cb = (io, s, x, y) if abba else (s, io, y, x)
        ids, where = _render(segs[t], {"A": a, "B": b, "S": s, "PLACE": place, "OBJECT": obj})
        cids, _ = _render(segs[t], {"A": ca, "B": cb, "S": z, "PLACE": place, "OBJECT": obj})
        rows.append([tok.eos_id] + ids)
        corrupt.append([tok.eos_id] + cids)
        io_pos, s1_pos = (where["A"], where["B"]) if abba else (where["B"], where["A"])
        meta.append((len(ids), io, s, io_pos, s1_pos, where["S"], x, y, z, t, abba))
    return _stack(rows, corrupt, meta, tok.eos_id)


def _stack(rows: list[list[int]], corrupt: list[list[int]], meta: list[tuple], eos: int) -> IOIPrompts:
    """IOIPrompts from per-prompt token lists (right-padded with eos) and metadata tuples."""
    width = max(map(len, rows))
    padded = [[r + [eos] * (width - len(r)) for r in rs] for rs in (rows, corrupt)]
    m = [torch.tensor(col, dtype=torch.long) for col in zip(*meta)]
    return IOIPrompts(tokens=torch.tensor(padded[0]), corrupted=torch.tensor(padded[1]), end=m[0], io=m[1], s=m[2],
                      io_pos=m[3], s1_pos=m[4], s2_pos=m[5], abc=torch.stack(m[6:9], dim=1), template=m[9],
                      abba=m[10].bool())


# ------------------------------------------------------------------------------------------ mixing


@dataclass(frozen=True)
class IOIMix:
    """Training windows with IOI sentences: `rows` the windows that carry one, `starts` and `lengths` where."""

    windows: Int[Tensor, "n n_ctx"]
    rows: Int[Tensor, " k"]
    starts: Int[Tensor, " k"]
    lengths: Int[Tensor, " k"]

    @property
    def mask(self) -> Bool[Tensor, " n"]:
        out = torch.zeros(len(self.windows), dtype=torch.bool)
        out[self.rows] = True
        return out


def n_mixed(n_windows: int, frac: float) -> int:
    """How many of n_windows carry an IOI sentence at fraction frac: round(frac * n_windows)."""
    check(0.0 <= frac <= 1.0, "frac", frac, "a float in [0, 1]")
    return round(frac * n_windows)


def mix_sentences(windows: Int[Tensor, "n n_ctx"], sentences: Sequence[Sequence[int]], frac: float,
                  generator: torch.Generator, exclude: Bool[Tensor, " n"] | None = None) -> IOIMix:
    """Write sentence i over a random span of the i-th chosen window: round(frac * n) windows (at most all those
    not in `exclude`, e.g. the ones with a planted repeat), the rest of each window left as natural text."""
    n, n_ctx = windows.shape
    free = torch.nonzero(~exclude if exclude is not None else torch.ones(n, dtype=torch.bool)).flatten()
    check(frac * n <= len(free) + 0.5, "frac", frac, f"at most {len(free) / n:.4f} (the windows not excluded)")
    k = min(n_mixed(n, frac), len(free))  # rounding may ask for one window more than there are
    check(len(sentences) >= k, "sentences", len(sentences), f"at least {k} (one per mixed window)")
    rows = free[torch.randperm(len(free), generator=generator)[:k]].sort().values
    lengths = torch.tensor([len(s) for s in sentences[:k]], dtype=torch.long)
    check(k == 0 or int(lengths.max()) <= n_ctx, "sentences", int(lengths.max()) if k else 0, f"<= n_ctx={n_ctx}")
    starts = (torch.rand(k, generator=generator) * (n_ctx - lengths + 1)).long().clamp(max=n_ctx - lengths)
    out = windows.clone()
    for r, s0, sent in zip(rows.tolist(), starts.tolist(), sentences[:k]):
        out[r, s0 : s0 + len(sent)] = torch.tensor(sent, dtype=torch.long)
    return IOIMix(windows=out, rows=rows, starts=starts, lengths=lengths)
