"""Tests for lib.core.data: loaders, tokenizers, windows, planted repeats, the token-data artifact."""

import contextlib
import gzip
import os
import shutil

import pytest
import torch

from lib.core import config, data

ROWS = {"dbpedia14_train": 23000, "dbpedia14_test": 7000, "dbpedia14_extra": 9540, "dbpedia_l2": 20473,
        "toxic": 12177, "wikitext2_test": 62}


@contextlib.contextmanager
def data_dir_env(path):
    """Temporarily point $DATA_DIR at path."""
    old = os.environ.get("DATA_DIR")
    os.environ["DATA_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DATA_DIR", None)
        else:
            os.environ["DATA_DIR"] = old


@pytest.fixture(scope="module")
def smoke_cfg():
    return config.resolve("smoke").data


# ------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", list(ROWS))
def test_loader_rows_and_columns(name):
    df = data.load_articles(name)
    assert len(df) == ROWS[name]
    assert list(df.columns) == ["label", "title", "text"]
    assert all(df[c].map(type).eq(str).all() for c in df.columns)
    assert df["text"].str.len().gt(0).all()


def test_loader_labels_and_titles():
    assert data.load_articles("dbpedia14_train")["label"].nunique() == 14
    assert set(data.load_articles("toxic")["label"]) == {"toxic", "harmless"}
    assert (data.load_articles("dbpedia_l2")["label"] == "").sum() == 321  # unmapped l2 ids stay ""
    assert (data.load_articles("dbpedia14_extra")["title"] == "").all()
    wiki = data.load_articles("wikitext2_test")
    assert wiki["title"].iloc[0] == "Robert Boulter" and (wiki["label"] == "").all()


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="dbpedia14_train.*wikitext2_test"):
        data.load_articles("dbpedia")


def test_load_articles_returns_a_copy():
    df = data.load_articles("toxic")
    df.loc[0, "text"] = "changed"
    assert data.load_articles("toxic").loc[0, "text"] != "changed"


def test_dbpedia14_splits_disjoint():
    train, test = (set(data.load_articles(f"dbpedia14_{s}")["text"]) for s in ("train", "test"))
    extra = set(data.load_articles("dbpedia14_extra")["text"])
    assert not (train & test) and not (extra & test) and not (train & extra)


def test_topic_texts():
    assert len(data.topic_texts()) == 7000 and len(data.topic_texts("train")) == 23000
    with pytest.raises(ValueError, match="'train' or 'test'"):
        data.topic_texts("valid")


def test_missing_file_raises_data_error(tmp_path):
    with data_dir_env(tmp_path), pytest.raises(data.DataError) as e:
        data.load_articles("dbpedia14_test")
    assert str(tmp_path / "dbpedia14" / "test.csv.gz") in str(e.value)
    assert "../shared/data/dbpedia14/test.csv.gz" in str(e.value) and "git checkout data/" in str(e.value)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "relpath, content, source, match",
    [
        ("comments/toxic.csv.gz", b"this is not gzip", "toxic", "corrupt"),
        (
            "dbpedia14/train.csv.gz",
            gzip.compress(b"label,title,text\n" + b"A,b,some text here\n" * 500)[:-40],  # truncated
            "dbpedia14_train",
            "corrupt",
        ),
        ("dbpedia_l2/dbpedia_l2.csv.gz", gzip.compress(b"label,body\nX,hello\n"), "dbpedia_l2", r"lacks columns \['text'\]"),
    ],
    ids=["not-gzip", "truncated-gzip", "missing-columns"],
)
def test_damaged_file_raises_data_error_naming_it(tmp_path, relpath, content, source, match):
    bad = tmp_path / relpath
    bad.parent.mkdir()
    bad.write_bytes(content)
    with data_dir_env(tmp_path), pytest.raises(data.DataError, match=match) as e:
        data.load_articles(source)
    assert str(bad) in str(e.value)


def test_split_wikitext_on_top_level_headings():
    raw = " = A b = \n intro .\n = = Sub = = \n more .\n = C = \n body \n"
    df = data._split_wikitext(raw)
    assert df["title"].tolist() == ["A b", "C"]
    assert df["text"].tolist() == ["intro .\n= = Sub = =\nmore .", "body"]


def test_corpus_texts_order_and_held_out(smoke_cfg):
    texts = data.corpus_texts(smoke_cfg)
    assert texts == data.load_articles("dbpedia14_train")["text"].tolist()
    with pytest.raises(ValueError, match="dbpedia14_test and the held-out comments are held out"):
        data.corpus_texts(config.resolve("smoke", corpus=("dbpedia14_train", "dbpedia14_test")).data)


def test_the_comments_corpus_is_their_fit_split_only():
    texts = data.corpus_texts(config.resolve("smoke", corpus=("comments_fit",)).data)
    every = data.load_articles("toxic")["text"]
    held = data.comments_heldout(every)
    assert texts == every[~held].tolist() and 0.25 < held.mean() < 0.35
    assert not set(texts) & set(every[held])


# ---------------------------------------------------------------------------------------- tokenizers


def test_gpt2_published_ids_and_round_trip():
    tok = data.gpt2_tokenizer()
    assert (tok.vocab_size, tok.eos_id) == (50257, 50256)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode("Hello, my dog is cute") == [15496, 11, 616, 3290, 318, 13779]
    assert tok.encode(" the") == [262] and tok.id_to_token(262) == " the"
    text = "Zürich — naïve café 🙂 日本語\ttabs  and  spaces\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(torch.tensor(tok.encode(text))) == text
    assert tok.encode_batch(["Hello world", "a"]) == [[15496, 995], [64]]
    with pytest.raises(ValueError, match="out of range"):
        tok.id_to_token(50257)


def test_train_bpe_vocab_round_trip_deterministic():
    texts = data.load_articles("dbpedia14_train")["text"].tolist()[:300]
    tok = data.train_bpe(texts, 300)
    assert tok.vocab_size == 300  # 256 bytes + eos + 43 merges: reached exactly on this text
    assert tok.id_to_token(tok.eos_id) == data.EOS
    text = "Zürich — naïve café 🙂 日本語 \x00\x7f unseen bytes ÿ"
    assert tok.decode(tok.encode(text)) == text
    assert max(tok.encode(text)) < tok.vocab_size
    assert data.train_bpe(texts, 300).hf.to_str() == tok.hf.to_str()
    with pytest.raises(ValueError, match="vocab_size"):
        data.train_bpe(texts, 100)


def test_get_tokenizer_caches(artifacts_tmp, smoke_cfg):
    path = data.bpe_path(smoke_cfg)
    assert str(path).startswith(str(artifacts_tmp))
    first = data.get_tokenizer(smoke_cfg)
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    second = data.get_tokenizer(smoke_cfg)
    assert path.stat().st_mtime_ns == mtime and second is not first
    text = data.load_articles("dbpedia14_test")["text"].iloc[0]
    assert second.encode(text) == first.encode(text) and second.vocab_size == first.vocab_size == 300


def test_get_tokenizer_gpt2():
    cfg = config.resolve("gpu").data
    assert data.get_tokenizer(cfg).encode("Hello world") == [15496, 995]


# ------------------------------------------------------------------------------------ windows, samples


def test_lm_windows_hand_example():
    out = data.lm_windows([[1, 2, 3], [4], [5, 6, 7, 8]], n_ctx=3, eos_id=0)
    # stream: 1 2 3 0 4 0 5 6 7 8 0 -> 11 tokens, 3 windows, remainder (8 0) dropped
    assert out.dtype == torch.long
    assert out.tolist() == [[1, 2, 3], [0, 4, 0], [5, 6, 7]]
    assert data.lm_windows([[1]], n_ctx=3, eos_id=0).shape == (0, 3)
    with pytest.raises(ValueError, match="n_ctx"):
        data.lm_windows([[1]], n_ctx=0, eos_id=0)


def test_beginnings_drops_short_articles():
    out = data.beginnings([[1, 2, 3, 4], [5, 6], [7, 8, 9]], 3)
    assert out.dtype == torch.long and out.tolist() == [[1, 2, 3], [7, 8, 9]]
    assert data.beginnings([[1]], 3).shape == (0, 3)


def _windows(n=50, n_ctx=32):
    return torch.randint(0, 1000, (n, n_ctx), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("frac", [0.0, 0.31, 0.5, 1.0])
def test_plant_repeats_properties(frac):
    w = _windows()
    before = w.clone()
    out, planted, spans = data.plant_repeats(w, frac, 3, 8, torch.Generator().manual_seed(0))
    assert torch.equal(w, before)  # input not mutated
    assert out.shape == w.shape and out.dtype == w.dtype and planted.dtype == torch.bool
    assert int(planted.sum()) == round(frac * len(w))
    assert torch.equal(out[~planted], w[~planted]) and (spans[~planted] == -1).all()
    for i in planted.nonzero().flatten().tolist():
        s, length, c = spans[i].tolist()
        assert 3 <= length <= 8 and c == s + length and s >= 0 and s + 2 * length <= w.shape[1]
        assert torch.equal(out[i, c : c + length], w[i, s : s + length])  # copy equals its span
        assert torch.equal(out[i, :c], w[i, :c]) and torch.equal(out[i, c + length :], w[i, c + length :])


def test_plant_repeats_deterministic_and_covers_range():
    w = _windows(400)
    a = data.plant_repeats(w, 0.5, 2, 6, torch.Generator().manual_seed(3))
    b = data.plant_repeats(w, 0.5, 2, 6, torch.Generator().manual_seed(3))
    c = data.plant_repeats(w, 0.5, 2, 6, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])
    lengths, starts = a[2][a[1], 1], a[2][a[1], 0]
    assert set(lengths.tolist()) == {2, 3, 4, 5, 6}
    assert starts.min() == 0 and (starts + 2 * lengths).max() == 32  # both ends of the start range occur


def test_plant_repeats_rejects_bad_args():
    with pytest.raises(ValueError, match="n_ctx/2"):
        data.plant_repeats(_windows(), 0.5, 4, 17, torch.Generator())
    with pytest.raises(ValueError, match="frac"):
        data.plant_repeats(_windows(), 1.5, 4, 8, torch.Generator())
    with pytest.raises(ValueError, match="min_len"):
        data.plant_repeats(_windows(), 0.5, 9, 8, torch.Generator())


# ---------------------------------------------------------------------------------------- token data


def test_load_token_data_smoke(artifacts_tmp, smoke_cfg):
    td = data.load_token_data(smoke_cfg)
    path = data.tokens_path(smoke_cfg)
    assert path.is_file() and str(path).startswith(str(artifacts_tmp))
    n = len(td.train)
    assert td.train.shape[1] == td.val.shape[1] == smoke_cfg.n_ctx and td.train.dtype == torch.long
    assert int(td.planted.sum()) == round(smoke_cfg.plant_frac * n) and td.spans.shape == (n, 3)
    assert td.val_beginnings.shape[1] == td.train_beginnings.shape[1] == smoke_cfg.beginning_tokens
    assert (td.vocab_size, td.eos_id) == (300, data.get_tokenizer(smoke_cfg).eos_id)
    assert int(td.train.max()) < td.vocab_size and int(td.val.max()) < td.vocab_size
    i = int(td.planted.nonzero()[0])
    s, length, c = td.spans[i].tolist()
    assert torch.equal(td.train[i, c : c + length], td.train[i, s : s + length])
    again = data.load_token_data(smoke_cfg)  # from the artifact
    for f in ("train", "planted", "spans", "val", "val_beginnings", "train_beginnings"):
        assert torch.equal(getattr(again, f), getattr(td, f)) and getattr(again, f).dtype == getattr(td, f).dtype
    assert again.train.dtype == again.spans.dtype == torch.long and again.vocab_size == td.vocab_size
    # val comes from dbpedia14_test, which never enters the training corpus
    assert not set(data.load_articles("dbpedia14_test")["text"]) & set(data.corpus_texts(smoke_cfg))
    tok = data.get_tokenizer(smoke_cfg)
    first_test = data.load_articles("dbpedia14_test")["text"].iloc[0]
    assert td.val_beginnings[0].tolist() == tok.encode(first_test)[: smoke_cfg.beginning_tokens]


def test_load_token_data_beginnings_task(artifacts_tmp):
    cfg = config.resolve("smoke", task="beginnings", n_ctx=20, plant_frac=0.0).data
    td = data.load_token_data(cfg)
    tok = data.get_tokenizer(cfg)
    assert td.train.shape[1] == 20 and not td.planted.any() and (td.spans == -1).all()
    first = data.load_articles("dbpedia14_train")["text"].iloc[0]
    assert td.train[0].tolist() == tok.encode(first)[:20]


def test_a_header_only_file_is_an_error_naming_its_rows(tmp_path):
    bad = tmp_path / "comments" / "toxic.csv.gz"
    bad.parent.mkdir()
    bad.write_bytes(gzip.compress(b"label,text\n"))
    with data_dir_env(tmp_path), pytest.raises(data.DataError, match=r"has 0 rows.*lists 12,177"):
        data.load_articles("toxic")


def test_shipped_files_are_checked_against_provenance(tmp_path):
    """A shipped file with rows dropped, or changed in place, is refused; the pristine copy loads."""
    src = data.DATA_DIR / "comments" / "toxic.csv.gz"
    assert data.shipped()["comments/toxic.csv.gz"][0] == 12177
    lines = gzip.decompress(src.read_bytes()).split(b"\n")
    for name, body, match in (("fewer", b"\n".join(lines[:-50]), "rows"),
                              ("edited", b"\n".join([lines[0], lines[1].replace(b"a", b"e", 1), *lines[2:]]), "sha256")):
        folder = tmp_path / name / "comments"
        folder.mkdir(parents=True)
        (folder / "toxic.csv.gz").write_bytes(gzip.compress(body))
        with data_dir_env(folder.parent), pytest.raises(data.DataError, match=rf"toxic\.csv\.gz.*{match}"):
            data.load_articles("toxic")
    ok = tmp_path / "ok" / "comments"
    ok.mkdir(parents=True)
    shutil.copy(src, ok / "toxic.csv.gz")
    with data_dir_env(ok.parent):
        assert len(data.load_articles("toxic")) == 12177
