"""The one loader: tiny GPT-2, GPT-NeoX and Llama models saved with transformers give Hugging Face's logits through
lib.core.pretrained; our own artifacts load as their exact twin; checkpointed suites list their local revisions;
what is missing or unsupported is named."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from lib.core import pretrained
from lib.core.data import gpt2_tokenizer
from tests.helpers import HF_KINDS, fp32_tol, save_tiny_hf

ARCH = {"gpt2": ("GPT2LMHeadModel", "plain", "multi-head", "learned", "sequential", "LayerNorm"),
        "gpt_neox": ("GPTNeoXForCausalLM", "plain", "multi-head", "rotary", "parallel", "LayerNorm"),
        "llama": ("LlamaForCausalLM", "gated", "grouped-query", "rotary", "sequential", "RMSNorm")}
TEXT = "When Mary and John went to the store, John gave a drink to"


def _hf_logits(folder, tokens):
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return hf(tokens).logits


@pytest.mark.parametrize("kind", HF_KINDS)
def test_logits_equal_hugging_face(tiny_hf, kind):
    tokens = torch.tensor([gpt2_tokenizer().encode(TEXT)] * 2)
    tokens[1, 3:] = torch.randint(0, 50257, (tokens.shape[1] - 3,))
    ref = _hf_logits(tiny_hf[kind], tokens)
    assert ref.std() > 0.1  # the check is not vacuous: logits vary by O(1) across the vocabulary
    raw = pretrained.load_model(tiny_hf[kind], process=False)
    with torch.no_grad():
        assert (raw(tokens) - ref).abs().max().item() <= min(1e-4, fp32_tol(ref))  # the 1e-4 and fp32 rounding
        # processed (LayerNorm folded, centred): log-probabilities equal; logits only up to a per-position constant
        got = pretrained.load_model(tiny_hf[kind])(tokens)
    assert (got.log_softmax(-1) - ref.log_softmax(-1)).abs().max().item() <= fp32_tol(ref.log_softmax(-1))
    assert pretrained.architecture(raw).row() == dict(zip(
        ("architecture", "MLP", "attention", "positions", "residual", "normalization"), ARCH[kind]))


@pytest.mark.parametrize("kind", HF_KINDS)
def test_tokenizer_of_a_folder(tiny_hf, kind):
    tok = pretrained.load_tokenizer(tiny_hf[kind])
    assert tok.encode("Hello world") == [15496, 995] and tok.eos_id == 50256 and tok.eos == "<|endoftext|>"


def test_our_artifact_loads_as_its_exact_twin(tmp_path):
    from lib.core import config
    from lib.core.model import to_hooked
    from lib.core.runs import save_model
    from lib.core.train import init_model

    cfg = config.resolve("smoke")
    model = init_model(cfg).eval()
    save_model(tmp_path / "ours", model, cfg)
    loaded, tok = pretrained.load(tmp_path / "ours")
    tokens = torch.randint(0, cfg.model.d_vocab, (2, 12))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), to_hooked(model)(tokens))
    assert tok.vocab_size == cfg.model.d_vocab
    assert pretrained.architecture(loaded).name == "ours"


def test_revisions_of_a_local_suite(tiny_hf, tmp_path):
    suite = tmp_path / "suite"
    for step in (1000, 0, 143000, 512):
        shutil.copytree(tiny_hf["gpt_neox"], suite / f"step{step}")
    (suite / "notes").mkdir()  # not a revision: no config.json
    assert pretrained.revisions(suite) == ["step0", "step512", "step1000", "step143000"]
    m = pretrained.load_model(suite, revision="step512")
    assert m.cfg.original_architecture == "GPTNeoXForCausalLM"
    with pytest.raises(FileNotFoundError, match="step7.*local revisions: \\['step0'"):
        pretrained.load_model(suite, revision="step7")


def test_a_missing_model_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="never downloads.*Hugging Face cache.*save_pretrained"):
        pretrained.load_model("EleutherAI/pythia-not-here")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        pretrained.load_model(tmp_path / "absent")


def test_unsupported_architecture_and_missing_tokenizer_are_named(tiny_hf, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(tiny_hf["gpt2"], odd)
    c = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps({**c, "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(pretrained.ArchitectureError, match="'MambaForCausalLM'.*supported: GPT2LMHeadModel"):
        pretrained.load_model(odd)
    bare = tmp_path / "bare"
    save_tiny_hf("llama", bare)
    for f in bare.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")):
            f.unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        pretrained.load_tokenizer(bare)


def test_require_names_the_method_and_the_missing_part(tiny_hf):
    llama = pretrained.load_model(tiny_hf["llama"])
    with pytest.raises(pretrained.ArchitectureError, match="k-WTA.*ungated MLP.*gated"):
        pretrained.require(llama, "k-WTA", plain_mlp=True)
    with pytest.raises(pretrained.ArchitectureError, match="grouped-query attention, 2 key/value heads for 4"):
        pretrained.require(llama, "per-head keys", multi_head=True)
    neox = pretrained.load_model(tiny_hf["gpt_neox"])
    with pytest.raises(pretrained.ArchitectureError, match="in parallel"):
        pretrained.require(neox, "resid_mid splice", sequential=True)
    pretrained.require(pretrained.load_model(tiny_hf["gpt2"]), "anything", mlp=True, plain_mlp=True, sequential=True,
                       multi_head=True)


@pytest.mark.parametrize("kind", HF_KINDS)
def test_init_is_the_same_architecture_freshly_drawn(tiny_hf, kind):
    trained, init = pretrained.load_model(tiny_hf[kind]), pretrained.load_model(tiny_hf[kind], init=True, seed=1)
    again = pretrained.load_model(tiny_hf[kind], init=True, seed=1)
    assert init.cfg.to_dict() == trained.cfg.to_dict()
    w, w0 = trained.blocks[0].attn.W_Q, init.blocks[0].attn.W_Q
    assert w.shape == w0.shape and not torch.allclose(w, w0) and torch.equal(w0, again.blocks[0].attn.W_Q)
