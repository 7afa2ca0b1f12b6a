"""Keywords and held-out keyword prompts: splits, log-odds, whole words of several tokens, content words only,
prompts never from training text, the keyword's summed log-probability, the unigram margin, the command line."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fp32_tol
from lib.analysis import prompts
from lib.core import config, data, model, train

CFG = config.resolve("smoke", attention_only=False)
SMOKE_KW = dict(n_per_topic=3, min_count=5, min_chars=3, max_tokens=5, min_ratio=1.0, common_share=1.0,
                exclusive=False, max_per_topic=200)


@pytest.fixture(scope="session")
def tok():
    return data.get_tokenizer(CFG.data)


@pytest.fixture(scope="session")
def kw(tok):
    return {s: prompts.keywords(tok, s, **SMOKE_KW) for s in prompts.TOPIC_SETS}


@pytest.fixture(scope="session")
def prompt_sets(tok, kw):
    args = dict(n_per_topic=5, max_len=CFG.model.n_ctx)
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


def test_keyword_prompts_never_come_from_training_articles(tok, kw, prompt_sets):
    train_texts = set(data.corpus_texts(config.resolve("cpu").data)) | set(prompts.articles("comments", "fit").text)
    for s, pr in prompt_sets.items():
        assert len(pr) > 0
        held = prompts.articles(s, "heldout").set_index("row")
        for i in range(len(pr)):
            assert pr.sources[i] == prompts.source_name(s, "heldout")
            article = held.loc[int(pr.rows[i]), "text"]
            assert article not in train_texts
            assert held.loc[int(pr.rows[i]), "label"] == pr.topics[i]
            body = pr.prompt(i)[1:] + pr.word(i)
            assert tok.encode(article)[: len(body)] == body  # the prompt is the article's opening, then the keyword
            assert pr.tokens[i, : pr.lengths[i]].tolist() == pr.prompt(i) + pr.word(i)[:-1]  # teacher forcing
            kws = set(kw[s].loc[kw[s].topic == pr.topics[i], "token_ids"])
            assert tuple(pr.word(i)) in kws


def test_log_odds_two_topics_is_antisymmetric_and_signs_follow_rates():
    counts = torch.tensor([[50.0, 10.0, 100.0], [5.0, 10.0, 100.0]])
    z = prompts.log_odds_z(counts, prior_size=10.0)
    assert torch.allclose(z[0], -z[1], rtol=0, atol=fp32_tol(z))
    assert z[0, 0] > 3 and z[1, 0] < -3
    rare = prompts.log_odds_z(torch.tensor([[2.0, 1000.0], [0.0, 1000.0]]), prior_size=100.0)
    common = prompts.log_odds_z(torch.tensor([[200.0, 1000.0], [0.0, 1000.0]]), prior_size=100.0)
    assert 0 < rare[0, 0] < common[0, 0]  # the prior shrinks rare words


class _Tok:  # ids: 0 eos, 1 ' foot', 2 'ball', 3 ' team', 4 '.', 5 ' the', 6 '19', 7 's', 8 ' fo'
    vocab_size = 9
    texts = ["<|endoftext|>", " foot", "ball", " team", ".", " the", "19", "s", " fo"]

    def id_to_token(self, i):
        return self.texts[i]


def test_word_spans_join_word_pieces_and_skip_numbers_and_long_words():
    tables = prompts.word_tables(_Tok())
    ids = torch.tensor([1, 2, 3, 4, 5, 3, 6, 3, 7, 8, 2, 2, 2])
    starts, n = prompts.word_spans(ids, tables, max_tokens=3)
    # ' football', ' team', ' the', (' team' '19' has a digit: skipped), ' teams', (' fo' + 3 x 'ball': too long)
    assert list(zip(starts.tolist(), n.tolist())) == [(0, 2), (2, 1), (4, 1), (7, 2)]
    assert prompts.word_text([1, 2], tables) == " football"
    starts, n = prompts.word_spans(ids, tables, max_tokens=4)
    assert (9, 4) in list(zip(starts.tolist(), n.tolist()))


def test_keywords_are_content_words_exclusive_and_over_represented(tok):
    kw = prompts.keywords(tok, "dbpedia", n_per_topic=5, min_count=5, min_chars=3, max_per_topic=300,
                          min_ratio=1.5)
    assert len(kw) > 0 and not kw.token_ids.duplicated().any()
    assert all(w.startswith(" ") and w[1:].isalpha() and len(w) > 3 for w in kw.word)
    assert not {w.strip().lower() for w in kw.word} & prompts.STOP_WORDS
    assert (kw.n_tokens > 1).any()  # the smoke vocabulary has few whole words of one token
    assert all(tok.decode(list(t)) == w for t, w in zip(kw.token_ids, kw.word))
    assert (kw.rate >= 1.5 * kw.rate_rest - 1e-9).all()


def test_function_words_and_words_common_to_every_topic_are_never_keywords(tok):
    """Planted case: the comments' most over-represented words include function words (" you" is far more frequent
    in toxic comments); with the stop list they are gone, and a word in >= common_share of every topic's texts goes."""
    loose = dict(n_per_topic=50, min_count=5, min_chars=3, max_per_topic=300, min_ratio=1.0, exclusive=False)
    kept = prompts.keywords(tok, "comments", common_share=1.0, **loose)
    assert not {w.strip().lower() for w in kept.word} & prompts.STOP_WORDS
    assert kept.doc_share.max() > 0.02
    strict = prompts.keywords(tok, "comments", common_share=0.02, **loose)
    common = set(kept.word) - set(strict.word)
    assert common  # something was common to both topics
    for w in common:
        assert (kept.loc[kept.word == w, "doc_share"] >= 0.02).all()


def test_keyword_scores_sum_the_log_probabilities_of_the_keyword_tokens(prompt_sets):
    hooked = model.to_hooked(train.init_model(CFG.replace(init_range=0.3)).eval())
    pr = prompts.concat(list(prompt_sets.values()), 0)
    assert pr.width > 1 and len(pr.word_lengths.unique()) > 1  # keywords of several lengths, scored in one batch
    logits = prompts.tail_logits(hooked, pr, batch_size=4)
    df = prompts.evaluate(hooked, pr, batch_size=3)
    for i in range(len(pr)):  # reference: one forward of prompt + keyword alone, log-softmax at each keyword token
        p, w = pr.prompt(i), pr.word(i)
        with torch.no_grad():
            lp = torch.log_softmax(hooked(torch.tensor([p + w[:-1]]))[0].double(), -1)
        ref = -sum(lp[len(p) - 1 + j, t] for j, t in enumerate(w))
        assert abs(df.loss[i] - float(ref)) <= fp32_tol(ref)
        greedy = all(int(lp[len(p) - 1 + j].argmax()) == t for j, t in enumerate(w))
        assert df.top1[i] == float(greedy)
    s = prompts.keyword_scores(logits, pr.targets)
    assert np.allclose(df.loss.to_numpy(), s["loss"].numpy(), rtol=0, atol=fp32_tol(s["loss"]))
    assert (s["top1"] <= s["top5"]).all()


def test_keyword_scores_known_answer_on_hand_made_logits():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]],   # keyword [0, 1]
                                     [[1 / 3, 1 / 3, 1 / 3], [0.2, 0.2, 0.6]]]))  # keyword [2] (one token)
    targets = torch.tensor([[0, 1], [prompts.IGNORE, 2]])
    s = prompts.keyword_scores(logits, targets)
    assert torch.allclose(s["loss"], torch.tensor([-np.log(0.5 * 0.8), -np.log(0.6)], dtype=torch.float32))
    assert s["top1"].tolist() == [1.0, 1.0]
    s = prompts.keyword_scores(logits, torch.tensor([[1, 1], [prompts.IGNORE, 0]]))
    assert s["top1"].tolist() == [0.0, 0.0]  # ' 1' is not the first token's argmax; 0 is not the argmax
    assert s["top5"].tolist() == [1.0, 1.0]  # three tokens: everything is in the top 5
    ranks = torch.log(torch.tensor([[[0.3, 0.3, 0.1, 0.1, 0.08, 0.07, 0.05]]]))  # a tie for the maximum; ranks 5, 6
    top = lambda t: {k: float(v) for k, v in prompts.keyword_scores(ranks, torch.tensor([[t]])).items() if k != "loss"}
    assert top(1) == {"top1": 1.0, "top5": 1.0} and top(0) == {"top1": 1.0, "top5": 1.0}
    assert top(4) == {"top1": 0.0, "top5": 1.0} and top(5) == {"top1": 0.0, "top5": 0.0}
    assert top(2) == {"top1": 0.0, "top5": 1.0}  # tied at rank 3-4: two tokens score higher
    with pytest.raises(ValueError, match="logits/targets shapes"):
        prompts.keyword_scores(logits[:, 0], targets)


def test_probe_margins_mark_a_probe_usable_only_when_the_model_beats_unigram(tok, prompt_sets):
    pr = prompt_sets["dbpedia"]
    uniform = torch.full((tok.vocab_size,), -float(np.log(tok.vocab_size)))
    clean = pd.DataFrame({"prompt": np.arange(len(pr)), "topic": pr.topics,
                          "loss": [float(np.log(tok.vocab_size)) * len(pr.word(i)) - 1.0 for i in range(len(pr))]})
    m = prompts.probe_margins(clean, pr, uniform)
    assert np.allclose(m.margin, 1.0) and m.usable.all()  # 1 nat better than a uniform unigram on every prompt
    worse = clean.assign(loss=clean.loss + 2.0)
    m = prompts.probe_margins(worse, pr, uniform)
    assert np.allclose(m.margin, -1.0) and not m.usable.any()
    # a unigram that puts little mass on the keywords' tokens: uniform guessing is the better baseline, so a model
    # at uniform (an untrained one) gains nothing
    rare = torch.full((tok.vocab_size,), -20.0)
    at_uniform = clean.assign(loss=[float(np.log(tok.vocab_size)) * len(pr.word(i)) for i in range(len(pr))])
    m = prompts.probe_margins(at_uniform, pr, rare)
    assert np.allclose(m.margin, 0.0, atol=1e-9) and not m.usable.any()
    uni = prompts.unigram_logprobs(tok, ["the cat", "the dog"])
    assert torch.isclose(uni.exp().sum(), torch.tensor(1.0), atol=1e-5)


def test_command_line_prints_topic_keyword_score(capsys):
    prompts.main(["keywords", "--topic-set", "comments", "--preset", "smoke"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(len(line.split("\t")) == 2 + 1 for line in lines)
    topic, word, score = lines[0].split("\t")
    assert topic in {"toxic", "harmless"} and word.isalpha() and float(score) > 0
    with pytest.raises(SystemExit):
        prompts.main(["keywords", "--topic-set", "news", "--preset", "smoke"])


def test_text_topics_give_keywords_and_prompts_from_their_own_lines(tmp_path):
    """A researcher's concept files: the planted content word of each concept is its keyword, never a function word,
    and each held-out line becomes a prompt that stops right before that word."""
    from lib.analysis import prompts as P

    filler = ["the old report said that", "in the morning they wrote that", "we all agreed today that"]
    for concept, word in (("Zoo", "zebras"), ("Mine", "quartz")):
        lines = [f"{filler[i % 3]} the {word} were seen near the river {i}" for i in range(12)]
        (tmp_path / f"{concept}.txt").write_text("\n".join(lines))
    topics = P.concept_texts(tmp_path)
    assert topics.name == tmp_path.name and set(topics.frame.label) == {"Zoo", "Mine"}
    assert (topics.frame.groupby("label").split.value_counts() == 6).all()  # alternate lines: 6 fit, 6 held out
    tok = data.gpt2_tokenizer()
    kw = P.USER_KEYWORDS.keywords(tok, topics)
    assert kw.groupby("topic").word.first().str.strip().to_dict() == {"Mine": "quartz", "Zoo": "zebras"}
    assert not set(kw.word.str.strip().str.lower()) & P.STOP_WORDS
    pr = P.USER_KEYWORDS.prompts(tok, kw, topics, n_per_topic=10, max_len=32)
    assert len(pr) == 12 and set(pr.topics) == {"Zoo", "Mine"}
    for i in range(len(pr)):
        word = tok.decode(pr.word(i)).strip()
        assert word == {"Zoo": "zebras", "Mine": "quartz"}[pr.topics[i]]
        assert tok.decode(pr.prompt(i)[1:]).endswith(" the")  # after the eos it starts with, up to the keyword
    windows = P.topic_windows(tok, topics, "fit", 16, 4)
    assert set(windows) == {"Zoo", "Mine"} and all(w.shape[1] == 16 and len(w) >= 1 for w in windows.values())


def test_evaluate_refuses_a_hook_that_never_fires():
    from lib.core import pretrained
    from tests.helpers import attn_model, random_prompts

    m = attn_model()
    pr = random_prompts(4, 5, 40)
    with pytest.raises(pretrained.ArchitectureError, match="evaluate needs MLP layers"):
        prompts.evaluate(m, pr, [("blocks.0.hook_mlp_out", lambda x, hook: 0 * x)])
    with pytest.raises(ValueError, match="no such hook point"):
        prompts.tail_logits(m, pr, [("blocks.0.hook_nothing", lambda x, hook: x)])


@pytest.mark.parametrize("hooked_final", [False, True])
def test_tail_logits_equal_the_full_forward(hooked_final):
    """Only the scored positions are unembedded; the logits equal a full forward's at those positions (and a hook on
    the final norm takes the full forward, so it still sees every position)."""
    from tests.helpers import random_prompts, small_mlp_hooked

    m = small_mlp_hooked().double()
    pr = random_prompts(6, 5, m.cfg.d_vocab)
    seen = []
    hook = ("ln_final.hook_normalized", lambda x, hook: seen.append(x.shape) or x) if hooked_final else \
        ("blocks.0.mlp.hook_post", lambda x, hook: 0.5 * x)
    got = prompts.tail_logits(m, pr, [hook])
    with torch.no_grad():
        full = prompts.tail(m.run_with_hooks(pr.tokens, fwd_hooks=[hook]), pr.lengths, pr.width)
    assert torch.allclose(got, full, rtol=0, atol=1e-10 * full.abs().max().item())
    if hooked_final:
        assert seen[0][1] == pr.tokens.shape[1]  # the hook saw every position
