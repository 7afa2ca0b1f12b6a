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
# # 3. Impairment: partially degrading topic-linked neuron clusters
#
# The original progress report found clusters of MLP neurons linked to a topic and, instead of
# ablating them, *partially* impaired them: Gaussian noise scaled by an intensity, "negative noise"
# (the same noise shifted down so that its maximum is 0) and multiplication by a factor in [0, 1]. It
# measured loss and accuracy on topic keywords and concluded that **(A)** damage tracks the intensity
# smoothly, and that **(B)** the targeted topic does *not* suffer more than the others. Neither claim
# had a control. We rerun the report's three tests on notebook 1's model with MLPs, measure A
# (Spearman correlation of loss with intensity, and how evenly the loss rises) against the same curves
# at initialisation, and B (a specificity index: target damage ÷ off-target damage) against random
# clusters of the same size; we then ask whether better cluster-finding (k-means on topic profiles)
# gives specificity, use the curves to compare an early and a final model, and check whether two
# training seeds find the same neurons.
#
# **Reads:** `models/` (notebook 1's MLP model; its 300-step "bench" run as the early model; the
# seed-1 MLP model, trained here if absent), `data/`. **Writes:** `models/` (seed-1 model if absent),
# `impairment/` (one tidy table per sweep: a row per prompt × condition), `findings/`.
# **Runtime:** smoke ≈ 1 min; cpu ≈ 12 min on 2 cores (+ ≈ 3 min if the seed-1 model must be trained);
# gpu ≈ 20 min.

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from lib.analysis import findings, impairment, plotting, prompts, session, units
from lib.analysis.stats import bootstrap_ci
from lib.core import config, data, model, runs, train
from lib.core.runs import get_or_train
from lib.reports.neuron_impairment import kernel as impair, params as report_params, plots

# %% tags=["parameters"]
preset = "cpu"  # "smoke" | "cpu" | "gpu"
seed = 0
frac = None  # units per layer in a cluster, as a fraction (None takes the preset value)
n_prompts = None  # keyword prompts per topic
n_random = None  # random clusters per test (the control of hypothesis B)
noise_seeds = None  # noise draws per intensity

# %%
device = session.start("03_neuron_impairment", preset).device
cfg = config.resolve(preset, attention_only=False, seed=seed)
nb = report_params.resolve(preset, frac=frac, n_prompts=n_prompts, n_random=n_random,
                            noise_seeds=noise_seeds)
cfg

# %% [markdown]
# ## 1. Keywords and held-out prompts
#
# A topic's **keywords** are the words most over-represented in it, by the log-odds ratio with an
# informative Dirichlet prior (Monroe et al. 2008): each word's log-odds in the topic minus in the other
# topics of its set, shrunk towards the pooled frequency and divided by its standard error (a
# z-score). Topic sets: the 14 DBpedia classes against each other, and toxic against harmless
# comments. Counts come from the *fit* split only: the DBpedia training articles, and 70% of the
# comments (a comment is held out when `crc32(text) % 10 < 3`, a rule of the text alone, so the
# split is the same on every machine).
#
# The model's vocabulary has only 1,024 byte-level BPE tokens, so most topic words ("footballer",
# "painter") are several tokens. We therefore take as keywords only words that are **one token with
# their leading space** (" football", " album") and count them only where they stand as a whole
# word (the next token starts a new word), so that predicting the keyword means predicting the word,
# not a word's first piece. We also require a keyword to be at least twice as frequent in its topic
# as elsewhere, and give each to one topic. (The `smoke` preset's 300-token vocabulary has almost no
# whole words, so there it counts the first token of each word instead.) A **prompt** is a
# **held-out** article's opening — DBpedia test articles, held-out comments — up to the first keyword
# of its topic (1–3 sentences, within the context window); the keyword is the answer.

# %%
tok = data.get_tokenizer(cfg.data)
kw, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, cfg.model.n_ctx, bos=cfg.data.task == "windows",
                                    seed=seed)
pr = prompts.concat(list(by_set.values()), tok.eos_id)
shown = ["Athlete", "Artist", "Company", "toxic", "harmless"]
kw[kw.topic.isin(shown)].groupby("topic").agg(keywords=("token", list), top_z=("z", "max")).loc[shown]

# %%
frame = pr.frame()
ex = [frame[frame.topic == t].index[0] for t in ("Athlete", "toxic")]
display(Markdown(
    f"{len(pr):,} prompts ({frame.topic.value_counts().min()}–{frame.topic.value_counts().max()} per topic; "
    f"mean length {frame.length.mean():.1f} tokens), all from held-out articles "
    f"({', '.join(sorted(frame.source.unique()))}). Examples:\n\n"
    + "\n".join(f"- {pr.topics[i]}: `{tok.decode(pr.tokens[i, :pr.lengths[i]]).replace(data.EOS, '')!r}` → "
                f"`{tok.id_to_token(pr.targets[i])!r}`" for i in ex)))

# %% [markdown]
# ## 2. The models and their clean keyword scores
#
# The model under study is notebook 1's 2-layer transformer with MLPs (loaded, or trained if absent).
# Controls use the same architecture at initialisation, a second training seed, and (section 7) the
# same model after a short training budget. We analyse all of them as TransformerLens
# `HookedTransformer`s. Keyword loss is the cross-entropy of the keyword at the prompt's last position.

# %%
m0, _, _ = get_or_train(cfg, device=device)
m1, _, _ = get_or_train(cfg.replace(seed=seed + 1), device=device)
hooked = {"trained": model.to_hooked(m0), "seed 1": model.to_hooked(m1),
          "init": model.to_hooked(train.init_model(cfg, device).eval())}
clean = {name: prompts.evaluate(h, pr) for name, h in hooked.items()}
scores = pd.concat([prompts.summary(c).assign(model=name) for name, c in clean.items()]).set_index(["model", "topic"])
display(scores.unstack("model")[["loss", "top5"]].loc[shown].round(3))
t = scores.loc["trained"]
display(Markdown(
    f"Clean keyword scores of the trained model: Athlete loss {t.loss['Athlete']:.2f} nats (top-5 "
    f"{t.top5['Athlete']:.0%}), toxic loss {t.loss['toxic']:.2f} nats (top-5 {t.top5['toxic']:.0%}); uniform guessing "
    f"costs ln {cfg.model.d_vocab} = {np.log(cfg.model.d_vocab):.2f} nats. The model never trained on comments, "
    "so tests 1 and 3 probe text outside its training distribution."))

# %% [markdown]
# ## 3. Clusters
#
# Each neuron's activation (`mlp.hook_post`, after the GELU) is averaged per topic over language-model
# windows of fit-split text. A topic's **selectivity cluster** (the report's method) holds, in every
# layer, the top `frac` of neurons by standardised mean difference (Cohen's d) between the topic and
# the other topics of its set. The **k-means cluster** clusters neurons by their z-scored profiles across
# topics and keeps the group whose centre is highest on the topic, capped at the same size. **Random
# clusters** have the same number of neurons per layer. Test 3 impairs *before* the MLP: its units are
# the dimensions of the normalised residual stream entering the MLP (`ln2.hook_normalized`), selected the
# same way.

# %%
windows = {s: prompts.topic_windows(tok, s, "fit", cfg.model.n_ctx, nb.n_windows) for s in prompts.TOPIC_SETS}
stats = {(name, s, loc): st for name, h in hooked.items() for s in prompts.TOPIC_SETS
         for loc, st in units.topic_stats(h, windows[s], ("mlp_post", "ln2")).items()}
g = torch.Generator().manual_seed(seed)
TESTS = {  # test -> (topic set, target topic, evaluated topics, location)
    "test 1": ("comments", "toxic", ("toxic", "harmless", "Athlete"), "mlp_post"),
    "test 2": ("dbpedia", "Athlete", ("Athlete", "Artist", "Company"), "mlp_post"),
    "test 3": ("comments", "toxic", ("toxic", "harmless", "Athlete"), "ln2"),
}
RUNS = [("trained", "selectivity"), ("trained", "kmeans"), ("init", "selectivity")]  # (model, cluster method)
found = {(name, test, method): impair.find_cluster(stats[(name, s, loc)], target, method, nb.frac, g)
         for name, method in RUNS for test, (s, target, _, loc) in TESTS.items()}
c = found[("trained", "test 2", "selectivity")]
display(Markdown(f"A cluster has {c.sizes[0]} of {c.mask.shape[1]} neurons per layer ({nb.frac:.1%}); "
                 f"Jaccard overlap of the selectivity and k-means Athlete clusters: "
                 f"{impair.jaccard(c, found[('trained', 'test 2', 'kmeans')]):.2f}."))

# %% [markdown]
# ## 4. The report's three tests: dose-response curves
#
# For every test we impair the found cluster in all layers at once, at every intensity: **noise** adds
# a·sd·ε (ε ~ N(0, 1) per token and neuron, sd the neuron's activation standard deviation, so intensity
# *a* is in units of the neuron's own spread), **negative noise** is that noise shifted down at each
# token by its maximum over the cluster (so it only lowers activations), **scale** multiplies by 1 − *a*;
# the end-points are zero ablation and mean ablation. Every noise intensity is drawn with several noise
# seeds. The sweep engine (`lib.analysis.impairment.sweep`) evaluates many conditions in one batched forward pass
# (a test checks that it equals a plain per-condition loop); each sweep's table is saved under
# `impairment/`. Bands are 95% bootstrap intervals over prompts × noise seeds.

# %%
key = dict(cfg=cfg.to_dict(), nb=nb.to_dict(), seed=seed)
grid = impairment.dose_grid(["found"], nb.noise_intensities, nb.scale_intensities, nb.noise_seeds)
sweeps = pd.concat([
    impairment.damage_sweep(hooked[name], pr.subset(TESTS[test][2]), {"found": found[(name, test, m)]}, grid,
                        name=f"{name}-{test}-{m}".replace(" ", "_"), key=key, desc=f"{name}, {test}, {m}")
    .assign(model=name, test=test, method=m)
    for name, m in RUNS for test in TESTS], ignore_index=True)
tr = sweeps[(sweeps.model == "trained") & (sweeps.method == "selectivity")]
KINDS = {"noise": "noise intensity (neuron sd)", "negative_noise": "noise intensity (neuron sd)",
         "scale": "fraction removed (1 − factor)"}
METRICS = {"loss": "keyword loss (nats)", "top5": "top-5 accuracy (fraction)"}


def dose_figure(test: str, title: str):
    return plots.dose_figure(tr[tr.test == test], METRICS, KINDS, title, TESTS[test][2])


fig = dose_figure("test 1", "Fig. 1: test 1 — toxic-comments cluster (after the MLP nonlinearity)")

# %%
fig = dose_figure("test 2", "Fig. 2: test 2 — Athlete cluster (after the MLP nonlinearity)")

# %%
fig = dose_figure("test 3", "Fig. 3: test 3 — toxic-comments cluster impaired before the MLP (normalised MLP input)")

# %%
top = tr[(tr.kind == "noise") & (tr.intensity == max(nb.noise_intensities))].groupby(["test", "topic"]).d_loss.mean()
display(Markdown("At the highest noise intensity the keyword loss rises by " + "; ".join(
    f"{test}: " + ", ".join(f"{t} {top[(test, t)]:+.2f}" for t in TESTS[test][2]) for test in TESTS)
    + " nats (target topic first)."))

# %% [markdown]
# ## 5. Hypothesis A: does damage track intensity smoothly?
#
# For each curve (test × kind × topic) we take the mean keyword loss at each intensity and compute
# **Spearman's ρ** between intensity and loss (1 = loss rises at every step; a curve that falls counts
# against the hypothesis), and the **largest step share**: the biggest change between neighbouring
# intensities as a fraction of the curve's total variation (1 = the whole change happens in one step, a
# cliff; a rise linear in intensity scores 0.5 on the doubling noise grid and 0.2 on the scale grid). The
# control for monotonicity is the same pipeline on the model at initialisation: clusters found on its
# activations, the same grid. If curves at initialisation were just as monotone, monotonicity would be a
# property of injecting noise, not of what the model learned. The step share has no such control (an
# untrained model's curves are flat and noisy, which spreads their variation over many steps), so we
# report it without a verdict.

# %%
curves = impair.curve_table(sweeps[sweeps.method == "selectivity"], by=("model", "test", "kind", "topic"),
                            n_boot=nb.n_boot // 5)
rho = {name: curves[curves.model == name].spearman.to_numpy() for name in ("trained", "init")}
fig = plots.curve_stat_strip(curves.assign(impairment=curves.kind), x="model", y="spearman", hue="impairment",
                                title="Fig. 4: Spearman ρ of keyword loss vs intensity, one dot per curve",
                                ylabel="Spearman ρ (loss vs intensity)", ref=0.0)
curves.pivot_table(index=["test", "kind", "topic"], columns="model", values=["spearman", "largest_step"]).round(2)

# %%
ci = bootstrap_ci(rho["trained"], stat=np.median, n_boot=nb.n_boot)
v, v0 = float(np.median(rho["trained"])), float(np.median(rho["init"]))
findings.record("A: Spearman ρ of keyword loss vs impairment intensity (median over curves)", v, unit="Spearman ρ",
                ci=ci, control="init", control_value=v0, figure="Fig. 4",
                verdict=findings.verdict_from(v, v0, ci, margin=0.1))
steps = curves[curves.model == "trained"].largest_step.dropna().to_numpy()
s, s_ci = float(np.median(steps)), bootstrap_ci(steps, stat=np.median, n_boot=nb.n_boot)
findings.record("A: largest step as a share of the curve's total change (median over the trained model's curves)", s,
                unit="fraction", ci=s_ci, figure="Fig. 1-3",
                control="none: descriptive; 1 = a single jump, 0.5 = a rise linear in intensity on the noise grid")
display(Markdown(f"Median Spearman ρ over {len(rho['trained'])} curves: **{v:.2f}** (95% CI {ci[0]:.2f}–{ci[1]:.2f}) "
                 f"for the trained model, {v0:.2f} at initialisation; {np.mean(rho['trained'] > 0.9):.0%} of the "
                 f"trained model's curves have ρ > 0.9 and {np.mean(rho['trained'] < -0.9):.0%} fall steadily "
                 f"(ρ < −0.9). Median largest step share: {s:.2f}; {np.mean(steps > 0.9):.0%} of the curves are "
                 "a single jump (share > 0.9)."))

# %% [markdown]
# ## 6. Hypothesis B: does the targeted topic suffer more?
#
# The **specificity index** of a cluster is the mean keyword-loss damage (impaired minus clean loss,
# averaged over the noise intensities and seeds) on the target topic divided by the mean damage on the
# off-target topics: 1 = no specificity. Its 95% interval resamples prompts within each topic. A
# cluster "beats random" only if its index exceeds the 95th percentile of the indices of
# `n_random` random clusters with the same number of neurons per layer, impaired identically. We do
# this for the report's selectivity clusters and for the k-means clusters.

# %%
null = {}
for test, (_, target, topics, _) in TESTS.items():
    like = found[("trained", test, "selectivity")]
    rand = {f"random {i}": impairment.random_cluster(like, g) for i in range(nb.n_random)}
    df = impairment.damage_sweep(hooked["trained"], pr.subset(topics), rand, impairment.grid(rand, ["noise"],
                             nb.noise_intensities, nb.noise_seeds), name=f"trained-{test}-random".replace(" ", "_"),
                             key=key, desc=f"random clusters, {test}")
    null[test] = impairment.specificities(df, target, topics[1:]).to_numpy()

# %%
noise = sweeps[(sweeps.model == "trained") & (sweeps.kind == "noise")]
spec = {(test, m): impairment.specificity(noise[(noise.test == test) & (noise.method == m)], TESTS[test][1],
                                      TESTS[test][2][1:], n_boot=nb.n_boot)
        for test in TESTS for m in ("selectivity", "kmeans")}
fig = plotting.null_histograms(
    {test: (null[test], {m: spec[(test, m)] for m in ("selectivity", "kmeans")}) for test in TESTS},
    "Fig. 5: specificity index (noise) of the found clusters vs random clusters of the same size",
    "specificity index (target ÷ off-target damage)")
pd.DataFrame([{"test": t, "cluster": m, "specificity": v, "95% CI": tuple(np.round(ci, 2)),
               "random: median": np.nanmedian(null[t]), "random: 95th pct": np.nanquantile(null[t], 0.95)}
              for (t, m), (v, ci) in spec.items()]).round(2)

# %%
for (test, method), (value, ci) in spec.items():
    q95 = float(np.nanquantile(null[test], 0.95))
    findings.record(f"B: specificity index, {test} ({TESTS[test][1]}) {method} cluster (control: 95th percentile "
                    f"of {nb.n_random} random clusters)", value, unit="damage ratio", ci=ci, control="random",
                    control_value=q95, figure="Fig. 5", verdict=findings.verdict_from(value, q95, ci))
best = max(spec, key=lambda k: spec[k][0])
display(Markdown("The report's selectivity clusters reach specificity indices of " + ", ".join(
    f"{spec[(t, 'selectivity')][0]:.2f} ({t})" for t in TESTS) + "; random clusters of the same size give medians of "
    + ", ".join(f"{np.nanmedian(null[t]):.2f}" for t in TESTS) + f". The most specific cluster is the {best[1]} "
    f"cluster of {best[0]} ({spec[best][0]:.2f})."))

# %% [markdown]
# ## 7. Performance under impairment as an evaluation tool
#
# The report proposed comparing models by how much impairment they tolerate. We impair each model's own
# Athlete selectivity cluster with noise of growing intensity and find the intensity at which top-5
# keyword accuracy on Athlete prompts falls below a fixed threshold: half the final model's clean
# accuracy. The early model is notebook 1's same architecture after a short budget (`early_steps`
# steps); the final seed-1 model gives the seed-to-seed spread of the final model's tolerance.

# %%
early_cfg = cfg.replace(**runs.bench_overrides(cfg, nb.early_steps))  # report 1's benchmark run
hooked["early"] = model.to_hooked(get_or_train(early_cfg, name="bench", device=device)[0])
stats[("early", "dbpedia", "mlp_post")] = units.topic_stats(hooked["early"], windows["dbpedia"], "mlp_post")
ath, curves_t = pr.subset(["Athlete"]), []
for name in ("trained", "seed 1", "early"):
    cl = {"Athlete": impairment.selective_cluster(stats[(name, "dbpedia", "mlp_post")], "Athlete", nb.frac)}
    conds = impairment.grid(cl, ["noise"], nb.tolerance_intensities, nb.noise_seeds)
    curves_t.append(impairment.sweep(hooked[name], ath, cl, conds, desc=f"tolerance, {name}").assign(model=name))
curves_t = pd.concat(curves_t, ignore_index=True)
threshold = 0.5 * float(clean["trained"].loc[clean["trained"].topic == "Athlete", "top5"].mean())
mean_t = curves_t.groupby(["model", "intensity"]).top5.mean()
tol = {k: impair.threshold_intensity(mean_t[k].index.to_numpy(), mean_t[k].to_numpy(), threshold)
       for k in ("trained", "seed 1", "early")}

# %%
fig = plots.tolerance_curves(curves_t, "top5", "model", threshold, tol,
                                "Fig. 6: Athlete top-5 keyword accuracy under noise on each model's Athlete cluster",
                                "noise intensity (neuron sd)", "top-5 accuracy (fraction)")
cap = max(nb.tolerance_intensities)
tc = {k: min(v, cap) for k, v in tol.items()}  # never crossing = censored at the largest intensity
gap, spread = tc["trained"] - tc["early"], abs(tc["trained"] - tc["seed 1"])
findings.record("Tolerated noise intensity (top-5 below half the final model's clean accuracy), final minus early model",
                gap, unit="neuron sd", control="seeds", control_value=spread, figure="Fig. 6",
                verdict=findings.verdict_from(abs(gap), spread))
pd.DataFrame({"model": list(tol), "tolerated intensity": list(tol.values()),
              "clean Athlete top-5": [float(curves_t[(curves_t.model == k) & (curves_t.intensity == 0)].top5.mean())
                                      for k in tol]}).round(3)

# %% [markdown]
# ## Controls
#
# **Initialisation** (hypothesis A, above) and **random clusters** (hypothesis B, above). **Seeds:** do
# two independently trained models find the same neurons? Neuron indices are arbitrary across seeds (any
# permutation of the hidden units gives the same function), so the raw index overlap must be at chance.
# We first match each neuron of the seed-0 model to a neuron of the seed-1 model, greedily by the
# correlation of their activations on the same text, then compare the matched clusters. The random
# expectation is the Jaccard overlap of random clusters of the same sizes.

# %%
seed_rows, jac_null = [], {}
match_tokens = torch.cat([w[: nb.n_match_windows] for s in prompts.TOPIC_SETS for w in windows[s].values()])
acts = {name: units.unit_activations(hooked[name], match_tokens, "mlp_post") for name in ("trained", "seed 1")}
perms = [units.match_units(acts["trained"][layer], acts["seed 1"][layer]) for layer in range(cfg.model.n_layers)]
for test in ("test 1", "test 2"):
    s, target, _, loc = TESTS[test]
    c0, c1 = found[("trained", test, "selectivity")], impairment.selective_cluster(stats[("seed 1", s, loc)], target, nb.frac)
    jac_null[test] = impair.random_jaccards(c0, c1, 2000, g)
    seed_rows.append({"test": test, "cluster": target, "raw index Jaccard": impair.jaccard(c0, c1),
                      "matched Jaccard": impair.jaccard(impair.map_cluster(c0, perms), c1),
                      "random: mean": jac_null[test].mean(), "random: 95th pct": np.quantile(jac_null[test], 0.95)})
overlap = pd.DataFrame(seed_rows)
fig = plotting.null_histograms(
    {r["test"]: (jac_null[r["test"]], {"raw indices": (r["raw index Jaccard"], None),
                                       "after matching neurons": (r["matched Jaccard"], None)}) for r in seed_rows},
    "Fig. 7: overlap of the seed-0 and seed-1 selectivity clusters vs random clusters", "Jaccard overlap",
    ylabel="random cluster pairs (count)")
overlap.round(3)

# %%
for r in seed_rows:
    findings.record(f"Seeds: Jaccard overlap of the {r['cluster']} clusters of two training seeds after matching "
                    f"neurons (control: 95th percentile of random)", r["matched Jaccard"], unit="Jaccard",
                    control="random", control_value=r["random: 95th pct"], figure="Fig. 7",
                    verdict=findings.verdict_from(r["matched Jaccard"], r["random: 95th pct"]))
display(findings.table(findings.load("03_neuron_impairment", preset)))

# %% [markdown]
# ## Conclusion
#
# The bullets below are rendered from this notebook's ledger (values computed above). Limitations:
# the keywords are whatever 1,024-token BPE leaves as whole words, so some are function words
# (" who", " all") and the comment topics are weak; the model never trained on comments, so test 1 and
# test 3 probe text it has not seen; clusters are a small fraction (`frac`) of each layer, found and
# evaluated on one model; specificity is averaged over noise intensities, and its random distribution
# has only `n_random` clusters per test; neuron matching across seeds is greedy. Open
# questions: do Shapley-value clusters (report 4) or sparse layers (report 5) give specificity where
# activation statistics do not? Is the lack of specificity a property of superposition in small MLPs?

# %%
findings.conclusion()
