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
# reports. Each report's conclusion is rendered from the same records.
#
# **Reads:** `findings/` ledgers (one per report and preset). **Writes:** nothing. **Runtime:**
# seconds. `make book` runs it after all the reports.

# %%
from IPython.display import Markdown, display

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
    verdicts = ledger.assign(verdict=ledger["verdict"].fillna(findings.NO_VERDICT))
    palette = {"supported": "#228833", "not supported": "#EE6677", "inconclusive": "#CCBB44",
               findings.NO_VERDICT: "#BBBBBB"}
    fig = plotting.verdict_counts(verdicts, palette, f"Verdicts per report (preset {preset})")

# %% [markdown]
# ## Findings by report
#
# One table per report, in report order. The value is followed by its 95% confidence interval
# when the report measured one. The control column shows the kind of control and the metric
# under it. Follow a report's link to see the figure behind each finding.

# %%
for notebook, group in ledger.groupby("notebook", sort=True):
    tally = ", ".join(f"{n} {verdict}" for verdict, n in findings.summary(group).items() if n)
    display(Markdown(f"**[{notebook}]({notebook}.ipynb)**: {len(group)} findings ({tally})."))
    display(findings.table(group).style.hide(axis="index"))

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
        f"- **{rec['name']}** ({rec['notebook']}): {rec['control'][len(findings.NONE_PREFIX):]}"
        for rec in uncontrolled.to_dict("records"))))
