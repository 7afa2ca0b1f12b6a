"""Top-activation contexts show tokens as a reader should read them."""

import torch

from lib.analysis import units
from lib.core import data
from lib.reports.sparse_layers import kernel as sparse


def test_top_contexts_show_partial_utf8_tokens_as_bytes():
    tok = data.gpt2_tokenizer()
    ids = tok.encode("He said “quote” again")
    assert "\ufffd" in "".join(tok.decode([i]) for i in ids)  # some token holds part of a character
    tokens = torch.tensor([ids])
    values = torch.zeros(tokens.shape)
    split = next(j for j, i in enumerate(ids) if "\ufffd" in tok.decode([i]))
    values[0, split] = 1.0  # the top activation sits on the partial token
    df = units.top_contexts(values, tokens, tok, n_top=3, topics=["t"])
    assert not df.context.str.contains("\ufffd").any()
    assert df.context.iloc[0].endswith(f"[{tok.display([ids[split]])}]") and "\\x" in df.context.iloc[0]
    kdf = sparse.top_contexts(values.flatten(), tokens, tok, ["t"] * len(ids), n=3)
    assert not kdf.context.str.contains("\ufffd").any()
