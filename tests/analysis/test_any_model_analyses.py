"""Every analysis runs unchanged on a loaded model of each architecture family (tests.helpers.HF_KINDS: GPT-2;
GPT-NeoX with rotary positions and parallel attention + MLP; Llama with a gated MLP, RMSNorm, rotary positions and
grouped-query attention), each checked against a direct evaluation through the hooks, and a method that needs
something an architecture lacks refuses by name (pretrained.ArchitectureError) instead of failing inside
TransformerLens."""

import numpy as np
import pandas as pd
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import AutoModelForCausalLM

from helpers import HF_KINDS, attn_model, f64_tol, float64, fp32_tol, random_prompts
from lib.analysis import compressors, impairment, kwta, shapley
from lib.analysis.fastpath import fast_path_ok, require_fast_path
from lib.analysis.metrics import head_scores, repeated_tokens
from lib.analysis.prompts import evaluate
from lib.analysis.units import LOCATIONS, collect_activations, topic_stats
from lib.core import hooks, pretrained
from lib.reports.compression_infovae import kernel as compression
from lib.reports.training_dynamics import kernel as dynamics

FAST = {"gpt2": True, "gpt_neox": False, "llama": False}  # the GPT-2-style fast paths apply to GPT-2 only
VOCAB = 1000  # prompts draw token ids below this (the models' vocabulary is GPT-2's 50257)


@pytest.fixture(scope="module", params=HF_KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(tiny_hf, kind):
    return pretrained.load_model(tiny_hf[kind])


@pytest.fixture(scope="module")
def pr():
    """6 random prompts of 3..8 tokens before keywords of 1-3 tokens, topics a, b, c."""
    return random_prompts(6, 3, VOCAB)


def _no_hooks_left(m) -> bool:
    return all(not hp.fwd_hooks for hp in m.hook_dict.values())


# ------------------------------------------------------------------------------------------ impairment


@pytest.fixture(scope="module")
def clusters(model, pr):
    """Selectivity clusters for topic 'a' at every location (every architecture has all three) in both layers, and
    one in the last layer only: every branch of the fast path (resume in the last layer, a low-rank update of the
    last block's keys and values, whole blocks from layer 0's MLP input)."""
    windows = {t: pr.tokens[[i for i, x in enumerate(pr.topics) if x == t]] for t in "abc"}
    stats = topic_stats(model, windows, LOCATIONS, progress=False)
    out = {f"{loc} all": impairment.selective_cluster(stats[loc], "a", 0.1) for loc in LOCATIONS}
    return {**out, "ln2 last": impairment.selective_cluster(stats["ln2"], "a", 0.1, [1])}


def test_impairment_sweep_equals_the_per_condition_loop(model, kind, pr, clusters):
    assert fast_path_ok(model) == FAST[kind]
    conds = impairment.dose_grid(clusters, (2.0,), (0.5,), seeds=(0,), kinds=("noise", "scale", "zero"))
    loop = impairment.sweep_loop(model, pr, clusters, conds, progress=False)
    keys = ["cluster", "kind", "intensity", "seed", "prompt", "topic"]
    clean = evaluate(model, pr).loss.to_numpy()
    zeroed = loop[loop.kind == "zero"].groupby("cluster").loss.apply(lambda s: np.abs(s.to_numpy() - clean).max())
    assert (zeroed > 1e-3).all()  # every cluster's ablation moves the loss: the comparison is not vacuous
    for fast in (None, False) if FAST[kind] else (None,):  # None: the fast path where fast_path_ok, else generic
        got = impairment.sweep(model, pr, clusters, conds, max_tokens=100, chunk_tokens=30, fast=fast, progress=False)
        pd.testing.assert_frame_equal(got[keys], loop[keys])
        assert np.allclose(got.loss, loop.loss, rtol=0, atol=fp32_tol(loop.loss.to_numpy()))
    assert _no_hooks_left(model)


def test_the_fast_paths_forced_on_another_architecture_refuse_by_name(model, kind, pr, clusters):
    """fast=True on a model fast_path_ok rejects would fail inside a block (no resid_mid where attention and MLP run
    in parallel) or silently compute another model (no gate, no rotary positions): it is refused, naming why."""
    if FAST[kind]:
        require_fast_path(model, "anything")  # GPT-2 has what the fast paths need
        return
    conds = impairment.dose_grid(["ln2 last"], (1.0,), (), seeds=(0,), kinds=("noise",))
    missing = {"gpt_neox": "sequential blocks with a resid_mid.*in parallel",
               "llama": "an ungated MLP.*gated.*one key/value per head"}[kind]
    with pytest.raises(pretrained.ArchitectureError, match=f"impairment sweep's fast path .* needs {missing}"):
        impairment.sweep(model, pr, clusters, conds, fast=True, progress=False)
    with pytest.raises(pretrained.ArchitectureError, match=f"neuron game's fast path .* needs {missing}"):
        shapley.neuron_game(model, pr, [1], fast=True)


def test_the_fast_paths_refuse_rotary_positions_by_name():
    """A sequential, ungated, multi-head model whose only difference from GPT-2 is rotary positions."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=50, n_ctx=16,
                                  act_fn="gelu", positional_embedding_type="rotary", rotary_dim=4, device="cpu")
    rotary = HookedTransformer(cfg).eval()
    assert not fast_path_ok(rotary)
    with pytest.raises(pretrained.ArchitectureError, match="the neuron game's fast path .* needs learned absolute "
                                                           "positions.*\\(rotary positions"):
        shapley.neuron_game(rotary, random_prompts(3, 3, 50), fast=True)


# ------------------------------------------------------------------------------------------ Shapley


def _direct_values(model, pr, players, masks) -> torch.Tensor:
    """-(mean keyword loss) per topic of each coalition: one run_with_hooks forward per coalition, absent neurons
    zeroed at mlp.hook_post (the reference, independent of the game's batching)."""
    rows = []
    for mask in masks:
        fwd = [(hooks.name("mlp_post", layer), lambda x, hook, m=players.per_layer(mask, layer): x * m.to(x.dtype))
               for layer in players.layers]
        loss = evaluate(model, pr, fwd).loss.to_numpy()
        rows.append([-loss[[i for i, t in enumerate(pr.topics) if t == topic]].mean() for topic in "abc"])
    return torch.tensor(rows, dtype=torch.float32)


def test_neuron_game_equals_direct_evaluation_of_its_coalitions(model, kind, pr):
    # players in both layers, and (the fast path's other branch: resume in the last block) in the last layer only
    for layers in (None, [1]) if FAST[kind] else (None,):
        game = shapley.neuron_game(model, pr, layers, max_tokens=100, chunk_tokens=30)
        assert game.fast == FAST[kind]
        g = torch.Generator().manual_seed(0)
        n = game.n_players
        masks = torch.cat([torch.ones(1, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.bool),
                           torch.rand(4, n, generator=g) < 0.5])
        ref = _direct_values(model, pr, game.players, masks)
        assert (ref[0] - ref[1]).abs().min() > 1e-3  # ablating every neuron matters on every topic
        assert torch.allclose(game(masks), ref, rtol=0, atol=fp32_tol(ref))
    assert _no_hooks_left(model)


def test_truncated_monte_carlo_shapley_runs_and_is_efficient(model, pr):
    game = shapley.neuron_game(model, pr.select([0, 1, 2]), [1], max_tokens=2000)  # one prompt per topic
    value = game.single("a")
    res = shapley.tmc_shapley(value, game.n_players, 2, generator=torch.Generator().manual_seed(0), batch_size=64)
    ends = value(torch.stack([torch.ones(game.n_players, dtype=bool), torch.zeros(game.n_players, dtype=bool)]))
    assert res.values.shape == (game.n_players,) and res.n_evals == 2 + 2 * (game.n_players - 1)
    # untruncated, every walk's marginals sum to v(N) - v(∅); float32 values summed over the walk
    assert float(res.values.double().sum()) == pytest.approx(float(ends[0] - ends[1]), abs=4 * fp32_tol(ends))


# ------------------------------------------------------------------------------------------ compression


@pytest.fixture(scope="module")
def windows():
    return torch.randint(1, VOCAB, (8, 12), generator=torch.Generator().manual_seed(2))


def test_infovae_splice_equals_its_direct_effect(model, windows):
    """A few InfoVAE steps on layer 0's MLP output, spliced back: the loss equals that of the residual stream
    with the MLP's write replaced by the reconstruction, run on from layer 1 (no hook on the MLP at all)."""
    hook = hooks.name("mlp_out", 0)
    acts = collect_activations(model, windows, hook)
    vae, hist = compressors.fit(acts, compressors.CompressorConfig(d_latent=4, d_hidden=16, steps=5, batch_size=32))
    assert len(hist) == 5 and hist.loss.notna().all()
    spliced = compression.lm_metrics(model, windows, [(hook, compression.splice_hook(vae))])
    with torch.no_grad():
        _, cache = model.run_with_cache(windows, names_filter=[hook, hooks.name("resid_post", 0)], stop_at_layer=1)
        resid = cache[hooks.name("resid_post", 0)] - cache[hook] + vae(cache[hook])
        logits = model(resid, start_at_layer=1)
    direct = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), windows[:, 1:], reduction="none").mean(1)
    assert np.allclose(spliced["per_seq_loss"], direct.numpy(), rtol=0, atol=fp32_tol(direct))
    clean = compression.lm_metrics(model, windows)
    assert np.abs(spliced["per_seq_loss"] - clean["per_seq_loss"]).max() > 1e-3  # 5 steps: far from perfect
    assert _no_hooks_left(model)


@pytest.mark.parametrize("component", ["attn_out", "mlp_out"])
def test_identity_and_full_pca_splices_recover_the_clean_loss(model, windows, component):
    hook = hooks.name(component, 0)
    acts = collect_activations(model, windows, hook)
    refs = compression.references(model, windows, hook, acts.reshape(-1, acts.shape[-1]).mean(0))
    assert abs(refs["zero"]["loss"] - refs["clean"]["loss"]) > 1e-3  # the component matters: recovery is defined
    ident = compression.splice_row(model, windows, hook, lambda x: x, refs)
    assert ident["loss_increase"] == 0.0 and ident["frac_recovered_zero"] == 1.0
    pca, _ = compressors.fit(acts, compressors.CompressorConfig(method="pca", d_latent=model.cfg.d_model))
    full = compression.splice_row(model, windows, hook, pca, refs)
    assert abs(full["loss_increase"]) < 1e-3 and abs(full["frac_recovered_zero"] - 1) < 1e-2


# ------------------------------------------------------------------------------------------ k-WTA surgery


def test_kwta_replacing_the_last_mlp(model, kind, windows):
    """The surgery replaces the block's whole MLP module (TransformerBlock calls `mlp` on ln2's output whatever
    the MLP was), so it is meaningful on a gated MLP too; only init='copy' needs the replaced MLP's W_in/W_out
    layout and refuses a gated one by name."""
    cfg = kwta.SparseConfig(k=5)
    new = kwta.surgery(model, cfg)
    last = model.cfg.n_layers - 1
    _, cache = new.run_with_cache(windows)
    post = cache[kwta.units_hook(new, cfg)]
    assert post.shape == (*windows.shape, model.cfg.d_mlp) and ((post != 0).sum(-1) == 5).all()
    # W_out starts at 0: the surgered model is the original with its last MLP zero-ablated
    ablated = model.run_with_hooks(windows, fwd_hooks=[(hooks.name("mlp_out", last), lambda x, hook: x * 0)])
    assert torch.allclose(new(windows), ablated, rtol=0, atol=fp32_tol(ablated))
    fit = kwta.FitConfig(objective="lm", steps=3, batch_size=4, lr=1e-2, warmup=1)
    before = {n: p.clone() for n, p in new.named_parameters()}
    hist = kwta.fit(new, model, cfg, fit, windows, progress=False)
    assert len(hist) == 3 and hist.loss.notna().all()
    moved = {n for n, p in new.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(f"blocks.{last}.mlp.") for n in moved)  # only the new layer trained
    copy = kwta.SparseConfig(k=5, init="copy")
    if kind == "llama":
        with pytest.raises(pretrained.ArchitectureError, match="k-WTA surgery with init='copy' .* needs an ungated"):
            kwta.surgery(model, copy)
    else:
        copied = kwta.surgery(model, copy)
        assert torch.equal(copied.blocks[last].mlp.W_in, model.blocks[last].mlp.W_in)


def test_kwta_residual_layer_is_the_identity_at_init(model, windows):
    cfg = kwta.SparseConfig(surgery="residual", k=4)
    new = kwta.surgery(model, cfg)
    clean = model(windows)
    assert torch.allclose(new(windows), clean, rtol=0, atol=fp32_tol(clean))
    _, cache = new.run_with_cache(windows)
    assert ((cache[hooks.name("sparse_post")] != 0).sum(-1) == 4).all()


# ------------------------------------------------------------------------------------------ head scores


def test_head_scores_equal_those_of_hugging_faces_attention(tiny_hf, kind, model):
    """Induction and previous-token scores from TransformerLens's patterns (one per query head, grouped-query
    attention included) equal the same scores from the Hugging Face model's own attention weights."""
    tokens = repeated_tokens(4, 6, torch.arange(1, VOCAB), torch.Generator().manual_seed(0))
    got = head_scores(model, tokens)
    hf = AutoModelForCausalLM.from_pretrained(tiny_hf[kind], local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        pat = torch.stack(hf(tokens, output_attentions=True).attentions)  # [layer, batch, head, q, k]
    half, q = 6, torch.arange(12)
    want = {"induction": pat[..., q[half:], q[half:] - half + 1].mean((1, 3)),
            "prev_token": pat[..., q[1:], q[1:] - 1].mean((1, 3))}
    for name, ref in want.items():
        assert got[name].shape == (model.cfg.n_layers, model.cfg.n_heads)
        assert torch.allclose(got[name], ref, rtol=0, atol=fp32_tol(1.0)), name


# ------------------------------------------------------------------------------------------ per-example gradients


def test_per_example_grads_auto_takes_the_batched_path_where_it_applies(model, kind, windows):
    """method='auto': the one-backward attention path on multi-head attention (rotary positions included: the
    gradient is taken at hook_q / hook_k, before the rotation), vmap on grouped-query attention for W_Q and W_O
    (still one per query head there), both equal to one backward per example (float64). Per-head W_K / W_V of
    grouped-query attention (a copy of one key/value per group) are refused by name."""
    h64 = float64(model)
    names = dynamics.attention_weight_names(0)
    if kind == "llama":
        with pytest.raises(pretrained.ArchitectureError, match="blocks.0.attn.W_K .* needs one key/value per head"):
            dynamics.per_example_grads(h64, names, windows[:2])
        names = ["blocks.0.attn.W_Q", "blocks.0.attn.W_O"]
    assert dynamics.attention_fast_path_ok(h64, names) == (kind != "llama")
    tokens = windows[:3, :8]
    got = dynamics.per_example_grads(h64, names, tokens, chunk=2)
    ref = dynamics.per_example_grads_loop(h64, names, tokens)
    assert got.dtype == torch.float64 and torch.allclose(got, ref, rtol=0, atol=f64_tol(ref))


# ------------------------------------------------------------------------------------------ refusals by name


def test_mlp_methods_refuse_an_attention_only_model(pr, windows):
    attn = attn_model(d_vocab=VOCAB)
    only = "needs MLP layers \\(this model is attention-only\\)"
    with pytest.raises(pretrained.ArchitectureError, match=f"Shapley neuron game .* {only}"):
        shapley.neuron_game(attn, pr)
    with pytest.raises(pretrained.ArchitectureError, match=f"unit activations at mlp_post {only}"):
        topic_stats(attn, {"a": pr.tokens}, "mlp_post", progress=False)
    unit = torch.zeros(2, 4)
    mask = unit.bool().index_fill(1, torch.tensor([1]), True)
    cl = {"c": impairment.Cluster(mask, "mlp_post", unit, unit + 1)}
    conds = impairment.dose_grid(cl, (1.0,), (), seeds=(0,), kinds=("noise",))
    for sweep in (impairment.sweep, impairment.sweep_loop):
        with pytest.raises(pretrained.ArchitectureError, match=f"impairment sweep at mlp_post {only}"):
            sweep(attn, pr, cl, conds, progress=False)
    with pytest.raises(pretrained.ArchitectureError, match=f"k-WTA surgery 'replace_mlp' .* {only}"):
        kwta.surgery(attn, kwta.SparseConfig(k=2))
    # TransformerLens keeps hook_mlp_out on attention-only blocks, where it never fires: a splice would do nothing
    out = hooks.name("mlp_out", 0)
    with pytest.raises(pretrained.ArchitectureError, match=f"splicing at {out} {only}"):
        compression.lm_metrics(attn, windows, [(out, compression.splice_hook(lambda x: x))])
    with pytest.raises(pretrained.ArchitectureError, match=f"splicing at {out} {only}"):
        compression.splice_keyword_scores(attn, pr, out, lambda x: x)


def test_hooks_an_architecture_lacks_are_refused_by_name(model, kind, windows):
    """resid_mid exists only where attention and MLP run one after the other; a hook of no model is a ValueError."""
    mid = hooks.name("resid_mid", 0)
    fwd = [(mid, compression.splice_hook(lambda x: x))]
    if kind == "gpt_neox":
        with pytest.raises(pretrained.ArchitectureError, match=f"splicing at {mid} needs sequential blocks"):
            compression.lm_metrics(model, windows, fwd)
    else:
        assert (compression.lm_metrics(model, windows, fwd)["per_seq_loss"]
                == compression.lm_metrics(model, windows)["per_seq_loss"]).all()
    with pytest.raises(ValueError, match="hook='blocks.0.hook_nowhere' is not allowed for collecting activations"):
        collect_activations(model, windows, "blocks.0.hook_nowhere")
