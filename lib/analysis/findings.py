"""Findings ledger: each headline claim recorded as data next to its control, one JSON file per notebook and preset."""

from __future__ import annotations

import datetime as dt
import html
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from lib.core import artifacts
from lib.core.config import PRESET_NAMES

KIND = "findings"  # artifacts.root() / KIND / f"{notebook}-{preset}.json"
# A run on a model given by path (a notebook's `model_path`) keeps its ledger apart, under MODELS / <model>, where
# load_all (and so the book's findings page, built from our own models' runs) does not look.
MODELS = "models"
CONTROL_KINDS = ("init", "seeds", "random")
NONE_PREFIX = "none: "
VERDICTS = ("supported", "not supported", "inconclusive")
# How a finding's value meets its control: "baseline" = the value beats the control's value (e.g. trained vs init);
# "noise" = the value is a difference and the control's value is its noise scale (e.g. the spread over seeds): the
# claim holds only if the difference exceeds the noise in the claimed direction (`verdict_exceeds_noise`).
COMPARISONS = ("baseline", "noise")
NO_VERDICT = "no verdict"
COLUMNS = ("notebook", "preset", "order", "name", "value", "unit", "ci_low", "ci_high",
           "control", "control_value", "comparison", "p", "verdict", "rule", "figure")
ALLOWED_CONTROLS = "one of 'init', 'seeds', 'random', or 'none: <why>' with a non-empty reason"
_FINITE = "a finite real number (int, float, or a numpy/torch scalar); not a bool, NaN or inf"

_current: "Ledger | None" = None  # the running notebook's ledger, set by start()


class Verdict(str):
    """A verdict ('supported', ...) that also carries its decision rule, the test that gave it, in words (`rule`).
    The verdict_* functions return one; `record` stores the rule beside the verdict."""

    rule: str

    def __new__(cls, verdict: str, rule: str) -> "Verdict":
        if verdict not in VERDICTS:
            _fail("verdict", verdict, f"one of {VERDICTS}")
        obj = super().__new__(cls, verdict)
        obj.rule = rule
        return obj


# ---------------------------------------------------------------- validation


def _fail(label: str, value: Any, allowed: str, finding: str | None = None) -> None:
    """Raise ValueError naming the finding, the bad value and what is allowed."""
    where = f"finding {finding!r}: " if finding else ""
    raise ValueError(f"{where}{label}={value!r} is not allowed: {allowed}")


def _finite(label: str, x: Any, finding: str | None = None) -> float:
    """x as a float if it is a finite real number (numpy/torch scalars converted), else ValueError."""
    y = x
    if hasattr(y, "item") and not isinstance(y, numbers.Number):  # torch tensor, numpy 0-d array, np.bool_
        try:
            y = y.item()
        except (ValueError, RuntimeError):
            _fail(label, x, _FINITE, finding)
    if isinstance(y, bool) or not isinstance(y, numbers.Real) or not math.isfinite(y):
        _fail(label, x, _FINITE, finding)
    return float(y)


def _ci(ci: Any, finding: str | None = None) -> tuple[float | None, float | None]:
    """(low, high) floats from None or a pair of finite numbers with low <= high, else ValueError."""
    if ci is None:
        return None, None
    allowed = "None or a (low, high) pair of finite numbers with low <= high"
    try:
        is_pair = not isinstance(ci, (str, bytes)) and len(ci) == 2
    except TypeError:
        is_pair = False
    if not is_pair:
        _fail("ci", ci, allowed, finding)
    try:
        low, high = (_finite("ci", v) for v in ci)
    except ValueError:
        _fail("ci", ci, allowed, finding)
    if low > high:
        _fail("ci", ci, allowed, finding)
    return low, high


def is_valid_control(control: Any) -> bool:
    """True for 'init', 'seeds', 'random', or 'none: <why>' with a non-empty reason."""
    if not isinstance(control, str):
        return False
    return control in CONTROL_KINDS or (control.startswith(NONE_PREFIX) and bool(control[len(NONE_PREFIX):].strip()))


def _control(control: Any, control_value: Any, finding: str) -> tuple[str, float | None]:
    """Validated (control, control_value): a measured control needs a value, 'none: <why>' takes none."""
    if control is None:
        raise ValueError(f"finding {finding!r}: control=None is not allowed: every finding needs a control; "
                         f"use {ALLOWED_CONTROLS}")
    if not is_valid_control(control):
        _fail("control", control, ALLOWED_CONTROLS, finding)
    if control.startswith(NONE_PREFIX):
        if control_value is not None:
            _fail("control_value", control_value, f"None when control={control!r} (there is no control to measure)",
                  finding)
        return control, None
    if control_value is None:
        _fail("control_value", None, f"a finite number: the metric measured under control={control!r}", finding)
    return control, _finite("control_value", control_value, finding)


def _optional_text(label: str, x: Any, finding: str) -> str | None:
    """x if None or a non-empty string, else ValueError."""
    if x is not None and not (isinstance(x, str) and x.strip()):
        _fail(label, x, "None or a non-empty string", finding)
    return x


def _file_name(label: str, x: Any) -> str:
    """x if it is a non-empty name usable in a file name, else ValueError."""
    if not isinstance(x, str) or not x or "/" in x or "\\" in x or x.startswith("."):
        _fail(label, x, "a non-empty name without '/' or a leading '.' (e.g. '01_build_transformer')")
    return x


def make_record(name: str, value: Any, *, unit: str | None = None, ci: Any = None, control: str | None = None,
                control_value: Any = None, verdict: str | None = None, figure: str | None = None,
                comparison: str = "baseline", p: Any = None, rule: str | None = None) -> dict:
    """One validated finding as a plain dict (no notebook, preset or order yet). comparison="noise": the value is a
    difference and control_value its noise scale (>= 0). p: the p-value of the comparison with the control, when one
    was computed (e.g. a permutation test against random clusters). rule: the decision rule that gave the verdict,
    in words; a `Verdict` from verdict_from / verdict_from_p / verdict_exceeds_noise brings its own, a verdict typed
    as a plain string must come with one."""
    if not isinstance(name, str) or not name.strip():
        _fail("name", name, "a non-empty string naming the finding")
    value = _finite("value", value, name)
    ci_low, ci_high = _ci(ci, name)
    control, control_value = _control(control, control_value, name)
    if verdict is not None and verdict not in VERDICTS:
        _fail("verdict", verdict, f"None or one of {VERDICTS} (compute it, e.g. with verdict_from)", name)
    rule = _optional_text("rule", rule if rule is not None else getattr(verdict, "rule", None), name)
    if verdict is not None and rule is None:
        _fail("rule", rule, "the decision rule behind the verdict, in words (verdict_from and its siblings give one)",
              name)
    if verdict is None and rule is not None:
        _fail("verdict", verdict, "a verdict for the decision rule given", name)
    if comparison not in COMPARISONS:
        _fail("comparison", comparison, f"one of {COMPARISONS}", name)
    if comparison == "noise" and (control_value is None or control_value < 0):
        _fail("control_value", control_value, "a noise scale >= 0 when comparison='noise'", name)
    if p is not None:
        p = _finite("p", p, name)
        if not 0.0 < p <= 1.0:
            _fail("p", p, "None or a p-value in (0, 1]", name)
    return dict(name=name, value=value, unit=_optional_text("unit", unit, name), ci_low=ci_low, ci_high=ci_high,
                control=control, control_value=control_value, comparison=comparison, p=p,
                verdict=None if verdict is None else str(verdict), rule=rule, figure=_optional_text("figure", figure, name))


# ---------------------------------------------------------------- the ledger


def ledger_path(notebook: str, preset: str, model: str | None = None) -> Path:
    """`root/findings/<notebook>-<preset>.json`, or for a run on another `model`
    `root/findings/models/<model>/<notebook>-<preset>.json` (not created)."""
    folder = artifacts.root() / KIND if model is None else artifacts.root() / KIND / MODELS / model
    return folder / f"{notebook}-{preset}.json"


def _notebook_name(notebook: str | Path) -> str:
    """A notebook's name from its name or path ('notebooks/01_x.py' -> '01_x')."""
    return Path(notebook).stem if isinstance(notebook, Path) or "/" in str(notebook) else notebook


@dataclass
class Ledger:
    """The findings of one notebook run (notebook, preset; model: None for our own model, else the name of the
    model the run was given), in order, saved atomically after every change."""

    notebook: str
    preset: str
    records: list[dict] = field(default_factory=list)
    model: str | None = None
    headline: str | None = None  # the report's answer to its question in 2-3 sentences, rendered from its values
    provenance: dict = field(default_factory=dict)  # commit and time the run started (see `start`)

    @property
    def path(self) -> Path:
        """Where this ledger lives on disk."""
        return ledger_path(self.notebook, self.preset, self.model)

    @classmethod
    def load(cls, notebook: str, preset: str, model: str | None = None) -> "Ledger":
        """The ledger on disk for (notebook, preset, model), or an empty one if there is none."""
        path = ledger_path(notebook, preset, model)
        obj = artifacts.read_json(path) if path.exists() else {}
        return cls(notebook, preset, obj.get("findings", []), model, obj.get("headline"), obj.get("provenance", {}))

    def add(self, rec: dict) -> dict:
        """Insert a record (replacing one of the same name, in its place), save, and return it."""
        names = [r["name"] for r in self.records]
        if rec["name"] in names:
            i = names.index(rec["name"])
            rec = dict(rec, notebook=self.notebook, preset=self.preset, order=self.records[i]["order"])
            self.records[i] = rec
        else:
            order = max((r["order"] for r in self.records), default=-1) + 1
            rec = dict(rec, notebook=self.notebook, preset=self.preset, order=order)
            self.records.append(rec)
        self.save()
        return dict(rec)

    def save(self) -> Path:
        """Atomically write the ledger as JSON."""
        model = {} if self.model is None else {"model": self.model}
        return artifacts.write_json(self.path, {"notebook": self.notebook, "preset": self.preset, **model,
                                                "headline": self.headline, "provenance": self.provenance,
                                                "findings": self.records})


def start(notebook: str, preset: str, model: str | None = None) -> Ledger:
    """Make (notebook, preset) the current ledger and replace any earlier one on disk with an empty ledger; with
    `model` (the name of a model the run was given instead of ours), the ledger kept apart for that model."""
    global _current
    if preset not in PRESET_NAMES:
        _fail("preset", preset, f"one of {PRESET_NAMES}")
    _current = Ledger(_file_name("notebook", notebook), preset,
                      model=None if model is None else _file_name("model", model),
                      provenance={"commit": artifacts.git_commit(),
                                  "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
    _current.save()
    return _current


def current() -> Ledger:
    """The ledger set by start(), else RuntimeError."""
    if _current is None:
        raise RuntimeError("no current findings ledger: call lib.analysis.findings.start(notebook, preset) after the "
                           "parameters cell")
    return _current


def record(name: str, value: Any, *, unit: str | None = None, ci: Any = None, control: str | None = None,
           control_value: Any = None, verdict: str | None = None, figure: str | None = None,
           comparison: str = "baseline", p: Any = None, notebook: str | None = None, rule: str | None = None) -> dict:
    """Append one finding (ci: a 95% interval) to the current ledger, or to `notebook`'s ledger for its preset."""
    rec = make_record(name, value, unit=unit, ci=ci, control=control, control_value=control_value,
                      verdict=verdict, figure=figure, comparison=comparison, p=p, rule=rule)
    ledger = current()
    if notebook is not None and notebook != ledger.notebook:
        ledger = Ledger.load(_file_name("notebook", notebook), ledger.preset, ledger.model)
    return ledger.add(rec)


def set_headline(text: str) -> str:
    """The report's answer to its question, 2-3 sentences of Markdown built from its computed values (never typed-in
    numbers), saved with the current ledger; `conclusion()` and the findings page show it above the table."""
    if not isinstance(text, str) or not text.strip():
        _fail("headline", text, "a non-empty Markdown string")
    ledger = current()
    ledger.headline = text.strip()
    ledger.save()
    return ledger.headline


def headline(notebook: str, preset: str, model: str | None = None) -> str | None:
    """The headline saved by `notebook`'s run on `preset` (None if it set none)."""
    return Ledger.load(_file_name("notebook", _notebook_name(notebook)), preset, model).headline


def provenance(notebook: str, preset: str, model: str | None = None) -> dict:
    """{'commit': ..., 'started': ...} of the run that wrote `notebook`'s ledger ({} for a ledger without it)."""
    return Ledger.load(_file_name("notebook", _notebook_name(notebook)), preset, model).provenance


# ---------------------------------------------------------------- loading


def _frame(records: Sequence[dict]) -> pd.DataFrame:
    """Records as a DataFrame with exactly COLUMNS, sorted by notebook, preset, order."""
    df = pd.DataFrame(list(records), columns=list(COLUMNS))
    for col in ("value", "ci_low", "ci_high", "control_value", "p"):
        df[col] = df[col].astype(float)
    df["order"] = df["order"].astype(int)
    df["comparison"] = df["comparison"].fillna("baseline")  # ledgers written before the field existed
    df["rule"] = df["rule"].astype(object).where(df["rule"].notna(), None)
    return df.sort_values(["notebook", "preset", "order"], kind="stable").reset_index(drop=True)


def load(notebook: str, preset: str, model: str | None = None) -> pd.DataFrame:
    """One notebook's findings for a preset (empty with COLUMNS if it has no ledger); with `model`, those of its run
    on that model (see `start`)."""
    return _frame(Ledger.load(_file_name("notebook", _notebook_name(notebook)), preset, model).records)


def load_all(preset: str | None = None) -> pd.DataFrame:
    """Every notebook's findings under root/findings (one preset, or all), in notebook order; not the runs on
    models given by path (root/findings/models/)."""
    records = []
    for path in sorted((artifacts.root() / KIND).glob("*.json")):
        try:
            records += artifacts.read_json(path)["findings"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"findings ledger {path} is not a ledger written by lib.analysis.findings ({e})") from e
    return _frame([r for r in records if preset is None or r.get("preset") == preset])


def check_ledgers(notebooks: Sequence[str | Path], preset: str) -> list[str]:
    """Problems with the notebooks' ledgers (missing, no finding, a finding without a control); [] = OK."""
    problems = []
    for nb in map(_notebook_name, notebooks):
        path = ledger_path(nb, preset)
        if not path.exists():
            problems.append(f"{nb}: no findings ledger for preset {preset!r} at {path} "
                            "(call lib.analysis.findings.start, then record)")
            continue
        records = Ledger.load(nb, preset).records
        if not records:
            problems.append(f"{nb}: recorded no finding for preset {preset!r} (call lib.analysis.findings.record)")
        for rec in records:
            if not is_valid_control(rec.get("control")):
                problems.append(f"{nb}: finding {rec.get('name')!r} has control={rec.get('control')!r}; "
                                f"needs {ALLOWED_CONTROLS}")
    return problems


# ---------------------------------------------------------------- numbers to verdicts


def verdict_from(value: Any, control_value: Any, ci: Any = None, *, higher_is_better: bool = True,
                 margin: float = 0.0) -> str:
    """'supported' if value beats control by > margin with the CI excluding it; 'not supported' if the CI (without
    one, the value) is not past the control; else 'inconclusive'."""
    v, c = _finite("value", value), _finite("control_value", control_value)
    low, high = _ci(ci)
    if _finite("margin", margin) < 0:
        _fail("margin", margin, "a finite number >= 0")
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * (v - c)
    side = "above" if higher_is_better else "below"
    past = f"{side} the control" + (f" by more than {margin:g}" if margin > 0 else "")
    rule = (f"supported if {past}" + (" with the 95% CI clear of the control" if ci is not None else "")
            + "; not supported if " + ("the CI does not reach past the control" if ci is not None else f"not {side} it"))
    if ci is None:
        return Verdict("supported" if gain > margin else ("not supported" if gain <= 0 else "inconclusive"), rule)
    worst, best = sorted((sign * (low - c), sign * (high - c)))  # gain at each end of the CI
    if gain > margin and worst > 0:
        return Verdict("supported", rule)
    return Verdict("not supported" if best <= 0 else "inconclusive", rule)


def verdict_exceeds_noise(diff: Any, noise: Any, ci: Any = None, *, higher_is_better: bool = True) -> str:
    """Verdict on a difference against its noise scale (e.g. the range or 2 sd over seeds), for comparison="noise":
    'supported' if it exceeds the noise in the claimed direction (and its CI, if any, excludes 0 there); 'not
    supported' if it is not in the claimed direction at all; else 'inconclusive' (the right sign, within the noise).
    A baseline test (`verdict_from`) would read a difference below a noise scale as beating it when lower is
    better; this one does not."""
    d, n = _finite("diff", diff), _finite("noise", noise)
    if n < 0:
        _fail("noise", noise, "a noise scale >= 0")
    low, high = _ci(ci)
    sign = 1.0 if higher_is_better else -1.0
    direction = "> 0" if higher_is_better else "< 0"
    rule = (f"supported if the difference is {direction} and beyond the noise (|difference| > noise)"
            + (", with the 95% CI excluding 0" if ci is not None else "") + f"; not supported if it is not {direction}")
    if sign * d <= 0:
        return Verdict("not supported", rule)
    clear = ci is None or min(sign * low, sign * high) > 0
    return Verdict("supported" if sign * d > n and clear else "inconclusive", rule)


# ---------------------------------------------------------------- display


def fmt(x: Any, digits: int = 3) -> str:
    """x with `digits` significant figures (whole numbers as integers; scientific only below 1e-3 or from 1e6)."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e6:
        return f"{int(x):,}"
    if 1e-3 <= abs(x) < 1e6:
        return f"{x:,.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
    return f"{x:.{digits}g}"


def _missing(x: Any) -> bool:
    """True for None or NaN (pandas may hold either)."""
    return x is None or (not isinstance(x, str) and bool(pd.isna(x)))


def verdict_from_p(value: Any, p: Any, ci: Any = None, *, alpha: float = 0.05, higher_is_better: bool = True,
                   p_min: Any = None) -> str:
    """Verdict of a permutation (or other) test against a null, at a level alpha fixed before looking: 'supported' if
    p <= alpha, the value is on the claimed side of 0 and its CI (if any) excludes 0; 'not supported' if p > alpha;
    else 'inconclusive' (beats the null, but its own interval reaches 0). p_min: the smallest p the test can give
    (1 / (1 + n) for an exact test over n alternatives); when it exceeds alpha the test cannot reject whatever the
    data, so the verdict is 'inconclusive', never 'not supported'."""
    v, pv = _finite("value", value), _finite("p", p)
    if not 0.0 < pv <= 1.0:
        _fail("p", p, "a p-value in (0, 1]")
    if not 0.0 < _finite("alpha", alpha) < 1.0:
        _fail("alpha", alpha, "a level in (0, 1)")
    direction = "> 0" if higher_is_better else "< 0"
    rule = (f"supported if p ≤ {alpha:g} (fixed before looking) and the value is {direction}"
            + (" with its 95% CI excluding 0" if ci is not None else "") + f"; not supported if p > {alpha:g}")
    if p_min is not None:
        pm = _finite("p_min", p_min)
        if not 0.0 < pm <= 1.0:
            _fail("p_min", p_min, "the smallest attainable p-value, in (0, 1]")
        if pm > pv + 1e-12:
            _fail("p_min", p_min, f"at most the test's p = {pv:g} (it is the smallest p the test can give)")
        if pm > alpha:
            return Verdict("inconclusive", rule + f"; inconclusive whatever the data when the smallest p the test can "
                           f"give ({pm:.3g}) exceeds {alpha:g}")
    if pv > alpha:
        return Verdict("not supported", rule)
    sign = 1.0 if higher_is_better else -1.0
    low, high = _ci(ci)
    clear = sign * v > 0 and (ci is None or min(sign * low, sign * high) > 0)
    return Verdict("supported" if clear else "inconclusive", rule)


def _is_noise(rec: dict) -> bool:
    return rec.get("comparison") == "noise"


def _control_text(rec: dict) -> str:
    """'seeds = 0.12', 'seeds noise ± 0.12', or the 'none: <why>' string itself."""
    if _missing(rec["control_value"]):
        return rec["control"]
    text = (f"{rec['control']} noise ± {fmt(rec['control_value'])}" if _is_noise(rec)
            else f"{rec['control']} = {fmt(rec['control_value'])}")
    return text + _p_text(rec, ", ")


def _p_text(rec: dict, sep: str) -> str:
    return "" if _missing(rec.get("p")) else f"{sep}p = {fmt(rec['p'])}"


TABLE_COLUMNS = ("finding", "value [95% CI]", "control", "verdict", "decision rule", "figure")


def _value_text(rec: dict) -> str:
    unit = "" if _missing(rec["unit"]) else f" {rec['unit']}"
    ci = "" if _missing(rec["ci_low"]) else f" [{fmt(rec['ci_low'])}, {fmt(rec['ci_high'])}]"
    return fmt(rec["value"]) + ci + unit


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Display-ready findings: one row per finding with its value [95% CI] and unit, control = its value (and p),
    verdict, the decision rule that gave the verdict, and the figure behind it."""
    rows = [{"finding": rec["name"], "value [95% CI]": _value_text(rec), "control": _control_text(rec),
             "verdict": NO_VERDICT if _missing(rec["verdict"]) else rec["verdict"],
             "decision rule": "" if _missing(rec.get("rule")) else rec["rule"],
             "figure": "" if _missing(rec["figure"]) else rec["figure"]} for rec in df.to_dict("records")]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def figure_anchor(figure: str) -> str | None:
    """The HTML id the book gives a figure titled 'Fig. 3b: ...' ('fig-3b'), from a ledger's figure field ('Fig. 3b',
    'Fig. 4-5' -> the first one); None if the field names no figure number."""
    m = re.search(r"Fig\.?\s*(\d+[a-z]?)", figure or "")
    return None if m is None else f"fig-{m.group(1)}"


VERDICT_CLASS = {"supported": "supported", "not supported": "not-supported", "inconclusive": "inconclusive",
                 NO_VERDICT: "no-verdict"}


def table_html(df: pd.DataFrame, page: str | None = None) -> str:
    """The findings as an HTML table for the book: the verdict with its decision rule under it in small type, and
    with `page` (the report's HTML page, e.g. '03_neuron_impairment.html') each figure linked to its anchor there."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ("finding", "value [95% CI]", "control", "verdict", "figure"))
    rows = []
    for rec, shown in zip(df.to_dict("records"), table(df).to_dict("records")):
        verdict = shown["verdict"]
        rule = f'<br><small>{esc(shown["decision rule"])}</small>' if shown["decision rule"] else ""
        fig = esc(shown["figure"])
        anchor = figure_anchor(shown["figure"])
        if page is not None and fig:
            fig = f'<a href="{esc(page)}{"#" + anchor if anchor else ""}">{fig}</a>'
        cells = [esc(shown["finding"]), esc(shown["value [95% CI]"]), esc(shown["control"]),
                 f'<strong class="verdict {VERDICT_CLASS[verdict]}">{esc(verdict)}</strong>{rule}', fig]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<table class="findings"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def summary(df: pd.DataFrame) -> dict[str, int]:
    """Number of findings per verdict, 'no verdict' included (every key present)."""
    verdicts = [NO_VERDICT if _missing(v) else v for v in df["verdict"]]
    return {k: verdicts.count(k) for k in (*VERDICTS, NO_VERDICT)}


def sentence(rec: dict) -> str:
    """'**name**: value unit (95% CI lo–hi) vs control → verdict (figure)' as Markdown."""
    unit = "" if _missing(rec["unit"]) else f" {rec['unit']}"
    ci = "" if _missing(rec["ci_low"]) else f" (95% CI {fmt(rec['ci_low'])}–{fmt(rec['ci_high'])})"
    control = (f"no control ({rec['control'][len(NONE_PREFIX):]})" if _missing(rec["control_value"])
               else f"{rec['control']} noise ± {fmt(rec['control_value'])}{unit}" if _is_noise(rec)
               else f"{rec['control']} control {fmt(rec['control_value'])}{unit}")
    verdict = NO_VERDICT if _missing(rec["verdict"]) else rec["verdict"]
    figure = "" if _missing(rec["figure"]) else f" (see {rec['figure']})"
    return f"**{rec['name']}**: {fmt(rec['value'])}{unit}{ci} vs {control}{_p_text(rec, ' (')}" + \
        (")" if not _missing(rec.get("p")) else "") + f" → {verdict}{figure}"


@dataclass(repr=False)
class Conclusion:
    """A notebook's findings: its headline (the answer to its question, set by `set_headline`) above one table of
    every finding with its control, verdict and decision rule (HTML and Markdown reprs; text: one sentence each)."""

    df: pd.DataFrame
    title: str
    headline: str | None = None

    def sentences(self) -> list[str]:
        """One Markdown sentence per finding."""
        return [sentence(rec) for rec in self.df.to_dict("records")]

    def _repr_markdown_(self) -> str:
        if self.df.empty:
            return f"No findings recorded for {self.title}."
        shown = table(self.df).astype(str).map(lambda s: s.replace("|", "\\|"))
        header = list(shown.columns)
        lines = ["| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *shown.values.tolist()]]
        return "\n".join([*([self.headline, ""] if self.headline else []), *lines])

    def _repr_html_(self) -> str:
        if self.df.empty:
            return f"<p>No findings recorded for {html.escape(self.title)}.</p>"
        lead = "" if not self.headline else f"<p>{_inline_html(self.headline)}</p>"
        return lead + table_html(self.df, page="")

    def __str__(self) -> str:
        return "\n".join(([self.headline] if self.headline else []) + self.sentences()) or \
            f"No findings recorded for {self.title}."

    __repr__ = __str__  # the text/plain fallback in a notebook


def _inline_html(markdown: str) -> str:
    """A headline's inline Markdown (**bold**, *italic*, `code`) as escaped HTML."""
    out = html.escape(markdown)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def conclusion(notebook: str | None = None, preset: str | None = None) -> Conclusion:
    """The findings of `notebook` (default: the current ledger's, on its model) as its headline plus one table, for
    `## Conclusion`."""
    model = None
    if notebook is None or preset is None:
        ledger = current()
        model = ledger.model if notebook in (None, ledger.notebook) else None
        notebook, preset = notebook or ledger.notebook, preset or ledger.preset
    title = f"{notebook} (preset {preset!r}" + ("" if model is None else f", model {model!r}") + ")"
    return Conclusion(load(notebook, preset, model), title, headline(notebook, preset, model))
