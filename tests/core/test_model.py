"""Our transformer: equivalence with TransformerLens, KV cache, pretrained loading from local weights."""

import pytest
import torch

from helpers import f64_tol, float64, fp32_tol, random_transformer
from lib.core.config import ModelConfig
from lib.core.model import Transformer, generate, to_hooked
from lib.core.pretrained import load_pretrained


def _model(attention_only: bool, seed: int = 0) -> Transformer:
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=16, d_vocab=50, n_ctx=24, attention_only=attention_only)
    return random_transformer(cfg, seed)


@pytest.mark.parametrize("attention_only", [True, False])
def test_to_hooked_identical_logits(attention_only):
    model = _model(attention_only)
    hooked = to_hooked(model)
    tokens = torch.randint(0, 50, (4, 24))
    ours, theirs = model(tokens), hooked(tokens)
    assert ours.shape == (4, 24, 50)
    assert (ours - theirs).abs().max().item() <= fp32_tol(ours)
    assert ours.std() > 0.5  # not trivially zero
    # the same function: in float64 the two implementations agree to rounding, whatever the CPU
    ours64, theirs64 = float64(model)(tokens), float64(hooked)(tokens)
    assert ours64.dtype == theirs64.dtype == torch.float64
    assert (ours64 - theirs64).abs().max().item() <= f64_tol(ours64)


def test_to_hooked_equal_for_dropout_model_in_eval_mode_only():
    """A model configured with dropout equals its twin in eval mode; in train mode dropout makes them differ."""
    cfg = ModelConfig(n_layers=2, n_heads=4, d_model=16, d_vocab=50, n_ctx=24, dropout=0.3)
    model = Transformer(cfg)
    model.reset_parameters(torch.Generator().manual_seed(0))
    hooked, tokens = to_hooked(model), torch.randint(0, 50, (4, 24))
    clean = hooked(tokens)
    assert (model.eval()(tokens) - clean).abs().max().item() <= fp32_tol(clean)
    assert (model.train()(tokens) - clean).abs().max().item() > 1e-3


@pytest.mark.parametrize("attention_only", [True, False])
def test_to_hooked_runs_hooks_and_removes_them(attention_only):
    hooked = to_hooked(_model(attention_only))
    tokens = torch.randint(0, 50, (2, 10))
    clean = hooked(tokens)
    zeroed = hooked.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_attn_out", lambda t, hook: t * 0)])
    assert not torch.allclose(clean, zeroed)
    assert all(len(hp.fwd_hooks) == 0 for hp in hooked.hook_dict.values())
    assert torch.equal(hooked(tokens), clean)  # same kernels, same input, same order: bitwise on any CPU


@pytest.mark.parametrize("attention_only", [True, False])
def test_kv_cache_generation_equals_recomputation(attention_only):
    """Token-for-token equality is claimed in float64: the cached and recomputed logits differ by rounding
    (≈ 1e-15 there), so an argmax or a sampled token can flip only at a near-tie that float64 makes negligible;
    in float32 a near-tie within ≈ 1e-6 would flip it on one CPU and not another."""
    model = float64(_model(attention_only))
    prompt = torch.randint(0, 50, (3, 5))
    assert torch.equal(generate(model, prompt, 15), generate(model, prompt, 15, use_cache=False))
    a = generate(model, prompt, 15, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 15, temperature=1.0, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert torch.equal(a, b)


def test_kv_cache_multi_token_chunk():
    model = _model(False)
    tokens = torch.randint(0, 50, (2, 20))
    _, cache = model(tokens[:, :8], return_cache=True)
    chunk, full = model(tokens[:, 8:20], past=cache), model(tokens)[:, 8:20]
    assert torch.allclose(chunk, full, rtol=0, atol=fp32_tol(full))
    m64 = float64(model)
    _, cache = m64(tokens[:, :8], return_cache=True)
    full = m64(tokens)[:, 8:20]
    assert torch.allclose(m64(tokens[:, 8:20], past=cache), full, rtol=0, atol=f64_tol(full))


def test_context_overflow_is_a_clear_error():
    model = _model(True)
    with pytest.raises(ValueError, match="n_ctx=24"):
        model(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 20, dtype=torch.long), 10)


def test_bad_config_names_value():
    with pytest.raises(ValueError, match="n_heads=0"):
        ModelConfig(n_heads=0)
    with pytest.raises(ValueError, match="act_fn='swish'"):
        ModelConfig(act_fn="swish")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A tiny random GPT-2 saved locally with transformers (no hub)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    hf = GPT2LMHeadModel(cfg).eval()
    path = tmp_path_factory.mktemp("tiny-gpt2")
    hf.save_pretrained(path)
    return hf, path


@pytest.mark.parametrize("fold_ln", [True, False])
def test_load_pretrained_matches_hf(tiny_gpt2, fold_ln):
    hf, path = tiny_gpt2
    hooked = load_pretrained(path, fold_ln=fold_ln)
    tokens = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        ref = torch.log_softmax(hf(tokens).logits, -1)
    ours = torch.log_softmax(hooked(tokens), -1)
    assert (ref - ours).abs().max().item() < fp32_tol(ref)  # |log-probs| ≈ ln 50257 ≈ 11
    assert hooked.to_tokens("Hello world", prepend_bos=False).tolist() == [[15496, 995]]


def test_load_pretrained_without_weights_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_pretrained("distilgpt2-not-here")
