"""lib.analysis.findings: recording, reloading, reruns, rejection of bad input, verdicts, bootstrap CIs, ledger checks."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lib.analysis import findings, stats


@pytest.fixture(autouse=True)
def ledger_dir(tmp_path, monkeypatch):
    """A fresh artifacts root and no current ledger for each test."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path))
    monkeypatch.setattr(findings, "_current", None)
    return tmp_path / findings.KIND


def _record_two() -> None:
    findings.record("induction score", 0.42, unit="score", ci=(0.40, 0.45), control="init", control_value=0.01,
                    verdict=findings.verdict_from(0.42, 0.01, (0.40, 0.45)), figure="fig-induction")
    findings.record("loss bump", 3.1, control="none: no baseline exists for a training curve")


def test_record_and_reload(ledger_dir):
    findings.start("01_build_transformer", "smoke")
    _record_two()
    df = findings.load("01_build_transformer", "smoke")
    assert list(df.columns) == list(findings.COLUMNS)
    assert list(df["name"]) == ["induction score", "loss bump"]
    assert list(df["order"]) == [0, 1]
    first = df.iloc[0]
    assert (first["value"], first["ci_low"], first["ci_high"]) == (0.42, 0.40, 0.45)
    assert (first["control"], first["control_value"], first["verdict"]) == ("init", 0.01, "supported")
    assert math.isnan(df.iloc[1]["control_value"])
    assert (ledger_dir / "01_build_transformer-smoke.json").exists()


def test_record_returns_the_stored_record():
    findings.start("01_build_transformer", "smoke")
    rec = findings.record("x", np.float32(2.5), control="seeds", control_value=torch.tensor(1.5))
    assert rec["value"] == 2.5 and rec["control_value"] == 1.5 and isinstance(rec["control_value"], float)
    assert (rec["notebook"], rec["preset"], rec["order"]) == ("01_build_transformer", "smoke", 0)


def test_rerun_replaces_rather_than_duplicates():
    for _ in range(2):
        findings.start("02_compression_infovae", "smoke")
        _record_two()
    df = findings.load_all()
    assert len(df) == 2 and df["name"].is_unique


def test_rerun_that_records_less_drops_old_records():
    findings.start("02_compression_infovae", "smoke")
    _record_two()
    findings.start("02_compression_infovae", "smoke")
    assert findings.load("02_compression_infovae", "smoke").empty


def test_same_name_twice_replaces_in_place():
    findings.start("03_neuron_impairment", "smoke")
    _record_two()
    findings.record("induction score", 0.5, control="random", control_value=0.3)
    df = findings.load("03_neuron_impairment", "smoke")
    assert list(df["name"]) == ["induction score", "loss bump"]
    assert (df.iloc[0]["value"], df.iloc[0]["control"]) == (0.5, "random")


def test_presets_and_notebooks_are_kept_apart():
    findings.start("01_build_transformer", "smoke")
    findings.record("a", 1.0, control="init", control_value=0.0)
    findings.start("01_build_transformer", "cpu")
    findings.record("b", 2.0, control="init", control_value=0.0)
    findings.start("02_compression_infovae", "smoke")
    findings.record("c", 3.0, control="init", control_value=0.0)
    assert len(findings.load_all()) == 3
    smoke = findings.load_all("smoke")
    assert list(smoke["notebook"]) == ["01_build_transformer", "02_compression_infovae"]
    assert list(smoke["name"]) == ["a", "c"]


def test_record_into_another_notebook_uses_current_preset():
    findings.start("01_build_transformer", "smoke")
    findings.record("a", 1.0, control="init", control_value=0.0, notebook="07_submodel_tool")
    assert list(findings.load("07_submodel_tool", "smoke")["name"]) == ["a"]
    assert findings.load("01_build_transformer", "smoke").empty


def test_record_without_start_says_how_to_start():
    with pytest.raises(RuntimeError, match=r"findings.start"):
        findings.record("a", 1.0, control="init", control_value=0.0)


GOOD = dict(name="a", value=1.0, control="seeds", control_value=0.5)


@pytest.mark.parametrize("override, bad, allowed", [
    (dict(control="baseline"), "control='baseline'", "'none: <why>'"),
    (dict(control="none"), "control='none'", "'init', 'seeds', 'random'"),
    (dict(control="none:  ", control_value=None), "control='none:  '", "non-empty reason"),
    (dict(control=None), "control=None", "every finding needs a control"),
    (dict(value=float("nan")), "value=nan", "finite real number"),
    (dict(value=float("inf")), "value=inf", "finite real number"),
    (dict(value=torch.tensor(float("nan"))), "value=tensor(nan)", "finite real number"),
    (dict(value=True), "value=True", "not a bool"),
    (dict(value=np.bool_(True)), "value=np.True_", "not a bool"),
    (dict(value="0.5"), "value='0.5'", "finite real number"),
    (dict(value=torch.ones(3)), "value=tensor([1., 1., 1.])", "finite real number"),
    (dict(name=""), "name=''", "non-empty string"),
    (dict(name=None), "name=None", "non-empty string"),
    (dict(control_value=None), "control_value=None", "control='seeds'"),
    (dict(control_value=float("nan")), "control_value=nan", "finite real number"),
    (dict(control="none: untrained baseline is meaningless"), "control_value=0.5", "None when control="),
    (dict(ci=(0.9, 0.1)), "ci=(0.9, 0.1)", "low <= high"),
    (dict(ci=(0.1, float("nan"))), "ci=(0.1, nan)", "pair of finite numbers"),
    (dict(ci=0.1), "ci=0.1", "(low, high) pair"),
    (dict(ci=(0.1, 0.2, 0.3)), "ci=(0.1, 0.2, 0.3)", "(low, high) pair"),
    (dict(verdict="true"), "verdict='true'", "'supported', 'not supported', 'inconclusive'"),
    (dict(unit=""), "unit=''", "None or a non-empty string"),
])
def test_bad_input_names_the_value_and_what_is_allowed(override, bad, allowed):
    findings.start("01_build_transformer", "smoke")
    args = {**GOOD, **override}
    with pytest.raises(ValueError) as err:
        findings.record(args.pop("name"), args.pop("value"), **args)
    assert bad in str(err.value) and allowed in str(err.value) and "is not allowed" in str(err.value)
    assert findings.load("01_build_transformer", "smoke").empty  # nothing half-recorded


@pytest.mark.parametrize("notebook, preset", [("", "smoke"), ("../x", "smoke"), ("01_x", "tiny")])
def test_start_rejects_bad_names(notebook, preset):
    with pytest.raises(ValueError, match="is not allowed"):
        findings.start(notebook, preset)


@pytest.mark.parametrize("value, control, ci, kwargs, expected", [
    (0.9, 0.1, None, {}, "supported"),
    (0.9, 0.1, (0.8, 1.0), {}, "supported"),
    (0.9, 0.1, (0.0, 1.0), {}, "inconclusive"),            # CI straddles the control
    (0.05, 0.1, None, {}, "not supported"),
    (0.05, 0.1, (0.0, 0.09), {}, "not supported"),         # CI entirely on the wrong side
    (0.15, 0.1, None, dict(margin=0.1), "inconclusive"),   # better, but not by the margin
    (2.0, 3.0, (1.5, 2.5), dict(higher_is_better=False), "supported"),  # a loss: lower is better
    (4.0, 3.0, (3.5, 4.5), dict(higher_is_better=False), "not supported"),
])
def test_verdict_from(value, control, ci, kwargs, expected):
    assert findings.verdict_from(value, control, ci, **kwargs) == expected


def test_verdict_from_rejects_bad_numbers():
    with pytest.raises(ValueError, match="value=nan"):
        findings.verdict_from(float("nan"), 0.0)
    with pytest.raises(ValueError, match="margin=-1"):
        findings.verdict_from(1.0, 0.0, margin=-1)


def test_bootstrap_ci_is_deterministic_and_covers_the_mean():
    x = np.random.default_rng(1).normal(2.0, 1.0, size=200)
    low, high = stats.bootstrap_ci(x, seed=3)
    assert (low, high) == stats.bootstrap_ci(x, seed=3)
    assert (low, high) != stats.bootstrap_ci(x, seed=4)
    assert low < x.mean() < high and high - low < 0.5
    assert stats.bootstrap_ci(torch.tensor(x), seed=3) == (low, high)


def test_bootstrap_ci_rejects_bad_samples():
    with pytest.raises(ValueError, match="at least 2 finite numbers"):
        stats.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="alpha=1.5"):
        stats.bootstrap_ci([1.0, 2.0], alpha=1.5)


def test_check_ledgers_reports_missing_empty_and_ok():
    findings.start("01_build_transformer", "smoke")
    _record_two()
    findings.start("02_compression_infovae", "smoke")  # started, recorded nothing
    problems = findings.check_ledgers(["01_build_transformer", "notebooks/02_compression_infovae.py",
                                       "03_neuron_impairment"], "smoke")
    assert len(problems) == 2
    assert "02_compression_infovae: recorded no finding" in problems[0]
    assert "03_neuron_impairment: no findings ledger" in problems[1]
    assert findings.check_ledgers(["01_build_transformer"], "smoke") == []
    assert "no findings ledger" in findings.check_ledgers(["01_build_transformer"], "cpu")[0]


def test_check_ledgers_reports_a_finding_without_control(ledger_dir):
    ledger = findings.start("01_build_transformer", "smoke")
    _record_two()
    ledger.records[0]["control"] = None  # as if hand-edited: record() itself never allows this
    ledger.save()
    (problem,) = findings.check_ledgers(["01_build_transformer"], "smoke")
    assert "'induction score' has control=None" in problem


def test_load_all_on_empty_dir():
    df = findings.load_all()
    assert df.empty and list(df.columns) == list(findings.COLUMNS)
    assert findings.summary(df) == {"supported": 0, "not supported": 0, "inconclusive": 0, "no verdict": 0}
    assert findings.table(df).empty


def test_table_summary_and_conclusion_agree_with_records():
    findings.start("01_build_transformer", "smoke")
    _record_two()
    df = findings.load("01_build_transformer", "smoke")
    shown = findings.table(df)
    assert list(shown["value [95% CI]"]) == ["0.420 [0.400, 0.450] score", "3.10"]
    assert list(shown["decision rule"]) == [
        "supported if above the control with the 95% CI clear of the control; not supported if the CI does not "
        "reach past the control", ""]
    assert list(shown["control"]) == ["init = 0.0100", "none: no baseline exists for a training curve"]
    assert list(shown["verdict"]) == ["supported", "no verdict"]
    assert findings.summary(df) == {"supported": 1, "not supported": 0, "inconclusive": 0, "no verdict": 1}
    text = findings.conclusion()
    assert text.sentences()[0] == ("**induction score**: 0.420 score (95% CI 0.400–0.450) vs init control "
                                   "0.0100 score → supported (see fig-induction)")
    assert "no control (no baseline exists for a training curve)" in text.sentences()[1]
    assert "<td>induction score</td>" in text._repr_html_() and "<table" in text._repr_html_()
    assert "<small>supported if above the control" in text._repr_html_()
    assert "| induction score |" in text._repr_markdown_()


def test_conclusion_of_an_empty_ledger_says_so():
    findings.start("01_build_transformer", "smoke")
    assert "No findings recorded" in str(findings.conclusion())


@pytest.mark.parametrize("x, text", [(0.0, "0"), (7.0, "7"), (3.14159, "3.14"), (0.000123, "0.000123"),
                                     (12345.6, "12,346"), (1.5e-5, "1.5e-05"), (-0.5, "-0.500")])
def test_fmt(x, text):
    assert findings.fmt(x) == text


@pytest.mark.parametrize("diff, noise, ci, better, expected", [
    (-0.00098, 0.00195, None, False, "inconclusive"),  # the review's case: half the seed range, right sign
    (-0.00098, 0.00195, None, True, "not supported"),
    (-0.004, 0.00195, None, False, "supported"),
    (-0.004, 0.00195, (-0.006, 0.001), False, "inconclusive"),  # beyond the noise but the CI reaches 0
    (0.5, 0.1, (0.3, 0.7), True, "supported"),
    (0.05, 0.1, (0.01, 0.09), True, "inconclusive"),
    (0.0, 0.1, None, True, "not supported"),
])
def test_verdict_exceeds_noise(diff, noise, ci, better, expected):
    assert findings.verdict_exceeds_noise(diff, noise, ci, higher_is_better=better) == expected


def test_a_difference_below_its_noise_is_not_read_as_beating_a_baseline():
    # what the old code did: the noise scale taken as a baseline to beat, lower being better, reads as "supported"
    assert findings.verdict_from(-0.00098, 0.00195, higher_is_better=False) == "supported"
    assert findings.verdict_exceeds_noise(-0.00098, 0.00195, higher_is_better=False) == "inconclusive"


def test_noise_records_are_stored_and_shown_as_noise():
    findings.start("05_sparse_layers", "smoke")
    findings.record("boosting: dead units, boosted minus unboosted", -0.00098, unit="fraction", control="seeds",
                    control_value=0.00195, comparison="noise",
                    verdict=findings.verdict_exceeds_noise(-0.00098, 0.00195, higher_is_better=False))
    df = findings.load("05_sparse_layers", "smoke")
    assert df.comparison.tolist() == ["noise"] and df.verdict.tolist() == ["inconclusive"]
    assert findings.table(df).control.tolist() == ["seeds noise ± 0.00195"]
    assert "vs seeds noise ± 0.00195 fraction → inconclusive" in findings.conclusion().sentences()[0]
    with pytest.raises(ValueError, match="comparison='noisy'"):
        findings.make_record("x", 1.0, control="seeds", control_value=0.1, comparison="noisy")
    with pytest.raises(ValueError, match="noise scale >= 0"):
        findings.make_record("x", 1.0, control="seeds", control_value=-0.1, comparison="noise")


@pytest.mark.parametrize("value, p, ci, expected", [
    (0.3, 0.01, (0.1, 0.5), "supported"),
    (0.3, 0.2, (0.1, 0.5), "not supported"),  # does not beat the null at the pre-registered level
    (0.3, 0.04, (-0.1, 0.5), "inconclusive"),  # beats the null but its interval reaches 0
    (-0.3, 0.01, None, "inconclusive"),  # wrong side of 0
])
def test_verdict_from_p(value, p, ci, expected):
    assert findings.verdict_from_p(value, p, ci) == expected


def test_verdict_from_p_without_power_is_inconclusive_not_negative():
    # an exact test over 7 alternatives (8 one-head sets): p cannot go below 1/8, so p = 1/8 is the best possible
    # outcome; reading it as "not supported" would call a test that could never reject a negative result
    v = findings.verdict_from_p(1.0, 1 / 8, p_min=1 / 8)
    assert v == "inconclusive" and "smallest p the test can give (0.125) exceeds 0.05" in v.rule
    assert findings.verdict_from_p(1.3, 1 / 56, p_min=1 / 56) == "supported"  # 55 alternatives: the test has power
    assert findings.verdict_from_p(0.1, 0.5, p_min=1 / 56) == "not supported"
    with pytest.raises(ValueError, match="p_min=0.5"):  # a p below the smallest attainable one is a bug upstream
        findings.verdict_from_p(1.0, 0.1, p_min=0.5)


def test_p_values_are_stored_validated_and_shown():
    findings.start("03_neuron_impairment", "smoke")
    findings.record("B: gap", 0.3, unit="nats", control="random", control_value=0.1, p=1 / 25,
                    verdict=findings.verdict_from_p(0.3, 1 / 25))
    df = findings.load("03_neuron_impairment", "smoke")
    assert df.p.tolist() == [pytest.approx(0.04)]
    assert findings.table(df).control.tolist() == ["random = 0.100, p = 0.0400"]
    assert "vs random control 0.100 nats (p = 0.0400) → supported" in findings.conclusion().sentences()[0]
    with pytest.raises(ValueError, match="p=0"):
        findings.make_record("x", 1.0, control="random", control_value=0.1, p=0.0)


def test_each_verdict_function_states_its_rule_and_record_keeps_it():
    v = findings.verdict_from(0.3, 0.5, (0.2, 0.4), higher_is_better=False, margin=0.05)
    assert v == "supported" and isinstance(v, str)
    assert v.rule.startswith("supported if below the control by more than 0.05 with the 95% CI clear")
    p = findings.verdict_from_p(0.2, 0.03, alpha=0.01)
    assert p == "not supported" and "p ≤ 0.01" in p.rule and "p > 0.01" in p.rule
    n = findings.verdict_exceeds_noise(0.5, 0.1, (0.3, 0.7))
    assert n == "supported" and n.rule.startswith("supported if the difference is > 0 and beyond the noise")
    findings.start("01_build_transformer", "smoke")
    findings.record("gain", 0.3, control="init", control_value=0.5, verdict=v)
    findings.record("checked", 1.0, control="none: exact check", verdict="supported", rule="every topic unchanged")
    df = findings.load("01_build_transformer", "smoke")
    assert df.rule.tolist() == [v.rule, "every topic unchanged"] and df.verdict.tolist() == ["supported"] * 2


@pytest.mark.parametrize("kw, message", [
    (dict(verdict="supported"), "rule=None"),  # a typed-in verdict without the rule that gave it
    (dict(rule="p < 0.05"), "verdict=None"),  # a rule without a verdict
])
def test_verdict_and_rule_come_together(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        findings.make_record("x", 1.0, control="init", control_value=0.0, **kw)


def test_headline_and_provenance_are_kept_with_the_ledger():
    findings.start("01_build_transformer", "smoke")
    prov = findings.provenance("01_build_transformer", "smoke")
    assert set(prov) == {"commit", "started"} and prov["started"].endswith("UTC")
    assert findings.headline("01_build_transformer", "smoke") is None
    _record_two()
    findings.set_headline("The induction score is **0.42**, against *0.01* at `init`.")
    assert findings.headline("01_build_transformer", "smoke").startswith("The induction score")
    out = findings.conclusion()._repr_html_()
    assert out.startswith("<p>The induction score is <strong>0.42</strong>, against <em>0.01</em> at <code>init"
                          "</code>.</p><table")
    assert findings.conclusion()._repr_markdown_().startswith("The induction score")
    findings.start("01_build_transformer", "smoke")  # a rerun starts without the old headline
    assert findings.headline("01_build_transformer", "smoke") is None
    with pytest.raises(ValueError, match="headline"):
        findings.set_headline("  ")


@pytest.mark.parametrize("figure, anchor", [("Fig. 3", "fig-3"), ("Fig. 3b", "fig-3b"), ("Fig. 4-5", "fig-4"),
                                            ("Figs. 2", None), ("", None), (None, None)])
def test_figure_anchor(figure, anchor):
    assert findings.figure_anchor(figure) == anchor


def test_table_html_links_each_figure_to_its_anchor_and_escapes():
    findings.start("01_build_transformer", "smoke")
    findings.record("a <b> claim", 1.0, control="init", control_value=0.0, figure="Fig. 2",
                    verdict=findings.verdict_from(1.0, 0.0))
    findings.record("no figure", 1.0, control="init", control_value=0.0)
    out = findings.table_html(findings.load("01_build_transformer", "smoke"), page="01_build_transformer.html")
    assert '<a href="01_build_transformer.html#fig-2">Fig. 2</a>' in out and "a &lt;b&gt; claim" in out
    assert out.count("<tr>") == 3 and 'class="verdict no-verdict"' in out
