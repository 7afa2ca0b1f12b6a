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
# # 4. Neuron Shapley: which MLP neurons carry a topic?
#
# Neuron Shapley (Ghorbani & Zou, NeurIPS 2020) credits each neuron with its Shapley value for a model
# metric: its marginal contribution averaged over every order in which neurons could be removed. It estimates
# the values by truncated Monte-Carlo permutation sampling (**TMC**) and saves evaluations with a
# multi-armed bandit (**TMAB**) that keeps sampling only neurons whose rank near the top-k boundary is still
# uncertain. It was written for CNN filters; we port it to the MLP neurons of notebook 1's transformer,
# with each DBpedia topic's keyword loss (notebook 3's keyword prompts) as the metric. The claim under test
# is the report's: **a handful of neurons, removed in Shapley order, destroys a topic's keyword accuracy**;
# and the question notebook 3 could not answer: **does removing a topic's top Shapley neurons damage that
# topic specifically?** Every claim sits next to its control: the same procedure at initialisation, a
# second training seed, and random neurons of the same number.
#
# **Reads:** `models/` (notebook 1's MLP model and its seed-1 twin, trained here if absent) or the model given by
# `model_path`, `data/`.
# **Writes:** `models/` (if absent), `shapley/` (every Shapley run, keyed by its configuration), `findings/`.
# **Runtime:** smoke ≈ 30 s; cpu ≈ 14 min on 2 idle cores with notebooks 1 and 3's models (the Shapley runs,
# kept in artifacts/shapley/: a rerun loads them); gpu: not measured yet.

# %% tags=["remove-cell"]
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from lib.analysis import findings, plotting, prompts, session, shapley, tables, units
from lib.analysis.stats import binomial_ci, binomial_tail_p, bootstrap_ci, permutation_p, spearman
from lib.core import artifacts, config, data, model, pretrained, train
from lib.core.runs import get_or_train
from lib.reports.neuron_shapley import kernel as neuron_shapley, params as report_params, plots

# %% tags=["parameters"]
preset = "cpu"  # "smoke" | "cpu" | "gpu"
seed = 0
n_permutations = None  # TMC permutations of the trained model (None takes the preset value)
k = None  # top-k neurons for specificity, seeds and TMAB
n_random = None  # random orders / random k-sets (the controls)
layers = None  # the MLP layers whose neurons are players (None takes the preset value)
n_prompts = None  # game prompts per topic (the evaluation prompts are others)
model_path = None  # a local model (folder or Hugging Face cache name); None: our own model of the preset

# %%
sess = session.start("04_neuron_shapley", preset, model_path=model_path)
device = sess.device
cfg = config.resolve(preset, attention_only=False, seed=seed)
nb = report_params.resolve(preset, n_permutations=n_permutations, k=k, n_random=n_random, layers=layers,
                            n_prompts=n_prompts)
loaded = None if model_path is None else pretrained.load(model_path, device)  # (HookedTransformer, its tokenizer)
n_ctx = cfg.model.n_ctx if loaded is None else min(cfg.model.n_ctx, loaded[0].cfg.n_ctx)
bos = loaded is not None or cfg.data.task == "windows"  # prompts start with the token texts start with
if loaded is not None and layers is None and nb.layers is not None:  # the preset's, as depths in notebook 1's
    depth = (loaded[0].cfg.n_layers - 1) / max(1, cfg.model.n_layers - 1)
    nb = nb.replace(layers=tuple(sorted({round(layer * depth) for layer in nb.layers})))
display(Markdown(
    f"Preset **{preset}**: players are the MLP neurons of {'every layer' if nb.layers is None else f'layer(s) {list(nb.layers)}'}; "
    f"{nb.n_permutations} TMC permutations for the trained model ({nb.n_permutations_control} for each control); "
    f"top-k with k = {nb.k}; {nb.n_prompts} game prompts and {nb.n_eval_prompts} evaluation prompts per topic; "
    f"{nb.n_random} random orders and {nb.n_random_sets} random k-sets as controls; absent neurons are "
    f"{nb.ablation}-ablated."))

# %%
if loaded is not None:
    display(Markdown(
        f"**The model under study is {sess.ledger.model}** (`{model_path}`), not notebook 1's: the same "
        f"shipped texts, keywords and prompts in its own tokenizer, windows of {n_ctx} tokens, players in layer(s) "
        f"{'all' if nb.layers is None else list(nb.layers)} (the preset's, read as depths in notebook 1's 2-layer "
        "model), and the same architecture freshly initialised as the init control. Skipped, because it needs a "
        "second training run of our own: the seed-1 model (its Shapley values and the seed control). Its findings "
        f"go to a ledger of its own (`findings/{findings.MODELS}/{sess.ledger.model}/`), not to the book's findings "
        "page."))
    session.card_or_skip(loaded[0], sess.ledger.model, "Neuron Shapley over MLP neurons (this whole report)", mlp=True)

# %% [markdown]
# ## 1. The game: keyword prompts per topic
#
# Players are MLP neurons (`mlp.hook_post`, after the GELU) of the layers in `nb.layers`; a coalition is a
# set of neurons left intact, and the others are **zero-ablated** (Neuron Shapley's choice). The value of a
# coalition for topic *t* is **minus the mean keyword loss** on *t*'s prompts, so a neuron's Shapley value is
# the keyword loss (nats) it saves, shared fairly with the others, and the values of all neurons sum to the
# loss that removing them all costs. Keywords and prompts are notebook 3's (whole content words of 1–4 tokens
# picked by log-odds from the training articles, scored by their summed log-probability; prompts are held-out
# test articles up to their first keyword), and a topic is played only if the model beats notebook 3's
# unigram / uniform baseline on it. We
# split each topic's prompts into a **game** set (estimating Shapley values) and an **evaluation** set of
# other articles (measuring what removal does), so that removal curves are not scored on the prompts the
# neurons were chosen on. Only the 14 DBpedia topics are used: the model never trained on the comments.

# %%
tok = data.get_tokenizer(cfg.data) if loaded is None else loaded[1]
kw = nb.keywords.keywords(tok, "dbpedia")
pr = nb.keywords.prompts(tok, kw, "dbpedia", nb.n_prompts + nb.n_eval_prompts, n_ctx, bos=bos, seed=seed)
rank = pr.frame().groupby("topic").cumcount().to_numpy()
game_pr, eval_pr = pr.select(np.flatnonzero(rank < nb.n_prompts)), pr.select(np.flatnonzero(rank >= nb.n_prompts))
topics = tuple(t for t in dict.fromkeys(game_pr.topics) if eval_pr.topics.count(t) >= 2)
game_pr, eval_pr = game_pr.subset(topics), eval_pr.subset(topics)
display(Markdown(f"{len(topics)} topics; {len(game_pr)} game prompts and {len(eval_pr)} evaluation prompts "
                 f"(mean length {pr.lengths.float().mean():.1f} tokens). Keywords of two topics: " + "; ".join(
                     f"{t}: {', '.join(repr(tok.display(x)) for x in kw[kw.topic == t].token_ids.head(6))}"
                     for t in topics[:2])))

# %% [markdown]
# ## 2. Models and the batched game
#
# The model under study is notebook 1's 2-layer transformer with MLPs; the controls are the same
# architecture at initialisation and a second training seed. Each neuron's activation statistics per topic
# (notebook 3's `topic_stats` on training-split windows) give its mean (for mean ablation) and, in section 4,
# its selectivity. The game (`lib.analysis.shapley.neuron_game`) evaluates
# many coalitions in one forward pass: each batch row carries its own neuron mask, the pass resumes from
# cached clean activations at the first player layer, and only the positions that predict each prompt's keyword
# (its last few tokens: keywords are whole words of 1–4 tokens) are unembedded
# (a test checks it against one plain forward per coalition; `bench/shapley_eval.py` times both).

# %% tags=["training"]
if loaded is None:
    hooked = {"trained": model.to_hooked(get_or_train(cfg, device=device)[0]),
              "seed 1": model.to_hooked(get_or_train(cfg.replace(seed=seed + 1), device=device)[0]),
              "init": model.to_hooked(train.init_model(cfg, device).eval())}
else:  # a model given by path has no second training seed of ours
    hooked = {"trained": loaded[0], "init": pretrained.load_model(model_path, device, init=True, seed=seed)}

# %%
# report 3's probe gate: a topic's game is played only if the model predicts its keywords better than a unigram
margins = prompts.model_probe_margins(hooked["trained"], tok, pr, data.corpus_texts(cfg.data), seed=seed)
dropped = [t for t in topics if not margins.set_index("topic").usable.get(t, False)]
topics = tuple(t for t in topics if t not in dropped) if nb.gate_probes else topics
game_pr, eval_pr = game_pr.subset(topics), eval_pr.subset(topics)
windows = prompts.topic_windows(tok, "dbpedia", "fit", n_ctx, nb.n_windows, topics)
stats = {name: units.topic_stats(h, windows, "mlp_post", progress=False) for name, h in hooked.items()}
means = {name: st.pooled()[0] for name, st in stats.items()}  # each neuron's mean activation (for mean ablation)
games, evals = ({name: shapley.neuron_game(h, p, nb.layers, ablation=nb.ablation, mean=means[name], topics=topics)
                 for name, h in hooked.items()} for p in (game_pr, eval_pr))
players, n = games["trained"].players, games["trained"].n_players
ends = {name: -g(torch.stack([torch.ones(n, dtype=bool), torch.zeros(n, dtype=bool)])) for name, g in evals.items()}
tables.show(pd.DataFrame({f"{name}: {c}": ends[name][i].numpy() for name in hooked for i, c in
                          enumerate(("clean loss", "all removed"))}, index=pd.Index(topics, name="topic")),
            caption="Mean keyword loss (nats) on the evaluation prompts, with every player present and with all removed")

# %%
e, n_vocab = ends["trained"], hooked["trained"].cfg.d_vocab
display(Markdown(
    (f"Topics whose keyword probe does not beat the unigram / uniform baseline, left out: {', '.join(dropped)}. "
     if dropped and nb.gate_probes else "Every topic's keyword probe beats the unigram / uniform baseline. "
     if not dropped else f"Probes not beating the baseline (kept: this preset is a code check): {', '.join(dropped)}. ")
    +
    f"{n} players (the MLP neurons of layer(s) {list(players.layers)}). On the evaluation prompts, removing all of "
    f"them {'raises' if e[1].mean() >= e[0].mean() else 'lowers'} the trained model's mean keyword loss from "
    f"{e[0].mean():.2f} to {e[1].mean():.2f} nats "
    f"(uniform guessing: ln {n_vocab} = {np.log(n_vocab):.2f}); at initialisation it moves "
    f"from {ends['init'][0].mean():.2f} to {ends['init'][1].mean():.2f}."))

# %% [markdown]
# ## 3. Shapley values of every neuron for every topic
#
# TMC samples uniform permutations, removes the neurons one by one in that order starting from the full
# model, and credits each neuron with the change in value its removal causes. Neuron Shapley stops a walk
# early (**truncation**) once the model is as broken as with every neuron removed: within `truncation_tol` times
# the game's range (the spread of the values seen so far) of v(none). That is exact if a broken model stays
# broken as more neurons go; the end of this section measures whether it holds here. The presets run exact,
# untruncated walks (`truncation_tol = 0`). One walk serves all topics at once (the game returns a value per
# topic). We run it on the trained model, and with fewer permutations on the seed-1 model and at
# initialisation (the seed and initialisation controls, in Controls below). Runs are cached under `shapley/`.

# %%
GAME = ("layers", "ablation", "n_prompts", "truncation_tol")  # what defines the game (+ the keyword knobs)
key = dict(cfg=cfg.to_dict(), game={k: v for k, v in nb.to_dict().items() if k in GAME or k == "keywords"}, seed=seed,
           topics=topics, version=1)
if loaded is not None:  # a model given by path: Shapley runs of its own
    key["model"] = units.fingerprint(hooked["trained"])


def tmc(name: str, n_perm: int) -> shapley.ShapleyResult:
    path = artifacts.path("shapley", f"tmc-{name}".replace(" ", "_"), dict(key, n_permutations=n_perm))
    return shapley.cached(path, lambda: shapley.tmc_shapley(
        games[name], n, n_perm, nb.truncation_tol, torch.Generator().manual_seed(seed), progress=True,
        desc=f"TMC, {name}"))


res = {name: tmc(name, nb.n_permutations if name == "trained" else nb.n_permutations_control) for name in hooked}
phi = res["trained"].values  # (neuron, topic), nats of keyword loss
long = pd.concat([pd.DataFrame({"Shapley value": r.values.flatten().numpy(), "model": name}) for name, r in res.items()
                  if name != "seed 1"])
fig = plots.value_histograms(long, "Shapley value", "model",
                                "Fig. 1: Shapley values of all neurons for every topic's keyword metric",
                                "Shapley value (nats of keyword loss saved)")

# %%
share = {name: neuron_shapley.top_share(r.values, nb.k) for name, r in res.items()}
ci = bootstrap_ci(share["trained"], np.median, nb.n_boot)
findings.record(f"Share of a topic's absolute Shapley credit held by its top-{nb.k} neurons (median over topics)",
                float(np.median(share["trained"])), unit="fraction", ci=ci, figure="Fig. 1", control="init",
                control_value=float(np.median(share["init"])),
                verdict=findings.verdict_from(float(np.median(share["trained"])), float(np.median(share["init"])), ci))
signif = (phi.abs() > 2 * res["trained"].stderr).float().mean().item()
total = phi.sum(0)
display(Markdown(
    f"{res['trained'].n_evals:,} coalitions evaluated for the trained model ({nb.n_permutations} permutations). "
    f"{(phi > 0).float().mean():.0%} of the (neuron, topic) values are positive; they range from {phi.min():.3f} to "
    f"{phi.max():.3f} nats (at initialisation {res['init'].values.min():.3f} to {res['init'].values.max():.3f}); "
    f"{signif:.0%} lie more than two standard errors from zero. The values of a topic sum to v(all) − v(none), which "
    f"is negative for {int((total < 0).sum())} of {len(topics)} topics"
    + (": for those, removing every player *lowers* the keyword loss, so helpful and harmful neurons coexist. "
       if (total < 0).any() else ". ")
    + f"A topic's top {nb.k} neurons hold a median "
    f"{np.median(share['trained']):.0%} of its absolute credit ({np.median(share['init']):.0%} at initialisation, "
    f"{nb.k / n:.1%} if credit were spread evenly)."))

# %% [markdown]
# **Does truncation pay here?** On the first `truncation_check_permutations` walks of this run, we rerun TMC with
# each tolerance in `truncation_check_tols` (the same permutations, cut where the value comes within the
# tolerance of v(none)) and compare: the evaluations it needs, and whether each topic's top-k stays the same.
# We do it for the game of all topics (a walk can only be cut where every topic is near its v(none)) and for the
# single-topic games of section 6. We also count how many coalitions along the untruncated walks are worth less
# than v(none): truncation assumes none are.

# %%
def topic_game(t: str):
    """The trained model's game for topic t alone (its game prompts only)."""
    return shapley.neuron_game(hooked["trained"], game_pr.subset([t]), nb.layers, ablation=nb.ablation,
                               mean=means["trained"]).single(t)


trunc_topics = [t for t in nb.cost_topics if t in topics] or [topics[0]]
trunc_rows, below = [], {}
for name, fn in {"all topics": games["trained"], **{t: topic_game(t) for t in trunc_topics}}.items():
    df, b = shapley.truncation_check(fn, n, nb.truncation_check_tols, nb.truncation_check_permutations, nb.k, seed)
    trunc_rows.append(df.assign(game=name))
    below[name] = b.numpy().ravel()
trunc = pd.concat(trunc_rows, ignore_index=True)
single = trunc[trunc.game != "all topics"]
lo_tol = min(nb.truncation_check_tols)
at_lo = single[single.tolerance == lo_tol]
findings.record(f"Share of single-topic games whose top-{nb.k} Shapley neurons are unchanged by truncation at "
                f"tolerance {lo_tol}", float(at_lo.top_k_unchanged.mean()), unit="fraction",
                control="none: a check of an approximation against the same walks computed exactly",
                verdict="supported" if (at_lo.top_k_unchanged == 1).all() else "not supported",
                rule="supported only if every topic's top-k is unchanged")
display(Markdown(
    f"Along untruncated walks, {np.mean(below['all topics']):.0%} of the coalitions (mean over topics; range "
    f"{below['all topics'].min():.0%}–{below['all topics'].max():.0%}) are worth less than removing every neuron: "
    "the walks pass v(none) on their way down and back, so a cut there drops marginals that are not zero. In the "
    f"game of all topics, truncation at tolerance {', '.join(map(str, nb.truncation_check_tols))} uses "
    + ", ".join(f"{x:.0%}" for x in trunc[trunc.game == 'all topics'].evaluation_share)
    + " of the evaluations (a walk is evaluated in batches and can only be cut where every topic is near v(none) at "
    f"once). In the single-topic games it uses a median {single.evaluation_share.median():.0%}, and at the smallest "
    f"tolerance ({lo_tol}) the top-{nb.k} is unchanged in {int(at_lo.top_k_unchanged.sum())} of {len(at_lo)} "
    f"topics (mean Jaccard overlap {at_lo.jaccard.mean():.2f}). "
    + ("Truncation saves evaluations here without changing any top-k." if (single.top_k_unchanged == 1).all() else
       "Truncation saves evaluations only by changing the answer, so the presets leave it off.")))
trunc_table = trunc.pivot(index="game", columns="tolerance", values=["evaluation_share", "top_k_unchanged"])
trunc_table.columns = [f"{'share of evaluations' if v == 'evaluation_share' else 'top-k unchanged'}, tolerance {t:g}"
                       for v, t in trunc_table.columns]
tables.show(trunc_table)

# %% [markdown]
# The top neurons' profiles: for each topic its two highest-valued neurons, and their values for every topic.
# A neuron that serves one topic has one hot cell in its row; a generic neuron (helping keyword prediction in
# general) has a hot row.

# %%
top_rows = list(dict.fromkeys(i for j in range(len(topics)) for i in res["trained"].top(2, j).tolist()))
lay, unit = players.layer_units()
profile = pd.DataFrame(phi[top_rows].numpy(), columns=topics, index=[f"L{lay[i]}.{unit[i]}" for i in top_rows])
fig = plotting.matrix_heatmap(profile, "Fig. 2: Shapley values of each topic's top-2 neurons across topics",
                              "topic (keyword metric)", "neuron (layer.unit)", "Shapley value (nats)")
vals = np.sort(profile.to_numpy(), 1)
display(Markdown(f"Across these {len(profile)} neurons, the median ratio of a neuron's largest topic value to its second "
                 f"largest is {np.median(vals[:, -1] / np.clip(vals[:, -2], 1e-6, None)):.1f} (1 = equally useful to two "
                 "topics)."))

# %% [markdown]
# ## 4. Removal curves: how few neurons destroy a topic's keywords?
#
# For every topic we remove its neurons in order of importance and measure the topic's keyword loss and top-5
# accuracy on its **evaluation** prompts. Orders: **Shapley** (section 3); **selectivity**, notebook 3's
# cluster criterion (Cohen's d of the neuron's mean activation on the topic's training text versus the other
# topics); **gradient × activation**, the first-order estimate of each neuron's ablation effect on the game
# prompts (one backward pass); and **random** orders (`n_random` seeds, the control). Bands are 95% bootstrap
# intervals over topics × prompts (× seeds for random).

# %%
gxa_pp = neuron_shapley.grad_x_act(hooked["trained"], game_pr, players, means["trained"] if nb.ablation == "mean" else None)
scores = {"Shapley": phi, "selectivity": torch.stack([players.gather(stats["trained"].selectivity(t)) for t in topics], 1),
          "grad × act": torch.stack([gxa_pp[games["trained"].topic_idx(t)].mean(0) for t in topics], 1)}
g = torch.Generator().manual_seed(seed)
removal = neuron_shapley.removal_table(evals["trained"], scores, sorted({*nb.removal_ks, nb.k}), nb.n_random, g)
ORDER = ["Shapley", "grad × act", "selectivity", "random"]
fig = plots.removal_curves(removal, "k", {"top5": "top-5 keyword accuracy (fraction)", "loss": "keyword loss (nats)"},
                              "ordering", "Fig. 3: a topic's keyword metrics as its neurons are removed, by ordering",
                              "neurons removed (count)", hue_order=ORDER)

# %%
dk = neuron_shapley.destroy_k(removal)
med_k = dk.groupby("ordering").k.median()
kr = dk[dk.ordering == "random"].groupby("topic").k.median()
ks_sh = dk[dk.ordering == "Shapley"].set_index("topic").k
k_rec = None
if len(ks_sh) >= 2:
    ci = bootstrap_ci(ks_sh.to_numpy(), np.median, nb.n_boot)
    k_rec = findings.record("Neurons removed in Shapley order until a topic's top-5 keyword accuracy halves (median over "
                    f"topics; censored at {max(nb.removal_ks)})", float(med_k["Shapley"]), unit="neurons", ci=ci, control="random",
                    control_value=float(kr.median()), figure="Fig. 3",
                    verdict=findings.verdict_from(float(med_k["Shapley"]), float(kr.median()), ci, higher_is_better=False))
at_k = removal[removal.k == nb.k].merge(removal[removal.k == 0][["ordering", "seed", "prompt", "loss"]],
                                           on=["ordering", "seed", "prompt"], suffixes=("", "_clean"))
at_k["d_loss"] = at_k.loss - at_k.loss_clean
dmg = at_k.groupby(["ordering", "topic"]).d_loss.mean().unstack("ordering")
dmg_rec = {}
for o in ("Shapley", "grad × act", "selectivity"):
    ci = bootstrap_ci(dmg[o].to_numpy(), np.mean, nb.n_boot)
    dmg_rec[o] = findings.record(f"Keyword-loss rise on a topic's held-out prompts after removing its top-{nb.k} neurons ranked by {o} "
                    "(mean over topics)", float(dmg[o].mean()), unit="nats", ci=ci, control="random",
                    control_value=float(dmg["random"].mean()), figure="Fig. 3",
                    verdict=findings.verdict_from(float(dmg[o].mean()), float(dmg["random"].mean()), ci))
display(Markdown(
    f"Topics with a clean top-5 accuracy above 0: {len(ks_sh)}. Median neurons removed until it halves: "
    + ", ".join(f"{o} {med_k.get(o, np.nan):g}" for o in ORDER)
    + f" (of {n}; {int(dk[dk.ordering == 'Shapley'].censored.sum())} of {len(ks_sh)} topics never halve in Shapley "
    f"order within {max(nb.removal_ks)}). Removing {nb.k} neurons changes the topic's loss by "
    + ", ".join(f"{o} {dmg[o].mean():+.3f}" for o in ORDER) + " nats on average."))

# %% [markdown]
# ## 5. Specificity: does removing topic X's neurons hurt X more than other topics?
#
# Remove the top-k Shapley neurons of topic X (rows) and measure the keyword-loss rise on every topic Y
# (columns), on the evaluation prompts. The **specificity gap** of a row is the damage on X minus the mean
# damage on the other topics (nats; 0 = no specificity), as in notebook 3: a difference, defined when the
# damage elsewhere is zero or negative (a ratio is not). The control removes `n_random_sets` random k-sets (at
# least 19, so that p can reach 0.05); for each
# we compute the gap with every topic as the "target" and take the median; the **permutation p-value** of the
# observed median is (1 + #random ≥ it) / (1 + n_random_sets), and the finding is supported at p ≤ 0.05 with its
# interval above 0 (pre-registered). We also count the rows in which X itself is the topic hurt most, with an
# exact binomial p-value against chance (one in the number of topics).

# %%
clean_eval = ends["trained"][0]
top_masks = torch.stack([neuron_shapley.removal_masks(res["trained"].top(nb.k, j), [nb.k], n)[0] for j in range(len(topics))])
rand_masks = torch.stack([neuron_shapley.removal_masks(torch.randperm(n, generator=g), [nb.k], n)[0]
                          for _ in range(nb.n_random_sets)])
damage = -evals["trained"](top_masks) - clean_eval  # (X removed, Y measured)
rand_damage = -evals["trained"](rand_masks) - clean_eval  # (random set, Y measured)
gap = neuron_shapley.specificity_gap(damage).numpy()
null = np.array([np.median(neuron_shapley.specificity_gap(row[None].expand(len(topics), -1)).numpy()) for row in rand_damage])
fig = plotting.matrix_heatmap(pd.DataFrame(damage.numpy(), index=topics, columns=topics),
                              f"Fig. 4: keyword-loss rise on topic Y after removing topic X's top-{nb.k} Shapley neurons",
                              "topic measured (Y)", "topic whose neurons are removed (X)", "loss rise (nats)",
                              mark_diagonal=True)

# %%
ci = bootstrap_ci(gap, np.median, nb.n_boot)
q95 = float(np.quantile(null, 0.95))
p_gap = permutation_p(float(np.median(gap)), null)
fig = plotting.null_histograms({"specificity": (null, {"top-k Shapley neurons (median over topics)": (float(np.median(gap)), ci)})},
                               "Fig. 5: specificity gap of top-k Shapley neurons vs random k-sets",
                               "specificity gap (damage on X − mean damage elsewhere, nats)", ylabel="random k-sets (count)",
                               null_label="random k-sets")
spec_rec = findings.record(
                f"Specificity gap of removing a topic's top-{nb.k} Shapley neurons (own minus other topics' keyword "
                f"damage, median over topics; vs {nb.n_random_sets} random k-sets)", float(np.median(gap)), unit="nats",
                ci=ci,
                control="random", control_value=q95, p=p_gap, figure="Fig. 4-5",
                verdict=findings.verdict_from_p(float(np.median(gap)), p_gap, ci))
hit = damage.argmax(1).numpy() == np.arange(len(topics))
p_hit = binomial_tail_p(int(hit.sum()), len(hit), 1 / len(topics))
hit_rec = findings.record(
                f"Share of topics whose own keyword loss rises most when their top-{nb.k} Shapley neurons are "
                "removed (vs chance)", float(hit.mean()), unit="fraction",
                ci=binomial_ci(int(hit.sum()), len(hit)), control="random", control_value=1 / len(topics),
                p=p_hit, figure="Fig. 4", verdict=findings.verdict_from_p(float(hit.mean()) - 1 / len(topics), p_hit))
display(Markdown(f"Median specificity gap {np.median(gap):+.3f} nats (95% CI {ci[0]:+.3f} to {ci[1]:+.3f}) against a 95th "
                 f"percentile of {q95:+.3f} for random {nb.k}-sets (median {np.median(null):+.3f}; permutation "
                 f"p = {p_gap:.3f}); in {hit.mean():.0%} of rows the removed topic is the one hurt most (chance "
                 f"{1 / len(topics):.0%}; binomial p = {p_hit:.2g}). Off-target damage is at or below zero in "
                 f"{int((damage.sum(1) - damage.diagonal() <= 0).sum())} of {len(topics)} rows, where a ratio would "
                 "be undefined."))

# %% [markdown]
# ## 6. Cost and convergence: TMAB versus TMC, and cheap attribution versus Shapley
#
# For a few topics we run both estimators on the same single-topic game (the topic's game prompts), each until its
# own stopping rule and within the same budget of value evaluations (`cost_permutations` full TMC walks). TMC
# samples every neuron in every permutation and stops when its top-k has not changed for `stable_for` permutations.
# TMAB (Neuron Shapley's bandit) computes marginals only for neurons whose empirical-Bernstein interval (Maurer &
# Pontil; its range term keeps early intervals wide) does not yet separate them from the top-k boundary, and stops
# when the top-k set is separated at confidence 1 − δ (`lib.analysis.shapley.tmab_shapley`). Both are scored
# against an **independent** reference: the top-k of section 3's TMC run, which used another seed. We count value
# evaluations (one per coalition) and check each estimator's top-k against the reference. Both draw the same
# permutations (same seed), so TMAB's trace follows TMC's until its intervals start to set neurons aside.

# %%
cost_topics = [t for t in nb.cost_topics if t in topics] or [topics[0]]
cost, cost_tables = {}, []
for t in cost_topics:
    one = topic_game(t)
    ref = frozenset(res["trained"].top(nb.k, topics.index(t)).tolist())
    runs = shapley.cost_estimators(one, n, nb.k, nb.cost_permutations, nb.tmab_delta, nb.stable_for, seed + 1,
                                   progress=True)
    cost[t] = {m: shapley.cached(artifacts.path("shapley", f"cost-{m}", dict(
        key, topic=t, n_permutations=nb.cost_permutations, delta=nb.tmab_delta, k=nb.k, stable_for=nb.stable_for,
        version=2)), f) for m, f in runs.items()}
    cost_tables.append(shapley.cost_table(cost[t], nb.k, ref).assign(topic=t, ref=[ref, ref]))
costs = pd.concat(cost_tables, ignore_index=True)
t0 = cost_topics[0]
ref0 = costs[costs.topic == t0].ref.iloc[0]
conv = pd.concat([pd.DataFrame({"evaluations": r.trace_evals.numpy(), "estimator": m,
                                "overlap": [shapley.set_jaccard(s, ref0) for s in r.trace_top(nb.k)]})
                  for m, r in cost[t0].items()])
fig = plots.convergence_curves(conv, "evaluations", "overlap", "estimator",
                               f"Fig. 6: top-{nb.k} overlap with the independent reference vs evaluations ({t0})",
                               "value-function evaluations (coalitions, log scale)",
                               f"Jaccard overlap with reference top-{nb.k}",
                               {m: costs[(costs.topic == t0) & (costs.estimator == m)].evaluations.iloc[0]
                                for m in ("TMC", "TMAB")})
cost_table = costs.pivot(index="topic", columns="estimator", values=["evaluations", "stopped_by", "exact", "jaccard"])
cost_table.columns = [f"{m}: {v.replace('_', ' ')}" for v, m in cost_table.columns]
tables.show(cost_table)

# %%
by = costs.pivot(index="topic", columns="estimator", values="evaluations")
exact = costs.pivot(index="topic", columns="estimator", values="exact").astype(bool)
both = exact.all(axis=1)
ratio = (by["TMC"] / by["TMAB"])[both].to_numpy(float)
certified = int((costs[costs.estimator == "TMAB"].stopped_by == "rule").sum())
for m in ("TMC", "TMAB"):
    findings.record(f"Share of topics whose {m} top-{nb.k} (at its stopping rule or budget) equals an independent "
                    "reference run's", float(exact[m].mean()), unit="fraction", figure="Fig. 6",
                    control="none: accuracy of the cost comparison, both estimators scored the same way")
if len(ratio):
    findings.record(f"Evaluations TMC (top-{nb.k} stable) ÷ TMAB (certified, or at the shared budget), median over "
                    f"the {len(ratio)} topics where both are exact", float(np.median(ratio)), unit="ratio",
                    ci=bootstrap_ci(ratio, np.median, nb.n_boot) if len(ratio) >= 2 else None, figure="Fig. 6",
                    control="none: a cost measurement, both estimators on the same games with the same budget")
display(Markdown(
    f"Against the independent reference, TMC's top-{nb.k} is exact in {int(exact['TMC'].sum())} of {len(by)} topics "
    f"and TMAB's in {int(exact['TMAB'].sum())}. TMAB separated its top-{nb.k} within the budget in {certified} of "
    f"{len(by)} topics; TMC's stopping rule fired in {int((costs[costs.estimator == 'TMC'].stopped_by == 'rule').sum())}. "
    + (f"Where both are exact, TMC used {np.median(ratio):.2f}× TMAB's evaluations (median; range "
       f"{ratio.min():.2f}–{ratio.max():.2f})." if len(ratio) else "No topic has both estimators exact.")
    + " A TMAB interval is at least 7R log(2/δ′)/(3(n − 1)) wide (R: the range of the marginals, δ′: δ split over "
    "neurons and checks), so separating a gap Δ needs about 7R log(2/δ′)/(3Δ) marginals per boundary neuron: that, "
    "not the number of neurons, bounds how much it can save."))

# %% [markdown]
# Can a cheap score stand in for Shapley? Spearman correlation, per topic, between each neuron's Shapley value
# and its gradient × activation or selectivity score. The ceiling is the **split-half reliability** of the
# Shapley estimates themselves (Spearman between the estimates from the first and second halves of the
# permutations): a cheap score cannot agree with Shapley better than Shapley agrees with itself.

# %%
a, b = neuron_shapley.split_half(res["trained"])
rel = np.array([spearman(a[:, j].numpy(), b[:, j].numpy()) for j in range(len(topics))])
rho = {o: np.array([spearman(scores[o][:, j].numpy(), phi[:, j].numpy()) for j in range(len(topics))])
       for o in ("grad × act", "selectivity")}
j0 = topics.index(t0)
fig = plots.agreement_scatter({o: (scores[o][:, j0].numpy(), phi[:, j0].numpy()) for o in rho},
                                 "rank under the cheap score (percentile)", "rank under Shapley (percentile)",
                                 f"Fig. 7: cheap scores vs Shapley values, one dot per neuron ({t0})")
findings.record("Split-half reliability of the Shapley estimates (Spearman, median over topics)", float(np.median(rel)),
                unit="Spearman ρ", ci=bootstrap_ci(rel, np.median, nb.n_boot), figure="Fig. 7",
                control="none: the noise ceiling of the estimates themselves")
for o, r in rho.items():
    findings.record(f"Spearman of {o} with Shapley values (median over topics)", float(np.median(r)), unit="Spearman ρ",
                    ci=bootstrap_ci(r, np.median, nb.n_boot), figure="Fig. 7",
                    control=f"none: compare with the split-half reliability of Shapley ({np.median(rel):.2f})")
display(Markdown(f"Median Spearman with Shapley: gradient × activation {np.median(rho['grad × act']):.2f}, selectivity "
                 f"{np.median(rho['selectivity']):.2f}; split-half reliability of Shapley {np.median(rel):.2f}."))

# %% [markdown]
# ## Controls
#
# **Initialisation:** the same pipeline on the untrained model (its own Shapley values, its own clean loss):
# how much does removing a topic's top-k Shapley neurons raise its held-out keyword loss? **Seeds:** do two
# independently trained models pick the same top-k neurons? Neuron indices are arbitrary across seeds, so we
# first match each neuron of the seed-0 model to one of the seed-1 model, greedily by activation correlation
# on the same text (notebook 3's `match_units`), then take the Jaccard overlap of the matched top-k sets,
# against the overlap of random k-sets. **Random** neurons of the same number are the control beside every
# claim above.

# %%
rise = {}
for name in ("trained", "init"):
    m = torch.stack([neuron_shapley.removal_masks(res[name].top(nb.k, j), [nb.k], n)[0] for j in range(len(topics))])
    rise[name] = ((-evals[name](m) - ends[name][0]).diagonal()).numpy()
ci = bootstrap_ci(rise["trained"], np.mean, nb.n_boot)
_ = findings.record(f"Keyword-loss rise on a topic's held-out prompts after removing its top-{nb.k} Shapley neurons, "
                "trained vs untrained model (mean over topics)", float(rise["trained"].mean()), unit="nats", ci=ci,
                control="init", control_value=float(rise["init"].mean()), figure="Fig. 3",
                verdict=findings.verdict_from(float(rise["trained"].mean()), float(rise["init"].mean()), ci))

# %%
if "seed 1" in hooked:
    wins = prompts.topic_windows(tok, "dbpedia", "fit", n_ctx, nb.n_match_windows, topics)
    tokens = torch.cat(list(wins.values()))
    acts = {name: units.unit_activations(hooked[name], tokens, "mlp_post") for name in ("trained", "seed 1")}
    perm = torch.cat([units.match_units(acts["trained"][layer], acts["seed 1"][layer]) + i * players.d_mlp
                      for i, layer in enumerate(players.layers)])  # seed-0 player -> matched seed-1 player
    jac = np.array([shapley.set_jaccard(perm[res["trained"].top(nb.k, j)].tolist(),
                                        res["seed 1"].top(nb.k, j).tolist()) for j in range(len(topics))])
    rand_j = np.array([np.median([shapley.set_jaccard(torch.randperm(n, generator=g)[: nb.k].tolist(),
                                                      torch.randperm(n, generator=g)[: nb.k].tolist())
                                  for _ in topics]) for _ in range(500)])
    jq = float(np.quantile(rand_j, 0.95))
    seed_rec = findings.record(f"Overlap of a topic's top-{nb.k} Shapley neurons in two training seeds after "
                               "matching neurons (Jaccard, median over topics)", float(np.median(jac)), unit="Jaccard",
                    ci=bootstrap_ci(jac, np.median, nb.n_boot), control="random", control_value=jq,
                    verdict=findings.verdict_from(float(np.median(jac)), jq,
                                                  bootstrap_ci(jac, np.median, nb.n_boot)))
    seed_text = (f" Matched top-{nb.k} overlap across seeds: median Jaccard {np.median(jac):.2f} (random k-sets: 95th "
                 f"percentile {jq:.2f}).")
else:
    seed_text = (" The seed control is skipped for a model given by path: it compares the top neurons of two training "
                 "seeds of our own model, and a loaded model comes with one set of weights.")
display(Markdown(f"Removing a topic's top-{nb.k} Shapley neurons changes its loss by {rise['trained'].mean():+.3f} nats "
                 f"in the trained model and {rise['init'].mean():+.3f} at initialisation." + seed_text))

# %% [markdown]
# ## Conclusion
#
# The headline and the table below are rendered from this notebook's ledger (values computed above). Limitations: the `cpu`
# preset's players are the last MLP layer only (512 neurons), because a coalition that changes layer 0 must
# re-run layer 1's attention at every position (`bench/shapley_eval.py` measures how much dearer); the `gpu`
# preset takes every layer. Walks are not truncated (section 3 measures why), so TMC costs a full walk per permutation. Shapley values
# are Monte-Carlo estimates from a limited number of permutations (their split-half reliability is reported
# above), on a few prompts per topic, and the TMAB-vs-TMC reference is a second TMC run on the same prompts (the
# bench also compares them on games with exact answers); absent neurons are zero-ablated, which pushes
# activations off their distribution (mean ablation is one argument away: `ablation="mean"`); keywords are
# content words chosen by frequency statistics, not by meaning. Open questions: do Shapley neurons of layer 0 behave like
# those of layer 1? Does the specificity of top-k removal grow or shrink with k?

# %%
sh = dmg_rec["Shapley"]
k_text = (f"Removed in Shapley order, a median of **{findings.fmt(k_rec['value'])}** of {n} neurons halve a topic's "
          f"top-5 keyword accuracy (counts censored at {max(nb.removal_ks)}), against "
          f"{findings.fmt(k_rec['control_value'])} in random order (*{k_rec['verdict']}*); " if k_rec is not None else
          "Too few topics have a clean top-5 keyword accuracy above 0 to count the neurons that halve it; ")
findings.set_headline(
    k_text + f"removing a topic's top {nb.k} Shapley neurons changes its held-out keyword loss by "
    f"**{sh['value']:+.3g}** nats, against {sh['control_value']:+.3g} for {nb.k} random neurons (*{sh['verdict']}*). "
    f"It hurts the topic itself {findings.fmt(abs(spec_rec['value']))} nats "
    f"{'more' if spec_rec['value'] >= 0 else 'less'} than the others (median specificity gap, 95% CI "
    f"[{findings.fmt(spec_rec['ci_low'])}, {findings.fmt(spec_rec['ci_high'])}], permutation p = "
    f"{findings.fmt(spec_rec['p'])}): specificity is *{spec_rec['verdict']}*; the removed topic is the one hurt most "
    f"for {hit_rec['value']:.0%} of topics (chance {hit_rec['control_value']:.0%}; *{hit_rec['verdict']}*).")
findings.conclusion()
