"""Resuming at the last block's MLP (lib.analysis.fastpath): hooks in the last block's MLP half or the final norm
give lib.analysis.prompts.evaluate's scores from the clean resid_mid at the keyword positions; hooks upstream of it
are refused."""

import pytest
import torch

from helpers import fp32_tol, nine_random_prompts, ten_neuron_model
from lib.analysis import fastpath, kwta
from lib.analysis.prompts import evaluate

hooked = pytest.fixture(ten_neuron_model, scope="module", name="hooked")
pr = pytest.fixture(nine_random_prompts, scope="module", name="pr")


def _units(idx: list[int], a: float = 0.0):
    def fn(x, hook=None):
        x = x.clone()
        x[..., idx] = x[..., idx] * a
        return x
    return fn


LAST_MLP_HOOKS = {
    "MLP units": [("blocks.1.mlp.hook_post", _units([0, 3]))],
    "MLP pre-activations": [("blocks.1.mlp.hook_pre", _units([1], 2.0))],
    "MLP output halved": [("blocks.1.hook_mlp_out", lambda x, hook=None: 0.5 * x)],
    "ln2 output": [("blocks.1.ln2.hook_normalized", _units([0, 1, 2], -1.0))],
    "resid_mid and resid_post": [("blocks.1.hook_resid_mid", _units([4], 0.0)),
                                 ("blocks.1.hook_resid_post", _units([5], 3.0))],
    "final norm": [("ln_final.hook_normalized", _units([2, 6]))],
}


@pytest.mark.parametrize("name", LAST_MLP_HOOKS)
def test_resumed_evaluation_is_the_whole_forward(hooked, pr, name):
    """Prompts of 1-3 keyword tokens cached in batches of 2 (narrower than the set): every score of the whole
    hooked forward, and the hooks do change the loss (else agreement would show nothing)."""
    assert len(set(pr.word_lengths.tolist())) > 1
    hooks = LAST_MLP_HOOKS[name]
    assert fastpath.resumes_at_last_mlp(hooked, [h for h, _ in hooks])
    mid = fastpath.last_mlp_inputs(hooked, pr, batch_size=2)
    assert mid.shape == (len(pr), pr.width, hooked.cfg.d_model)
    full, clean = evaluate(hooked, pr, hooks), evaluate(hooked, pr)
    for got, want in ((fastpath.evaluate_from_last_mlp(hooked, pr, mid, hooks, batch_size=4), full),
                      (fastpath.evaluate_from_last_mlp(hooked, pr, mid), clean)):
        assert list(got.topic) == list(want.topic) and list(got.prompt) == list(want.prompt)
        assert torch.allclose(torch.tensor(got.loss.values), torch.tensor(want.loss.values), rtol=0,
                              atol=fp32_tol(want.loss.values))
        assert (got.top1.values == want.top1.values).all() and (got.top5.values == want.top5.values).all()
    assert (full.loss - clean.loss).abs().max() > 1e-3
    assert all(not hp.fwd_hooks for hp in hooked.hook_dict.values())  # the hooks are removed afterwards


def test_a_residual_kwta_layer_in_the_final_norm_resumes(hooked, pr):
    """lib.analysis.kwta's residual layer sits in ln_final: ablating some of its units scores the same resumed as
    in the whole forward (given output weights, so that the layer does something)."""
    sparse = kwta.surgery(hooked, kwta.SparseConfig(surgery="residual", k=3, d_sparse=8))
    with torch.no_grad():
        for p in kwta.sparse_module(sparse, kwta.SparseConfig(surgery="residual")).parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    hooks = [("ln_final.sparse.mlp.hook_post", _units([0, 1, 2, 3]))]
    assert fastpath.resumes_at_last_mlp(sparse, [h for h, _ in hooks])
    got = fastpath.evaluate_from_last_mlp(sparse, pr, fastpath.last_mlp_inputs(sparse, pr), hooks)
    want = evaluate(sparse, pr, hooks)
    assert torch.allclose(torch.tensor(got.loss.values), torch.tensor(want.loss.values), rtol=0,
                          atol=fp32_tol(want.loss.values))
    assert (want.loss - evaluate(sparse, pr).loss).abs().max() > 1e-3


@pytest.mark.parametrize("names", [["blocks.1.attn.hook_z"], ["blocks.1.hook_resid_pre"], ["blocks.1.ln1.hook_scale"],
                                   ["blocks.0.mlp.hook_post"], ["blocks.1.mlp.hook_post", "blocks.0.hook_mlp_out"],
                                   ["unembed.hook_x"], []])
def test_hooks_upstream_of_the_last_mlp_are_refused(hooked, pr, names):
    """An attention hook of the last block or any hook of an earlier one changes what other positions see: the
    resumed pass would silently ignore that, so it is refused."""
    assert not fastpath.resumes_at_last_mlp(hooked, names)
    if names:
        mid = fastpath.last_mlp_inputs(hooked, pr)
        with pytest.raises(ValueError, match="cannot be resumed"):
            fastpath.evaluate_from_last_mlp(hooked, pr, mid, [(h, lambda x, hook=None: x) for h in names])


def test_a_cache_of_other_prompts_is_refused(hooked, pr):
    mid = fastpath.last_mlp_inputs(hooked, pr.select(torch.arange(4)))
    with pytest.raises(ValueError, match=r"resid_mid of shape \(4, "):
        fastpath.evaluate_from_last_mlp(hooked, pr, mid)
