# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Findings ledger
#
# This page gathers every headline claim of every report in one place. Each claim was recorded
# as data by the notebook that computed it (`lib.analysis.findings.record`), together with its
# confidence interval and its control: the same metric at initialisation (`init`), across seeds
# (`seeds`), or against a random baseline of the same size (`random`). A claim with no possible
# control says why (`none: <why>`). The verdicts are computed from the numbers when the notebook
# runs, not typed in by hand. This page only reads the ledger, so it cannot disagree with the
# reports. Each report's conclusion is rendered from the same records. The line under this page's title says
# when this page was built; each report's section says which run recorded its findings.
#
# **Reads:** `findings/` ledgers (one per report and preset). **Writes:** nothing. **Runtime:**
# seconds. `make book` runs it after all the reports.

# %% tags=["remove-cell"]
import re
from pathlib import Path

from IPython.display import HTML, Markdown, display

from lib.analysis import findings, plotting, session

# %% tags=["parameters"]
preset = "cpu"

# %% [markdown]
# ## Summary
#
# How many findings each report recorded, and how many of them held against their control.

# %%
session.check_parameters()  # a -p name this page does not have is an error, not a silent default
ledger = findings.load_all(preset)
NOTEBOOKS = Path.cwd().parent / "notebooks"  # the kernel runs in book/


def report_title(notebook: str) -> str:
    """A report's title: the first '# ' heading of notebooks/<notebook>.py, else the notebook's name."""
    src = NOTEBOOKS / f"{notebook}.py"
    m = re.search(r"^# # (.+)$", src.read_text(), re.M) if src.exists() else None
    return m.group(1).strip() if m else notebook

counts = findings.summary(ledger)
if ledger.empty:
    display(Markdown(f"No findings are recorded yet for preset `{preset}`: run the reports first (`make book`)."))
else:
    display(Markdown(
        f"{len(ledger)} findings from {ledger['notebook'].nunique()} reports (preset `{preset}`): "
        f"**{counts['supported']} supported**, {counts['not supported']} not supported, "
        f"{counts['inconclusive']} inconclusive and {counts['no verdict']} without a verdict."))

# %%
if not ledger.empty:
    verdicts = ledger.assign(verdict=ledger["verdict"].fillna(findings.NO_VERDICT),
                             notebook=ledger["notebook"].map(lambda nb: report_title(nb).split(":")[0]))
    palette = {"supported": "#228833", "not supported": "#EE6677", "inconclusive": "#CCBB44",
               findings.NO_VERDICT: "#BBBBBB"}
    fig = plotting.verdict_counts(verdicts, palette, f"Verdicts per report (preset {preset})")

# %% [markdown]
# ## Findings by report
#
# One section per report, in report order: the report's own answer to its question (its headline, rendered from
# its numbers when it ran), then every finding it recorded. The value is followed by its 95% confidence interval
# when the report measured one; the control column gives the kind of control and the metric under it (and the
# p-value where the verdict comes from a test); under each verdict is the decision rule that gave it, fixed in the
# code before the numbers were seen. The figure links go to the figure behind each finding.

# %%
for notebook, group in ledger.groupby("notebook", sort=True):
    page = f"{notebook}.html"
    tally = ", ".join(f"{n} {verdict}" for verdict, n in findings.summary(group).items() if n)
    prov = findings.provenance(notebook, preset)
    made = (f" Recorded by the run started {prov['started']} at commit `{prov['commit']}`, preset `{preset}`."
            if prov else "")
    lead = findings.headline(notebook, preset)
    display(Markdown(f"### [{report_title(notebook)}]({page})\n\n"
                     + (f"{lead}\n\n" if lead else "") + f"*{len(group)} findings ({tally}).{made}*"))
    display(HTML(findings.table_html(group, page=page)))

# %% [markdown]
# ## Findings without a control
#
# A finding may have no control only when none can exist. Each such finding states why, and the
# reasons are listed here so that a reader can judge them.

# %%
uncontrolled = ledger[ledger["control"].str.startswith(findings.NONE_PREFIX)]
if ledger.empty:
    display(Markdown("No findings yet, so none without a control."))
elif uncontrolled.empty:
    display(Markdown("Every finding is checked against a control."))
else:
    display(Markdown("\n".join(
        f"- **{rec['name']}** ([{report_title(rec['notebook'])}]({rec['notebook']}.html)): "
        f"{rec['control'][len(findings.NONE_PREFIX):]}" for rec in uncontrolled.to_dict("records"))))
