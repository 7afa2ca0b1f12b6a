"""Shapley estimators on games with analytic values, and neurons of a tiny transformer against brute force."""

import math

import pytest
import torch

from helpers import fp32_tol, nine_random_prompts, ten_neuron_model
from lib.analysis import shapley
from lib.analysis.prompts import evaluate

# ---------------------------------------------------------------------------------------------- games


def additive(w: torch.Tensor):
    """v(S) = sum of w over S: Shapley value w_i."""
    return lambda masks: masks.double() @ w.double()


def unanimity(n: int, team: list[int]):
    """v(S) = 1 if S contains the whole team: Shapley 1/|team| for team members, 0 for the others."""
    t = torch.zeros(n, dtype=torch.bool)
    t[team] = True
    return lambda masks: (masks | ~t).all(1).double()


def voting(weights: list[float], quota: float):
    """Weighted voting game [quota; weights]: v(S) = 1 if S's weight reaches the quota."""
    w = torch.tensor(weights, dtype=torch.float64)
    return lambda masks: (masks.double() @ w >= quota).double()


VOTING = ([2, 1, 1, 1], 3, [1 / 2, 1 / 6, 1 / 6, 1 / 6])  # Shapley-Shubik index, worked out by hand
W = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, 1.5])


def pairwise(w: torch.Tensor, pairs: list[tuple[int, int, float]]):
    """v(S) = sum of w over S + c for each pair inside S: Shapley w_i + half of each c involving i."""
    def v(masks):
        m = masks.double()
        return m @ w.double() + sum(c * m[:, i] * m[:, j] for i, j, c in pairs)
    return v


def pairwise_values(w: torch.Tensor, pairs: list[tuple[int, int, float]]) -> torch.Tensor:
    phi = w.double().clone()
    for i, j, c in pairs:
        phi[i] += c / 2
        phi[j] += c / 2
    return phi


GAMES = {
    "additive": (additive(W), 6, W.double()),
    "unanimity": (unanimity(7, [1, 3, 4]), 7, torch.tensor([0, 1 / 3, 0, 1 / 3, 1 / 3, 0, 0], dtype=torch.float64)),
    "voting": (voting(VOTING[0], VOTING[1]), 4, torch.tensor(VOTING[2], dtype=torch.float64)),
}


@pytest.mark.parametrize("name", GAMES)
def test_exact_matches_analytic(name):
    fn, n, phi = GAMES[name]
    res = shapley.exact_shapley(fn, n)
    assert torch.allclose(res.values.double(), phi, atol=1e-6)
    assert res.n_evals == 2**n


def test_exact_matches_pairwise_analytic_and_is_efficient():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, generator=g)
    pairs = [(0, 1, 2.0), (2, 7, -1.0), (3, 9, 0.5), (1, 9, 1.0)]
    res = shapley.exact_shapley(pairwise(w, pairs), 10)
    assert torch.allclose(res.values.double(), pairwise_values(w, pairs), atol=1e-5)
    v = pairwise(w, pairs)(torch.stack([torch.ones(10, dtype=bool), torch.zeros(10, dtype=bool)]))
    assert math.isclose(float(res.values.sum()), float(v[0] - v[1]), abs_tol=1e-5)


@pytest.mark.parametrize("name", GAMES)
def test_tmc_converges_to_exact(name):
    fn, n, phi = GAMES[name]
    res = shapley.tmc_shapley(fn, n, 3000, generator=torch.Generator().manual_seed(1), batch_size=16)
    err = (res.values.double() - phi).abs()
    assert (err <= 4 * res.stderr.double() + 1e-6).all(), (res.values, phi, res.stderr)
    assert err.max() < 0.03
    assert res.n_evals == 2 + 3000 * (n - 1)  # v(N), v(∅), then the n-1 inner coalitions of every permutation


def test_each_permutation_is_efficient():
    fn, n, _ = GAMES["voting"]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(9, generator=g)
    for game, size in ((fn, n), (pairwise(w, [(0, 4, 1.0), (2, 8, -2.0)]), 9)):
        ends = game(torch.stack([torch.ones(size, dtype=bool), torch.zeros(size, dtype=bool)]))
        for _ in range(20):
            m, evals = shapley.permutation_marginals(game, torch.randperm(size, generator=g), ends[0], ends[1],
                                                     batch_size=3)
            assert math.isclose(float(m.sum()), float(ends[0] - ends[1]), abs_tol=1e-9)
            assert evals == size - 1


def test_truncation_saves_evaluations_and_stops_at_the_cut():
    """A game that reaches v(∅) once one player of a pair is removed: truncation stops the walk there."""
    n = 12
    fn = lambda masks: (masks[:, 0] & masks[:, 1]).double()  # noqa: E731
    ends = fn(torch.stack([torch.ones(n, dtype=bool), torch.zeros(n, dtype=bool)]))
    perm = torch.tensor([5, 1, 0, 2, 3, 4, 6, 7, 8, 9, 10, 11])
    m, evals = shapley.permutation_marginals(fn, perm, ends[0], ends[1], truncation_tol=0.01, batch_size=1)
    assert evals == 2 and float(m[1]) == 1.0 and float(m.abs().sum()) == 1.0
    m_full, evals_full = shapley.permutation_marginals(fn, perm, ends[0], ends[1], batch_size=1)
    assert torch.equal(m, m_full) and evals_full == n - 1


def broken_when_key_removed(n: int = 10, seed: int = 0):
    """v(S) = [0, 1 in S] (1 + w.S): the model breaks (v = v(∅) = 0) once player 0 or 1 is removed, and stays broken."""
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda masks: (masks[:, 0] & masks[:, 1]).double() * (1 + masks.double() @ w)


def test_truncated_tmc_is_exact_where_a_broken_model_stays_broken():
    fn, n = broken_when_key_removed(), 10
    full = shapley.tmc_shapley(fn, n, 200, generator=torch.Generator().manual_seed(0), batch_size=1)
    cut = shapley.tmc_shapley(fn, n, 200, truncation_tol=0.01, generator=torch.Generator().manual_seed(0),
                              batch_size=1)  # a walk is evaluated in batches: it saves only the batches it skips
    assert torch.equal(cut.values, full.values)  # the same permutations: every skipped marginal was exactly 0
    assert cut.n_evals < 0.7 * full.n_evals
    batched = shapley.tmc_shapley(fn, n, 200, truncation_tol=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(batched.values, full.values) and batched.n_evals == full.n_evals
    exact = shapley.exact_shapley(fn, n).values
    assert torch.equal(cut.top(3), shapley.top_k(exact, 3))


def test_truncation_tolerance_is_relative_to_the_range_seen_and_biased_where_walks_cross_v_empty():
    """An additive game with weights of both signs: v(N) = v(∅) = 0, and every walk passes 0 on its way. Before the
    first walk the scale is |v(N) − v(∅)| = 0, so only exact zeros cut; after it, the range seen (here >= 3) sets
    the tolerance, and cuts zero marginals that are not 0: truncated TMC is biased away from the exact values."""
    w = torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.0])
    fn, n = additive(w), 6
    ends = fn(torch.stack([torch.ones(n, dtype=bool), torch.zeros(n, dtype=bool)]))
    perm = torch.tensor([0, 2, 1, 3, 4, 5])  # values 0, -3, -5, -2, 0, -1, 0: exact zero only at the 4th removal
    m0, e0 = shapley.permutation_marginals(fn, perm, ends[0], ends[1], truncation_tol=0.1, batch_size=1)
    assert e0 == 4 and m0.tolist() == [3.0, -3.0, 2.0, -2.0, 0.0, 0.0]  # cut at the exact 0, scale 0
    m1, e1 = shapley.permutation_marginals(fn, perm, ends[0], ends[1], truncation_tol=0.1, batch_size=1,
                                           scale=torch.tensor(5.0, dtype=torch.float64))
    assert e1 == 4 and torch.equal(m1, m0)  # |-5 - 0| > 0.5, |-2| > 0.5: no earlier cut
    m2, e2 = shapley.permutation_marginals(fn, perm, ends[0], ends[1], truncation_tol=0.5, batch_size=1,
                                           scale=torch.tensor(5.0, dtype=torch.float64))
    assert e2 == 3 and m2.tolist() == [3.0, -3.0, 2.0, 0.0, 0.0, 0.0]  # |-2| <= 2.5: cut at the 3rd coalition
    full = shapley.tmc_shapley(fn, n, 2000, generator=torch.Generator().manual_seed(0))
    cut = shapley.tmc_shapley(fn, n, 2000, truncation_tol=0.2, generator=torch.Generator().manual_seed(0),
                              batch_size=1)
    assert ((full.values.double() - w.double()).abs() <= 4 * full.stderr.double() + 1e-9).all()
    assert ((cut.values.double() - w.double()).abs() > 4 * cut.stderr.double() + 1e-9).any()
    g = torch.Generator().manual_seed(0)  # the same walks cut at |v(N) − v(∅)| = 0, i.e. only at exact zeros
    at_ends = 2 + sum(shapley.permutation_marginals(fn, torch.randperm(n, generator=g), ends[0], ends[1], 0.2, 1)[1]
                      for _ in range(2000))
    assert cut.n_evals < at_ends < full.n_evals  # the range seen (not |v(N) − v(∅)|) sets the tolerance


def test_symmetric_players_get_equal_estimates():
    fn, n, _ = GAMES["unanimity"]
    exact = shapley.exact_shapley(fn, n).values
    assert exact[1] == exact[3] == exact[4] and exact[0] == exact[2] == exact[5] == exact[6]
    res = shapley.tmc_shapley(fn, n, 2000, generator=torch.Generator().manual_seed(3))
    for a, b in ((1, 3), (3, 4), (0, 5)):
        assert abs(float(res.values[a] - res.values[b])) <= 4 * float(res.stderr[a] + res.stderr[b]) + 1e-9
    equal = shapley.tmc_shapley(additive(torch.ones(8)), 8, 5, generator=torch.Generator().manual_seed(0))
    assert torch.all(equal.values == equal.values[0])


def team_game(n: int, top: int, teams_per: int, a_max: float, seed: int = 0):
    """Players 0..top-1 pay off only through 3-player teams (each with two partners from the others), so their
    marginals are mostly 0 and sometimes large; the others add 0..a_max alone. Exact Shapley: teams_per / 3 for a
    top player, 1/3 per team plus its own value for a partner."""
    g = torch.Generator().manual_seed(seed)
    rest = (torch.randperm(n - top, generator=g) + top).tolist()
    teams = [(i, rest[2 * (teams_per * i + t)], rest[2 * (teams_per * i + t) + 1]) for i in range(top)
             for t in range(teams_per)]
    a = torch.zeros(n, dtype=torch.float64)
    a[top:] = torch.linspace(0.0, a_max, n - top, dtype=torch.float64)
    phi = a.clone()
    for team in teams:
        phi[list(team)] += 1 / 3
    return (lambda masks: masks.double() @ a + sum(masks[:, list(t)].all(1).double() for t in teams)), phi


def rare_team(n: int = 8, size: int = 4, extra: float = 0.02):
    """A unanimity team of `size` players (worth 1) plus small solo values for the rest: a team member's marginal is
    1 only when it is the last member left (probability 1/size), else 0."""
    t = torch.zeros(n, dtype=torch.bool)
    t[:size] = True
    a = torch.zeros(n, dtype=torch.float64)
    a[~t] = extra * torch.arange(1, n - size + 1, dtype=torch.float64)
    phi = a.clone()
    phi[t] = 1 / size
    return (lambda masks: (masks | ~t).all(1).double() + masks.double() @ a), phi


TOP_K_GAMES = {
    "rare team (8 players, top 4)": (*rare_team(), 8, 4),
    "teams (10 players, top 2)": (*team_game(10, 2, 2, 0.05), 10, 2),
    "unanimity (7 players, top 3)": (GAMES["unanimity"][0], GAMES["unanimity"][2], 7, 3),
    "voting (7 players, top 3)": (voting([5, 4, 3, 2, 1, 1, 1], 9), shapley.exact_shapley(
        voting([5, 4, 3, 2, 1, 1, 1], 9), 7).values.double(), 7, 3),  # marginals 0 or 1; gap 0.18 vs 0.08
    "additive (14 players, top 3)": (additive(torch.tensor([3.0, 2.5, 2.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0,
                                                            -0.5, -1.0])), torch.tensor(
        [3.0, 2.5, 2.0, 1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.5, -1.0], dtype=torch.float64), 14, 3),
}


@pytest.mark.parametrize("name", TOP_K_GAMES)
def test_tmab_finds_the_exact_top_k_in_95_percent_of_seeds_and_stops_before_its_budget(name):
    """Games with known values whose marginals are sparse and heavy-tailed (teams), or exact (additive); the
    shipped Student-t TMAB found the exact top-5 of a 40-player team game in 1 of 10 seeds."""
    fn, phi, n, k = TOP_K_GAMES[name]
    reference = frozenset(phi.topk(k).indices.tolist())
    assert phi.sort(descending=True).values[k - 1] > phi.sort(descending=True).values[k]  # a unique top-k
    runs = [shapley.tmab_shapley(fn, n, k, delta=0.05, max_permutations=4000,
                                 generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert sum(frozenset(r.top(k).tolist()) == reference for r in runs) >= 19
    assert all(r.stopped_by_rule and r.n_evals < 2 + 4000 * (n - 1) for r in runs)
    assert any((r.counts < r.counts.max()).any() for r in runs)  # the bandit retired players: it switched on


def test_the_range_term_is_what_keeps_early_intervals_honest():
    """Without the range term (value_range ~ 0, i.e. a variance-only interval) a team member whose first marginals
    are all 0 is retired on them, and the wrong top-k gets certified."""
    fn, phi, n, k = TOP_K_GAMES["rare team (8 players, top 4)"]
    wrong = [shapley.tmab_shapley(fn, n, k, delta=0.05, max_permutations=4000, value_range=1e-9,
                                  generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert sum(set(r.top(k).tolist()) != set(range(4)) for r in wrong) >= 3 and all(r.stopped_by_rule for r in wrong)
    h = shapley.bernstein_half_width(torch.tensor([0.0, 0.0, 0.25]), torch.tensor([1, 3, 100]), 1.0, 0.05)
    assert math.isinf(h[0]) and h[1] == pytest.approx(7 * math.log(40) / 6)  # 3 equal marginals: still wide
    assert h[2] == pytest.approx(math.sqrt(2 * 0.25 * math.log(40) / 100) + 7 * math.log(40) / (3 * 99))


def test_still_active_separates_the_top_k_from_the_rest():
    mean, counts = torch.tensor([5.0, 4.0, 1.0, 0.5]), torch.full((4,), 10)
    assert not shapley.still_active(mean, torch.full((4,), 1.0), counts, k=2).any()  # 4 - 1 > 1 + 1
    assert shapley.still_active(mean, torch.tensor([0.1, 2.0, 1.2, 0.1]), counts, k=2).tolist() == [
        False, True, True, False]  # 4 - 2 <= 1 + 1.2: players 1 and 2 overlap; 0 and 3 are clear of them
    assert shapley.still_active(mean, torch.zeros(4), torch.tensor([10, 1, 10, 10]), k=2).tolist() == [
        False, True, False, False]  # too few samples


def test_tmc_stopping_rule_and_the_cost_comparison():
    fn, phi, n, k = TOP_K_GAMES["additive (14 players, top 3)"]
    ref = frozenset(phi.topk(k).indices.tolist())
    tmc = shapley.tmc_shapley(fn, n, 500, generator=torch.Generator().manual_seed(0), stop_top_k=k, stable_for=5)
    assert tmc.stopped_by_rule and len(tmc.trace_evals) == 6 and frozenset(tmc.top(k).tolist()) == ref
    df, runs = shapley.cost_comparison(fn, n, k, ref, budget_permutations=50, stable_for=5)
    assert list(df.estimator) == ["TMC", "TMAB"] and df.exact.all() and (df.jaccard == 1).all()
    assert (df.evaluations <= 2 + 50 * (n - 1) + n).all()  # the same budget (TMAB may finish its last walk)
    assert set(df.stopped_by) <= {"rule", "budget"}


def test_multi_game_tmc_matches_single_games():
    fns = [GAMES["voting"][0], additive(torch.tensor([1.0, 2.0, 3.0, 4.0]))]
    both = lambda masks: torch.stack([f(masks) for f in fns], 1)  # noqa: E731
    res = shapley.tmc_shapley(both, 4, 50, generator=torch.Generator().manual_seed(5))
    for j, f in enumerate(fns):
        one = shapley.tmc_shapley(f, 4, 50, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(res.values[:, j], one.values, atol=1e-6)
        assert torch.allclose(res.trace_values[:, :, j], one.trace_values, atol=1e-6)


def test_evals_to_reach_needs_the_set_to_stay():
    a, b = frozenset({1, 2}), frozenset({1, 3})
    assert shapley.evals_to_reach([10, 20, 30, 40], [a, b, a, a], a) == 30.0
    assert shapley.evals_to_reach([10, 20], [a, b], a) == float("inf")


@pytest.mark.parametrize("call, match", [
    (lambda: shapley.exact_shapley(additive(torch.ones(17)), 17), "n_players=17"),
    (lambda: shapley.exact_shapley(additive(torch.ones(3)), 0), "n_players=0"),
    (lambda: shapley.tmc_shapley(additive(torch.ones(3)), 3, 0), "n_permutations=0"),
    (lambda: shapley.tmc_shapley(additive(torch.ones(3)), 3, 2, truncation_tol=1.5), "truncation_tol=1.5"),
    (lambda: shapley.tmab_shapley(additive(torch.ones(3)), 3, k=3), "k=3"),
    (lambda: shapley.tmab_shapley(additive(torch.ones(3)), 3, k=1, delta=0.0), "delta=0.0"),
    (lambda: shapley.tmab_shapley(lambda m: torch.stack([m.double().sum(1)] * 2, 1), 3, k=1), "value_fn output"),
    (lambda: shapley.tmab_shapley(additive(torch.ones(3)), 3, k=1, value_range=0.0), "value_range=0.0"),
    (lambda: shapley.tmc_shapley(additive(torch.ones(3)), 3, 2, stop_top_k=0), "stop_top_k=0"),
    (lambda: shapley.exact_shapley(lambda m: torch.zeros(1), 3), "value_fn output shape"),
])
def test_bad_input_names_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------- tiny transformer

hooked = pytest.fixture(ten_neuron_model, scope="module", name="hooked")
pr = pytest.fixture(nine_random_prompts, scope="module", name="pr")


def _all_masks(n: int) -> torch.Tensor:
    return ((torch.arange(2**n)[:, None] >> torch.arange(n)) & 1).bool()


@pytest.mark.parametrize("ablation", ["zero", "mean"])
@pytest.mark.parametrize("layers", [None, [1], [0]])
def test_batched_game_equals_the_loop(hooked, pr, ablation, layers):
    mean = torch.rand(2, 5) if ablation == "mean" else None
    game = shapley.neuron_game(hooked, pr, layers, ablation=ablation, mean=mean, max_tokens=200, chunk_tokens=40)
    masks = _all_masks(game.n_players)[:: max(1, 2**game.n_players // 64)]
    fast, loop = game.scores(masks), game.scores_loop(masks)
    tol = fp32_tol(loop["loss"])  # the same float32 losses from other batch shapes
    assert torch.allclose(fast["loss"], loop["loss"], rtol=0, atol=tol)
    generic = shapley.neuron_game(hooked, pr, layers, ablation=ablation, mean=mean, fast=False).scores(masks)
    assert torch.allclose(generic["loss"], loop["loss"], rtol=0, atol=tol)
    assert all(not hp.fwd_hooks for hp in hooked.hook_dict.values())


def test_a_last_layer_game_chunks_prompts_by_keyword_length(hooked, pr):
    """Only the last layer's players: each chunk holds keywords of one length (no padding rows in the tail-only
    pass), the chunks partition the prompts and keep the token budget; a game with an earlier layer keeps length
    chunks (its passes run whole blocks over the prompts' positions)."""
    assert len(set(pr.word_lengths.tolist())) > 1  # mixed keyword lengths, or the branch would change nothing
    game = shapley.neuron_game(hooked, pr, [1], chunk_tokens=12)
    assert all(len(set(pr.word_lengths[c].tolist())) == 1 for c in game.chunks)
    assert sorted(torch.cat(game.chunks).tolist()) == list(range(len(pr)))
    assert all(len(c) == 1 or len(c) * int(pr.lengths[c].max()) <= 12 for c in game.chunks)
    both = shapley.neuron_game(hooked, pr, None, chunk_tokens=12)
    assert any(len(set(pr.word_lengths[c].tolist())) > 1 for c in both.chunks)


def test_full_coalition_is_the_clean_model_and_ablation_changes_it(hooked, pr):
    game = shapley.neuron_game(hooked, pr)
    s = game.scores(torch.stack([torch.ones(10, dtype=bool), torch.zeros(10, dtype=bool)]))
    clean = torch.tensor(evaluate(hooked, pr).loss.to_numpy())
    assert torch.allclose(s["loss"][0], clean, rtol=0, atol=fp32_tol(clean))
    assert not torch.allclose(s["loss"][1], clean, atol=1e-3)


def test_tiny_transformer_estimates_agree_with_brute_force(hooked, pr):
    """10 neurons: exact Shapley from one forward per coalition (brute force) vs exact, TMC and per-topic values
    on the batched game."""
    game = shapley.neuron_game(hooked, pr)
    loop_fn = lambda m: -game.scores_loop(m)["loss"].mean(1)  # noqa: E731
    fast_fn = lambda m: -game.scores(m)["loss"].mean(1)  # noqa: E731
    brute = shapley.exact_shapley(loop_fn, 10)
    ends = loop_fn(torch.stack([torch.ones(10, dtype=bool), torch.zeros(10, dtype=bool)]))
    # a Shapley value is a weighted mean (weights sum to 1) of differences of v, so a float32 rounding error
    # of at most tol in each v moves it by at most 2 tol
    tol = fp32_tol(ends)
    assert torch.allclose(shapley.exact_shapley(fast_fn, 10).values, brute.values, rtol=0, atol=2 * tol)
    assert math.isclose(float(brute.values.sum()), float(ends[0] - ends[1]), abs_tol=2 * tol)
    tmc = shapley.tmc_shapley(fast_fn, 10, 600, generator=torch.Generator().manual_seed(0))
    assert ((tmc.values - brute.values).abs() <= 4 * tmc.stderr + 2 * tol).all()
    assert float((tmc.values - brute.values).abs().max()) < 0.1 * float(brute.values.abs().max())
    per_topic = shapley.exact_shapley(game, 10).values
    assert per_topic.shape == (10, 3)
    assert torch.allclose(per_topic[:, 1], shapley.exact_shapley(game.single("b"), 10).values, rtol=0,
                          atol=fp32_tol(per_topic))  # the same v; the float64 sums are cast to float32


def test_cached_result_round_trips(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return shapley.tmc_shapley(GAMES["voting"][0], 4, 5, generator=torch.Generator().manual_seed(0))

    a, b = shapley.cached(tmp_path / "r", compute), shapley.cached(tmp_path / "r", compute)
    assert len(calls) == 1 and a.n_evals == b.n_evals
    assert torch.equal(a.values, b.values) and torch.equal(a.trace_values, b.trace_values)


def test_t_quantile_matches_tables():
    q = shapley.t_quantile(0.975, torch.tensor([2, 5, 10, 1000, 0]))
    assert torch.allclose(q[:4], torch.tensor([4.303, 2.571, 2.228, 1.962], dtype=q.dtype), rtol=0.01)
    assert torch.isinf(q[4])


def test_truncation_check_tells_a_game_that_stays_broken_from_one_whose_walks_cross_v_empty():
    fn, n = broken_when_key_removed(), 10
    df, below = shapley.truncation_check(fn, n, [0.01, 0.1], 100, 3, batch_size=1)
    assert (df.top_k_unchanged == 1.0).all() and (df.evaluation_share < 0.7).all() and float(below) == 0.0
    w = torch.tensor([3.0, -3.0, 2.0, -2.0, 1.0, -1.0])
    df, below = shapley.truncation_check(additive(w), 6, [0.2], 200, 2, batch_size=1)
    assert df.evaluation_share.iloc[0] < 1 and 0.2 < float(below) < 0.8
    two = lambda masks: torch.stack([additive(w)(masks), fn(torch.ones(len(masks), n, dtype=bool))], 1)  # noqa: E731
    df2, below2 = shapley.truncation_check(two, 6, [0.2], 200, 2, batch_size=1)
    assert below2.shape == (2,) and float(below2[1]) == 0.0 and float(below2[0]) == float(below)
    assert df2.evaluations.iloc[0] == df.evaluations.iloc[0]  # a constant game is always at its v(∅): the other cuts
