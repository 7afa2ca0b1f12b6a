"""Report 4's kernel: gradient x activation against a float64 central difference, removal masks, specificity,
the removal table against the game, destroy_k."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import fp32_tol, nine_random_prompts, ten_neuron_model
from lib.analysis import shapley
from lib.analysis.prompts import evaluate
from lib.core import hooks
from lib.reports.neuron_shapley import kernel as neuron_shapley


def _voting(masks: torch.Tensor) -> torch.Tensor:
    """The weighted voting game [3; 2, 1, 1, 1]."""
    return (masks.double() @ torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64) >= 3).double()


hooked = pytest.fixture(ten_neuron_model, scope="module", name="hooked")
pr = pytest.fixture(nine_random_prompts, scope="module", name="pr")


def test_grad_x_act_is_first_order_for_small_ablations(hooked, pr):
    """Scaling a neuron by (1 ± eps) changes -loss by ±eps times its gradient x activation.

    Checked in float64 with a central difference, so that the test measures the estimator and not the rounding:
    the truncation error of a central difference is O(eps² |f'''|), about 1e-8 at eps = 1e-4 for losses of a few
    nats, and rounding adds about 1e-16 |loss| / eps, about 1e-11. In float32, a forward difference at eps = 1e-3
    of a 7-nat loss carries about 1e-6 * 7 / 1e-3 = 1e-2 of rounding per unit, which depends on the CPU's
    kernels (AVX2 vs AVX-512). The tolerance 1e-6 is far above both errors and far below the attributions
    (1e-2 to 1 here)."""
    h64 = copy.deepcopy(hooked).to(torch.float64)
    attr = neuron_shapley.grad_x_act(h64, pr, shapley.neuron_players(h64))
    assert attr.shape == (9, 10) and attr.dtype == torch.float64

    def neg_loss(name: str, factor: float) -> torch.Tensor:
        return -torch.tensor(evaluate(h64, pr, [(name, _scale_unit(unit, factor))]).loss.to_numpy())

    eps = 1e-4
    for p in (0, 7):
        layer, unit = divmod(p, 5)
        name = hooks.name("mlp_post", layer)
        central = (neg_loss(name, 1 + eps) - neg_loss(name, 1 - eps)) / (2 * eps)
        assert central.dtype == torch.float64
        assert torch.allclose(central, attr[:, p], rtol=1e-6, atol=1e-6), p
    assert attr.abs().max() > 1e-2  # not all ~0, which any tolerance would accept


def _scale_unit(unit: int, factor: float):
    def fn(x, hook=None):
        x = x.clone()
        x[..., unit] *= factor
        return x
    return fn


def test_removal_masks_and_specificity_gap():
    m = neuron_shapley.removal_masks(torch.tensor([3, 0, 2, 1]), [0, 1, 3], 4)
    assert m.tolist() == [[True] * 4, [True, True, True, False], [False, True, False, False]]
    d = torch.tensor([[2.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 1: no damage elsewhere; a ratio with a 1e-3 floor read 1000 there, the gap reads the 1 nat it is
    assert torch.allclose(neuron_shapley.specificity_gap(d), torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="ks"):
        neuron_shapley.removal_masks(torch.arange(4), [5], 4)


def test_removal_table_and_destroy_k(hooked, pr):
    game = shapley.neuron_game(hooked, pr)
    sc = torch.randn(10, 3)
    df = neuron_shapley.removal_table(game, {"s": sc}, [0, 2, 10], 2, torch.Generator().manual_seed(0))
    assert len(df) == (3 + 2 * 3) * 3 * 3  # (3 topics + 2 random orders x 3 topics) x 3 ks x 3 prompts per topic
    clean = df[df.k == 0].groupby("topic").loss.first()
    full = game.scores(torch.zeros(1, 10, dtype=bool))["loss"][0]
    assert np.allclose(df[(df.k == 10) & (df.ordering == "s")].sort_values("prompt").loss, full[torch.tensor(
        sorted(df[(df.k == 10) & (df.ordering == "s")].prompt))].numpy(), rtol=0, atol=fp32_tol(full))
    assert len(clean) == 3
    curve = pd.DataFrame({"ordering": "o", "seed": 0, "topic": "t", "k": [0, 0, 1, 1, 4, 4], "top5": [1, 1, 1, 0, 0, 0]})
    out = neuron_shapley.destroy_k(curve)
    assert out.k.tolist() == [1] and not out.censored.any()
    first, second = neuron_shapley.split_half(shapley.tmc_shapley(_voting, 4, 10))
    assert first.shape == second.shape == (4,)
