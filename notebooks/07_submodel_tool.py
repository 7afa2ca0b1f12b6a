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
# more than those of the other concepts (a positive gap), more than random sub-models of the same size do
# (permutation p ≤ 0.05 against `n_random` of them), and more than the same pipeline's sub-model for the concept
# at initialisation. We also measure whether it **suffices**: keep only its units, ablate the rest of their layer,
# and see how much of the layer's contribution to the concept survives. The claim tested is that validated
# sub-models exist for most concepts; the section "What it cannot do yet" lists, from the validation scores, the
# concepts for which none does. The tool shows each sub-model's status beside every prediction, and the command
# line (`python -m lib.submodels explain --prompt "..." --ablate Athlete`) validates the same way and refuses to
# ablate a sub-model that failed unless `--allow-unvalidated` is given.
#
# **Reads:** `models/` (notebook 1's MLP model; trained here if absent) or the model given by `model_path`,
# `sparse/` (report 5's focus layer, fit here if absent), `data/`. **Writes:** `sparse/` (if absent), `findings/`.
# **Runtime:** smoke < 1 min; cpu ≈ 5 min on 2 cores (+ ≈ 2 min if the sparse layer must be fit); gpu ≈ 15 min.

# %% tags=["remove-cell"]
import matplotlib as mpl
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from lib.analysis import findings, kwta, plotting, prompts, session, stats, tables, units
from lib.core import config, data, model, pretrained, train
from lib.core.runs import get_or_train
from lib.reports.submodel_tool import kernel as submodels, params as report_params, plots

# %% tags=["parameters"]
preset = "cpu"  # "smoke" | "cpu" | "gpu"
seed = 0
frac = None  # units per hook in a sub-model, as a fraction of its width (None takes the preset value)
n_prompts = None  # held-out keyword prompts per topic (half validate, half define the Shapley game)
n_random = None  # size-matched random sub-models per validation (the control)
methods = None  # which methods to run (None: the preset's)
model_path = None  # a local model (folder or Hugging Face cache name); None: our own model of the preset

# %% tags=["remove-cell"]
sess = session.start("07_submodel_tool", preset, model_path=model_path)
device = sess.device
cfg = config.resolve(preset, attention_only=False, seed=seed)
nb = report_params.resolve(preset, frac=frac, n_prompts=n_prompts, n_random=n_random,
                            methods=methods)
loaded = None if model_path is None else pretrained.load(model_path, device)  # (HookedTransformer, its tokenizer)
n_ctx = cfg.model.n_ctx if loaded is None else min(cfg.model.n_ctx, loaded[0].cfg.n_ctx)
bos = loaded is not None or cfg.data.task == "windows"  # prompts start with the token texts start with
METHOD = {"selectivity": "selectivity", "shapley": "Shapley-value", "sae": "sparse-autoencoder",  # in words
          "infovae": "InfoVAE", "sparse": "k-WTA sparse-unit"}

# %%
if loaded is not None:
    display(Markdown(
        f"**The model under study is {sess.ledger.model}** (`{model_path}`), not notebook 1's: the same "
        f"shipped texts, keywords and prompts in its own tokenizer, windows of {n_ctx} tokens, and the same "
        "architecture freshly initialised as the init control (the sparse method's k-WTA layer is fit inside each, "
        "on the training texts in its tokenizer). Nothing is skipped: no control here needs a training run of our "
        f"own. Its findings go to a ledger of its own (`findings/{findings.MODELS}/{sess.ledger.model}/`), not to "
        "the book's findings page."))
    session.card_or_skip(loaded[0], sess.ledger.model, "Sub-models of MLP units (this whole report)", mlp=True)

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
tok = data.get_tokenizer(cfg.data) if loaded is None else loaded[1]
kw, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, n_ctx, bos=bos, seed=seed)
SETS = prompts.TOPIC_SETS
game, val = submodels.split_halves(by_set)  # alternate articles: the two halves share none
windows = {s: prompts.topic_windows(tok, s, "fit", n_ctx, nb.n_windows) for s in SETS}
display(Markdown(
    f"{sum(len(w) for w in windows.values())} concepts; per concept {nb.n_windows} fit windows of "
    f"{n_ctx} tokens; validation prompts per topic: {len(val['dbpedia']) // len(windows['dbpedia'])}"
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
# specificity). The **random control** is the same gap for `n_random` random sub-models with the same number of
# units per hook; a sub-model *beats random* if its gap is positive and its permutation p-value,
# (1 + #random gaps ≥ its gap) / (1 + `n_random`), is at most 0.05. The **initialisation control** runs the
# same pipeline (finding and validation) on the same architecture before training; a sub-model is **validated**
# if it beats random and its gap exceeds the gap of the initialised model's sub-model for the same concept, and
# only if its concept's probe measures knowledge: the model must predict the concept's validation keywords better
# than a unigram baseline (report 3's gate); otherwise it stays **unvalidated**.
# **Sufficiency** keeps only the sub-model's units and ablates every other unit of its hooks. What it alone
# preserves of its own concept's keyword loss, **kept** = (damage with the whole layer ablated) − (damage with
# only it kept), in nats, is compared with the same random sub-models (p as above); the **sufficiency** share,
# kept / whole-layer damage (1: it alone carries the layer's contribution; above 1: the rest of the layer hurts
# the concept), is undefined where ablating the whole layer does not hurt the concept and unstable where that
# damage is small, so the findings use kept.

# %% tags=["training"]
if loaded is None:
    m0, _, base_dir = get_or_train(cfg, device=device)
    hooked = model.to_hooked(m0)
    h_init = model.to_hooked(train.init_model(cfg, device).eval())
    bases = (base_dir.name, f"{base_dir.name}-init")  # what the sparse method's k-WTA layers are keyed by
else:
    hooked, h_init = loaded[0], pretrained.load_model(model_path, device, init=True, seed=seed)
    bases = tuple(f"{sess.ledger.model}-{units.fingerprint(h)}" for h in (hooked, h_init))

# %%
run = dict(n_random=nb.n_random, kind=nb.kind, intensity=nb.intensity, seed=seed, progress=False)
# a concept is validated only on a probe that measures knowledge: the model must beat a unigram baseline on it
val_all = prompts.concat(list(val.values()), tok.eos_id)
margins = prompts.model_probe_margins(hooked, tok, val_all, data.corpus_texts(cfg.data), seed=seed)
display(Markdown("Concepts whose keyword probe beats the unigram / uniform baseline (margin's 95% CI above 0): "
                 f"{int(margins.usable.sum())} of {len(margins)}" + (
                     "; not usable, so never validated: " + ", ".join(margins.topic[~margins.usable])
                     if (~margins.usable).any() else "") + "."))
at_init: dict[str, dict] = {}  # method -> the initialised model's validated sub-models (the init control)


def find(method: str, trained=None, initial=None, **kwargs):
    """The method's sub-models of the trained model, validated, with the same pipeline at initialisation beside."""
    trained, initial = trained or hooked, initial or h_init
    at_init[method] = submodels.find_in_sets(initial, windows, val, game, method, frac=nb.frac, **run, **kwargs)
    own = submodels.find_in_sets(trained, windows, val, game, method, frac=nb.frac, **run, **kwargs)
    return submodels.with_probe_gate(submodels.with_init_control(own, at_init[method]), margins)


found = {"selectivity": find("selectivity")}
sel = submodels.scores_table(found["selectivity"])
display(tables.show(sel[["concept", "status", "gap", "random_q95", "p", "init_gap"]].rename(columns={
    "gap": "gap (nats)", "random_q95": "random: 95th pct", "p": "permutation p", "init_gap": "gap at init"}),
    caption="Validation of each concept's selectivity sub-model: the gap (own minus other concepts' damage) against "
    "random sub-models of its size and the same pipeline at initialisation"))
tables.show(sel[["concept", "layer_damage", "kept", "kept_random_q95", "kept_p", "sufficiency"]].rename(columns={
    "layer_damage": "whole layer ablated (nats)", "kept": "kept (nats)", "kept_random_q95": "random: 95th pct",
    "kept_p": "permutation p"}), caption="Sufficiency: what the sub-model alone preserves of its concept's keyword loss")

# %%
n_val, n_beat, n_all = int((sel.status == "validated").sum()), int(sel.beats_random.sum()), len(sel)
display(Markdown(
    f"{n_beat} of {n_all} selectivity sub-models ({found['selectivity']['Athlete'].size} neurons each) beat their "
    f"random control, and {n_val} are validated (also beating the same pipeline at initialisation, which beats "
    f"random for {int(sel.init_beats_random.sum())}). Median gap {sel.gap.median():.3f} nats versus a median "
    f"random gap of {sel.random_mean.median():.3f} and {sel.init_gap.median():.3f} at initialisation; the largest "
    f"gap: {sel.loc[sel.gap.idxmax(), 'concept']} ({sel.gap.max():.3f} nats). Kept alone, a sub-model preserves "
    f"a median {sel.kept.median():.3f} nats of its concept's loss (random sub-models {sel.kept_random_mean.median():.3f}; "
    f"p ≤ 0.05 for {int((sel.kept_p <= 0.05).sum())} of {n_all}); as a share of the whole layer's damage, median "
    f"{sel.sufficiency.median():.2f} over the {int(sel.sufficiency.notna().sum())} concepts the layer matters to."))

# %% [markdown]
# ## 3. Other ways to find sub-models
#
# - **Shapley**: the neurons of the last MLP layer are players of a game whose value is minus each concept's
#   keyword loss on the *game* half of the prompts (report 4's Monte-Carlo estimator, `n_permutations`
#   permutations). A neuron's concept-specific value is its value for the concept minus its mean value for the
#   other concepts; the sub-model is the top `frac` of neurons by that value. It is selected on the game half and
#   validated on the other half (other articles; `find_in_sets` refuses halves that share one). Unlike the other
#   methods, Shapley is supervised by the metric validation uses (keyword loss), so it should validate best; the
#   others see only activations.
# - **SAE / InfoVAE latents**: a TopK sparse autoencoder or an InfoVAE is fit on the last MLP's output
#   (`blocks.1.hook_mlp_out`) over all concept windows (report 2); the sub-model is the `latent_k` latents most
#   selective for the concept. Ablating a latent removes its contribution to the reconstruction and keeps the
#   reconstruction error, so an empty set changes nothing.
# - **Sparse units**: report 5's focus model, whose last MLP is replaced by a k-WTA layer (k = `sparse_k_frac` of
#   its units) trained with everything else frozen; the sub-model is the top `frac` of its units by selectivity,
#   validated on that model.

# %%
latent = lambda d: dict(k=nb.latent_k, latent_cfg=dict(d_latent=d, steps=nb.latent_steps, seed=seed))
if loaded is None:
    train_tokens = data.load_token_data(cfg.data).train
else:  # the training texts in windows of the loaded model's tokenizer
    train_tokens = data.lm_windows(tok.encode_batch(data.corpus_texts(cfg.data)), n_ctx, tok.eos_id)[: nb.layer.n_train]
OTHER = {"shapley": lambda: find("shapley", n_permutations=nb.n_permutations),
         "sae": lambda: find("sae", **latent(nb.sae_d_latent)),
         "infovae": lambda: find("infovae", **latent(nb.infovae_d_latent)),
         # the init control's k-WTA layer is fit inside the initialised model, the same way
         "sparse": lambda: find("sparse", kwta.focus_layer(hooked, bases[0], nb.layer, train_tokens),
                                kwta.focus_layer(h_init, bases[1], nb.layer, train_tokens))}
for method in [m for m in nb.methods if m in OTHER]:
    found[method] = OTHER[method]()
table = pd.concat([submodels.scores_table(f) for f in found.values()], ignore_index=True)
tables.show(table.pivot(index="concept", columns="method", values="status")[list(found)],
            caption="Validation status of each concept's sub-model, per method")

# %%
fig = plots.submodel_gaps(table, "Fig. 1: validation gap of each concept's sub-model vs random sub-models of "
                             "the same size and the same pipeline at initialisation", order=list(sel.concept))
status = pd.DataFrame({m: {"beats random": int(p.beats_random.sum()), "validated": int((p.status == "validated").sum()),
                           "at init: beats random": int(p.init_beats_random.sum()),
                           "gap > init gap": int((p.gap > p.init_gap).sum()), "concepts": len(p),
                           "median kept (nats)": p.kept.median(), "random: median kept": p.kept_random_mean.median(),
                           "kept: p <= 0.05": int((p.kept_p <= 0.05).sum())}
                       for m, p in table.groupby("method", sort=False)}).T
supervised = status.loc["shapley"] if "shapley" in status.index else None
display(Markdown("Validated sub-models per method: " + ", ".join(
    f"{m} {int(r.validated)}/{int(r.concepts)} (beat random {int(r['beats random'])}; at initialisation "
    f"{int(r['at init: beats random'])})" for m, r in status.iterrows()) + "." + (
    f" At initialisation the Shapley pipeline beats random for {int(supervised['at init: beats random'])} of "
    f"{int(supervised.concepts)} concepts: chosen by the validation metric itself (keyword loss on the concept's "
    "keywords, on the other half of the prompts), its sub-models beat random ones even in an untrained network, so "
    "for Shapley the random test says little and the gap at initialisation is the control that counts (the trained "
    f"gap is larger for {int(supervised['gap > init gap'])})." if supervised is not None else "")))
display(tables.show(status.rename_axis("method")[["concepts", "validated", "beats random", "at init: beats random", "gap > init gap"]],
                    caption="Sub-models per method (counts of concepts)"))
tables.show(status.rename_axis("method")[["median kept (nats)", "random: median kept", "kept: p <= 0.05"]],
            caption="Sufficiency per method: nats of its concept's keyword loss a sub-model kept alone preserves")

# %% [markdown]
# ## 4. The tool: which sub-models a prediction uses, and the prediction without them
#
# `lib.reports.submodel_tool.kernel.explain` takes a prompt and a set of sub-models. It reports, at every position, how active each
# sub-model is (the mean z-score of its units against their mean and spread over all concept text), then reruns the
# next-token prediction with each chosen sub-model, and their combination, ablated at a chosen intensity, and
# tabulates the top-k next tokens with their probabilities before and after, each row marked with the validation
# status of what was ablated (a failed sub-model's effect is not evidence about its concept). We apply it, with the
# selectivity
# sub-models of the prompt's concept set (activity is a z-score against that set's text, so it is comparable only
# within a set), to held-out prompts of a few concepts and to a toxic/harmless pair; each prompt ablates its own
# concept's sub-model, another concept's, and both. The figure shows those two sub-models first, then the most
# active at the last position.

# %%
subs = found["selectivity"]
shown = {"Athlete": "Company", "Company": "Athlete", "Film": "Album", "toxic": "harmless", "harmless": "toxic"}
assert all(t in subs and o in subs for t, o in shown.items()), f"shown concepts need prompts: {sorted(subs)}"


results, keyword_p = {}, {}  # per (concept, prompt): the explanation, and the keyword's probability under each ablation
for t, other in shown.items():
    for i in range(nb.n_shown):
        toks, target = submodels.validation_case(val, t, i)
        how = dict(tokenizer=tok, ablate=[t, other, (t, other)], intensity=nb.intensity, kind=nb.kind)
        results[t, i] = submodels.explain(hooked, toks, submodels.set_of(subs, windows, t), top_k=5, **how)
        keyword_p[t, i] = submodels.token_probs(hooked, toks, submodels.set_of(subs, windows, t), target[:1], **how)


def show(t: str, i: int, fig_no: int):
    toks, target = submodels.validation_case(val, t, i)
    ex, kp, o = results[(t, i)], keyword_p[(t, i)].set_index("ablated").prob, shown[t]
    text = tok.display(toks).replace(tok.eos, "")
    display(Markdown(
        f"**{t}** prompt: `{text[-160:]!r}` → keyword `{tok.display(list(target))!r}`"
        + (f" (its first token `{tok.display(list(target[:1]))!r}` is the prediction looked at)" if len(target) > 1
           else "") + f". Most active sub-model at the last position: **{ex.active().iloc[:, -1].idxmax()}**. The "
        f"keyword's probability: {findings.fmt(kp['none'])} clean; {findings.fmt(kp[t])} with {t} ablated, "
        f"{findings.fmt(kp[o])} with {o} ablated, {findings.fmt(kp[f'{t} + {o}'])} with both. Status: " + "; ".join(
            f"{n} **{ex.validation.loc[n, 'status']}** ({ex.validation.loc[n, 'why']})" for n in (t, o))))
    display(tables.show(ex.table().drop(columns=["intensity"]), caption=f"The clean top-{ex.table()['rank'].max()} "
                        "next tokens and the top tokens with each ablation (prob: after; clean_prob: before)"))
    with mpl.rc_context({"text.parse_math": False}):  # token texts ('$', ...) are not mathtext
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
own_drop = pd.concat([kp[kp.ablated != "none"].assign(prompt=f"{t} {i + 1}") for (t, i), kp in keyword_p.items()],
                     ignore_index=True)
tables.show(own_drop[["prompt", "ablated", "token", "clean_prob", "prob", "change"]].rename(columns={
    "token": "keyword token", "clean_prob": "clean", "prob": "ablated prob"}),
    caption="The keyword's probability at each shown prompt, clean and with each ablation")

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
id_ci = stats.share_ci(x)[1]
ident_rec = findings.record("Share of held-out prompts whose own concept's selectivity sub-model is the most active "
                            "(control: chance, one over the concepts of its set)", x.mean(), unit="fraction", ci=id_ci, control="random",
                control_value=float(ident.chance.mean()), figure="Fig. 7",
                verdict=findings.verdict_from(x.mean(), float(ident.chance.mean()), id_ci))
display(Markdown(f"The most active sub-model is the prompt's own concept for {x.mean():.0%} of {len(x)} held-out "
                 f"prompts (chance {ident.chance.mean():.0%}); per concept from {acc.accuracy.min():.0%} "
                 f"({acc.accuracy.idxmin()}) to {acc.accuracy.max():.0%} ({acc.accuracy.idxmax()})."))
tables.show(acc, caption="Share of each topic's held-out prompts whose own sub-model is the most active")

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
            display(tables.show(ex.table().drop(columns=["intensity"])))

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
# no better than random ones, at most 5% of concepts would pass the permutation test by chance; the findings
# compare each method's share with that rate (exact binomial 95% intervals over concepts). **Initialisation:** every
# method's pipeline also ran on the same architecture before training (section 2): a model that learned no
# concepts should have no sub-models that beat random, so each method's share at initialisation is the control
# for its trained share. **Sufficiency** (kept, in nats) is compared with that of the random sub-models.

# %%
val_rec = {}  # per method: the ledger's record of its validated share, read by the headline
for method, part in table.groupby("method", sort=False):
    x = part.beats_random.to_numpy(float)
    ci = stats.share_ci(x)[1]
    findings.record(f"Share of concepts whose {METHOD[method]} sub-model beats size-matched random sub-models "
                    "(permutation p <= 0.05; control: the 5% expected by chance)", x.mean(), unit="fraction", ci=ci,
                    control="random", control_value=0.05, figure="Fig. 1", verdict=findings.verdict_from(x.mean(), 0.05,
                                                                                                      ci))
    v, v0 = (part.status == "validated").to_numpy(float), part.init_beats_random.to_numpy(float)
    val_rec[method] = findings.record(
        f"Share of concepts with a validated {METHOD[method]} sub-model, trained model (control: the share whose "
        "sub-model beats random at initialisation)", v.mean(), unit="fraction", ci=stats.share_ci(v)[1],
        control="init", control_value=float(v0.mean()), figure="Fig. 1", verdict=findings.verdict_from(v.mean(), float(v0.mean()), stats.share_ci(v)[1]))
    suff = part[part.beats_random]
    if len(suff) >= 2:
        d = (suff.kept - suff.kept_random_mean).to_numpy()
        ci = stats.bootstrap_ci(d, stat=np.median, n_boot=nb.n_boot)
        findings.record(f"Sufficiency: nats of its concept's keyword loss a {METHOD[method]} sub-model that beats "
                        "random preserves when kept alone in its layer, minus what random sub-models of its size preserve "
                        f"(median over {len(suff)} concepts)", float(np.median(d)), unit="nats", ci=ci,
                        control="random", control_value=0.0, figure="Fig. 1",
                        verdict=findings.verdict_from(float(np.median(d)), 0.0, ci))
g = sel.gap.to_numpy()
findings.record("Median validation gap of the selectivity sub-models (control: median gap of random sub-models)",
                float(np.median(g)), unit="nats", ci=stats.bootstrap_ci(g, stat=np.median, n_boot=nb.n_boot),
                control="random", control_value=float(sel.random_mean.median()), figure="Fig. 1",
                verdict=findings.verdict_from(float(np.median(g)), float(sel.random_mean.median()),
                                              stats.bootstrap_ci(g, stat=np.median, n_boot=nb.n_boot)))
tables.show(table.pivot(index="concept", columns="method", values="gap")[list(found)],
            caption="Validation gap (nats) of each concept's sub-model, per method (Fig. 1)")

# %% [markdown]
# ## What it cannot do yet
#
# Computed from the validation scores: the concepts for which **no** method found a validated sub-model; the same
# for the methods that see only activations (Shapley is supervised by the validation metric itself); per method,
# the concepts it misses; and the concepts whose prompts activity does not identify better than chance
# (section 5).

# %%
missing = submodels.cannot_do(table)
unsupervised = submodels.cannot_do(table[table.method != "shapley"])
per_method = {m: list(p.concept[p.status != "validated"]) for m, p in table.groupby("method")}
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

# %% [markdown]
# ## Conclusion
#
# The headline and the table below are rendered from this notebook's ledger (values computed above); limitations
# and open questions follow them.

# %%
def said(rec: dict) -> str:
    return rec["verdict"] or findings.NO_VERDICT


vs, n_concepts = val_rec["selectivity"], table.concept.nunique()
findings.set_headline(
    f"Validated sub-models (ablating one hurts its own concept's keyword predictions more than size-matched random "
    f"sub-models and the same pipeline at initialisation do) were found for {n_concepts - len(missing)} of "
    f"{n_concepts} concepts by at least one method: " + ", ".join(
        f"{METHOD[m]} {int(r.validated)}/{int(r.concepts)}" for m, r in status.iterrows()) + ". By selectivity the "
    f"validated share is {vs['value']:.0%} against {vs['control_value']:.0%} of concepts whose sub-model beats random "
    f"at initialisation: **{said(vs)}**. Activity points at the prompt's own concept for {ident_rec['value']:.0%} of "
    f"held-out prompts (chance {ident_rec['control_value']:.0%}): **{said(ident_rec)}**.")
findings.conclusion()

# %%
display(Markdown(
    f"Limitations: the keywords are whatever the {hooked.cfg.d_vocab:,}-token vocabulary leaves as whole words; "
    + ("the model never trained on comments, so the toxic/harmless concepts probe text it has not seen; "
       if loaded is None else "") + "sub-model size is fixed in advance instead of chosen by validation; Shapley "
    f"covers only the last layer with {nb.n_permutations} permutations; latents are scored by selectivity only; "
    "activity is a mean z-score, so a few strongly active units and many weak ones look alike; sufficiency is "
    "measured within the sub-model's own layers only. Open questions: do the sub-models of different methods "
    "overlap, and does their union validate better than any one of them?"))
