"""Sub-models: a planted concept sub-model is recovered and its ablation shows; empty sub-models change nothing;
bad names give clear errors; the command line runs on a tiny model."""

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
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
    return KeywordPrompts(tokens, torch.full((24,), 6), torch.cat([p[:, 6] for p in parts])[:, None],
                          tuple(c for c in RANGES for _ in range(8)), ("test",) * 24, torch.arange(24))


@pytest.fixture(scope="module")
def found(planted, concepts, validation):
    return submodels.find_submodels(planted, concepts, k=4, validation=validation, n_random=20, progress=False)


def test_recovers_the_planted_submodel(found):
    assert found["A"].units[HOOK].tolist() == PLANTED
    s = found["A"].scores
    assert s["own"] > 1.0 and abs(s["other"]) < 1e-5  # only A's keyword loss rises (the units are 0 elsewhere)
    assert s["beats_random"] and s["gap"] > s["random_q95"] and s["p"] == 1 / 21  # no random gap reaches it


def test_sufficiency_keeps_only_the_submodel(planted, found):
    """Keeping only the planted units (ablating the other 28) leaves A's keyword loss where it was: sufficiency ~1,
    above random 4-unit sets; B and C do not need the layer at all, so their sufficiency is undefined (NaN)."""
    s = found["A"].scores
    assert s["layer_damage"] > 1.0 and s["sufficiency"] == pytest.approx(1.0, abs=0.05)
    assert s["kept"] == pytest.approx(s["layer_damage"], rel=0.05)  # nats: what it alone preserves
    assert s["kept"] > s["kept_random_q95"] and s["kept_p"] == 1 / 21 and s["sufficiency"] > s["sufficiency_random_q95"]
    assert 0 < s["sufficiency_random_mean"] < 0.9
    for c in ("B", "C"):
        sc = found[c].scores
        assert sc["layer_damage"] <= 0 and math.isnan(sc["sufficiency"]) and abs(sc["kept"]) < 0.05
    comp = submodels.complement(found["A"])
    assert sorted(comp.units[HOOK].tolist() + PLANTED) == list(range(32))


def test_status_carries_validation_and_the_initialisation_control(planted, concepts, validation, found):
    unvalidated = submodels.find_submodels(planted, concepts, k=4, progress=False)
    assert {sm.status for sm in unvalidated.values()} == {"unvalidated"}
    assert found["A"].status == "validated" and found["B"].status == "failed"
    assert "as much as its own" in found["B"].status_reason and "not run" in found["A"].status_reason
    as_good = {c: replace(sm, scores={**sm.scores, "gap": found["A"].scores["gap"] + 1}) for c, sm in found.items()}
    worse = {c: replace(sm, scores={**sm.scores, "gap": -1.0}) for c, sm in found.items()}
    assert submodels.with_init_control(found, worse)["A"].status == "validated"
    failed = submodels.with_init_control(found, as_good)["A"]
    assert failed.status == "failed" and "no better than at initialisation" in failed.status_reason
    with pytest.raises(ValueError, match="run validate first"):
        submodels.with_init_control(unvalidated, found)
    few = submodels.validate(planted, {"A": found["A"]}, validation, n_random=10, progress=False)["A"]
    assert few.scores["p"] == 1 / 11 and few.status == "failed"  # 10 random sets cannot show p <= 0.05
    table = submodels.validation_table(found)
    assert table.loc["A", "status"] == "validated" and table.loc["A", "p"] == 1 / 21


def test_explain_shows_status_and_refuses_unvalidated_when_asked(planted, concepts, found):
    ex = submodels.explain(planted, [8, 9, 10], found, ablate=["A", ("A", "B")], top_k=2)
    assert dict(zip(ex.predictions.ablated, ex.predictions.status)) == {
        "none": "clean", "A": "validated", "A + B": "validated + failed"}
    assert ex.validation.loc["B", "status"] == "failed"
    with pytest.raises(ValueError, match=r"B \(failed\).*allowed: validated sub-models only"):
        submodels.explain(planted, [8, 9, 10], found, ablate=[("A", "B")], allow_unvalidated=False)
    submodels.explain(planted, [8, 9, 10], found, ablate=["A"], allow_unvalidated=False)  # validated: fine


def test_cannot_do_lists_concepts_without_a_validated_submodel():
    t = pd.DataFrame({"concept": ["A", "A", "B", "B", "C"], "status": ["failed", "validated", "failed", "unvalidated",
                                                                      "failed"]})
    assert submodels.cannot_do(t) == ["B", "C"]


def test_shapley_refuses_overlapping_game_and_validation_halves(planted, concepts, validation):
    with pytest.raises(ValueError, match="24 shared articles.*disjoint halves"):
        submodels.find_in_sets(planted, {"letters": concepts}, {"letters": validation}, {"letters": validation},
                               "shapley", k=4, n_permutations=2, n_random=2, progress=False)


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


def _same_scores(a: dict, b: dict) -> None:
    """Validation scores equal up to float32 rounding: losses of a few nats summed over prompts carry ~1e-6 of
    error, so 1e-4 relative (1e-5 absolute near 0); booleans, p-values and NaNs exactly."""
    assert a.keys() == b.keys()
    for c in a:
        for k, v in a[c].scores.items():
            w = b[c].scores[k]
            if isinstance(v, bool) or k in ("p", "kept_p", "size"):
                assert v == w, (c, k, v, w)
            elif math.isnan(v):
                assert math.isnan(w), (c, k, w)
            else:
                assert v == pytest.approx(w, rel=1e-4, abs=1e-5), (c, k, v, w)


def test_batched_validation_matches_the_hooked_loop(planted, concepts, validation, found):
    """The neuron-game path (taken for the planted model's hook_post units, which neuron_game_layers confirms)
    gives the scores of one hooked forward per sub-model; it is refused where it would compute something else."""
    assert submodels.neuron_game_layers(planted, list(found.values()), validation, "zero", 1.0) == [0]
    loop = submodels.validate(planted, found, validation, n_random=20, progress=False, fast=False)
    _same_scores(found, loop)
    for kind, a in (("mean", 1.0), ("zero", 0.5), ("noise", 1.0)):
        assert submodels.neuron_game_layers(planted, list(found.values()), validation, kind, a) is None
    with pytest.raises(ValueError, match="fast"):
        submodels.validate(planted, found, validation, n_random=2, kind="noise", fast=True, progress=False)


@pytest.mark.parametrize("kind, a", [("mean", 1.0), ("zero", 0.5)])
def test_validation_resumed_at_the_last_mlp_matches_the_hooked_loop(planted, found, validation, kind, a):
    """Mean ablation and half-scaling of the (last-layer) hook_post units are no neuron-game coalitions: they are
    scored resumed at the last block's MLP, with every score of one hooked forward per sub-model; noise, whose draws
    depend on the shape they are drawn for, is not resumed."""
    subs = list(found.values())
    assert submodels.neuron_game_layers(planted, subs, validation, kind, a) is None
    assert submodels.resumes_at_last_mlp_of(planted, subs, validation, kind)
    assert not submodels.resumes_at_last_mlp_of(planted, subs, validation, "noise")
    fast = submodels.validate(planted, found, validation, n_random=20, kind=kind, intensity=a, progress=False)
    _same_scores(fast, submodels.validate(planted, found, validation, n_random=20, kind=kind, intensity=a,
                                          progress=False, fast=False))
    assert fast["A"].scores["own"] > 0.1  # the planted units matter for A, so agreement is not on zeros


def test_latent_validation_resumed_at_the_last_mlp_matches_the_hooked_loop(planted, concepts, validation):
    """SAE latents of the last block's MLP output (report 7's latent methods): resumed and looped validation agree
    on every score, on a 2-layer LayerNorm model too, where an earlier-layer hook is refused."""
    sae = submodels.find_submodels(planted, concepts, "sae", k=2, latent_cfg=dict(d_latent=8, steps=40),
                                   progress=False)
    assert submodels.resumes_at_last_mlp_of(planted, list(sae.values()), validation, "zero")
    fast = submodels.validate(planted, sae, validation, n_random=19, progress=False, fast=True)
    _same_scores(fast, submodels.validate(planted, sae, validation, n_random=19, progress=False, fast=False))
    assert max(abs(sm.scores["own"]) for sm in fast.values()) > 1e-3
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=48,
                                  act_fn="gelu", normalization_type="LN", seed=1)
    m = HookedTransformer(cfg).eval()
    for layer, resumes in ((1, True), (0, False)):
        subs = submodels.find_submodels(m, concepts, "sae", k=2, hooks=[f"blocks.{layer}.hook_mlp_out"],
                                        latent_cfg=dict(d_latent=8, steps=20), progress=False)
        assert submodels.resumes_at_last_mlp_of(m, list(subs.values()), validation, "zero") is resumes
        if resumes:
            _same_scores(submodels.validate(m, subs, validation, n_random=5, progress=False),
                         submodels.validate(m, subs, validation, n_random=5, progress=False, fast=False))


def test_batched_validation_matches_on_two_layers_with_layernorm():
    """Sub-models spanning both MLP layers of a 2-layer LayerNorm GELU model (the game resumes at layer 0 and runs
    layer 1 whole): batched and looped validation agree on every score."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_ctx=16, d_head=8, n_heads=2, d_mlp=32, d_vocab=48,
                                  act_fn="gelu", normalization_type="LN", seed=1)
    m = HookedTransformer(cfg).eval()
    cs = {c: _windows(c, 8, 12, 20 + i) for i, c in enumerate(RANGES)}
    parts = [_windows(c, 6, 7, 30 + i) for i, c in enumerate(RANGES)]
    val = KeywordPrompts(torch.cat([p[:, :6] for p in parts]), torch.full((18,), 6),
                         torch.cat([p[:, 6] for p in parts])[:, None], tuple(c for c in RANGES for _ in range(6)),
                         ("test",) * 18, torch.arange(18))
    subs = submodels.find_submodels(m, cs, k=3, progress=False)
    assert submodels.neuron_game_layers(m, list(subs.values()), val, "zero", 1.0) == [0, 1]
    fast = submodels.validate(m, subs, val, n_random=5, progress=False)
    _same_scores(fast, submodels.validate(m, subs, val, n_random=5, progress=False, fast=False))
    assert any(abs(sm.scores["own"]) > 1e-3 for sm in fast.values())  # the ablations do change the loss


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


def test_shapley_values_and_latent_compressors_are_fit_once(planted, concepts, validation, artifacts_tmp):
    """A rerun loads the Shapley values and the SAE from artifacts (the same units); other prompts are another key."""
    def folders(kind):
        return sorted(p.name for p in (artifacts_tmp / kind).rglob("*") if p.is_dir()) if (artifacts_tmp / kind).exists() else []

    run = lambda pr: submodels.find_submodels(planted, concepts, "shapley", k=4, prompts=pr, n_permutations=3,
                                              progress=False, seed=7)
    first, before = run(validation), folders("submodels")
    again = run(validation)
    assert folders("submodels") == before and len(before) >= 1
    assert all(torch.equal(first[c].units[HOOK], again[c].units[HOOK]) for c in first)
    run(validation.select(torch.arange(0, 24, 2)))
    assert len(folders("submodels")) == len(before) + 1  # other prompts: a new key, not the cached values
    sae = lambda: submodels.find_submodels(planted, concepts, "sae", k=2, progress=False,
                                           latent_cfg=dict(d_latent=4, steps=7, seed=5))
    a, n = sae(), len(folders("compressors"))
    b = sae()
    assert len(folders("compressors")) == n and torch.equal(a["A"].units["blocks.0.hook_mlp_out"],
                                                            b["A"].units["blocks.0.hook_mlp_out"])


def _word_tokenizer() -> data.Tokenizer:
    vocab = {data.EOS: 0, **{f"w{i}": i for i in range(1, 48)}}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=data.EOS))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return data.Tokenizer(hf)


def _cli(planted, concepts, validation, *args, validated=True):
    return cli.main(["explain", "--prompt", "w8 w9 w10", "--top-k", "3", "--n-random", "20", "--frac", "0.125", *args],
                    model=planted,
                    tokenizer=_word_tokenizer(), concepts={"letters": concepts},
                    validation={"letters": validation} if validated else None,
                    init=HookedTransformer(planted.cfg).eval() if validated else None)


def test_cli_validates_and_ablates_only_validated_submodels(planted, concepts, validation, capsys):
    ex = _cli(planted, concepts, validation)
    out = capsys.readouterr().out
    assert "Next token" in out and "clean_prob" in out and "init_gap" in out and "kept_p" in out
    assert list(ex.predictions.ablated.unique()) == ["none", "A"]  # B and C failed validation: not ablated
    assert ex.validation.status.to_dict() == {"A": "validated", "B": "failed", "C": "failed"}
    assert ex.validation.loc["A", "init_gap"] < ex.validation.loc["A", "gap"]


def test_cli_refuses_a_failed_submodel_unless_allowed(planted, concepts, validation, capsys):
    with pytest.raises(SystemExit) as e:
        _cli(planted, concepts, validation, "--ablate", "A+B")
    assert e.value.code == 2 and "B (failed)" in capsys.readouterr().err
    ex = _cli(planted, concepts, validation, "--ablate", "A", "--ablate", "A+B", "--allow-unvalidated")
    assert list(ex.predictions.ablated.unique()) == ["none", "A", "A + B"]
    assert "validated + failed" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _cli(planted, concepts, validation, "--ablate", "A", validated=False)
    assert "A (unvalidated)" in capsys.readouterr().err


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


def test_a_concept_whose_probe_measures_nothing_is_never_validated(found):
    c = next(iter(found))
    margins = pd.DataFrame({"topic": list(found), "margin": [-0.5 if t == c else 1.0 for t in found],
                            "usable": [t != c for t in found]})
    gated = submodels.with_probe_gate(found, margins)
    assert gated[c].status == "unvalidated" and "unigram" in gated[c].status_reason
    assert all(gated[t].status == found[t].status for t in found if t != c)
    with pytest.raises(ValueError, match="concept"):
        submodels.with_probe_gate(found, margins[margins.topic != c])


# --------------------------------------------------------------------------- the tool on a researcher's own model


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory):
    """Three concepts as text files (one DBpedia abstract per line), as a researcher would give them."""
    folder = tmp_path_factory.mktemp("concepts")
    df = data.load_articles("dbpedia14_train")
    for label in ("Athlete", "Company", "Plant"):
        texts = [t.replace("\n", " ") for t in df.loc[df.label == label, "text"].head(16)]
        (folder / f"{label}.txt").write_text("\n".join(texts) + "\n\n")  # a blank line at the end is skipped
    return folder


def _explain_own(model_dir, concept_dir, html):
    return ["explain", "--model", str(model_dir), "--concepts", str(concept_dir), "--prompt",
            "The company was founded in", "--n-random", "4", "--n-windows", "4", "--n-ctx", "32", "--preset", "smoke",
            "--top-k", "3", "--report", str(html), "--allow-unvalidated", "--ablate", "Company"]


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_cli_runs_on_a_saved_hugging_face_model(tiny_hf, concept_dir, tmp_path, kind, capsys):
    html = tmp_path / "explain.html"
    ex = cli.main(_explain_own(tiny_hf[kind], concept_dir, html))
    out = capsys.readouterr().out
    assert set(ex.validation.index) == {"Athlete", "Company", "Plant"} and "init_gap" in out
    assert list(ex.predictions.ablated.unique()) == ["none", "Company"] and len(ex.predictions) == 6
    p = ex.predictions
    assert ((p.prob >= 0) & (p.prob <= 1)).all() and not p[p.ablated == "Company"].prob.equals(p[p.ablated == "none"].prob)
    page = html.read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    arch = {"gpt2": "GPT2LMHeadModel", "gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}[kind]
    assert page.count("data:image/png;base64,") >= 2 and "Company" in page and arch in page


def test_cli_entry_point_on_a_saved_model(tiny_hf, concept_dir, tmp_path):
    html = tmp_path / "page.html"
    r = subprocess.run([sys.executable, "-m", "lib.submodels", *_explain_own(tiny_hf["gpt2"], concept_dir, html)],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Next token after" in r.stdout and f"Wrote {html}" in r.stdout and html.is_file()
    assert "Finding and validating sub-models" in r.stderr  # the long steps say what they do


@pytest.mark.parametrize("change, named", [
    (lambda d: (d / "Plant.txt").write_text("one line\n"), "Plant.txt has 1 non-empty line"),
    (lambda d: [f.unlink() for f in d.glob("*.txt") if f.stem != "Athlete"], "at least 2 concepts"),
])
def test_bad_concept_folders_are_named(tiny_hf, concept_dir, tmp_path, change, named, capsys):
    import shutil

    bad = tmp_path / "concepts"
    shutil.copytree(concept_dir, bad)
    change(bad)
    with pytest.raises(SystemExit) as e:
        cli.main(_explain_own(tiny_hf["gpt2"], bad, tmp_path / "x.html"))
    assert e.value.code == 2 and named in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_a_missing_model_and_a_bad_report_name_are_refused_before_set_up(concept_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(_explain_own(tmp_path / "no-model", concept_dir, tmp_path / "x.html"))
    assert "no local weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(_explain_own(tmp_path / "no-model", concept_dir, tmp_path / "x.txt"))
    assert "must end in .html" in capsys.readouterr().err


def test_explain_shows_partial_utf8_tokens_as_bytes():
    """A byte-level BPE token holding part of a character reads as its bytes ('\\xe2\\x80'), not U+FFFD, in every
    token column of an explanation."""
    tok = data.gpt2_tokenizer()
    partial = tok.encode(" “quote”")[0]  # ' \xe2\x80': the first two bytes of '“'
    assert "\ufffd" in tok.decode([partial])
    cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=8, d_head=4, n_heads=2, d_mlp=8, d_vocab=tok.vocab_size,
                                  act_fn="relu", normalization_type=None, seed=0)
    m = HookedTransformer(cfg).eval()
    with torch.no_grad():
        m.unembed.b_U[partial] = 50.0  # the clean top-1 prediction
    sm = submodels.SubModel("A", "selectivity", {HOOK: torch.tensor([0, 1])}, {HOOK: torch.zeros(8)},
                            {HOOK: torch.ones(8)})
    ex = submodels.explain(m, [tok.eos_id, partial], {"A": sm}, tokenizer=tok, ablate=["A"], top_k=2)
    shown = [*ex.tokens, *ex.predictions.token, *ex.tracked.token, *ex.active().columns]
    assert not any("\ufffd" in s for s in shown)
    assert ex.predictions.token.iloc[0] == tok.display([partial]) and "\\xe2\\x80" in ex.predictions.token.iloc[0]


def test_token_probs_tracks_a_keyword_under_ablation(planted, found):
    """The probability of a chosen next token (here an A token, and a C token), clean and ablated: the same clean
    values as explain's, and ablating the planted A sub-model lowers the A token's probability."""
    tp = submodels.token_probs(planted, [8, 9, 10], found, [12, 30], ablate=["A", "C"])
    assert list(tp.ablated) == ["none", "none", "A", "A", "C", "C"]
    assert (tp.clean_prob == tp.clean_prob[:2].tolist() * 3).all()
    pr = tp.set_index(["ablated", "token_id"]).prob
    assert pr["A", 12] < pr["none", 12] - 1e-3 and tp[tp.ablated == "none"].change.eq(0).all()
    ex = submodels.explain(planted, [8, 9, 10], found, ablate=["A"], top_k=48)
    clean = ex.predictions[ex.predictions.ablated == "none"].set_index("token_id").prob
    assert pr["none", 12] == pytest.approx(clean[12]) and pr["none", 30] == pytest.approx(clean[30])
    with pytest.raises(ValueError, match="token_ids"):
        submodels.token_probs(planted, [8, 9], found, [48])
