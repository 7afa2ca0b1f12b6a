"""Keywords and held-out keyword prompts: splits, log-odds, whole-word counting, prompts never from training text."""

import numpy as np
import pytest
import torch

from helpers import fp32_tol
from lib.analysis import prompts
from lib.core import config, data, model, train

CFG = config.resolve("smoke", attention_only=False)
SMOKE_KW = dict(n_per_topic=3, min_count=5, min_chars=1, mode="word_start", min_ratio=0.0, exclusive=False,
                max_per_topic=200)


@pytest.fixture(scope="session")
def tok():
    return data.get_tokenizer(CFG.data)


@pytest.fixture(scope="session")
def kw(tok):
    return {s: prompts.keywords(tok, s, **SMOKE_KW) for s in prompts.TOPIC_SETS}


@pytest.fixture(scope="session")
def prompt_sets(tok, kw):
    args = dict(n_per_topic=5, max_len=CFG.model.n_ctx, mode="word_start", min_chars=1)
    return {s: prompts.keyword_prompts(tok, kw[s], s, **args) for s in prompts.TOPIC_SETS}


def test_comments_split_is_deterministic_disjoint_and_covers_all():
    fit, held = prompts.articles("comments", "fit"), prompts.articles("comments", "heldout")
    assert set(fit.text).isdisjoint(held.text)
    assert len(fit) + len(held) == len(data.load_articles("toxic"))
    assert 0.25 < len(held) / (len(fit) + len(held)) < 0.35
    assert prompts.comments_heldout(["a", "b", "a"]).tolist()[0] == prompts.comments_heldout(["a"]).tolist()[0]
    assert held.row.tolist() == prompts.articles("comments", "heldout").row.tolist()


def test_dbpedia_heldout_is_the_test_split():
    assert prompts.source_name("dbpedia", "heldout") == "dbpedia14_test"
    assert "dbpedia14_test" not in CFG.data.corpus and "dbpedia14_test" not in config.resolve("cpu").data.corpus


def test_keyword_prompts_never_come_from_training_articles(tok, prompt_sets):
    train_texts = set(data.corpus_texts(config.resolve("cpu").data)) | set(prompts.articles("comments", "fit").text)
    for s, pr in prompt_sets.items():
        assert len(pr) > 0
        held = prompts.articles(s, "heldout").set_index("row")
        for i in range(len(pr)):
            assert pr.sources[i] == prompts.source_name(s, "heldout")
            article = held.loc[int(pr.rows[i]), "text"]
            assert article not in train_texts
            assert held.loc[int(pr.rows[i]), "label"] == pr.topics[i]
            body = pr.tokens[i, 1 : pr.lengths[i]].tolist() + [int(pr.targets[i])]
            assert tok.encode(article)[: len(body)] == body  # the prompt is the article's opening, then the keyword


def test_log_odds_two_topics_is_antisymmetric_and_signs_follow_rates():
    counts = torch.tensor([[50.0, 10.0, 100.0], [5.0, 10.0, 100.0]])
    z = prompts.log_odds_z(counts, prior_size=10.0)
    assert torch.allclose(z[0], -z[1], rtol=0, atol=fp32_tol(z))
    assert z[0, 0] > 3 and z[1, 0] < -3
    rare = prompts.log_odds_z(torch.tensor([[2.0, 1000.0], [0.0, 1000.0]]), prior_size=100.0)
    common = prompts.log_odds_z(torch.tensor([[200.0, 1000.0], [0.0, 1000.0]]), prior_size=100.0)
    assert 0 < rare[0, 0] < common[0, 0]  # the prior shrinks rare words


def test_whole_word_occurrences_skip_word_pieces():
    class Tok:  # ids: 0 eos, 1 ' foot', 2 'ball', 3 ' team', 4 '.'
        vocab_size = 5
        texts = ["<|endoftext|>", " foot", "ball", " team", "."]

        def id_to_token(self, i):
            return self.texts[i]

    tables = prompts.word_tables(Tok(), min_chars=3)
    ids = torch.tensor([1, 2, 3, 1, 4, 3])
    assert prompts.occurrences(ids, tables, "whole_word").tolist() == [False, False, True, True, False, True]
    assert prompts.occurrences(ids, tables, "word_start").tolist() == [True, False, True, True, False, True]


def test_keywords_are_single_word_tokens_exclusive_and_over_represented(tok):
    kw = prompts.keywords(tok, "dbpedia", n_per_topic=5, min_count=5, min_chars=1, max_per_topic=300,
                          min_ratio=1.5)
    assert len(kw) > 0 and not kw.token_id.duplicated().any()
    assert all(t.startswith(" ") and t[1:].isalpha() for t in kw.token)
    assert (kw.rate >= 1.5 * kw.rate_rest - 1e-9).all()


def test_keyword_scores_and_batched_last_logits_match_single_prompts(prompt_sets):
    hooked = model.to_hooked(train.init_model(CFG.replace(init_range=0.3)).eval())
    pr = prompt_sets["dbpedia"]
    logits = prompts.last_logits(hooked, pr, batch_size=4)
    for i in (0, len(pr) - 1):
        one = hooked(pr.tokens[i : i + 1, : pr.lengths[i]])[0, -1]
        assert torch.allclose(logits[i], one, rtol=0, atol=fp32_tol(one))  # batched vs alone: other kernels
    s = prompts.keyword_scores(logits, pr.targets)
    ref = -torch.log_softmax(logits, -1)[torch.arange(len(pr)), pr.targets]
    assert torch.allclose(s["loss"], ref, rtol=0, atol=fp32_tol(ref))
    assert (s["top1"] <= s["top5"]).all()
    df = prompts.evaluate(hooked, pr)
    assert np.allclose(df.loss.to_numpy(), s["loss"].numpy(), rtol=0, atol=fp32_tol(s["loss"]))
