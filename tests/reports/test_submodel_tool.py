"""Sub-models: a planted concept sub-model is recovered and its ablation shows; empty sub-models change nothing;
bad names give clear errors; the command line runs on a tiny model."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers
from transformer_lens import HookedTransformer, HookedTransformerConfig

from lib.analysis.prompts import KeywordPrompts
from lib.core import data
from lib.reports.submodel_tool import cli, kernel as submodels

REPO = Path(__file__).resolve().parents[2]
RANGES = {"A": range(8, 16), "B": range(16, 24), "C": range(24, 32)}  # each concept's own tokens
PLANTED = [3, 7, 11, 19]  # MLP units that fire on A tokens only and push the logits of A tokens up
HOOK = "blocks.0.mlp.hook_post"


@pytest.fixture(scope="module")
def planted():
    """1-layer ReLU model (no LayerNorm): residual dim 0 flags A tokens, the planted units read only dim 0 and
    write only dim 1, which the unembedding reads as 'an A token comes next'."""
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_ctx=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=48,
                                  act_fn="relu", normalization_type=None, seed=0, initializer_range=0.1)
    m = HookedTransformer(cfg)
    a, p = list(RANGES["A"]), PLANTED
    with torch.no_grad():
        for w in (m.W_E, m.W_pos, m.blocks[0].attn.W_O, m.blocks[0].attn.b_O):  # dims 0-1 are reserved
            w[..., :2] = 0.0
        m.W_E[a, 0] = 1.0
        m.blocks[0].mlp.W_in[0, :] = 0.0
        m.blocks[0].mlp.W_in[:, p] = 0.0
        m.blocks[0].mlp.W_in[0, p] = 4.0
        m.blocks[0].mlp.b_in[p] = -1.0
        m.blocks[0].mlp.W_out[:, :2] = 0.0
        m.blocks[0].mlp.W_out[p] = 0.0
        m.blocks[0].mlp.W_out[p, 1] = 1.0
        m.unembed.W_U[:2] = 0.0
        m.unembed.W_U[1, a] = 0.5
    return m.eval()


def _windows(concept: str, n: int, pos: int, seed: int) -> torch.Tensor:
    r = torch.tensor(list(RANGES[concept]))
    return r[torch.randint(len(r), (n, pos), generator=torch.Generator().manual_seed(seed))]


@pytest.fixture(scope="module")
def concepts():
    return {c: _windows(c, 16, 12, i) for i, c in enumerate(RANGES)}


@pytest.fixture(scope="module")
def validation():
    """8 prompts per concept: 6 of its tokens, the answer another of its tokens."""
    parts = [_windows(c, 8, 7, 10 + i) for i, c in enumerate(RANGES)]
    tokens = torch.cat([p[:, :6] for p in parts])
    return KeywordPrompts(tokens, torch.full((24,), 6), torch.cat([p[:, 6] for p in parts]),
                          tuple(c for c in RANGES for _ in range(8)), ("test",) * 24, torch.arange(24))


@pytest.fixture(scope="module")
def found(planted, concepts, validation):
    return submodels.find_submodels(planted, concepts, k=4, validation=validation, n_random=20, progress=False)


def test_recovers_the_planted_submodel(found):
    assert found["A"].units[HOOK].tolist() == PLANTED
    s = found["A"].scores
    assert s["own"] > 1.0 and abs(s["other"]) < 1e-5  # only A's keyword loss rises (the units are 0 elsewhere)
    assert s["beats_random"] and s["gap"] > s["random_q95"] and s["p"] == 0.0


def test_explain_shows_the_planted_effect(planted, found):
    prompt = [8, 9, 10, 11]  # A tokens
    ex = submodels.explain(planted, prompt, found, ablate=["A", "B", ("A", "B")], top_k=3)
    act = ex.activity.set_index(["submodel", "position"]).activity
    assert (act.loc["A"] > 1).all() and act.loc["A"].min() > act.loc["B"].max()
    pr = ex.predictions
    a_tokens = set(RANGES["A"])
    assert set(pr[pr.ablated == "none"].token_id) <= a_tokens  # clean: an A token comes next
    assert not set(pr[pr.ablated == "A"].token_id) & a_tokens or pr[pr.ablated == "A"].prob.max() < 0.2
    assert pr[(pr.ablated == "B")].change.abs().max() < 0.05
    assert (pr[pr.ablated == "A + B"].change.abs().max() > 0.05)


def test_activity_identifies_the_planted_concept(planted, found, validation):
    ident = submodels.identification(submodels.prompt_activity(planted, validation, found))
    assert ident[ident.topic == "A"].correct.all() and (ident[ident.topic != "A"].most_active != "A").all()


def test_empty_submodel_changes_nothing(planted, found):
    subs = {"A": found["A"], "empty": submodels.empty(found["A"])}
    assert submodels.submodel_hooks(subs["empty"]) == []
    ex = submodels.explain(planted, [8, 9, 10], subs, ablate=["empty"], top_k=5)
    pr = ex.predictions
    assert torch.equal(torch.tensor(pr[pr.ablated == "empty"].prob.values),
                       torch.tensor(pr[pr.ablated == "none"].prob.values))
    assert (pr[pr.ablated == "empty"].change == 0).all()


def test_random_control_matches_sizes(found):
    r = submodels.random_like(found["A"], torch.Generator().manual_seed(0))
    assert r.signature == found["A"].signature and r.method == "random"


@pytest.mark.parametrize("call, bad", [
    (lambda m, c, f: submodels.explain(m, [8, 9], f, ablate=["Nope"]), "Nope"),
    (lambda m, c, f: submodels.find_submodels(m, c, hooks=["blocks.5.mlp.hook_post"], progress=False),
     "blocks.5.mlp.hook_post"),
    (lambda m, c, f: submodels.find_submodels(m, c, method="magic"), "magic"),
    (lambda m, c, f: submodels.find_submodels(m, c, method="sparse"), "sparse"),
    (lambda m, c, f: submodels.validate(m, {"Nope": f["A"]}, c, n_random=1, progress=False), "Nope"),
])
def test_unknown_names_raise(planted, concepts, found, call, bad):
    with pytest.raises(ValueError, match=bad) as e:
        call(planted, concepts, found)
    assert "allowed" in str(e.value)


def test_shapley_and_sae_methods(planted, concepts, validation):
    sh = submodels.find_submodels(planted, concepts, "shapley", k=4, prompts=validation, n_permutations=4,
                                  progress=False)
    assert sh["A"].units[HOOK].tolist() == PLANTED
    sae = submodels.find_submodels(planted, concepts, "sae", k=2, latent_cfg=dict(d_latent=4, steps=20),
                                   progress=False)
    h = "blocks.0.hook_mlp_out"
    assert len(sae["A"].units[h]) == 2 and h in sae["A"].compressors
    ex = submodels.explain(planted, [8, 9], sae, ablate=["A"])
    assert len(ex.predictions) == 10


def _word_tokenizer() -> data.Tokenizer:
    vocab = {data.EOS: 0, **{f"w{i}": i for i in range(1, 48)}}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=data.EOS))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return data.Tokenizer(hf)


def test_cli_runs_on_a_tiny_model(planted, concepts, capsys):
    ex = cli.main(["explain", "--prompt", "w8 w9 w10", "--ablate", "A", "--ablate", "A+B", "--top-k", "3"],
                  model=planted, tokenizer=_word_tokenizer(), concepts={"letters": concepts})
    out = capsys.readouterr().out
    assert "Next token" in out and "A + B" in out and "clean_prob" in out
    assert list(ex.predictions.ablated.unique()) == ["none", "A", "A + B"]


def test_cli_entry_point_help():
    r = subprocess.run([sys.executable, "-m", "lib.submodels", "explain", "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--ablate" in r.stdout and "--intensity" in r.stdout


@pytest.mark.parametrize("args, named", [
    (["--top-k", "0"], "--top-k: 0 is not allowed"), (["--top-k", "-3"], "--top-k: -3"),
    (["--n-windows", "0"], "--n-windows: 0"), (["--frac", "1.5"], "--frac: 1.5"),
    (["--intensity", "-1"], "--intensity: -1.0"), (["--method", "sparse"], "--method: invalid choice: 'sparse'"),
    (["--kind", "blur"], "--kind: invalid choice: 'blur'"), (["--preset", "tpu"], "--preset: invalid choice"),
])
def test_bad_arguments_are_refused_before_any_set_up(args, named, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "--prompt", "w8 w9", *args])  # no model given: the set-up would train one
    assert e.value.code == 2 and named in capsys.readouterr().err


def test_empty_and_too_long_prompts_are_refused(planted, concepts, capsys):
    with pytest.raises(SystemExit):
        cli.main(["explain", "--prompt", "  "])
    assert "--prompt: an empty prompt" in capsys.readouterr().err
    long = " ".join(["w8"] * (planted.cfg.n_ctx + 5))
    with pytest.raises(SystemExit):
        cli.main(["explain", "--prompt", long], model=planted, tokenizer=_word_tokenizer(), concepts={"x": concepts})
    assert f"do not fit the model's context of {planted.cfg.n_ctx} tokens" in capsys.readouterr().err
    with pytest.raises(ValueError, match=f"n_ctx={planted.cfg.n_ctx}"):
        submodels.explain(planted, list(range(1, planted.cfg.n_ctx + 3)), {}, top_k=1)
