"""lib.core.params: every report's presets construct, types and ranges are checked, unknown names are rejected."""

import importlib

import pytest

from lib.analysis.prompts import KEYWORDS, KeywordParams
from lib.core.runs import BENCH_STEPS
from lib.reports.neuron_impairment import params as impairment_params
from lib.reports.sparse_layers import params as sparse_params

REPORTS = ["build_transformer", "compression_infovae", "neuron_impairment", "neuron_shapley", "sparse_layers",
           "training_dynamics", "submodel_tool"]


@pytest.mark.parametrize("report", REPORTS)
def test_every_preset_resolves_and_none_keeps_the_preset(report):
    mod = importlib.import_module(f"lib.reports.{report}.params")
    for preset in ("smoke", "cpu", "gpu"):
        nb = mod.resolve(preset)
        first = next(iter(nb.to_dict()))
        assert mod.resolve(preset, **{first: None}) == nb  # papermill's None means "use the preset"


def test_unknown_bad_and_out_of_range_values_name_themselves():
    with pytest.raises(ValueError, match="parameter='n_promts'.*n_prompts"):
        impairment_params.resolve("cpu", n_promts=3)
    with pytest.raises(ValueError, match="ImpairmentParams.frac=1.5"):
        impairment_params.resolve("cpu", frac=1.5)
    with pytest.raises(ValueError, match="ImpairmentParams.n_random='8'.*an integer"):
        impairment_params.resolve("cpu", n_random="8")
    with pytest.raises(ValueError, match="ImpairmentParams.n_random=True"):
        impairment_params.resolve("cpu", n_random=True)  # a bool is not an integer
    with pytest.raises(ValueError, match="KeywordParams.common_share=1.5"):
        KEYWORDS["cpu"].replace(common_share=1.5)
    with pytest.raises(ValueError, match="scale_intensities"):
        impairment_params.resolve("cpu", scale_intensities=(0.0, 1.5))
    with pytest.raises(ValueError, match="preset='tpu'"):
        impairment_params.resolve("tpu")


def test_values_are_converted_to_their_declared_types():
    nb = impairment_params.resolve("cpu", noise_intensities=[0, 1, 2], frac=1)
    assert nb.noise_intensities == (0.0, 1.0, 2.0) and isinstance(nb.noise_intensities, tuple)
    assert isinstance(nb.frac, float) and isinstance(nb.keywords, KeywordParams)


def test_shared_knobs_are_defined_once():
    """Report 3's early model is report 1's benchmark run at every preset (the gpu preset once trained 3,000 steps
    for it against report 1's 1,000); report 5 exposes its layer's steps flat."""
    build = importlib.import_module("lib.reports.build_transformer.params")
    for preset in ("smoke", "cpu", "gpu"):
        assert impairment_params.resolve(preset).early_steps == build.resolve(preset).bench_steps == BENCH_STEPS[preset]
    assert sparse_params.resolve("cpu", steps=7).layer.steps == 7
