"""Report 6's curves on a checkpointed suite read from local per-revision folders (Pythia's layout)."""

import pytest
import torch

from lib.analysis import metrics
from lib.core import pretrained
from lib.reports.training_dynamics import suite
from tests.helpers import save_tiny_hf


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """Three 'revisions' of a tiny GPT-NeoX (different weights), named like Pythia's, plus a non-step folder."""
    root = tmp_path_factory.mktemp("suite")
    for seed, step in enumerate((0, 512, 1000)):
        save_tiny_hf("gpt_neox", root / f"step{step}", seed=seed)
    save_tiny_hf("gpt_neox", root / "main", seed=9)  # a revision without a step number: not part of the curve
    return root


def test_suite_steps_and_curves(tiny_suite):
    assert suite.suite_steps(tiny_suite) == [(0, "step0"), (512, "step512"), (1000, "step1000")]
    tok = pretrained.load_tokenizer(tiny_suite / "step0")
    probes = suite.text_probes(tok, n_ctx=32, n=4, n_repeat=4)
    curves, heads = suite.suite_curves(tiny_suite, probes, early=3, late=28, progress=False)
    assert curves.step.tolist() == [0, 512, 1000] and curves.revision.tolist() == ["step0", "step512", "step1000"]
    assert len(heads) == 3 * 2 * 4 and curves.max_induction.nunique() == 3  # 3 revisions x 2 layers x 4 heads
    m = pretrained.load_model(tiny_suite, revision="step512")
    direct = metrics.head_scores(m, probes.repeated)["induction"]
    got = heads[heads.step == 512].sort_values(["layer", "head"]).induction.to_numpy()
    assert torch.allclose(torch.tensor(got, dtype=direct.dtype), direct.flatten(), atol=1e-6)


def test_a_folder_without_step_revisions_is_named(tmp_path, tiny_suite):
    save_tiny_hf("gpt2", tmp_path / "only")
    with pytest.raises(FileNotFoundError, match="no local revisions named by their step"):
        suite.suite_steps(tmp_path)
    with pytest.raises(ValueError, match="step7.*step0"):
        next(suite.suite_checkpoints(tiny_suite, ["step7"]))
