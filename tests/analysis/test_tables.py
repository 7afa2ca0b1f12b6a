"""lib.analysis.tables (how the book shows a table) and Tokenizer.display (tokens that are part of a character)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lib.analysis import tables
from lib.core import data


@pytest.mark.parametrize("x, text", [(26063.0, "26,063"), (5, "5"), (np.int64(12), "12"), (0.123456, "0.123"),
                                     (3.14159, "3.14"), (-0.5, "-0.500"), (1.5e-5, "1.50e-05"), (2e7, "2.00e+07"),
                                     (float("nan"), "–"), (None, "–"), (float("inf"), "∞"), (True, "yes"),
                                     (0.0, "0")])
def test_number(x, text):
    assert tables.number(x) == text


def test_text_frame_counts_cis_index_and_long_text():
    long = "x" * 300
    df = pd.DataFrame({"count": [1.0, 26063.0], "loss": [0.123456, 3.0], "95% CI": [(0.1, 0.2), (np.float64(0.5), 1)],
                       "note": [long, "<b>"]})
    out = tables.text_frame(df)
    assert out["count"].tolist() == ["1", "26,063"]  # a float column of whole numbers is a count
    assert out["loss"].tolist() == ["0.123", "3.00"]  # a real-valued column keeps its precision
    assert out["95% CI"].tolist() == ["[0.100, 0.200]", "[0.500, 1]"]
    assert out["note"].tolist() == [long, "<b>"]  # never truncated
    assert list(out.columns) == ["count", "loss", "95% CI", "note"]  # the 0..n-1 index is dropped
    assert list(tables.text_frame(df[df["count"] > 5]).columns)[0] == "count"  # a filtered frame's row numbers go
    named = tables.text_frame(df.set_index("note"))
    assert list(named.columns)[0] == "note"  # a meaningful index becomes a column
    wide = pd.DataFrame({"test": ["a", "b"], "k": [1, 2], "v": [0.5, 0.25]}).pivot(index="test", columns="k")
    assert list(tables.text_frame(wide).columns) == ["test", "v / 1", "v / 2"]  # no "test / " from an empty level
    html = tables.show(df, caption="T").to_html()
    assert "&lt;b&gt;" in html and long in html and "<caption>T</caption>" in html and ">0<" not in html


def test_show_refuses_what_is_not_a_frame():
    with pytest.raises(TypeError, match="DataFrame"):
        tables.show([1, 2])
    with pytest.raises(ValueError, match="index='yes'"):
        tables.text_frame(pd.DataFrame({"a": [1]}), index="yes")


def test_display_options_never_truncate_and_print_counts_as_integers():
    keys = ("display.max_colwidth", "display.max_columns", "display.width", "display.float_format")
    with pd.option_context(*[x for k in keys for x in (k, pd.get_option(k))]):  # restored afterwards
        tables.set_display_options()
        text = pd.DataFrame({"n": [26063.0], "s": ["y" * 120]}).to_string()
    assert "26,063" in text and "y" * 120 in text and "26063.0" not in text


def test_tokenizer_display_shows_partial_characters_as_bytes():
    tok = data.gpt2_tokenizer()
    ids = tok.encode(" “quote” 日本")
    pieces = [tok.display([i]) for i in ids]
    assert "\ufffd" in "".join(tok.decode([i]) for i in ids)  # what the plain decode shows a reader
    assert "\ufffd" not in "".join(pieces) and "\\xe2\\x80" in pieces[0]
    assert tok.display(ids) == tok.decode(ids) == " “quote” 日本"  # whole characters decode as usual
    assert tok.display([tok.eos_id]) == tok.eos
