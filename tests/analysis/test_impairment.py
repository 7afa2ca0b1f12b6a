"""Impairment hooks, clusters and the batched sweep against the per-condition loop."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fp32_tol, planted_stats, planted_topic_stats, random_prompts
from lib.analysis import impairment
from lib.analysis.units import LOCATIONS, match_units, topic_stats, unit_activations
from lib.core import config, hooks, model, train

CFG = config.resolve("smoke", attention_only=False, n_layers=3, init_range=0.3)


@pytest.fixture(scope="session")
def hooked():
    return model.to_hooked(train.init_model(CFG).eval())


@pytest.fixture(scope="session")
def pr():
    """12 random prompts of 3..14 tokens before keywords of 1-3 random tokens (so the scored tail varies)."""
    return random_prompts(12, 3, CFG.model.d_vocab)


@pytest.fixture(scope="session")
def clusters(hooked, pr):
    """Selectivity clusters at every location: all layers, the first, the middle and the last layer."""
    windows = {t: pr.tokens[[i for i, x in enumerate(pr.topics) if x == t]] for t in "abc"}
    stats = topic_stats(hooked, windows, LOCATIONS, progress=False)
    out = {}
    for loc in LOCATIONS:
        for name, layers in (("all", None), ("first", [0]), ("middle", [1]), ("last", [2])):
            out[f"{loc} {name}"] = impairment.selective_cluster(stats[loc], "a", 0.1, layers)
    return out


def _no_hooks_left(m) -> bool:
    return all(not hp.fwd_hooks for hp in m.hook_dict.values())


@pytest.mark.parametrize("kind", ["noise", "negative_noise", "scale", "zero", "mean"])
@pytest.mark.parametrize("loc", LOCATIONS)
def test_intensity_zero_is_bit_identical(hooked, pr, clusters, kind, loc):
    clean = hooked(pr.tokens)
    g = torch.Generator().manual_seed(0)
    out = hooked.run_with_hooks(pr.tokens, fwd_hooks=impairment.cluster_hooks(clusters[f"{loc} all"], kind, 0.0, g))
    assert torch.equal(out, clean)
    assert _no_hooks_left(hooked)


def test_hooks_touch_only_the_cluster_units_and_negative_noise_is_nonpositive():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, 20)
    units = torch.tensor([2, 5, 11])
    others = torch.ones(20, dtype=torch.bool)
    others[units] = False
    for kind in impairment.KINDS:
        fn = impairment.impairment(kind, units, 0.7, generator=g, sd=torch.full((3,), 2.0), mean=torch.ones(3))
        y = fn(x.clone())
        assert torch.equal(y[..., others], x[..., others])
        assert not torch.equal(y[..., units], x[..., units])
    shift = impairment.impairment("negative_noise", units, 3.0, generator=g)(x.clone()) - x
    assert (shift <= 0).all() and (shift[..., units] < 0).any()
    assert torch.equal(shift[..., units].amax(-1), torch.zeros(4, 7))  # shifted so that the maximum is 0


def test_per_row_intensity_and_same_seed_same_result():
    x = torch.randn(3, 5, 8)
    units = torch.tensor([1, 4])
    a = torch.tensor([0.0, 1.0, 2.0])
    y = impairment.impairment("scale", units, a)(x.clone())
    assert torch.equal(y[0], x[0]) and torch.allclose(y[2, :, units], -x[2, :, units])
    draw = [impairment.impairment("noise", units, 1.0, generator=torch.Generator().manual_seed(s))(x.clone())
            for s in (7, 7, 8)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])


@pytest.mark.parametrize("fast", [True, False])
def test_batched_sweep_equals_per_condition_loop(hooked, pr, clusters, fast):
    conds = impairment.dose_grid(clusters, (0.0, 0.5, 3.0), (0.0, 0.6), seeds=(0, 1))
    loop = impairment.sweep_loop(hooked, pr, clusters, conds, progress=False)
    batched = impairment.sweep(hooked, pr, clusters, conds, max_tokens=200, chunk_tokens=60, fast=fast, progress=False)
    assert len(batched) == len(conds) * len(pr)
    keys = ["cluster", "kind", "intensity", "seed", "prompt", "topic"]
    pd.testing.assert_frame_equal(batched[keys], loop[keys])
    assert np.allclose(batched.loss, loop.loss, rtol=0, atol=fp32_tol(loop.loss.to_numpy()))  # other batch shapes
    assert (batched.top1 == loop.top1).mean() > 0.99 and (batched.top5 == loop.top5).mean() > 0.99
    assert _no_hooks_left(hooked)


def test_grid_deduplicates():
    conds = impairment.dose_grid(["c"], (0.0, 1.0), (0.0, 0.5), seeds=(0, 1, 2))
    by = pd.DataFrame([c.__dict__ for c in conds]).groupby("kind").size().to_dict()
    assert by == {"noise": 4, "negative_noise": 4, "scale": 2, "zero": 1, "mean": 1}


def test_match_units_recovers_a_permutation():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(500, 30, generator=g)
    perm = torch.randperm(30, generator=g)
    found = match_units(acts, acts[:, perm])
    assert torch.equal(perm[found], torch.arange(30))


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="kind='blur'"):
        impairment.impairment("blur", torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="generator"):
        impairment.impairment("noise", torch.tensor([0]), 1.0)
    with pytest.raises(ValueError, match="location"):
        unit_activations(None, torch.zeros(1, 1, dtype=torch.long), "resid")
    assert hooks.name("mlp_post", 0) in {n for n, _ in impairment.cluster_hooks(_clu(), "scale", 0.5)}


def _clu() -> impairment.Cluster:
    return impairment.selective_cluster(planted_topic_stats(), "a", 0.1)


@pytest.mark.parametrize("n_topics", [2, 14])
def test_kmeans_recovers_planted_units_for_two_topics_as_for_fourteen(n_topics):
    stats = planted_stats(n_topics)
    frac = 13 / 512
    assert all(set(impairment.selective_cluster(stats, "t0", frac).units(la).tolist()) == set(range(13))
               for la in (0, 1))  # the planted signal is clear enough for selectivity
    for seed in range(3):
        c = impairment.kmeans_cluster(stats, "t0", frac, generator=torch.Generator().manual_seed(seed))
        for layer in (0, 1):
            assert set(c.units(layer).tolist()) == set(range(13)), (n_topics, seed, layer)
    # the old method (k-means on per-topic means z-scored across topics) has nothing to cluster on with two topics:
    # every unit's profile is +-1/sqrt(2), so its group "highest on t0" is every unit a little higher there
    prof = stats.mean[:, 0].T
    z = (prof - prof.mean(1, keepdim=True)) / prof.std(1, keepdim=True)
    if n_topics == 2:
        assert torch.allclose(z.abs(), torch.full_like(z, 2 ** -0.5), atol=1e-5)
        labels, centres = impairment.kmeans(z, 3, torch.Generator().manual_seed(0))
        group = (labels == centres[:, 0].argmax()).nonzero().flatten()
        assert len(group) > 100  # hundreds of tied candidates for 13 places: the choice among them is arbitrary


def test_signed_selectivity_keeps_sizes_with_two_topics():
    d = impairment.signed_selectivity(planted_stats(2))
    assert d.shape == (2, 2, 512)
    assert d[0, :, :13].mean() > 1.5 and d[0, :, 13:26].mean() < -1.5  # t1's units are negative on t0
    assert torch.allclose(d[0], -d[1], atol=0.05 * float(d.abs().max()))  # two topics: one axis, sizes kept


def _dose(target: list[float], other: list[float], intensities=(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), n=20, sd=0.05):
    rng = np.random.default_rng(0)
    rows = []
    for topic, curve in (("a", target), ("b", other), ("c", other)):
        for a, d in zip(intensities, curve):
            rows += [{"topic": topic, "prompt": f"{topic}{i}", "intensity": a, "d_loss": d + rng.normal(0, sd)}
                     for i in range(n)]
    return pd.DataFrame(rows)


def test_dynamic_range_keeps_the_intensities_that_respond_without_saturating():
    df = _dose([0, 0.02, 0.5, 1.0, 1.9, 2.0, 2.0], [0, 0.02, 0.2, 0.4, 1.8, 2.0, 2.0], sd=0.0)
    # mean damage 0.02, 0.3, 0.6, 1.83, 2.0, 2.0: 0.25 does not respond (< 10% of 2.0); at 4 and 8 the curve has
    # flattened (1.83 >= 90% of 2.0): saturated
    assert impairment.dynamic_range(df) == (0.5, 1.0, 2.0)
    rising = _dose([0, 0.01, 0.02, 0.1, 0.4, 1.0, 2.2], [0, 0.01, 0.02, 0.1, 0.4, 1.0, 2.0], sd=0.0)
    assert impairment.dynamic_range(rising) == (2.0, 4.0, 8.0)  # still rising at the top of the grid: kept
    flat = _dose([0] * 7, [0] * 7, sd=0.0)
    assert impairment.dynamic_range(flat) == (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # nothing responds: all, not none


def test_specificity_gap_is_a_difference_read_where_damage_is_not_saturated():
    # the target suffers 0.3 nats more than the others while damage grows; at saturation every keyword is destroyed
    df = _dose([0, 0.1, 0.5, 0.9, 3.0, 3.0, 3.0], [0, 0.05, 0.2, 0.6, 3.0, 3.0, 3.0])
    gap, (lo, hi) = impairment.specificity_gap(df, "a", ["b", "c"], intensities=(0.5, 1.0), n_boot=300)
    assert gap == pytest.approx(0.3, abs=0.03) and lo < gap < hi and lo > 0.2
    diluted, _ = impairment.specificity_gap(df, "a", ["b", "c"], n_boot=50)  # every intensity: saturated ones add 0
    assert diluted < gap / 2
    # near-zero or negative off-target damage: the ratio with a 1e-3 floor gave ~50; the difference stays in nats
    tiny = _dose([0, 0.05] * 3 + [0.05], [0, 0.0] * 3 + [0.0], sd=0.001)
    g2, _ = impairment.specificity_gap(tiny, "a", ["b", "c"], n_boot=50)
    assert g2 == pytest.approx(0.05 * 4 / 6, abs=0.005)
    null = impairment.specificity_gaps(pd.concat([df.assign(cluster="x"), tiny.assign(cluster="y")]), "a", ["b", "c"])
    assert null.index.tolist() == ["x", "y"] and null["y"] == pytest.approx(g2)
    with pytest.raises(ValueError, match="topics"):
        impairment.specificity_gap(df, "a", ["z"])
