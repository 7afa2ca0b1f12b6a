"""Attribution machinery: vmap per-example gradients equal the loop (and the one-backward attention path),
TracIn recovers planted influence on a linear toy, projection preserves inner products, checkpoint weights and
visit replay, enrichment on hand-made cases, checkpoint schedules and sampling."""

import numpy as np
import pytest
import torch

from helpers import LAYER1_ATTENTION, f64_tol, float64, fp32_tol, tiny_attention_hooked
from lib.analysis import attribution
from lib.core.config import resolve
from lib.core.train import lr_at

NAMES = LAYER1_ATTENTION


@pytest.fixture(scope="module")
def hooked():
    return tiny_attention_hooked()



def test_vmap_per_example_grads_equal_the_loop(hooked):
    """The same gradients two ways, compared in float64 (vmap and the loop sum in different orders)."""
    tokens = torch.randint(0, 30, (7, 12))
    names = NAMES + ["blocks.0.attn.W_Q", "unembed.W_U"]
    h64 = float64(hooked)
    fast = attribution.per_example_grads(h64, names, tokens, chunk=3)
    slow = attribution.per_example_grads_loop(h64, names, tokens)
    assert fast.shape == (7, sum(p.numel() for p in attribution.param_subset(hooked, names).values()))
    assert fast.dtype == torch.float64 and torch.allclose(fast, slow, rtol=0, atol=f64_tol(slow))
    assert torch.allclose(attribution.per_example_grads(hooked, names, tokens, chunk=3), slow.float(), rtol=0,
                          atol=fp32_tol(slow))  # and the float32 path the reports use
    assert not torch.allclose(fast[0], fast[1])  # per example, not the batch mean
    assert all(len(hp.fwd_hooks) == 0 for hp in hooked.hook_dict.values())
    with pytest.raises(ValueError, match="not allowed"):
        attribution.per_example_grads(hooked, ["blocks.9.attn.W_Q"], tokens)


def test_projection_preserves_inner_products_and_is_applied_per_chunk(hooked):
    tokens = torch.randint(0, 30, (6, 12))
    h64 = float64(hooked)  # projection per chunk vs after: the same sums in another order
    g = attribution.per_example_grads(h64, NAMES, tokens)
    P = attribution.random_projection(g.shape[1], 4000, seed=1).double()
    gp = attribution.per_example_grads(h64, NAMES, tokens, chunk=4, projection=P)
    assert torch.allclose(gp, g @ P, rtol=0, atol=f64_tol(g @ P))
    exact, approx = g @ g.T, gp @ gp.T
    assert ((approx - exact).abs() / exact.diagonal().max()).max() < 0.1


def _linear_toy(seed=0):
    """Linear regression in 6 dims: 40 examples live in dims 0-4, 3 planted ones in dim 5 (the test direction)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(43, 6)
    x[:40, :5] = torch.randn(40, 5, generator=g)
    x[40:, 5] = torch.tensor([1.0, 1.5, 2.0])
    w_true = torch.tensor([[1.0, -2.0, 0.5, 1.0, 0.0, 3.0]])
    y = (x @ w_true.T)[:, 0]
    return x, y


def _sq_loss(out, x, y):
    return 0.5 * (out[0, 0] - y) ** 2


def _sgd_checkpoints(x, y, lr, steps, every):
    model = torch.nn.Linear(6, 1, dtype=x.dtype)
    torch.nn.init.zeros_(model.weight), torch.nn.init.zeros_(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    ckpts = []
    for step in range(steps):
        if step % every == 0:
            snap = torch.nn.Linear(6, 1, dtype=x.dtype)
            snap.load_state_dict(model.state_dict())
            ckpts.append((step, snap))
        opt.zero_grad()
        (0.5 * (model(x)[:, 0] - y) ** 2).mean().backward()
        opt.step()
    return ckpts


def test_tracin_recovers_planted_influential_examples_on_linear_regression():
    x, y = _linear_toy()
    x_test, y_test = torch.tensor([[0, 0, 0, 0, 0, 1.0]]), torch.tensor([3.0])
    ckpts = _sgd_checkpoints(x, y, lr=0.5, steps=60, every=10)
    test_loss = lambda m: 0.5 * ((m(x_test)[:, 0] - y_test) ** 2).sum()  # noqa: E731
    w = torch.full((len(ckpts),), 0.5 * 10)
    res = attribution.tracin(ckpts, ["weight", "bias"], [x, y], {"test": test_loss}, w, loss=_sq_loss, chunk=8, progress=False)
    scores = res.scores["test"]
    planted = torch.arange(43) >= 40
    assert set(torch.topk(scores, 3).indices.tolist()) == {40, 41, 42}
    assert attribution.precision_at_k(scores, planted, 3) == 1.0 and attribution.enrichment(scores, planted, 3 / 43) == pytest.approx(43 / 3)
    assert torch.allclose(res.per_checkpoint["test"].sum(0), scores)
    # flipping a planted label makes that example an opponent (it pushes the test prediction the wrong way)
    y_flip = y.clone()
    y_flip[41] = -y_flip[41]
    flip = attribution.tracin(_sgd_checkpoints(x, y_flip, 0.5, 60, 10), ["weight", "bias"], [x, y_flip], {"test": test_loss},
                    w, loss=_sq_loss, progress=False).scores["test"]
    assert flip[41] < 0 < flip[40]


def test_tracin_is_the_first_order_change_of_one_sgd_step():
    """One checkpoint, weight lr: score(z) = -(f(theta - lr grad L(z)) - f(theta)) to first order."""
    # float64: the finite step changes f by ≈ lr |g|² ≈ 1e-4, which float32 would resolve to only ≈ 1e-3 relative
    # (u |f| / 1e-4); the rel=1e-2 tolerance is then for the second-order term, ≈ lr ‖H‖ ≈ 1e-3 relative
    x, y = (t.double() for t in _linear_toy(seed=1))
    model = _sgd_checkpoints(x, y, lr=0.3, steps=3, every=1)[-1][1]
    x_test, y_test = torch.randn(1, 6, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    f = lambda m: 0.5 * ((m(x_test)[:, 0] - y_test) ** 2).sum()  # noqa: E731
    lr = 1e-4
    score = attribution.tracin([(0, model)], ["weight", "bias"], [x, y], {"f": f}, torch.tensor([lr]), loss=_sq_loss,
                     progress=False).scores["f"]
    for i in (0, 17, 41):
        step = torch.nn.Linear(6, 1, dtype=torch.float64)
        step.load_state_dict(model.state_dict())
        _sq_loss(step(x[i][None]), x[i], y[i]).backward()
        with torch.no_grad():
            for p in step.parameters():
                p -= lr * p.grad
        actual = -(f(step) - f(model)).item()
        assert score[i].item() == pytest.approx(actual, rel=1e-2, abs=1e-9)


def test_tracin_weights_are_lr_sums_over_each_checkpoints_interval():
    tc = resolve("smoke", max_steps=100, warmup_steps=10, lr=1e-3).train
    lr = lambda s: lr_at(s, tc)  # noqa: E731
    w = attribution.tracin_weights([0, 20, 40, 60, 80, 100], lr, end=100)
    assert w.sum().item() == pytest.approx(sum(lr(s) for s in range(100)))
    assert w[2].item() == pytest.approx(sum(lr(s) for s in range(30, 50)))
    assert attribution.tracin_weights([7], lr).item() == pytest.approx(lr(7))
    with pytest.raises(ValueError, match="increasing"):
        attribution.tracin_weights([5, 5], lr)


def test_enrichment_precision_and_shuffled_null():
    labels = np.array([True] * 10 + [False] * 90)
    perfect = np.arange(100, 0, -1)  # the labelled ones first
    assert attribution.precision_at_k(perfect, labels, 10) == 1.0 and attribution.enrichment(perfect, labels, 0.1) == pytest.approx(10.0)
    assert attribution.enrichment(-perfect, labels, 0.1) == 0.0
    null = attribution.shuffled_enrichment(labels, 0.1, n_perm=400)
    assert abs(null.mean() - 1.0) < 0.15
    low, high = attribution.bootstrap_enrichment(perfect, labels, 0.1, n_boot=200)
    assert low <= 10.0 <= high + 1e-9
    with pytest.raises(ValueError, match="base rate"):
        attribution.enrichment(perfect, np.zeros(100, bool))


def test_enrichment_curve_has_exact_p_values_and_intervals_that_never_collapse():
    labels = np.array([True] * 100 + [False] * 900)  # base rate 10%
    worst = np.r_[np.zeros(100), np.arange(900, 0, -1.0)]  # no labelled item near the top
    curve = attribution.enrichment_curve(worst, labels, [0.01, 0.1])
    top1 = curve.iloc[0]
    assert (top1.k, top1.hits, top1.enrichment) == (10, 0, 0.0)
    assert top1.ci_low == 0.0 and top1.ci_high > 2.0  # 0 of 10 is compatible with a 10% rate: no [0, 0] interval
    assert top1.p == 1.0
    good = np.r_[np.arange(2000, 1900, -1.0), np.arange(900, 0, -1.0)]
    c = attribution.enrichment_curve(good, labels, [0.1]).iloc[0]
    assert c.hits == 100 and c.enrichment == pytest.approx(10.0) and c.p < 1e-50 and c.ci_low > 9.0


def test_checkpoint_schedule():
    s = attribution.checkpoint_schedule(3000, 20, 40)
    assert s[0] == 0 and s[-1] == 3000 and s == sorted(set(s)) and len(s) >= 50
    assert 1 in s and 75 in s


def test_stratified_sample_and_pick_checkpoints(tmp_path):
    labels = torch.arange(100) % 4 == 0  # 25 True
    idx = attribution.stratified_sample(labels, 40, 0.1, seed=0)
    assert len(set(idx.tolist())) == 40 and labels[idx].sum() == 4
    assert not torch.equal(labels[idx][:4], torch.ones(4, dtype=torch.bool))  # shuffled, not True first
    with pytest.raises(ValueError, match="have 25"):
        attribution.stratified_sample(labels, 40, 0.9)
    paths = [tmp_path / f"step_{s:07d}" for s in (0, 1, 2, 5, 10, 50, 100, 150, 200)]
    assert [attribution.checkpoint_step(p) for p in attribution.pick_checkpoints(paths, 5)] == [0, 50, 100, 150, 200]


def test_visits_replays_the_training_batches():
    from lib.core import config, train

    tc = config.resolve("smoke").train
    counts = attribution.visits(50, tc, 0, 7)
    expected = torch.zeros(50, dtype=torch.long)
    for step in range(7):
        for i in train.batch_indices(step, 50, tc).tolist():
            expected[i] += 1
    assert torch.equal(counts, expected) and int(counts.sum()) == 7 * tc.batch_size
    assert (attribution.visits(10_000, tc, 0, 3) == 0).float().mean() > 0.99  # few draws, most windows unseen


def test_visit_weights_sum_the_lr_over_each_sequences_visits():
    from lib.core import config, train

    tc = config.resolve("smoke", max_steps=40, warmup_steps=5, lr=1e-3).train
    n, steps = 30, [0, 10, 25]
    full = attribution.visit_weights(torch.arange(n), n, tc, steps, end=40)
    lr = lambda s: train.lr_at(s, tc)  # noqa: E731
    assert torch.allclose(full.sum(1), tc.batch_size * attribution.tracin_weights(steps, lr, end=40), rtol=1e-12)
    sample = torch.tensor([7, 3, 22, 11])
    w = attribution.visit_weights(sample, n, tc, steps, end=40)
    edges = [0, 5, 18, 40]  # midpoints 5 and 17.5 -> 18
    for k in range(3):
        for j, z in enumerate(sample.tolist()):
            ref = sum(lr(t) * int((train.batch_indices(t, n, tc) == z).sum()) for t in range(edges[k], edges[k + 1]))
            assert w[k, j].item() == pytest.approx(ref, rel=1e-12, abs=0)
    assert torch.equal(w, full[:, sample])
    phases = [attribution.visit_weights(sample, n, tc, steps, end=40, window=win) for win in ((0, 12), (12, 30.5), (30.5, 40))]
    assert torch.allclose(sum(phases), w, rtol=1e-12) and (phases[0][2] == 0).all()  # step 25's interval starts at 18
    never = attribution.visit_weights(torch.arange(5000), 5000, tc, [0], end=3)
    assert (never == 0).float().mean() > 0.9  # 3 batches of a few windows: most sequences were never trained on


def test_visit_weighted_tracin_equals_the_per_visit_sum():
    """Checkpoints at every step: visit-weighted TracIn is Pruthi et al.'s per-visit sum, term by term; weighting the
    checkpoints alone (no visits) would credit sequences that were never in a batch."""
    from lib.core import config, train

    x, y = (t.double() for t in _linear_toy(seed=2))
    n = len(x)
    tc = config.resolve("smoke", max_steps=6, warmup_steps=2, lr=0.05, batch_size=8).train
    ckpts = _sgd_checkpoints(x, y, lr=0.2, steps=6, every=1)  # any models will do: the test is the weighting
    x_test, y_test = torch.randn(1, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    f = lambda m: 0.5 * ((m(x_test)[:, 0] - y_test) ** 2).sum()  # noqa: E731
    steps = [s for s, _ in ckpts]
    w = attribution.visit_weights(torch.arange(n), n, tc, steps, end=6)
    res = attribution.tracin(ckpts, ["weight", "bias"], [x, y], {"f": f}, w, loss=_sq_loss, chunk=5, progress=False)
    ref = torch.zeros(n, dtype=torch.float64)
    for t, model in ckpts:
        gf = attribution.objective_grad(model, f, ["weight", "bias"])
        for z in train.batch_indices(t, n, tc).tolist():  # one term per visit, repeats counted
            gz = attribution.per_example_grads_loop(model, ["weight", "bias"], x[z : z + 1], y[z : z + 1], loss=_sq_loss)[0]
            ref[z] += train.lr_at(t, tc) * float(gz @ gf)
    assert torch.allclose(res.scores["f"], ref, rtol=0, atol=f64_tol(ref))
    unvisited = w.sum(0) == 0
    assert unvisited.any() and (res.scores["f"][unvisited] == 0).all()
    uniform = attribution.tracin(ckpts, ["weight", "bias"], [x, y], {"f": f}, attribution.tracin_weights(steps, lambda s: train.lr_at(s, tc), end=6), loss=_sq_loss, progress=False)
    assert (uniform.scores["f"][unvisited] != 0).any()  # the wrong version
    # the stored terms: weighted() reproduces the scores, cosines are dots over the norms, norms are gradient norms
    assert torch.allclose(res.weighted(w), res.scores["f"], rtol=1e-12)
    g_all = attribution.per_example_grads_loop(ckpts[2][1], ["weight", "bias"], x, y, loss=_sq_loss)
    assert torch.allclose(res.norms[2], g_all.norm(dim=1), rtol=1e-10)
    gf = attribution.objective_grad(ckpts[2][1], f, ["weight", "bias"])
    assert torch.allclose(res.cosines["f"][2], (g_all @ gf) / (g_all.norm(dim=1) * gf.norm()), rtol=1e-10)
    assert (res.cosines["f"].abs() <= 1 + 1e-12).all()
    with pytest.raises(ValueError, match="not allowed"):
        attribution.tracin(ckpts, ["weight", "bias"], [x, y], {"f": f}, w[:, :5], loss=_sq_loss, progress=False)


def test_attention_per_example_grads_by_one_backward_equal_the_loop(hooked):
    """Attention weights of both layers, several chunks, float64 against the per-example loop; the batched path
    needs the attention's input after LayerNorm's gain and bias, which a wrong version (the normalised input alone)
    misses when the gain is not 1."""
    tokens = torch.randint(0, 30, (7, 12), generator=torch.Generator().manual_seed(5))
    h64 = float64(hooked)
    with torch.no_grad():
        for b in h64.blocks:
            b.ln1.w.mul_(1.7).add_(0.1)
            b.ln1.b.add_(0.2)
    names = NAMES + ["blocks.0.attn.W_V", "blocks.0.attn.W_O"]
    assert attribution.attention_fast_path_ok(h64, names)
    fast = attribution.per_example_grads_attention(h64, names, tokens, chunk=3)
    slow = attribution.per_example_grads_loop(h64, names, tokens)
    assert not fast.requires_grad and fast.grad_fn is None  # no graph kept alive through LayerNorm's parameters
    one = attribution.per_example_grads_attention(h64, NAMES, tokens, chunk=4)  # layer 1 only: starts at layer 1
    ref1 = attribution.per_example_grads_loop(h64, NAMES, tokens)
    assert torch.allclose(one, ref1, rtol=0, atol=f64_tol(ref1))
    assert fast.dtype == torch.float64 and torch.allclose(fast, slow, rtol=0, atol=f64_tol(slow))
    for method in ("auto", "vmap"):
        g = attribution.per_example_grads(h64, names, tokens, chunk=4, method=method)
        assert torch.allclose(g, slow, rtol=0, atol=f64_tol(slow))
    assert all(len(hp.fwd_hooks) == 0 for hp in h64.hook_dict.values())
    last = lambda out, t: torch.nn.functional.cross_entropy(out[0, -2:-1], t[-1:])  # noqa: E731 - any per-example loss
    g = attribution.per_example_grads_attention(h64, names, tokens, loss=last, chunk=4)
    ref = attribution.per_example_grads_loop(h64, names, tokens, loss=last)
    assert torch.allclose(g, ref, rtol=0, atol=f64_tol(ref)) and not torch.allclose(g, slow)
    assert not attribution.attention_fast_path_ok(h64, names + ["unembed.W_U"])
    with pytest.raises(ValueError, match="not allowed"):
        attribution.per_example_grads_attention(h64, ["unembed.W_U"], tokens)

