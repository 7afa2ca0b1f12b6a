"""Report 8's IOI data and metrics: known answers on a tiny tokenizer and hand-built models."""

import dataclasses
import re

import pytest
import torch
from torch import nn

from lib.core.config import ModelConfig, resolve
from lib.core.data import train_bpe
from lib.core.model import Transformer, to_hooked
from lib.reports.ioi_circuit import data as D, kernel as K, params as P

NAMES = ("Mary", "John", "Tom", "Anna", "Paul", "Kate", "Lucy", "Oscar", "Ruth", "Hugo", "Ida", "Finn")
PLACES = ("store", "park", "school")
OBJECTS = ("book", "ring", "drink")
TEXT = ["The school was built in the park near the store.", "A book and a ring were found at the river.",
        "He went to the city, and then she gave a drink to him.", "When they arrived, it was late."] * 30


@pytest.fixture(scope="module")
def tok():
    base = train_bpe(TEXT, 300)
    ext, single = D.extend_bpe(base, NAMES + PLACES + OBJECTS)
    assert set(single) == set(NAMES + PLACES + OBJECTS)
    return ext


@pytest.fixture(scope="module")
def vocab():
    return D.split_vocab(NAMES, PLACES, OBJECTS, n_heldout_names=5, n_heldout_templates=6, seed=0)


def _slot_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{(?:A|B|S|PLACE|OBJECT)\})", template)
    return re.compile("".join(r"[A-Za-z]+" if p.startswith("{") else re.escape(p) for p in parts))


def test_extend_bpe_keeps_other_text_and_makes_words_single(tok):
    base = train_bpe(TEXT, 300)
    assert tok.vocab_size > base.vocab_size
    assert tok.encode("When they arrived, it was late.") == base.encode("When they arrived, it was late.")
    assert all(len(tok.encode(" " + w)) == 1 for w in NAMES + PLACES + OBJECTS)
    assert tok.decode(tok.encode(" Mary gave a ring to John.")) == " Mary gave a ring to John."


def test_prompts_carry_the_stated_io_and_s(tok):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=2 * len(D.TEMPLATES), seed=3)
    rows = torch.arange(len(p))
    assert (p.tokens[rows, p.io_pos] == p.io).all() and (p.tokens[rows, p.s1_pos] == p.s).all()
    assert (p.tokens[rows, p.s2_pos] == p.s).all() and (p.io != p.s).all()
    assert (p.tokens[:, 0] == tok.eos_id).all() and (p.s2_pos > torch.maximum(p.io_pos, p.s1_pos)).all()
    assert ((p.io_pos < p.s1_pos) == p.abba).all()  # ABBA: the IO is mentioned first
    for i in range(len(p)):
        text = tok.decode(p.tokens[i, 1 : p.end[i] + 1])
        io, s = tok.id_to_token(p.io[i]).strip(), tok.id_to_token(p.s[i]).strip()
        template = D.TEMPLATES[p.template[i]]
        a, b = (io, s) if p.abba[i] else (s, io)
        assert _slot_regex(template).fullmatch(text), (text, template)
        assert text.startswith(template.split("{")[0]) and text.endswith(" to")
        assert text.count(f" {s}") >= 2 and f" {a} " in text and f" {b} " in text
        assert (p.tokens[i, p.end[i] + 1 :] == tok.eos_id).all()  # right padding only


def test_abba_and_baba_are_balanced_per_template(tok):
    n_t = len(D.TEMPLATES)
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=4 * n_t, seed=0)
    assert int(p.abba.sum()) == 2 * n_t
    for t in range(n_t):
        sel = p.template == t
        assert int(sel.sum()) == 4 and int(p.abba[sel].sum()) == 2


def test_corrupted_prompt_has_three_new_names_in_the_same_template(tok):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=60, seed=1)
    name_ids = {tok.encode(" " + w)[0] for w in NAMES}
    assert p.corrupted.shape == p.tokens.shape
    for i in range(len(p)):
        slots = [int(p.io_pos[i]), int(p.s1_pos[i]), int(p.s2_pos[i])]
        keep = torch.ones(p.tokens.shape[1], dtype=torch.bool)
        keep[slots] = False
        assert torch.equal(p.corrupted[i, keep], p.tokens[i, keep])  # same template, place, object and length
        new = p.corrupted[i, slots].tolist()
        assert new == p.abc[i].tolist() and len(set(new)) == 3 and set(new) <= name_ids
        assert not set(new) & {int(p.io[i]), int(p.s[i])}


def test_heldout_names_and_templates_never_in_training_sentences(tok, vocab):
    assert not set(vocab.names_train) & set(vocab.names_heldout) and len(vocab.names_heldout) == 5
    assert not set(vocab.templates_train) & set(vocab.templates_heldout) and len(vocab.templates_heldout) == 6
    p = D.make_prompts(tok, vocab.templates_train, vocab.names_train, PLACES, OBJECTS, n=200, seed=0)
    sents = p.sentences(tok.encode(".")[0], tok.eos_id)
    windows = torch.full((400, 48), tok.encode(" the")[0], dtype=torch.long)
    mix = D.mix_sentences(windows, sents, 0.5, torch.Generator().manual_seed(0))
    held_ids = {tok.encode(" " + w)[0] for w in vocab.names_heldout}
    train_re = [_slot_regex(t) for t in vocab.templates_train]
    held_re = [_slot_regex(t) for t in vocab.templates_heldout]
    for r, s0, n in zip(mix.rows.tolist(), mix.starts.tolist(), mix.lengths.tolist()):
        span = mix.windows[r, s0 : s0 + n]
        assert not set(span.tolist()) & held_ids
        text = tok.decode(span[1:-3])  # between the leading eos and ' IO', '.', eos
        assert any(x.fullmatch(text) for x in train_re) and not any(x.fullmatch(text) for x in held_re)


@pytest.mark.parametrize("frac", [0.0, 0.1, 0.25, 0.5])
def test_mixing_fraction_is_as_stated(tok, frac):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=300, seed=0)
    sents = p.sentences(tok.encode(".")[0], tok.eos_id)
    windows = torch.randint(1, 50, (601, 64))
    planted = torch.zeros(601, dtype=torch.bool)
    planted[::4] = True
    mix = D.mix_sentences(windows, sents, frac, torch.Generator().manual_seed(1), exclude=planted)
    assert len(mix.rows) == round(frac * 601) == int(mix.mask.sum())
    assert not (mix.mask & planted).any()
    assert torch.equal(mix.windows[~mix.mask], windows[~mix.mask])  # the other windows are untouched
    for i, (r, s0, n) in enumerate(zip(mix.rows.tolist(), mix.starts.tolist(), mix.lengths.tolist())):
        assert mix.windows[r, s0 : s0 + n].tolist() == sents[i] and 0 <= s0 <= 64 - n
        assert torch.equal(mix.windows[r, :s0], windows[r, :s0])  # natural text around the sentence
    with pytest.raises(ValueError, match="not allowed"):
        D.mix_sentences(windows, sents * 3, 0.8, torch.Generator(), exclude=planted)  # more than the free windows


class CopyAt(nn.Module):
    """Logits = c at the token found at a chosen position of each prompt (a model that copies a known token)."""

    def __init__(self, pos: torch.Tensor, c: float, d_vocab: int):
        super().__init__()
        self.pos, self.c, self.d_vocab = pos, c, d_vocab
        self.dummy = nn.Parameter(torch.zeros(()))
        self.offset = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.offset %= len(self.pos)  # batches walk through the prompts; a new pass starts at the first again
        pos = self.pos[self.offset : self.offset + len(tokens)]
        self.offset += len(tokens)
        out = torch.zeros(*tokens.shape, self.d_vocab)
        out[torch.arange(len(tokens)), :, tokens[torch.arange(len(tokens)), pos]] = self.c
        return out


def test_logit_difference_of_hand_built_copiers(tok):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=52, seed=2)
    io_copier = K.score(CopyAt(p.io_pos, 3.0, tok.vocab_size), p, batch_size=16)
    assert io_copier["logit_diff"] == pytest.approx(3.0) and io_copier["accuracy"] == 1.0
    assert io_copier["top1"] == 1.0 and io_copier["name_top1"] == 1.0
    s_copier = K.score(CopyAt(p.s2_pos, 2.0, tok.vocab_size), p, batch_size=16)  # always predicts S
    assert s_copier["logit_diff"] == pytest.approx(-2.0) and s_copier["accuracy"] == 0.0 and s_copier["top1"] == 0.0
    first = K.score(CopyAt(torch.minimum(p.io_pos, p.s1_pos), 1.5, tok.vocab_size), p)  # the first name: IO in ABBA
    assert first["logit_diff"] == pytest.approx(0.0) and first["accuracy"] == 0.5  # balanced orders cancel
    on_abc = K.score(CopyAt(p.io_pos, 3.0, tok.vocab_size), p, corrupted=True)  # copies a name that is neither
    assert on_abc["logit_diff"] == pytest.approx(0.0) and on_abc["top1"] == 0.0


def test_patching_metric_is_one_clean_and_zero_corrupted(tok):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=24, seed=5)
    model = CopyAt(p.io_pos, 3.0, tok.vocab_size)
    clean, corrupted = K.score(model, p)["logit_diff"], K.score(model, p, corrupted=True)["logit_diff"]
    metric = K.patching_metric(p, clean, corrupted)
    for tokens, want in ((p.tokens, 1.0), (p.corrupted, 0.0)):
        assert metric(model(tokens)).item() == pytest.approx(want)
    with pytest.raises(ValueError, match="not allowed"):
        K.patching_metric(p, 1.0, 1.0)


def test_scores_equal_on_our_model_and_its_hooked_twin(tok):
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=20, seed=0)
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=16, d_vocab=tok.vocab_size, n_ctx=p.tokens.shape[1],
                      attention_only=True)
    model = Transformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(0))
    ours, hooked = K.end_logits(model, p, batch_size=7), K.end_logits(to_hooked(model), p)
    full = model(p.tokens)[torch.arange(len(p)), p.end]
    assert torch.allclose(ours, full, atol=1e-5) and torch.allclose(ours, hooked, atol=1e-4)
    assert K.summarize(ours, p)["n"] == 20 and model.training  # eval mode for the scoring only


def test_heldout_templates_combine_parts_seen_in_training():
    assert len(D.TEMPLATES) == len(D.INTROS) * len(D.ACTIONS) >= 15
    held = D.heldout_templates(D.TEMPLATES, 26, torch.Generator().manual_seed(0))
    train = [D.template_parts(t) for i, t in enumerate(D.TEMPLATES) if i not in held]
    assert len(held) == 26
    for i in held:
        intro, action = D.template_parts(D.TEMPLATES[i])
        assert any(t[0] == intro for t in train) and any(t[1] == action for t in train)
    with pytest.raises(ValueError, match="not allowed"):
        D.heldout_templates(D.TEMPLATES, 125, torch.Generator().manual_seed(0))  # parts would lose all partners


def test_select_and_split_vocab_are_deterministic(tok):
    a = D.split_vocab(NAMES, PLACES, OBJECTS, 5, 6, seed=4)
    assert a == D.split_vocab(NAMES, PLACES, OBJECTS, 5, 6, seed=4) != D.split_vocab(NAMES, PLACES, OBJECTS, 5, 6, 5)
    p = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=30, seed=9)
    q = D.make_prompts(tok, D.TEMPLATES, NAMES, PLACES, OBJECTS, n=30, seed=9)
    assert torch.equal(p.tokens, q.tokens) and torch.equal(p.corrupted, q.corrupted)
    short = p.select(p.template == int(p.template[0]))
    assert len(short) == 2 and short.tokens.shape[1] == int(short.end.max()) + 1
    with pytest.raises(ValueError, match="not allowed"):
        P.resolve("cpu", n_heldout_names=98)


def test_smoke_run_trains_on_mixed_windows_and_scores_checkpoints(tmp_path):
    """On the shipped corpus at the smoke preset: the stated mixing fraction, training names and templates only in
    the mixed windows, a dense-checkpoint run through lib.core.train and a score per (checkpoint, set)."""
    p = P.resolve("smoke")
    s = K.setup(resolve("smoke", **p.run), p)
    assert s.cfg.model.d_vocab == s.tokenizer.vocab_size and s.vocab.summary()["names_heldout"] == 6
    d = K.train_data(s)
    n = len(d.tokens.train)
    assert len(d.mix.rows) == round(p.ioi_frac * n) and not (d.mix.mask & d.tokens.planted).any()
    held = {D.token_id(s.tokenizer, w) for w in s.vocab.names_heldout}
    spans = [d.tokens.train[r, a : a + m] for r, a, m in zip(d.mix.rows.tolist(), d.mix.starts.tolist(),
                                                             d.mix.lengths.tolist())]
    assert all(int(x[0]) == s.tokenizer.eos_id and not set(x.tolist()) & held for x in spans)
    short = dataclasses.replace(s, cfg=s.cfg.replace(max_steps=6, eval_every=3, checkpoint_every=3))
    paths = K.train_dense(short, d, tmp_path / "run", [0, 3, 6], progress=False)
    assert [K.checkpoint_step(x) for x in paths] == [0, 3, 6]
    assert K.train_dense(short, d, tmp_path / "run", [0, 3, 6], progress=False) == paths  # finished: only listed
    frame = K.checkpoint_scores(paths, K.eval_prompts(s, 8))
    assert len(frame) == 3 * len(K.EVAL_SETS) and frame["n"].eq(8).all()
    assert frame["accuracy"].between(0, 1).all() and frame["abc_logit_diff"].notna().all()
