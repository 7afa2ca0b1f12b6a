"""lib.analysis.session: papermill parameters that a notebook does not declare are an error naming them."""

import nbformat
import papermill as pm
import pytest

from lib.analysis import session


def test_unknown_parameters_from_the_cell_history():
    history = ["", "import x", 'preset = "cpu"\nseed = 0\n', '# Parameters\npreset = "smoke"\nsed = 3\n', "y = 1"]
    assert session.unknown_parameters(history) == (["sed"], ["preset", "seed"])
    assert session.unknown_parameters(history[:3]) == ([], [])  # not run by papermill
    ok = history[:3] + ['# Parameters\npreset = "smoke"\n']
    assert session.unknown_parameters(ok) == ([], ["preset", "seed"])


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('preset = "cpu"\nn_windows = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("from lib.analysis import session"), params,
                nbformat.v4.new_code_cell("session.check_parameters()\nprint('ran with', preset)")]
    nbformat.write(nb, path)


def test_a_papermill_typo_fails_the_notebook_and_names_the_parameter(tmp_path):
    src = tmp_path / "nb.ipynb"
    _notebook(src)
    pm.execute_notebook(src, tmp_path / "ok.ipynb", parameters={"preset": "smoke", "n_windows": 4}, progress_bar=False,
                        kernel_name="python3")
    with pytest.raises(pm.PapermillExecutionError, match=r"unknown notebook parameter\(s\) \['n_windwos'\].*"
                                                         r"\['n_windows', 'preset'\]"):
        pm.execute_notebook(src, tmp_path / "bad.ipynb", parameters={"n_windwos": 4}, progress_bar=False,
                            kernel_name="python3")


def test_the_gpu_preset_is_refused_without_cuda_unless_forced(monkeypatch):
    monkeypatch.delenv(session.GPU_ON_CPU, raising=False)
    with pytest.raises(RuntimeError, match="preset='gpu' needs a CUDA GPU.*LIB_ALLOW_GPU_PRESET_ON_CPU=1"):
        session.check_device("gpu", cuda=False)
    session.check_device("gpu", cuda=True)
    session.check_device("cpu", cuda=False)
    monkeypatch.setenv(session.GPU_ON_CPU, "1")
    session.check_device("gpu", cuda=False)


def test_card_or_skip_shows_the_card_and_skips_only_what_cannot_run(capsys):
    from lib.analysis import session
    from tests.helpers import attn_model, small_mlp_hooked

    session.card_or_skip(small_mlp_hooked(), "mlp-model", "Impairing MLP neurons", mlp=True)
    assert "mlp-model" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match="Impairing MLP neurons needs MLP layers"):  # outside a kernel: no later cells
        session.card_or_skip(attn_model(), "attn-model", "Impairing MLP neurons", mlp=True)
