"""lib.analysis.stats on known answers: Spearman with ties and constant input, the bootstrap engine's draws, CIs."""

import math

import numpy as np
import pytest

from lib.analysis import stats


def test_spearman_uses_average_ranks_for_ties():
    # ranks of y with the tie averaged: [1, 2.5, 2.5, 4, 5]; Pearson with [1..5] = 9.5 / sqrt(10 * 9.5)
    assert stats.spearman([1, 2, 3, 4, 5], [1, 2, 2, 4, 5]) == pytest.approx(9.5 / math.sqrt(95))
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)  # ranks, not values
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert stats.ranks([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_of_a_constant_input_is_nan():
    assert math.isnan(stats.spearman([1, 2, 3], [5, 5, 5])) and math.isnan(stats.spearman([2, 2], [1, 3]))
    assert all(math.isnan(v) for v in stats.bootstrap_spearman([1, 2, 3], [5, 5, 5], n_boot=10))


def test_bootstrap_draws_rows_with_one_index_draw_per_replicate():
    x, y = np.arange(10.0), 100 + np.arange(10.0)
    boots = stats.bootstrap(lambda a, b: (b - a).std(), x, y, n_boot=50, seed=3)
    assert np.allclose(boots, 0.0)  # paired: a row of x always travels with its row of y
    rng = np.random.default_rng(3)
    manual = [x[rng.integers(0, 10, 10)].mean() for _ in range(50)]
    assert np.array_equal(stats.bootstrap(np.mean, x, n_boot=50, seed=3), np.asarray(manual))
    unpaired = stats.bootstrap(lambda a, b: (b - a).std(), x, y, n_boot=50, seed=3, paired=False)
    assert (unpaired > 0).mean() > 0.9  # independent draws break the pairing


def test_bootstrap_drops_non_finite_replicates_and_fails_when_none_is_left():
    labels = np.array([0.0] * 19 + [1.0])
    boots = stats.bootstrap(lambda v: 1.0 / v.sum() if v.sum() else float("nan"), labels, n_boot=200, seed=0)
    assert 0 < len(boots) < 200 and np.isfinite(boots).all()
    with pytest.raises(ValueError, match="stat"):
        stats.bootstrap(lambda v: float("nan"), labels, n_boot=5)
    with pytest.raises(ValueError, match="n_boot=0"):
        stats.bootstrap(np.mean, labels, n_boot=0)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.bootstrap(np.mean, labels, labels[:5])


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(2.0, 1.0, 50), rng.normal(2.0, 1.0, 5000)
    lo_s, hi_s = stats.bootstrap_ci(small, n_boot=400)
    lo_l, hi_l = stats.bootstrap_ci(large, n_boot=400)
    assert lo_s < 2.0 < hi_s and lo_l < 2.0 < hi_l
    assert (hi_l - lo_l) < 0.25 * (hi_s - lo_s)  # width ~ 1/sqrt(n): 10x the data, ~1/10 the width
    assert stats.bootstrap_ci(small, n_boot=400) == (lo_s, hi_s)  # deterministic for the seed
    with pytest.raises(ValueError, match="samples"):
        stats.bootstrap_ci([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match="alpha"):
        stats.bootstrap_ci(small, alpha=1.5)


def test_median_difference_ci_detects_a_shift_and_covers_none():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)
    d, (lo, hi) = stats.median_diff_ci(np.append(a, np.nan), b, n_boot=300)
    assert lo < d < hi and lo > 0.5
    _, (lo0, hi0) = stats.median_diff_ci(b, rng.normal(0.0, 1.0, 400), n_boot=300)
    assert lo0 < 0 < hi0


def test_binomial_ci_matches_closed_forms_and_never_collapses():
    # closed forms at the edges: k = n gives (alpha/2)^(1/n); k = 0 gives 1 - (alpha/2)^(1/n)
    lo, hi = stats.binomial_ci(16, 16)
    assert hi == 1.0 and abs(lo - 0.025 ** (1 / 16)) < 1e-9 and lo < 0.8
    lo, hi = stats.binomial_ci(0, 10)
    assert lo == 0.0 and abs(hi - (1 - 0.025 ** (1 / 10))) < 1e-9
    # published Clopper-Pearson values (e.g. Brown, Cai & DasGupta 2001 tables): 5/10 -> 0.1871-0.8129, 1/3
    assert np.allclose(stats.binomial_ci(5, 10), (0.18709, 0.81291), atol=1e-5)
    assert np.allclose(stats.binomial_ci(1, 3), (0.00840, 0.90570), atol=1e-5)
    # coverage by simulation: the exact interval covers p at least 1 - alpha of the time (it is conservative)
    rng = np.random.default_rng(0)
    ks = rng.binomial(20, 0.3, 400)
    cover = np.mean([lo <= 0.3 <= hi for lo, hi in (stats.binomial_ci(int(k), 20) for k in ks)])
    assert cover >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / 400)
    share, (lo, hi) = stats.share_ci([True] * 16)
    assert share == 1.0 and lo < 1.0
    with pytest.raises(ValueError, match="successes=11"):
        stats.binomial_ci(11, 10)


def test_permutation_p_counts_ties_against_the_observation_and_is_never_zero():
    null = [0.1, 0.2, 0.3, 0.4]
    assert stats.permutation_p(0.5, null) == pytest.approx(1 / 5)  # beats all: the floor 1 / (1 + n)
    assert stats.permutation_p(0.3, null) == pytest.approx(3 / 5)  # ties count as >=
    assert stats.permutation_p(0.0, null) == pytest.approx(1.0)
    assert stats.permutation_p(0.05, null, higher_is_better=False) == pytest.approx(1 / 5)
    # under the null (observation exchangeable with the draws) p is uniform: P(p <= 0.05) <= 0.05
    rng = np.random.default_rng(0)
    ps = [stats.permutation_p(x[0], x[1:]) for x in rng.normal(size=(2000, 40))]
    assert np.mean(np.asarray(ps) <= 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000)
    with pytest.raises(ValueError, match="null"):
        stats.permutation_p(1.0, [])


NOISE_GRID = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])


def test_curvature_index_known_answers_on_the_doubling_grid():
    x = NOISE_GRID
    assert stats.curvature_index(x, 3 * x + 1) == pytest.approx(0.0, abs=1e-12)
    assert stats.curvature_index(x, x ** 2) == pytest.approx(0.5)  # exact for any grid: f[.,.,.] of x^2 is 1
    assert stats.curvature_index(np.linspace(0, 1, 6), np.linspace(0, 1, 6) ** 2) == pytest.approx(0.5)
    assert stats.curvature_index(x, x ** 3) <= 1.5
    assert stats.curvature_index(x * 10, (x ** 2) * 7 - 3) == pytest.approx(0.5)  # units of x and y do not matter
    assert stats.curvature_index(x, (x > 1).astype(float)) > 10  # a jump between 1 and 2
    assert np.isnan(stats.curvature_index(x, np.ones(7)))
    # the old "largest step share" put this smooth quadratic at 0.75, near its jump end (1)
    steps = np.abs(np.diff(x ** 2))
    assert steps.max() / steps.sum() == pytest.approx(0.75)


def test_smoothness_separates_smooth_curves_from_steps():
    x = NOISE_GRID
    for y in (x, x ** 2, x ** 3, -x ** 2):
        assert stats.smoothness(x, y)["smooth"], y
    for y in ((x > 1).astype(float), (x > 0.25).astype(float), np.array([0, 1, 0, 1, 0, 1, 0.0]), np.ones(7)):
        assert not stats.smoothness(x, y)["smooth"], y


def test_binomial_tail_p_known_answers():
    assert stats.binomial_tail_p(0, 10, 0.1) == 1.0
    assert stats.binomial_tail_p(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert stats.binomial_tail_p(3, 4, 0.5) == pytest.approx(5 / 16)  # P(X >= 3) = (4 + 1) / 16
    assert stats.binomial_tail_p(4, 16, 1 / 16) == pytest.approx(
        1 - sum(math.comb(16, i) * (1 / 16) ** i * (15 / 16) ** (16 - i) for i in range(4)))


def test_hypergeom_tail_p_matches_enumeration_and_the_review_case():
    # enumerate every 4-subset of 10 items, 3 of them marked
    import itertools
    subsets = list(itertools.combinations(range(10), 4))
    for k in range(5):
        brute = sum(sum(i < 3 for i in s) >= k for s in subsets) / len(subsets)
        assert stats.hypergeom_tail_p(k, 10, 3, 4) == pytest.approx(brute, abs=1e-12)
    # the review's case: 0 planted among the top 10 of 1,000 sequences with 100 planted: P(X = 0) ~ 0.35
    p_zero = 1 - stats.hypergeom_tail_p(1, 1000, 100, 10)
    assert 0.33 < p_zero < 0.36
    assert stats.hypergeom_tail_p(0, 1000, 100, 10) == 1.0
    assert stats.hypergeom_tail_p(11, 1000, 100, 10) == 0.0
    with pytest.raises(ValueError, match="marked, draws"):
        stats.hypergeom_tail_p(1, 10, 11, 2)


def test_spearman_diff_ci_separates_real_agreement_from_a_shared_trivial_property():
    """Two seeds' scores share a per-item property t (e.g. gradient size): the baseline agreement is ρ(t + noise, t +
    noise'). A score with an extra shared signal s beats it; one with only t does not (its interval covers 0)."""
    rng = np.random.default_rng(0)
    n = 400
    t, sig = rng.normal(size=n), rng.normal(size=n)
    base_a, base_b = t + rng.normal(size=n), t + rng.normal(size=n)
    real_a, real_b = t + 2 * sig + rng.normal(size=n), t + 2 * sig + rng.normal(size=n)
    d, (lo, hi) = stats.spearman_diff_ci(real_a, real_b, base_a, base_b, n_boot=400)
    assert d == pytest.approx(stats.spearman(real_a, real_b) - stats.spearman(base_a, base_b)) and lo > 0.1
    null_a, null_b = t + rng.normal(size=n), t + rng.normal(size=n)
    d0, (lo0, hi0) = stats.spearman_diff_ci(null_a, null_b, base_a, base_b, n_boot=400)
    assert lo0 < 0 < hi0 and hi0 - lo0 > 0.02  # the same property alone: no difference, and a real interval
    with pytest.raises(ValueError, match="four arrays"):
        stats.spearman_diff_ci(real_a, real_b, base_a, base_b[:-1])


def test_split_rhat_is_one_for_agreeing_chains_and_flags_drift_and_disagreement():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(4, 400))
    assert abs(stats.split_rhat(iid) - 1.0) < 0.02
    ar = np.zeros((4, 2000))  # autocorrelated but stationary (AR(1), rho 0.8)
    for t in range(1, ar.shape[1]):
        ar[:, t] = 0.8 * ar[:, t - 1] + rng.normal(size=4)
    assert stats.split_rhat(ar[:, 200:]) < 1.05
    trend = iid + np.linspace(0, 3, 400)  # every chain drifts the same way: only splitting sees it
    assert stats.split_rhat(trend) > 1.1
    apart = iid + np.array([0.0, 0.0, 0.0, 2.0])[:, None]  # one chain elsewhere
    assert stats.split_rhat(apart) > 1.1
    # known value: two chains of constant halves 0 | 0 and 1 | 1 plus unit noise -> B = h * var([0, 0, 1, 1])
    x = np.array([[0.0, 1, 0, 1, 0, 1, 0, 1], [1, 2, 1, 2, 1, 2, 1, 2]])
    h, w = 4, np.var([0, 1, 0, 1], ddof=1)
    b = h * np.var([0.5, 0.5, 1.5, 1.5], ddof=1)
    assert stats.split_rhat(x) == pytest.approx(np.sqrt(((h - 1) / h * w + b / h) / w))
    with pytest.raises(ValueError, match="chains"):
        stats.split_rhat(np.zeros((2, 3)))
