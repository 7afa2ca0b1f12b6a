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
# # 7. The tool: find the sub-models that match a concept, and rerun a prediction without them
#
# The long-term aim of the progress reports: find which **sub-models** — sets of units that match a natural
# abstraction such as a topic — a network contains, step through a prediction to see which of them it used, and
# rerun it with chosen sub-models ablated. This report builds a minimum viable version (`lib.reports.submodel_tool`) on the
# earlier reports: sub-models are found by activation selectivity (report 3), concept-specific Neuron Shapley
# values (report 4), sparse-autoencoder and InfoVAE latents (report 2) and the units of a k-WTA sparse layer
# (report 5). Every sub-model is **validated**: ablating it must hurt the keyword predictions of its own concept
# more than those of the other concepts, by more than 95% of random sub-models of the same size do. The claim
# tested is that such validated sub-models exist for most concepts; the section "What it cannot do yet" lists,
# from the validation scores, the concepts for which none does. The same tool is available from the command
# line: `python -m lib.submodels explain --prompt "..." --ablate Athlete`.
#
# **Reads:** `models/` (notebook 1's MLP model; trained here if absent), `sparse/` (report 5's focus layer, fit
# here if absent), `data/`. **Writes:** `sparse/` (if absent), `findings/`.
# **Runtime:** smoke < 1 min; cpu ≈ 5 min on 2 cores (+ ≈ 2 min if the sparse layer must be fit); gpu ≈ 15 min.

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from lib.analysis import findings, kwta, plotting, prompts, session, stats
from lib.core import config, data, model, train
from lib.core.runs import get_or_train
from lib.reports.submodel_tool import kernel as submodels, params as report_params, plots

# %% tags=["parameters"]
preset = "cpu"  # "smoke" | "cpu" | "gpu"
seed = 0
frac = None  # units per hook in a sub-model, as a fraction of its width (None takes the preset value)
n_prompts = None  # held-out keyword prompts per topic (half validate, half define the Shapley game)
n_random = None  # size-matched random sub-models per validation (the control)
methods = None  # which methods to run (None: the preset's)

# %%
device = session.start("07_submodel_tool", preset).device
cfg = config.resolve(preset, attention_only=False, seed=seed)
nb = report_params.resolve(preset, frac=frac, n_prompts=n_prompts, n_random=n_random,
                            methods=methods)
cfg

# %% [markdown]
# ## 1. Concepts, their text and their predictions
#
# A **concept** is a named set of texts: the 14 DBpedia classes, and toxic versus harmless comments. A concept
# competes only with the concepts of its own set. Sub-models are found on language-model windows of the *fit*
# split (DBpedia training articles, 70% of the comments). They are validated on **keyword predictions** from
# *held-out* articles, exactly as in report 3: a prompt is an article's opening up to the first keyword of its
# topic (a word over-represented in that topic), and the model must predict that keyword. Half of the held-out
# prompts of every topic validate; the other half define the game whose Shapley values rank neurons.

# %%
tok = data.get_tokenizer(cfg.data)
kw, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, cfg.model.n_ctx, bos=cfg.data.task == "windows",
                                    seed=seed)
SETS = prompts.TOPIC_SETS
val, game = {}, {}
for s, pr in by_set.items():
    half = pr.frame().groupby("topic").cumcount().to_numpy() % 2
    game[s], val[s] = (pr.select(torch.tensor(np.flatnonzero(half == h))) for h in (0, 1))
windows = {s: prompts.topic_windows(tok, s, "fit", cfg.model.n_ctx, nb.n_windows) for s in SETS}
display(Markdown(
    f"{sum(len(w) for w in windows.values())} concepts; per concept {nb.n_windows} fit windows of "
    f"{cfg.model.n_ctx} tokens; validation prompts per topic: {len(val['dbpedia']) // len(windows['dbpedia'])}"
    f"–{len(val['dbpedia']) // len(windows['dbpedia']) + 1} (DBpedia), {len(val['comments'])} in all for the "
    "comments."))

# %% [markdown]
# ## 2. Sub-models by selectivity, and their validation
#
# The base model is notebook 1's 2-layer transformer with MLPs. For each concept the **selectivity** method takes,
# in every MLP layer (`blocks.L.mlp.hook_post`), the `frac` of neurons with the largest standardised mean
# difference (Cohen's d) between the concept's tokens and the other concepts' tokens. **Validation** ablates the
# sub-model (zero ablation, intensity 1) and measures the rise of keyword loss on every concept's validation
# prompts: the **gap** is the rise on the sub-model's own concept minus the mean rise on the others (nats; 0 = no
# specificity). The **control** is the same gap for `n_random` random sub-models with the same number of units per
# hook; a sub-model *beats random* if its gap exceeds their 95th percentile.

# %%
m0, _, base_dir = get_or_train(cfg, device=device)
hooked = model.to_hooked(m0)
run = dict(n_random=nb.n_random, kind=nb.kind, intensity=nb.intensity, seed=seed, progress=False)


def find(h, method, **kwargs):
    return submodels.find_in_sets(h, windows, val, game, method, frac=nb.frac, **run, **kwargs)


found = {"selectivity": find(hooked, "selectivity")}
sel = submodels.scores_table(found["selectivity"])
sel.round(3)

# %%
n_beat, n_all = int(sel.beats_random.sum()), len(sel)
display(Markdown(
    f"{n_beat} of {n_all} selectivity sub-models ({found['selectivity']['Athlete'].size} neurons each) beat their "
    f"random control. Median gap {sel.gap.median():.3f} nats versus a median random gap of "
    f"{sel.random_mean.median():.3f}; the largest gap: {sel.loc[sel.gap.idxmax(), 'concept']} "
    f"({sel.gap.max():.3f} nats)."))

# %% [markdown]
# ## 3. Other ways to find sub-models
#
# - **Shapley**: the neurons of the last MLP layer are players of a game whose value is minus each concept's
#   keyword loss on the *game* half of the prompts (report 4's truncated Monte-Carlo estimator,
#   `n_permutations` permutations). A neuron's concept-specific value is its value for the concept minus its mean
#   value for the other concepts; the sub-model is the top `frac` of neurons by that value. Unlike the other
#   methods, Shapley is supervised by the very metric validation uses (keyword loss, on other prompts), so it
#   should validate best; the others see only activations.
# - **SAE / InfoVAE latents**: a TopK sparse autoencoder or an InfoVAE is fit on the last MLP's output
#   (`blocks.1.hook_mlp_out`) over all concept windows (report 2); the sub-model is the `latent_k` latents most
#   selective for the concept. Ablating a latent removes its contribution to the reconstruction and keeps the
#   reconstruction error, so an empty set changes nothing.
# - **Sparse units**: report 5's focus model, whose last MLP is replaced by a k-WTA layer (k = `sparse_k_frac` of
#   its units) trained with everything else frozen; the sub-model is the top `frac` of its units by selectivity,
#   validated on that model.

# %%
latent = lambda d: dict(k=nb.latent_k, latent_cfg=dict(d_latent=d, steps=nb.latent_steps, seed=seed))
OTHER = {"shapley": lambda: find(hooked, "shapley", n_permutations=nb.n_permutations),
         "sae": lambda: find(hooked, "sae", **latent(nb.sae_d_latent)),
         "infovae": lambda: find(hooked, "infovae", **latent(nb.infovae_d_latent)),
         "sparse": lambda: find(kwta.focus_layer(hooked, base_dir.name, nb.layer, data.load_token_data(cfg.data).train),
                                "sparse")}
for method in [m for m in nb.methods if m in OTHER]:
    found[method] = OTHER[method]()
table = pd.concat([submodels.scores_table(f) for f in found.values()], ignore_index=True)
table.pivot(index="concept", columns="method", values=["gap", "random_q95"]).round(3)

# %%
fig = plots.submodel_gaps(table, "Fig. 1: validation gap of each concept's sub-model vs random sub-models of "
                             "the same size", order=list(sel.concept))
share = table.groupby("method", sort=False).beats_random.mean()
display(Markdown("Share of concepts whose sub-model beats its random control: " + ", ".join(
    f"{m} {v:.0%} ({int(table[table.method == m].beats_random.sum())}/{int((table.method == m).sum())})"
    for m, v in share.items()) + "."))

# %% [markdown]
# ## 4. The tool: which sub-models a prediction uses, and the prediction without them
#
# `lib.reports.submodel_tool.kernel.explain` takes a prompt and a set of sub-models. It reports, at every position, how active each
# sub-model is (the mean z-score of its units against their mean and spread over all concept text), then reruns the
# next-token prediction with each chosen sub-model, and their combination, ablated at a chosen intensity, and
# tabulates the top-k next tokens with their probabilities before and after. We apply it, with the selectivity
# sub-models of the prompt's concept set (activity is a z-score against that set's text, so it is comparable only
# within a set), to held-out prompts of a few concepts and to a toxic/harmless pair; each prompt ablates its own
# concept's sub-model, another concept's, and both. The figure shows those two sub-models first, then the most
# active at the last position.

# %%
subs = found["selectivity"]
shown = {"Athlete": "Company", "Company": "Athlete", "Film": "Album", "toxic": "harmless", "harmless": "toxic"}
assert all(t in subs and o in subs for t, o in shown.items()), f"shown concepts need prompts: {sorted(subs)}"


results = {(t, i): submodels.explain(hooked, submodels.validation_case(val, t, i)[0], submodels.set_of(subs, windows, t),
                                     tokenizer=tok, ablate=[t, other, (t, other)], intensity=nb.intensity, kind=nb.kind,
                                     top_k=5)
           for t, other in shown.items() for i in range(nb.n_shown)}


def show(t: str, i: int, fig_no: int):
    toks, target = submodels.validation_case(val, t, i)
    ex = results[(t, i)]
    text = tok.decode(toks).replace(data.EOS, "")
    tr = ex.tracked.set_index(["ablated", "token_id"]).prob
    display(Markdown(f"**{t}** prompt: `{text[-160:]!r}` → keyword `{tok.id_to_token(target)!r}`. Most active "
                     f"sub-model at the last position: **{ex.active().iloc[:, -1].idxmax()}**. Clean top-1 "
                     f"`{ex.tracked.token.iloc[0]!r}` at {tr.iloc[0]:.3f}; with {t} ablated "
                     f"{tr[(t, ex.tracked.token_id.iloc[0])]:.3f}."))
    display(ex.table())
    return plots.explanation_figure(ex.active(), ex.tracked, f"Fig. {fig_no}: {t} prompt {i + 1} — sub-model "
                                       "activity per position and the prediction with sub-models ablated",
                                       first=(t, shown[t]))


fig = show("Athlete", 0, 2)

# %%
fig = show("Company", 0, 3)

# %%
fig = show("Film", 0, 4)

# %%
fig = show("toxic", 0, 5)

# %%
fig = show("harmless", 0, 6)

# %%
own_drop = pd.DataFrame([{"prompt": f"{t} {i + 1}", "ablated": a,
                          "clean top-1 prob": r.tracked[r.tracked.ablated == "none"].prob.iloc[0],
                          "after": r.tracked[r.tracked.ablated == a].prob.iloc[0]}
                         for (t, i), r in results.items() for a in r.tracked.ablated.unique() if a != "none"])
own_drop["change"] = own_drop["after"] - own_drop["clean top-1 prob"]
own_drop.round(3)

# %% [markdown]
# ## 5. Does activity tell which concept a prompt is about?
#
# The tool's first output — which sub-models a prediction uses — is only useful if activity points at the right
# concept. For every validation prompt we average each sub-model's activity over the prompt's positions and ask
# whether the most active sub-model of the prompt's concept set is the prompt's own concept. The control is chance:
# one over the number of concepts in the set.

# %%
ident = pd.concat([submodels.identification(submodels.prompt_activity(
    hooked, val[s], {c: subs[c] for c in dict.fromkeys(val[s].topics) if c in subs})).assign(set=s) for s in SETS],
    ignore_index=True)
ident["chance"] = ident.set.map({s: 1 / len(set(val[s].topics)) for s in SETS})
acc = ident.groupby("topic", sort=False).agg(accuracy=("correct", "mean"), chance=("chance", "first"))
confusion = pd.crosstab(ident.topic, ident.most_active, normalize="index").reindex(index=acc.index,
                                                                                    columns=acc.index, fill_value=0)
fig = plotting.matrix_heatmap(confusion, "Fig. 7: most active selectivity sub-model (columns) per held-out prompt "
                              "topic (rows)", "most active sub-model", "prompt topic", "share of the topic's prompts",
                              center=None, mark_diagonal=True)
x = ident.correct.to_numpy(float)
id_ci = stats.bootstrap_ci(x, n_boot=nb.n_boot)
findings.record("Share of held-out prompts whose own concept's selectivity sub-model is the most active (control: "
                "chance, one over the concepts of its set)", x.mean(), unit="fraction", ci=id_ci, control="random",
                control_value=float(ident.chance.mean()), figure="Fig. 7",
                verdict=findings.verdict_from(x.mean(), float(ident.chance.mean()), id_ci))
display(Markdown(f"The most active sub-model is the prompt's own concept for {x.mean():.0%} of {len(x)} held-out "
                 f"prompts (chance {ident.chance.mean():.0%}); per concept from {acc.accuracy.min():.0%} "
                 f"({acc.accuracy.idxmin()}) to {acc.accuracy.max():.0%} ({acc.accuracy.idxmax()})."))
acc.round(2).T

# %% [markdown]
# ### Interactive version
#
# In JupyterLab the controls below rerun the tool on any shown prompt with any choice of sub-models and intensity.
# In the book (no kernel) they do not render; the tables and figures above are the static version.

# %%
try:
    import ipywidgets as widgets

    def _interactive(prompt: str, ablated: tuple, intensity: float) -> None:
        t, i = prompt.rsplit(" ", 1)
        if ablated:
            ex = submodels.explain(hooked, submodels.validation_case(val, t, int(i) - 1)[0], subs, tokenizer=tok, ablate=[tuple(ablated)],
                                   intensity=intensity, kind=nb.kind)
            display(ex.table())

    ui = widgets.interactive(
        _interactive, prompt=widgets.Dropdown(options=[f"{t} {i + 1}" for t, i in results]),
        ablated=widgets.SelectMultiple(options=list(subs), value=("Athlete",)),
        intensity=widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.1))
    display(ui)
except ImportError:
    display(Markdown("ipywidgets is not installed: only the static tables above are available."))

# %% [markdown]
# ## Controls
#
# **Random:** every gap above is compared with `n_random` size-matched random sub-models. If found sub-models were
# no better than random ones, about 5% of concepts would beat the 95th percentile by chance; the findings compare
# each method's share with that rate (95% intervals bootstrap over concepts). **Initialisation:** the same
# selectivity pipeline on the same architecture before training — a model that learned no concepts should have no
# validated sub-models, so the share at initialisation is the control for the trained model's share.

# %%
h_init = model.to_hooked(train.init_model(cfg, device).eval())
init = submodels.scores_table(find(h_init, "selectivity"))
for method, part in table.groupby("method", sort=False):
    x = part.beats_random.to_numpy(float)
    findings.record(f"Share of concepts whose {method} sub-model beats the 95th percentile of size-matched random "
                    f"sub-models (control: the 5% expected by chance)", x.mean(), unit="fraction",
                    ci=stats.bootstrap_ci(x, n_boot=nb.n_boot), control="random", control_value=0.05,
                    figure="Fig. 1", verdict=findings.verdict_from(x.mean(), 0.05,
                                                                   stats.bootstrap_ci(x, n_boot=nb.n_boot)))
g = sel.gap.to_numpy()
findings.record("Median validation gap of the selectivity sub-models (control: median gap of random sub-models)",
                float(np.median(g)), unit="nats", ci=stats.bootstrap_ci(g, stat=np.median, n_boot=nb.n_boot),
                control="random", control_value=float(sel.random_mean.median()), figure="Fig. 1",
                verdict=findings.verdict_from(float(np.median(g)), float(sel.random_mean.median()),
                                              stats.bootstrap_ci(g, stat=np.median, n_boot=nb.n_boot)))
findings.record("Share of concepts whose selectivity sub-model beats random, trained model (control: at "
                "initialisation)", sel.beats_random.mean(), unit="fraction", control="init",
                control_value=float(init.beats_random.mean()), figure="Fig. 1",
                verdict=findings.verdict_from(sel.beats_random.mean(), float(init.beats_random.mean())))
pd.DataFrame({"trained: beats random": sel.set_index("concept").beats_random,
              "init: beats random": init.set_index("concept").beats_random,
              "trained: gap": sel.set_index("concept").gap, "init: gap": init.set_index("concept").gap}).round(3)

# %% [markdown]
# ## What it cannot do yet
#
# Computed from the validation scores: the concepts for which **no** method found a sub-model that beats its
# random control; the same for the methods that see only activations (Shapley is supervised by the validation
# metric itself); per method, the concepts it misses; and the concepts whose prompts activity does not identify
# better than chance (section 5).

# %%
missing = submodels.cannot_do(table)
unsupervised = submodels.cannot_do(table[table.method != "shapley"])
per_method = {m: [c for c, b in zip(p.concept, p.beats_random) if not b] for m, p in table.groupby("method")}
unidentified = [c for c, r in acc.iterrows() if r.accuracy <= r.chance]
n_unsup = table[table.method != "shapley"].method.nunique()
by_chance = table.concept.nunique() * (1 - 0.95 ** n_unsup)  # concepts with >= 1 pass if every method were random
display(Markdown(
    f"- **No validated sub-model by any method ({len(missing)} of {table.concept.nunique()} concepts):** "
    + (", ".join(missing) or "none") + ".\n"
    + f"- **No validated sub-model from activations alone** (selectivity, latents, sparse units; "
      f"{len(unsupervised)}): " + (", ".join(unsupervised) or "none") + ".\n"
    + f"- Caveat: with {n_unsup} activation-based methods each tested at the 5% level, about {by_chance:.1f} of "
      f"{table.concept.nunique()} concepts would get at least one validated sub-model by chance alone; "
      f"{table.concept.nunique() - len(unsupervised)} got one.\n"
    + f"- **Activity does not identify the prompt's concept better than chance** ({len(unidentified)}): "
    + (", ".join(unidentified) or "none") + ".\n"
    + "\n".join(f"- {m} misses {len(v)}: {', '.join(v) or 'none'}." for m, v in per_method.items())
    + "\n- Validation uses one ablation (zero, intensity 1) and keyword loss only; sub-models are fixed-size "
      "(`frac` of a layer), found per concept set, and never combined across methods."))
display(findings.table(findings.load("07_submodel_tool", preset)))

# %% [markdown]
# ## Conclusion
#
# The bullets below are rendered from this notebook's ledger. Limitations: the keywords are whatever the
# 1,024-token vocabulary leaves as whole words; the model never trained on comments, so the toxic/harmless
# concepts probe text it has not seen; sub-model size is fixed in advance instead of chosen by validation; Shapley
# covers only the last layer with few permutations; latents are scored by selectivity only; activity is a mean
# z-score, so a few strongly active units and many weak ones look alike. Open questions: does a sub-model that
# beats random also *suffice* (keeping only it)? Do the sub-models of different methods overlap, and does their
# union validate better than any one of them?

# %%
findings.conclusion()
