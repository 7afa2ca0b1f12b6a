"""k-WTA, duty-cycle boosting, SparseMLP and surgery on a HookedTransformer (lib.analysis.kwta)."""

import pytest
import torch
from transformer_lens import HookedTransformer

from helpers import fp32_tol
from lib.analysis import kwta
from lib.core import config, hooks, model, pretrained, train

CFG = config.resolve("smoke", attention_only=False, init_range=0.3)
FIT = kwta.FitConfig(steps=4, batch_size=4, lr=1e-2, warmup=1)


@pytest.fixture(scope="module")
def hooked():
    return model.to_hooked(train.init_model(CFG).eval())


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, CFG.model.d_vocab, (8, CFG.model.n_ctx), generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------------ k-WTA


@pytest.mark.parametrize("k", [1, 3, 16])
def test_exactly_k_winners_keep_their_values(k):
    x = torch.randn(5, 7, 16)
    out, mask = kwta.kwta(x, k)
    assert ((out != 0).sum(-1) == k).all() and (mask.sum(-1) == k).all()
    assert torch.equal(out[mask], x[mask])  # winners keep their input values exactly
    assert (out[~mask] == 0).all()


def test_ties_break_deterministically_to_the_lowest_index():
    x = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5, 2.0]])
    mask = kwta.kwta_mask(x, 2)
    assert mask.tolist() == [[False, True, True, False, False, False]]
    assert kwta.kwta_mask(torch.zeros(2, 5), 3).tolist() == [[True] * 3 + [False] * 2] * 2
    assert torch.equal(kwta.kwta_mask(x, 3), kwta.kwta_mask(x.clone(), 3))


def test_boost_zero_is_plain_topk():
    x = torch.randn(64, 32)
    duty = torch.rand(32)  # skewed duty cycles must not matter at strength 0
    out, mask = kwta.kwta(x, 5, duty, boost_strength=0.0)
    ref = torch.zeros_like(x).scatter(-1, x.topk(5, -1).indices, x.gather(-1, x.topk(5, -1).indices))
    assert torch.equal(out, ref)
    kw = kwta.KWinners(32, 5, boost_strength=0.0)
    kw.duty_cycle.copy_(duty)
    assert torch.equal(kw.train()(x), ref) and torch.equal(kw.eval()(x), ref)


def test_boosting_changes_the_winners_by_duty_cycle():
    x = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    duty = torch.tensor([1.0, 0.0, 0.0, 0.0])  # unit 0 always won
    _, plain = kwta.kwta(x, 1, duty, 0.0)
    _, boosted = kwta.kwta(x, 1, duty, 5.0)
    assert plain[0].tolist() == [True, False, False, False] and boosted[0].tolist() == [False, True, False, False]


def test_duty_cycles_move_towards_k_over_n_under_boosting():
    n, k = 16, 2
    g = torch.Generator().manual_seed(0)
    skew = torch.linspace(4.0, 0.0, n)  # units 0 and 1 always win without boosting

    def run(strength: float) -> torch.Tensor:
        kw = kwta.KWinners(n, k, boost_strength=strength, boost_strength_factor=1.0, duty_cycle_period=500).train()
        for _ in range(100):
            kw(torch.randn(64, n, generator=g) * 0.05 + skew)
        return kw.duty_cycle

    plain, boosted = run(0.0), run(20.0)
    target = k / n
    assert plain[0] > 0.95  # without boosting the top unit always wins
    assert boosted[0] < 0.5 * plain[0]  # with boosting it loses its monopoly
    assert (boosted - target).abs().mean() < 0.5 * (plain - target).abs().mean()
    assert abs(float(boosted.sum()) - k) < 1e-3  # k winners per row: duty cycles sum to k


def test_eval_mode_does_not_update_duty_cycles():
    kw = kwta.KWinners(10, 3).train()
    kw(torch.randn(20, 10))
    before = (kw.duty_cycle.clone(), kw.learning_iterations.clone())
    kw.eval()
    kw(torch.randn(20, 10))
    assert torch.equal(kw.duty_cycle, before[0]) and torch.equal(kw.learning_iterations, before[1])
    kw.decay_boost()
    assert float(kw.boost_strength) == pytest.approx(0.9)


@pytest.mark.parametrize("kwargs, bad", [
    (dict(n_units=8, k=0), "k=0"), (dict(n_units=8, k=9), "k=9"), (dict(n_units=0, k=1), "n_units=0"),
    (dict(n_units=8, k=2, boost_strength=-1.0), "boost_strength=-1.0"),
    (dict(n_units=8, k=2, eval_boost="always"), "eval_boost='always'"),
    (dict(n_units=8, k=2, boost_strength_factor=0.0), "boost_strength_factor=0.0")])
def test_bad_kwinners_arguments_name_the_value(kwargs, bad):
    with pytest.raises(ValueError, match=bad.replace("(", r"\(")):
        kwta.KWinners(**kwargs)


def test_bad_configs_name_the_value_and_what_is_allowed():
    with pytest.raises(ValueError, match="surgery='middle'.*replace_mlp"):
        kwta.SparseConfig(surgery="middle")
    with pytest.raises(ValueError, match="objective='kl'.*distill"):
        kwta.FitConfig(objective="kl")
    with pytest.raises(ValueError, match="init='copy'"):
        kwta.SparseConfig(surgery="residual", init="copy")
    with pytest.raises(ValueError, match="act_fn='tanh'"):
        kwta.SparseMLP(8, 16, 2, act_fn="tanh")


def test_sparse_weights_hold_a_fixed_share_of_inputs_at_zero():
    mlp = kwta.SparseMLP(20, 6, 2, weight_sparsity=0.5, generator=torch.Generator().manual_seed(0))
    assert ((mlp.weight_mask == 0).sum(0) == 10).all()


# ---------------------------------------------------------------------------------------------- surgery


def test_replace_mlp_keeps_a_hooked_transformer_whose_mlp_post_addresses_k_units(hooked, tokens):
    cfg = kwta.SparseConfig(k=5)
    new = kwta.surgery(hooked, cfg)
    last = CFG.model.n_layers - 1
    assert isinstance(new, HookedTransformer) and kwta.units_hook(new, cfg) == hooks.name("mlp_post", last)
    _, cache = new.run_with_cache(tokens)
    post = cache[hooks.name("mlp_post", last)]
    assert post.shape == (*tokens.shape, CFG.model.d_mlp) and ((post != 0).sum(-1) == 5).all()
    seen = []
    new.run_with_hooks(tokens, fwd_hooks=[(hooks.name("mlp_post", last), lambda x, hook: seen.append(x.clone()))])
    assert torch.equal(seen[0], post)
    # W_out starts at 0: the surgered model equals the original with that MLP zero-ablated
    ablated = hooked.run_with_hooks(tokens, fwd_hooks=[(hooks.name("mlp_out", last), lambda x, hook: x * 0)])
    assert torch.allclose(new(tokens), ablated, rtol=0, atol=fp32_tol(ablated))


def test_residual_layer_is_the_identity_at_init_and_addressable(hooked, tokens):
    cfg = kwta.SparseConfig(surgery="residual", k=4)
    new = kwta.surgery(hooked, cfg)
    clean = hooked(tokens)
    assert torch.allclose(new(tokens), clean, rtol=0, atol=fp32_tol(clean))
    _, cache = new.run_with_cache(tokens)
    assert ((cache[hooks.name("sparse_post")] != 0).sum(-1) == 4).all()
    assert hooks.name("ln_final") in cache and hooks.name("sparse_out") in cache
    assert kwta.start_layer(new, cfg) == CFG.model.n_layers


@pytest.mark.parametrize("surgery", kwta.SURGERIES)
def test_training_moves_only_the_new_layer(hooked, tokens, surgery):
    cfg = kwta.SparseConfig(surgery=surgery, k=6)
    original = {k: v.clone() for k, v in hooked.state_dict().items()}
    new = kwta.surgery(hooked, cfg)
    module = kwta.sparse_module(new, cfg)
    frozen = {n: p.clone() for n, p in new.named_parameters() if not p.requires_grad}
    trained = {n: p.clone() for n, p in module.named_parameters()}
    added = {n for n, p in new.named_parameters() if p.requires_grad}
    prefix = "ln_final.sparse." if surgery == "residual" else f"blocks.{CFG.model.n_layers - 1}.mlp."
    assert added == {prefix + n for n, _ in module.named_parameters()}  # only the new layer trains
    kept = set(dict(hooked.named_parameters())) - added
    assert set(frozen) == kept  # exactly the original's remaining parameters are frozen
    assert len(frozen) + len(trained) == len(list(new.parameters()))
    hist = kwta.fit(new, hooked, cfg, FIT, tokens, progress=False)
    assert len(hist) == FIT.steps and hist.loss.notna().all()
    after = dict(new.named_parameters())
    assert all(torch.equal(after[n], p) and torch.equal(p, original[n]) for n, p in frozen.items())  # bit-identical
    assert any(not torch.equal(p, trained[n]) for n, p in module.named_parameters())  # the new layer moved
    assert all(torch.equal(hooked.state_dict()[k], v) for k, v in original.items())  # the original untouched
    assert float(kwta.kwinners(new, cfg).learning_iterations) == FIT.steps * FIT.batch_size * CFG.model.n_ctx


def test_lm_loss_from_a_cached_residual_equals_the_full_forward(hooked, tokens):
    cfg = kwta.SparseConfig(k=6)
    new = kwta.surgery(hooked, cfg)
    start = kwta.start_layer(new, cfg)
    full = kwta.lm_loss(new, tokens)
    assert kwta.lm_loss(new, tokens, start, kwta.resid_at(hooked, tokens, start)) == pytest.approx(
        full, rel=0, abs=fp32_tol(full))


def test_get_or_fit_saves_and_reloads_the_layer(hooked, tokens):
    cfg = kwta.SparseConfig(surgery="residual", k=3)
    key = kwta.fit_key("test", cfg, FIT, {"n": len(tokens)})
    a, h1 = kwta.get_or_fit(hooked, cfg, FIT, tokens, key, progress=False)
    b, h2 = kwta.get_or_fit(hooked, cfg, FIT, tokens, key, progress=False)
    assert torch.equal(a(tokens), b(tokens)) and h1.loss.tolist() == h2.loss.tolist()
    assert torch.equal(kwta.kwinners(a, cfg).duty_cycle, kwta.kwinners(b, cfg).duty_cycle)


def test_surgery_on_a_local_pretrained_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=16, n_embd=16, n_layer=2, n_head=2)).save_pretrained(
        tmp_path)
    gpt = pretrained.load_pretrained(tmp_path)
    toks = torch.randint(0, 50257, (2, 8))
    for cfg in (kwta.SparseConfig(k=4, init="copy"), kwta.SparseConfig(surgery="residual", k=4)):
        _, cache = kwta.surgery(gpt, cfg).run_with_cache(toks)
        assert ((cache[kwta.units_hook(gpt, cfg)] != 0).sum(-1) == 4).all()


# ---------------------------------------------------------------------------------------------- measures


