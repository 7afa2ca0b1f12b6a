"""lib.reports.ioi_circuit.circuit against exact answers: in a transformer without LayerNorm the logits are linear in
each head's output, so activation patching, direct-effect path patching and path patching into a later head's query
can be computed by hand from the cached activations and the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from lib.reports.ioi_circuit import circuit as C
from lib.reports.ioi_circuit.data import IOIPrompts

N, POS, VOCAB = 12, 10, 40
IO_POS, S1_POS, S2_POS, END = 2, 4, 7, 9


def _model(n_layers: int, seed: int, normalization: str | None = None) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=16, n_ctx=POS, d_head=4, n_heads=3, d_vocab=VOCAB,
                                  attn_only=True, normalization_type=normalization, act_fn="gelu", seed=seed,
                                  init_weights=True, device="cpu", default_prepend_bos=False)
    torch.manual_seed(seed)
    hm = HookedTransformer(cfg)
    with torch.no_grad():  # larger weights than the default init, so that heads attend sharply and differ
        for p in hm.parameters():
            p.mul_(3.0)
    return hm.eval()


def _prompts(seed: int = 0) -> IOIPrompts:
    """Random 'sentences' with the IOI layout: IO at 2, S at 4 and 7, the end at 9; ABC = three other names."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(10, VOCAB, (N, POS), generator=g)
    names = torch.stack([torch.randperm(10, generator=g)[:5] for _ in range(N)])  # names are ids 0..9
    io, s, x, y, z = names.T
    tokens[:, IO_POS], tokens[:, S1_POS], tokens[:, S2_POS] = io, s, s
    corrupted = tokens.clone()
    corrupted[:, IO_POS], corrupted[:, S1_POS], corrupted[:, S2_POS] = x, y, z
    full = lambda v: torch.full((N,), v)  # noqa: E731
    return IOIPrompts(tokens=tokens, corrupted=corrupted, end=full(END), io=io, s=s, io_pos=full(IO_POS),
                      s1_pos=full(S1_POS), s2_pos=full(S2_POS), abc=torch.stack([x, y, z], 1),
                      template=torch.arange(N) % 2, abba=torch.ones(N, dtype=torch.bool))


def _dla(hm, z: torch.Tensor, layer: int, head: int, p: IOIPrompts) -> torch.Tensor:
    """A head's direct contribution to logit(IO) - logit(S) at the end, per prompt (no LayerNorm: exact)."""
    out = z[torch.arange(N), p.end, head] @ hm.W_O[layer, head]  # [n, d_model]
    return ((out @ hm.W_U)[torch.arange(N), p.io] - (out @ hm.W_U)[torch.arange(N), p.s])


def _expected_layer0_direct(hm, p: IOIPrompts) -> torch.Tensor:
    """Per layer-0 head: its own direct logit-difference change from clean to ABC over clean minus ABC (exact)."""
    clean, abc = C.baselines(hm, p)
    _, cc = hm.run_with_cache(p.tokens)
    _, ac = hm.run_with_cache(p.corrupted)
    z_c, z_a = cc["blocks.0.attn.hook_z"], ac["blocks.0.attn.hook_z"]
    return torch.stack([(_dla(hm, z_c, 0, h, p) - _dla(hm, z_a, 0, h, p)).mean() / (clean - abc) for h in range(3)])


@torch.no_grad()
def test_head_patching_and_direct_effect_equal_the_exact_change_in_one_layer():
    hm, p = _model(1, seed=1), _prompts()
    expected = _expected_layer0_direct(hm, p)
    total = C.head_patching(hm, p)[0]
    direct = C.path_patching(hm, p, [(0, h) for h in range(3)], None)[0]
    torch.testing.assert_close(total, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(direct, expected, atol=1e-4, rtol=1e-4)
    assert expected.abs().max() > 0.05  # the heads do matter in this model: the check is not 0 == 0


@torch.no_grad()
def test_direct_effect_freezes_later_heads_but_total_effect_does_not():
    hm, p = _model(2, seed=2), _prompts(1)
    expected = _expected_layer0_direct(hm, p)
    direct = C.path_patching(hm, p, [(L, h) for L in range(2) for h in range(3)], None)
    torch.testing.assert_close(direct[0], expected, atol=1e-4, rtol=1e-4)
    total = C.head_patching(hm, p)
    torch.testing.assert_close(direct[1], total[1], atol=1e-4, rtol=1e-4)  # nothing after the last layer
    assert (total[0] - direct[0]).abs().max() > 1e-3  # layer 0 also acts through layer 1: total != direct


def _layer1_input_along_path(hm, p: IOIPrompts, head: int) -> torch.Tensor:
    """Layer 1's input in the clean run plus only layer-0 `head`'s change from clean to ABC (no LayerNorm: exact)."""
    _, cc = hm.run_with_cache(p.tokens)
    _, ac = hm.run_with_cache(p.corrupted)
    delta = (ac["blocks.0.attn.hook_z"][:, :, head] - cc["blocks.0.attn.hook_z"][:, :, head]) @ hm.W_O[0, head]
    return cc["blocks.1.hook_resid_pre"] + delta


@torch.no_grad()
def test_path_patching_into_a_later_query_matches_the_query_computed_by_hand():
    hm, p = _model(2, seed=3), _prompts(2)
    clean, abc = C.baselines(hm, p)
    sender, receiver = (0, 1), (1, 2)
    resid = _layer1_input_along_path(hm, p, head=1)
    q_new = resid @ hm.W_Q[1, 2] + hm.b_Q[1, 2]  # [n, pos, d_head]
    rows = torch.arange(N)

    def set_q(q, hook):
        q = q.clone()
        q[rows, p.end, 2] = q_new[rows, p.end]
        return q

    ld = C._end_ld(hm, p.tokens, p, [("blocks.1.attn.hook_q", set_q)]).mean().item()
    expected = 1 - (ld - abc) / (clean - abc)
    got = C.path_patching(hm, p, [sender, (1, 0)], [receiver], "q")
    assert got[0, 1].item() == pytest.approx(expected, abs=1e-4)
    assert torch.isnan(got[1, 0]) and torch.isnan(got[0, 0])  # a receiver's own layer cannot send; not asked
    assert abs(expected) > 1e-3


@torch.no_grad()
def test_path_patching_into_later_values_changes_them_at_every_position():
    hm, p = _model(2, seed=8), _prompts(7)
    clean, abc = C.baselines(hm, p)
    v_new = _layer1_input_along_path(hm, p, head=2) @ hm.W_V[1, 0] + hm.b_V[1, 0]

    def set_v(v, hook):
        v = v.clone()
        v[:, :, 0] = v_new
        return v

    ld = C._end_ld(hm, p.tokens, p, [("blocks.1.attn.hook_v", set_v)]).mean().item()
    got = C.path_patching(hm, p, [(0, 2)], [(1, 0)], "v")[0, 2].item()
    assert got == pytest.approx(1 - (ld - abc) / (clean - abc), abs=1e-4) and abs(got) > 1e-3
    with pytest.raises(ValueError, match="receiver_input"):
        C.path_patching(hm, p, [(0, 2)], [(1, 0)], "z")


@torch.no_grad()
def test_attention_scores_read_the_class_patterns():
    hm, p = _model(1, seed=4), _prompts(3)
    planted = torch.zeros(POS, POS)
    planted[torch.arange(POS), 0] = 1.0  # every query on the first position ...
    planted[S2_POS] = 0.0
    planted[S2_POS, S1_POS] = 0.25  # ... except S2: a quarter on S1, three quarters on the token after it
    planted[S2_POS, S1_POS + 1] = 0.75
    planted[END] = 0.0
    planted[END, IO_POS], planted[END, S2_POS] = 0.6, 0.4

    def plant(pattern, hook):
        pattern = pattern.clone()
        pattern[:, 1] = planted
        return pattern

    with hm.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", plant)]):
        sc = C.attention_scores(hm, p)
    assert sc["S2->S1"][0, 1].item() == pytest.approx(0.25)
    assert sc["S2->S1+1"][0, 1].item() == pytest.approx(0.75)
    assert sc["end->IO"][0, 1].item() == pytest.approx(0.6)
    assert sc["end->S"][0, 1].item() == pytest.approx(0.4)  # S1 and S2 together
    assert sc["S1+1->S1"][0, 1].item() == pytest.approx(0.0)
    assert set(sc) == {"end->IO", "end->S", "S2->S1", "S2->S1+1", "S1+1->S1"}


@torch.no_grad()
def test_faithfulness_of_all_heads_is_one_and_a_planted_head_beats_random_sets():
    hm, p = _model(1, seed=5), _prompts(4)
    with torch.no_grad():  # only head 0 writes to the residual stream
        hm.blocks[0].attn.W_O[1:] = 0.0  # (hm.W_O is a stacked copy)
    all_heads = [(0, h) for h in range(3)]
    res = C.faithfulness(hm, p, all_heads, n_random=5)
    assert res["circuit"] == pytest.approx(1.0, abs=1e-5) and res["p"] == 1.0 and res["exact"]  # the only 3-set
    assert len(res["random"]) == 0
    one = C.faithfulness(hm, p, [(0, 0)], n_random=5)  # 3 single heads <= 5: all enumerated, p exact
    assert one["exact"] and one["circuit"] == pytest.approx(1.0, abs=1e-5)  # the other heads write nothing
    assert one["random"] == pytest.approx([one["none"]] * 2, abs=1e-5) and one["p"] == pytest.approx(1 / 3)
    assert one["p_min"] == pytest.approx(1 / 3) and res["p_min"] == 1.0  # the smallest p each test can give
    assert one["none"] < 0.9  # ablating head 0 does cost logit difference


@torch.no_grad()
def test_attention_table_reads_the_query_rows_it_names():
    # with W_Q = b_Q = 0 every score is equal, so a query at position q attends 1/(q + 1) to each earlier position:
    # 1/10 from the end (9), 1/9 from end - 1; a table that read the end's row for both would give 1/10 twice
    hm, p = _model(2, seed=9), _prompts(8)
    with torch.no_grad():
        for b in hm.blocks:
            b.attn.W_Q.zero_()
            b.attn.b_Q.zero_()
    df = C.attention_table(hm, p, [(1, 2), (0, 1)])
    assert df[["head", "from"]].values.tolist() == [["L1H2", "end"], ["L1H2", "end − 1"], ["L0H1", "end"],
                                                     ["L0H1", "end − 1"]]
    for q, a in (("end", 1 / (END + 1)), ("end − 1", 1 / END)):
        r = df[df["from"] == q]
        np.testing.assert_allclose(r["to IO"], a, rtol=1e-5)
        np.testing.assert_allclose(r["to S1 + S2"], 2 * a, rtol=1e-5)  # both mentions of S
        np.testing.assert_allclose(r["to S1 + 1"], a, rtol=1e-5)
        np.testing.assert_allclose(r["to end − 1"], a, rtol=1e-5)  # from end - 1: its own position


@torch.no_grad()
def test_faithfulness_draws_random_sets_when_there_are_too_many():
    hm, p = _model(2, seed=7), _prompts(6)
    res = C.faithfulness(hm, p, [(0, 0), (1, 1)], n_random=10, seed=3)  # C(6, 2) = 15 > 10: drawn
    assert not res["exact"] and len(res["random"]) == 10 and res["p_min"] == pytest.approx(1 / 11)
    assert res["p"] == pytest.approx((1 + np.sum(res["random"] >= res["circuit"])) / 11)
    again = C.faithfulness(hm, p, [(0, 0), (1, 1)], n_random=10, seed=3)
    np.testing.assert_array_equal(res["random"], again["random"])


def test_select_circuit_and_half_rise_step():
    t = lambda *v: torch.tensor(v, dtype=torch.float).view(2, 2)  # noqa: E731
    nan = float("nan")
    hs = C.HeadScores(total=t(0.05, 0.3, 0.0, 0.02), direct=t(0.0, 0.0, 0.0, 0.12), via_movers=t(0.2, nan, nan, nan),
                      attention={}, movers=((1, 1),))
    assert C.select_circuit(hs, 0.1) == ((0, 0), (0, 1), (1, 1))
    assert C.select_circuit(hs, 0.5) == ()
    assert C.half_rise_step([0, 10, 20, 40], [0.1, 0.2, 0.6, 0.9]) == 20  # first to reach 0.1 + 0.4
    assert C.half_rise_step([0, 10, 20], [0.3, 0.2, 0.3]) != C.half_rise_step([0, 10, 20], [0.3, 0.2, 0.3])  # NaN
    with pytest.raises(ValueError, match="values"):
        C.half_rise_step([0, 1], [0.5])


def test_template_means_average_within_a_template_only():
    hm, p = _model(1, seed=6), _prompts(5)
    means = C.template_means(hm, p)["blocks.0.attn.hook_z"]
    _, ac = hm.run_with_cache(p.corrupted)
    z = ac["blocks.0.attn.hook_z"]
    torch.testing.assert_close(means[0], z[p.template == 0].mean(0))
    torch.testing.assert_close(means[1], z[p.template == 1].mean(0))
    assert not torch.allclose(means[0], means[1])


def test_class_scores_pick_the_best_head_of_each_class():
    t = lambda *v: torch.tensor(v).view(2, 2)  # noqa: E731
    att = {"end->IO": t(0.1, 0.7, 0.2, 0.9), "end->S": t(0.5, 0.1, 0.6, 0.05), "S2->S1": t(0.3, 0.0, 0.0, 0.0),
           "S2->S1+1": t(0.0, 0.0, 0.8, 0.0), "S1+1->S1": t(0.0, 0.4, 0.0, 0.0)}
    hs = C.HeadScores(total=t(0.1, 0.2, 0.3, 0.4), direct=t(0.9, 0.1, 0.5, 0.3),
                      via_movers=t(0.2, float("nan"), float("nan"), float("nan")), attention=att, movers=((1, 1),))
    sc = C.class_scores(hs)
    # head (0,0) has the largest direct effect but attends to S: not a name mover; (1,1) is, with 0.3
    assert sc == {"name mover": pytest.approx(0.3), "s-inhibition": pytest.approx(0.2),
                  "duplicate token": pytest.approx(0.3), "induction": pytest.approx(0.8),
                  "previous token": pytest.approx(0.4)}
    assert C.top_heads(hs.direct, 2) == ((0, 0), (1, 0))
    assert C.top_heads(hs.via_movers, 3) == ((0, 0),)  # NaNs are never picked
    assert len(hs.table()) == 4 and hs.table()["head"].tolist() == ["L0H0", "L0H1", "L1H0", "L1H1"]


def test_scores_over_training_one_row_per_checkpoint():
    p = _prompts(8)
    load = [(0, _model(2, seed=9)), (10, _model(2, seed=10))]
    df = C.scores_over_training(load, p, [(0, 1), (1, 2)], n_movers=1)
    assert df.step.tolist() == [0, 10] and {"L0H1 total", "L1H2 direct", "accuracy", *C.CLASSES} <= set(df.columns)
    hm = load[1][1]
    clean, abc = C.baselines(hm, p)
    assert df["L1H2 total"].iloc[1] == pytest.approx(float(C.head_patching(hm, p)[1, 2]) * (clean - abc), abs=1e-4)
    assert df["logit_diff"].iloc[1] == pytest.approx(C.baselines(hm, p)[0], abs=1e-5)
    assert C.head_name((1, 3)) == "L1H3"


@torch.no_grad()
def test_name_logit_attribution_splits_a_heads_direct_effect_into_io_and_s():
    hm, p = _model(1, seed=11), _prompts(9)
    _, cc = hm.run_with_cache(p.tokens)
    out = C.name_logit_attribution(hm, p, [(0, 0), (0, 2)])
    rows = torch.arange(N)
    for r, h in zip(out.itertuples(), (0, 2)):  # no LayerNorm: exact
        u = (cc["blocks.0.attn.hook_z"][rows, p.end, h] @ hm.W_O[0, h]) @ hm.W_U
        assert r[2] == pytest.approx(u[rows, p.io].mean().item(), abs=1e-4)
        assert r[3] == pytest.approx(u[rows, p.s].mean().item(), abs=1e-4)
        assert r[4] == pytest.approx(r[2] - r[3], abs=1e-4)
    ln = _model(1, seed=11, normalization="LN")  # with LayerNorm: the parts still sum to the head's logit difference
    _, lc = ln.run_with_cache(p.tokens)
    o = C.name_logit_attribution(ln, p, [(0, 1)]).iloc[0]
    stack = lc.stack_head_results(layer=-1, pos_slice=None)  # [head, n, pos, d]
    # TransformerLens centres and scales (it assumes the LayerNorm weight folded into W_U); the weight is not folded here
    scaled = lc.apply_ln_to_stack(stack, layer=-1)[1][rows, p.end] * ln.ln_final.w  # head L0H1
    ld = ((scaled @ ln.W_U)[rows, p.io] - (scaled @ ln.W_U)[rows, p.s]).mean().item()
    assert o["to IO − S"] == pytest.approx(ld, abs=1e-3)
