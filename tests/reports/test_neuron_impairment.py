"""Report 3 kernel: clusters, random-cluster Jaccard, curve measures, tolerance as a normalised area."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import planted_topic_stats
from lib.analysis import impairment
from lib.analysis.stats import spearman
from lib.reports.neuron_impairment import kernel as impair


def test_clusters_find_planted_units_and_random_keeps_sizes():
    st = planted_topic_stats()
    sel = impairment.selective_cluster(st, "a", frac=0.1)
    assert sel.sizes == (4, 4) and set(sel.units(0).tolist()) == {0, 1, 2, 3}
    km = impair.find_cluster(st, "a", "kmeans", frac=0.1, generator=torch.Generator().manual_seed(0))
    assert set(km.units(1).tolist()) == {0, 1, 2, 3}
    r1, r2 = (impairment.random_cluster(sel, torch.Generator().manual_seed(s)) for s in (0, 0))
    assert r1.sizes == sel.sizes and torch.equal(r1.mask, r2.mask)
    assert impair.jaccard(sel, sel) == 1.0 and impair.jaccard(sel, impair.find_cluster(st, "b")) == 0.0


def test_random_jaccard_matches_hypergeometric_expectation():
    st = planted_topic_stats()
    c = impairment.selective_cluster(st, "a", frac=0.25)  # 10 of 40 per layer
    null = impair.random_jaccards(c, c, 3000, torch.Generator().manual_seed(0))
    k, n = 10, 40
    expected_overlap = 2 * k * k / n  # two layers
    assert abs(np.mean(null * (4 * k) / (1 + null)) - expected_overlap) < 0.15  # |A ∩ B| = J (|A|+|B|) / (1 + J)


def test_curve_measures():
    x = np.array([0.0, 1.0, 2.0, 4.0])
    assert spearman(x, np.array([1.0, 2.0, 2.5, 9.0])) == pytest.approx(1.0)
    assert spearman(x, np.array([4.0, 3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(4)))  # undefined for a constant input (lib.analysis.stats)
    flat = pd.DataFrame({"intensity": np.tile(x, 3), "prompt": np.repeat([0, 1, 2], 4), "loss": 2.0})
    assert impair.monotonicity(flat, n_boot=20)["spearman"] == 0.0  # report 3 reads a curve that never moves as 0
    noise = np.array([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    quad = pd.DataFrame({"intensity": np.tile(noise, 2), "prompt": np.repeat([0, 1], 7), "loss": np.tile(noise ** 2, 2)})
    m = impair.monotonicity(quad, n_boot=20)
    assert m["spearman"] == pytest.approx(1.0) and m["curvature"] == pytest.approx(0.5) and m["smooth"]
    step = quad.assign(loss=np.tile((noise > 1).astype(float), 2))
    assert not impair.monotonicity(step, n_boot=20)["smooth"]
    assert impair.threshold_intensity(x, np.array([0.8, 0.6, 0.4, 0.2]), 0.5) == pytest.approx(1.5)
    assert impair.threshold_intensity(x, np.array([0.8, 0.8, 0.8, 0.8]), 0.5) == float("inf")


def test_normalised_auc_is_relative_to_the_model_own_clean_score():
    x = np.array([0.0, 1.0, 2.0, 4.0])
    assert impair.normalised_auc(x, np.array([0.8, 0.8, 0.8, 0.8]), 0.8) == pytest.approx(1.0)  # never degrades
    lin = impair.normalised_auc(x, np.array([0.4, 0.3, 0.2, 0.0]), 0.4)  # trapezoids 0.35 + 0.25 + 0.2 = 0.8
    assert lin == pytest.approx(0.8 / (0.4 * 4))
    # a model half as accurate that degrades the same way, relatively, scores the same (a fixed threshold scored 0)
    assert impair.normalised_auc(x, np.array([0.2, 0.15, 0.1, 0.0]), 0.2) == pytest.approx(lin)
    with pytest.raises(ValueError, match="clean"):
        impair.normalised_auc(x, np.zeros(4), 0.0)
