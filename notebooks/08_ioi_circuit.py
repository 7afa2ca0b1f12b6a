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
# # 8. Indirect object identification: a circuit of several heads, and the order in which it forms
#
# Report 6 watched one kind of head form. Here the behaviour needs heads that compose: **indirect object
# identification** (IOI; Wang et al. 2022). After "When Mary and John went to the store, John gave a drink to" the
# next token should be " Mary", the name mentioned once (the indirect object, IO), not " John", the name mentioned
# twice (the subject, S). GPT-2 small does this with a circuit of duplicate-token, induction, S-inhibition and
# name-mover heads. We train small models on natural text in which some windows carry one IOI sentence, and ask:
# does the behaviour form, on templates and names it never saw in training? Which heads carry it (activation
# patching and path patching from the ABC prompt, in which three new names replace IO and S)? Are the heads found
# the circuit (the logit difference they keep when every other head is mean-ablated, against every head set of the
# same size)? And in which order do the parts form, across training seeds? Last, which training windows drove the
# formation (TracIn, as in report 6)?
#
# **Reads:** `data/`, `tokenizers/`. **Writes:** `ioi/tokens-*`, `ioi/run-*` (dense checkpoints of every run),
# `ioi/scores-*` and `ioi/tracin-*` (cached analyses), `findings/`. **Runtime:** smoke ≈ 2 min; cpu ≈ 45 min from
# nothing on one core (most of it training four 6,000-step runs, ≈ 7–8 min each), under a minute when the checkpoints
# and the analyses are cached; gpu not measured.

# %% tags=["remove-cell"]
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from lib.analysis import attribution, findings, plotting, session, stats, tables
from lib.core import config, model as core_model, train
from lib.reports.ioi_circuit import circuit as C, kernel as K, params as report_params, plots

# %% tags=["parameters"]
preset = "cpu"  # "smoke" | "cpu" | "gpu"
seed = 0  # the main run; the other attention-only seeds are seed + 1, seed + 2, ...
n_seeds = None  # None: take from the preset
mlp_seeds = None
ioi_frac = None
max_steps = None  # None: the preset's (the length of the cosine schedule; the checkpoint schedule follows it)

# %% tags=["remove-cell"]
device = session.start("08_ioi_circuit", preset).device
p = report_params.resolve(preset, n_seeds=n_seeds, mlp_seeds=mlp_seeds, ioi_frac=ioi_frac)
if max_steps is not None:
    p = p.replace(run={**p.run, "max_steps": int(max_steps)})
setups = {}
for variant, attn_only, n in (("attention-only", True, p.n_seeds), ("with MLPs", False, p.mlp_seeds)):
    for i in range(n):
        cfg = config.resolve(preset, **p.run, attention_only=attn_only, seed=seed + i)
        setups[f"{variant}, seed {seed + i}"] = K.setup(cfg, p)
MAIN = f"attention-only, seed {seed}"
s = setups[MAIN]
tok, v = s.tokenizer, s.vocab
display(Markdown(
    f"Preset **{preset}**: {s.cfg.model.n_layers}-layer models, d_model {s.cfg.model.d_model}, {s.cfg.model.n_heads} "
    f"heads, {s.cfg.model.n_ctx}-token windows, {s.cfg.train.max_steps:,} training steps; runs: "
    + ", ".join(setups) + "."))

# %% [markdown]
# ## 1. Data: IOI sentences inside natural text
#
# Names are first names from the people articles of the corpus (DBpedia's athletes, artists and office holders),
# places and objects common corpus words; each is made a single token (the preset's BPE gains one merge per missing
# piece, so " Mary" is one token, as in GPT-2). Names are split into training names and **held-out names** that never
# appear in a training IOI sentence; templates (an introduction and an action, 130 combinations) into training and
# **held-out templates**, each a new combination of an introduction and an action that training uses elsewhere. A
# fraction `ioi_frac` of the training windows carries one IOI sentence, completed with its IO, at a random place;
# the rest of each window stays natural text. Every evaluation prompt has an **ABC counterpart**: the same
# template, place and object with three new names, so that it carries no information about which name is the IO.

# %%
data_main = K.train_data(s)
sets = K.eval_prompts(s, p.n_eval)
summary = v.summary()
ex = sets["heldout_templates"]
i0 = 0
display(Markdown(
    f"{summary['names_train']} training names and {summary['names_heldout']} held-out names, {summary['places']} "
    f"places, {summary['objects']} objects; {summary['templates_train']} training and {summary['templates_heldout']} "
    f"held-out templates. {len(data_main.mix.rows):,} of the {len(data_main.tokens.train):,} training windows "
    f"({len(data_main.mix.rows) / len(data_main.tokens.train):.0%}) carry an IOI sentence; vocabulary "
    f"{tok.vocab_size:,} tokens."))
tables.show(pd.DataFrame([
    {"prompt": "clean", "text": tok.display(ex.tokens[i0, 1: int(ex.end[i0]) + 1]), "answer (IO)": tok.display([int(ex.io[i0])]),
     "subject (S)": tok.display([int(ex.s[i0])])},
    {"prompt": "ABC", "text": tok.display(ex.corrupted[i0, 1: int(ex.end[i0]) + 1]), "answer (IO)": "–",
     "subject (S)": "–"}]), caption="A held-out-template prompt and its ABC counterpart")

# %% [markdown]
# ## 2. Training runs with dense checkpoints
#
# Each run trains from scratch with the shared training loop and keeps checkpoints log-spaced early (where the model
# changes fastest) plus evenly spaced ones. The attention-only runs differ only in their training seed (same data);
# the run with MLPs asks whether the same behaviour forms in a model that can also compute in its MLPs.

# %% tags=["training"]
steps = attribution.checkpoint_schedule(s.cfg.train.max_steps, p.n_log, p.n_linear)
data, ckpts, rows = {}, {}, []
for name, st in setups.items():
    data[name] = data_main if name == MAIN else K.train_data(st)
    ckpts[name] = K.train_dense(st, data[name], K.run_dir(st, steps), steps, device=device)
    rows.append({"run": name, "checkpoints": len(ckpts[name]), "steps": st.cfg.train.max_steps})
tables.show(pd.DataFrame(rows), caption="Training runs")

# %% [markdown]
# ## 3. Does the behaviour form, and on what?
#
# At every checkpoint: the **logit difference** logit(IO) − logit(S) at the end of the prompt (0 = no preference) and
# the **accuracy** (share of prompts with IO above S), on four sets of fresh prompts: held-out templates with training
# names (does it generalise to new sentences?), held-out names (does it generalise to names it never saw in an IOI
# sentence? a name the model has only seen in natural text), both held out, and training templates and names. The
# control is the same model at initialisation (step 0). **Pre-registered:** the behaviour counts as formed when
# held-out-template accuracy exceeds `formed_acc`; the ledger records the final logit difference on held-out
# templates with a 95% bootstrap CI over prompts against initialisation, per seed.

# %%
LABELS = {"heldout_templates": "held-out templates", "heldout_names": "held-out names", "heldout": "both held out",
          "train": "training templates and names"}
curves = pd.concat([attribution.cached_frames(  # cached with the run: scoring 49 checkpoints x 4 sets takes minutes
    K.scores_dir({"run": paths[0].parent.name, "behaviour": [p.n_eval, p.data_seed], "sets": list(sets),
                  "steps": [K.checkpoint_step(q) for q in paths], "version": K.CACHE_VERSION}),
    lambda paths=paths: (K.checkpoint_scores(paths, sets, device=device),))[0].assign(run=name)
    for name, paths in ckpts.items()], ignore_index=True)
fig = plots.behaviour_over_training(curves[curves.run.str.startswith("attention-only")],
                                    {k: LABELS[k] for k in ("heldout_templates", "heldout_names")},
                                    "Fig. 1: IOI logit difference and accuracy over training, attention-only seeds",
                                    threshold=p.formed_acc)

# %%
def per_prompt_ld(path, prompts):
    m, _ = train.load_checkpoint_weights(path, device)
    return K.logit_diff(K.end_logits(m, prompts), prompts.io, prompts.s).numpy()


formed, final_ld = {}, {}
for name, paths in ckpts.items():
    c = curves[(curves.run == name) & (curves.set == "heldout_templates")].sort_values("step")
    hit = c[c.accuracy > p.formed_acc]
    formed[name] = int(hit.step.iloc[0]) if len(hit) else None
    ld_end, ld_init = per_prompt_ld(paths[-1], sets["heldout_templates"]), per_prompt_ld(paths[0], sets["heldout_templates"])
    ci = stats.bootstrap_ci(ld_end, seed=seed)
    final_ld[name] = findings.record(
        f"IOI logit difference IO − S on held-out templates at the end of training, {name}", float(ld_end.mean()),
        unit="nats", ci=ci, control="init", control_value=float(ld_init.mean()), figure="Fig. 1",
        verdict=findings.verdict_from(float(ld_end.mean()), float(ld_init.mean()), ci))
names_acc = {}
for name, paths in ckpts.items():
    ld_names = per_prompt_ld(paths[-1], sets["heldout_names"]) > 0
    acc0 = float((per_prompt_ld(paths[0], sets["heldout_names"]) > 0).mean())
    share, ci = stats.share_ci(ld_names)
    names_acc[name] = findings.record(
        f"IOI accuracy on held-out names (never in a training IOI sentence) at the end, {name}", share,
        unit="share of prompts", ci=ci, control="init", control_value=acc0, figure="Fig. 1",
        verdict=findings.verdict_from(share, acc0, ci))
tables.show(pd.DataFrame([{"run": name, "formed at step": formed[name] if formed[name] is not None else "not formed",
                           "logit diff. at the end [95% CI]": f"{r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
                           "at init": f"{r['control_value']:.3f}",
                           "held-out-names accuracy": names_acc[name]["value"]}
                          for name, r in final_ld.items()]),
            caption=f"Behaviour at the end of training (held-out templates; formed = accuracy > {p.formed_acc:g})")

# %% [markdown]
# ## 4. Which heads carry it? Patching at the end of training
#
# On the main run's final checkpoint (TransformerLens twin of our model, identical logits) and `n_patch`
# held-out-template prompts:
#
# - **Total effect** (activation patching, TransformerLens's `get_act_patch_attn_head_out_all_pos`): replace one
#   head's output at every position by its output on the ABC prompt and measure the fraction of the clean-minus-ABC
#   logit difference that is lost (1: the head carries all of it; negative: the head works against the answer).
# - **Direct effect** (path patching into the logits): the same replacement with every other head frozen at its
#   clean output, so only the head's own write to the residual stream at the end changes.
# - **Through the name movers**: with the `n_movers` heads of largest direct effect as receivers, path patching of
#   each earlier head into their queries (at the end), keys and values (at every position): which earlier heads
#   tell the movers where to look (q, k) or what to copy (v).
#
# **Pre-registered:** a head joins the circuit when one of these effects is at least `min_effect` of the logit
# difference, measured on *training-template* prompts; the circuit is then tested on the held-out-template prompts.

# %%
main_paths = ckpts[MAIN]
final, _ = train.load_checkpoint_weights(main_paths[-1], device)
hm = core_model.to_hooked(final)
patch_eval = sets["heldout_templates"].select(torch.arange(min(p.n_patch, p.n_eval)))
patch_sel = sets["train"].select(torch.arange(min(p.n_patch, p.n_eval)))
hs = C.head_scores(hm, patch_eval, p.n_movers)
sel_scores = C.head_scores(hm, patch_sel, p.n_movers)
circuit = C.select_circuit(sel_scores, p.min_effect)
via = {x: C.path_patching(hm, patch_eval, [(L, H) for L in range(hm.cfg.n_layers - 1) for H in range(hm.cfg.n_heads)],
                          hs.movers, x) for x in ("q", "k", "v")}
maps = {"total effect": hs.total.numpy(), "direct effect (into the logits)": hs.direct.numpy()}
senders = [(L, H) for L in range(hm.cfg.n_layers - 1) for H in range(hm.cfg.n_heads)]
through = pd.DataFrame([[float(via[x][h]) for h in senders] for x in "qkv"], columns=list(map(C.head_name, senders)),
                       index=[f"{x} of {', '.join(map(C.head_name, hs.movers))}" for x in ("queries", "keys", "values")])
fig = plots.head_maps(maps, f"Fig. 2: fraction of the logit difference each head carries ({MAIN}, final "
                      "checkpoint, held-out templates)", "fraction removed by patching",
                      through=through if len(senders) else None)

# %% [markdown]
# Where do the circuit's heads look? For each head, its mean attention from the prompt's end (and from the position
# before it, which the end can read) to the IO, to either mention of S, to the token after the first S (an
# induction head's target) and to the position before the end.

# %%
key_heads = sorted(set(circuit) | set(hs.movers))
att = C.attention_table(hm, patch_eval, key_heads)
tables.show(att.assign(role=[C.role(hs, h) for h in key_heads for _ in range(2)]),
            caption="Mean attention of the circuit's heads (held-out templates)")

# %% [markdown]
# The same heads' attention on one held-out-template prompt (select a head; hover a token to see where it attends
# from, and how much). The prompt is the first of the set, the one shown in section 1.

# %%
_, cache = hm.run_with_cache(patch_eval.tokens[i0: i0 + 1], names_filter=lambda n: n.endswith("hook_pattern"))
n_tok = int(patch_eval.end[i0]) + 1
plotting.attention_widget([tok.display([t]) for t in patch_eval.tokens[i0, :n_tok].tolist()],
                          np.stack([cache[f"blocks.{L}.attn.hook_pattern"][0, H, :n_tok, :n_tok].float().numpy()
                                    for L, H in key_heads]),
                          [C.head_name(h) for h in key_heads])

# %% [markdown]
# Does a head that raises the logit difference do it by copying the IO or by suppressing S? Each circuit head's direct
# contribution at the end to logit(IO) and to logit(S) separately (its output through the final LayerNorm at the
# clean run's scale, then the unembedding).

# %%
nla = C.name_logit_attribution(hm, patch_eval, sorted(set(circuit) | set(hs.movers)))
tables.show(nla, caption="Direct contribution of each circuit head to the IO's and to S's logit (nats, mean over "
            "held-out-template prompts)")

# %%
classes = C.class_scores(hs)
CLASS_DEF = {"name mover": "direct effect, among heads attending from the end more to IO than to S",
             "s-inhibition": "effect through the name movers' queries", "duplicate token": "attention S2 → S1",
             "induction": "attention S2 → S1 + 1", "previous token": "attention S1 + 1 → S1"}
display(tables.show(pd.DataFrame([{"class (Wang et al.)": k, "score of the best head": classes[k], "scored by": CLASS_DEF[k]}
                          for k in C.CLASSES]), caption="Wang et al.'s head classes in this model"))
display(Markdown(
    f"Circuit (effect ≥ {p.min_effect:g} on training-template prompts): **{', '.join(map(C.head_name, circuit)) or 'no head'}**; "
    f"heads with the largest direct effect (the receivers of path patching): {', '.join(map(C.head_name, hs.movers)) or 'none'}. "
    + ("No head attends from the end more to the IO than to S, so no head is a name mover in Wang et al.'s sense. "
       if not np.isfinite(classes["name mover"]) else "")))

# %% [markdown]
# **Faithfulness.** Mean-ablate every head outside the circuit (replace its output by its mean over the ABC prompts
# of the same template, position by position, as Wang et al.) and measure the logit difference left, as a fraction
# of the full model's. The control is every other head set of the same size (all of them when there are at most
# `n_random`; the p-value is then exact: the share of same-size sets that keep at least as much).

# %%
full_ld, _ = C.baselines(hm, patch_eval)
faith = C.faithfulness(hm, patch_eval, circuit, p.n_random, seed=seed) if circuit and full_ld > 0 else None
if faith is not None:
    fig = plotting.null_histograms(
        {f"{len(circuit)}-head sets": (faith["random"], {f"circuit ({', '.join(map(C.head_name, circuit))})":
                                                         (faith["circuit"], None)})},
        "Fig. 3: logit difference kept with only these heads (others mean-ablated), circuit vs every other head "
        "set of its size", "fraction of the full model's logit difference", ylabel="head sets (count)",
        null_label="other head sets of the same size")
    rec_faith = findings.record(
        f"Faithfulness: share of the logit difference kept by the {len(circuit)}-head circuit alone ({MAIN})",
        faith["circuit"], unit="fraction", control="random", control_value=float(np.median(faith["random"]))
        if len(faith["random"]) else faith["none"], p=faith["p"], figure="Fig. 3",
        verdict=findings.verdict_from_p(faith["circuit"] - (float(np.median(faith["random"])) if len(faith["random"])
                                                            else faith["none"]), faith["p"],
                                        p_min=faith["p_min"]))
    display(Markdown(
        f"The circuit alone keeps **{faith['circuit']:.2f}** of the logit difference ({faith['full']:.2f} nats); every "
        f"head ablated keeps {faith['none']:.2f}; the {len(faith['random'])} other {len(circuit)}-head sets keep a "
        f"median of {np.median(faith['random']) if len(faith['random']) else float('nan'):.2f} "
        f"({'exact' if faith['exact'] else 'permutation'} p = {faith['p']:.3g})."))
elif not circuit:
    display(Markdown(f"No head reaches the pre-registered effect {p.min_effect:g}: no circuit to test."))
else:
    display(Markdown(f"The model's logit difference on these prompts is {full_ld:.3f} nats, not above 0: there is no "
                     "behaviour for a circuit to keep, so faithfulness is not measured."))

# %% [markdown]
# **The runs with MLPs.** The same rule on each with-MLP run's final checkpoint: its own circuit of heads (found on
# training-template prompts), where those heads look from the end, and their faithfulness on held-out templates
# against every other head set of the same size. Only heads are ablated; the MLPs run as usual, so a share the
# heads do not keep is carried by the MLPs or by the ablated heads' means.

# %%
mlp_runs = [n for n in ckpts if n.startswith("with MLPs")]
mlp_rows = []
for name in mlp_runs:
    hm_m = core_model.to_hooked(train.load_checkpoint_weights(ckpts[name][-1], device)[0])
    circ_m = C.select_circuit(C.head_scores(hm_m, patch_sel, p.n_movers), p.min_effect)
    hs_m = C.head_scores(hm_m, patch_eval, p.n_movers)
    full_m, _ = C.baselines(hm_m, patch_eval)
    f_m = C.faithfulness(hm_m, patch_eval, circ_m, p.n_random, seed=seed) if circ_m and full_m > 0 else None
    if circ_m:
        mlp_rows.append(C.attention_table(hm_m, patch_eval, circ_m).assign(
            run=name, **{f"{kind} effect": [float(getattr(hs_m, kind)[h]) for h in circ_m for _ in range(2)]
                         for kind in ("total", "direct")}))
    if f_m is not None:
        med = float(np.median(f_m["random"])) if len(f_m["random"]) else f_m["none"]
        r_m = findings.record(
            f"Faithfulness: share of the logit difference kept by the {len(circ_m)}-head circuit alone ({name}; MLPs "
            "kept)", f_m["circuit"], unit="fraction", control="random", control_value=med, p=f_m["p"],
            verdict=findings.verdict_from_p(f_m["circuit"] - med, f_m["p"], p_min=f_m["p_min"]))
        floor = f_m["p_min"]
        display(Markdown(
            f"{name}: circuit **{', '.join(map(C.head_name, circ_m))}** keeps **{f_m['circuit']:.2f}** of the logit "
            f"difference ({f_m['full']:.2f} nats) with every other head mean-ablated; every head ablated keeps "
            f"{f_m['none']:.2f}; the {len(f_m['random'])} other {len(circ_m)}-head sets keep a median of "
            f"{findings.fmt(med)} "
            f"({'exact' if f_m['exact'] else 'permutation'} p = {f_m['p']:.3g}: *{r_m['verdict']}*"
            + (f"; with {len(f_m['random']) + 1} sets in all, no p below {floor:.3g} is possible, so the test cannot "
               f"reach the pre-registered 0.05" if floor > 0.05 else "") + ")."))
    else:
        display(Markdown(f"{name}: " + (f"no head reaches the effect {p.min_effect:g}." if not circ_m else
                                         f"logit difference {full_m:.3f} nats, not above 0; faithfulness not measured.")))
if mlp_rows:
    display(tables.show(pd.concat(mlp_rows, ignore_index=True)[["run", "head", "total effect", "direct effect", "from",
                                                                 "to IO", "to S1 + S2", "to end − 1"]], caption="Circuit heads of the runs with MLPs: effects (fractions of the logit "
                "difference) and mean attention (held-out templates)"))

# %% [markdown]
# ## 5. In which order do the parts form?
#
# Head indices mean nothing across training seeds (any permutation of a layer's heads is the same model), so each
# attention-only run gets **its own circuit**, found on its final checkpoint by the rule of section 4, and the parts
# compared across seeds are the circuit's heads **per layer**. At every checkpoint: the behaviour, each head class's
# score, and the summed total effect of the run's circuit heads in each layer, in nats of logit difference removed
# (the fraction of section 4 is unstable while the logit difference is still near 0). A score's **formation step**
# is the first checkpoint at which it has covered half its way from its value at initialisation to its maximum
# (`half_rise_step`, fixed before looking). Is the order the same across seeds, and does the behaviour rise with its
# parts? A layer's effect in nats is its share times the logit difference, so a layer that keeps a constant share
# rises exactly with the logit difference; accuracy needs only the sign of the logit difference and can rise first.

# %%
attn_runs = [n for n in ckpts if n.startswith("attention-only")]
LAYER_COL = {L: f"layer-{L} circuit heads" for L in range(s.cfg.model.n_layers)}
over, circuits = [], {}
for name in attn_runs:
    if name == MAIN:
        circuits[name] = circuit
    else:
        m_end, _ = train.load_checkpoint_weights(ckpts[name][-1], device)
        circuits[name] = C.select_circuit(C.head_scores(core_model.to_hooked(m_end), patch_sel, p.n_movers), p.min_effect)
    heads_r = circuits[name]
    key = {"run": ckpts[name][0].parent.name, "prompts": [p.n_patch, p.n_eval, p.data_seed], "movers": p.n_movers,
           "heads": [list(h) for h in heads_r], "version": K.CACHE_VERSION, "effects": "nats"}
    (df,) = attribution.cached_frames(K.scores_dir(key), lambda name=name, heads_r=heads_r: (C.scores_over_training(
        attribution.hooked_checkpoints(ckpts[name], device), patch_eval, heads_r, p.n_movers),))
    for L, col in LAYER_COL.items():
        cols = [f"{C.head_name(h)} total" for h in heads_r if h[0] == L]
        df[col] = df[cols].sum(axis=1) if cols else np.nan
    over.append(df.assign(run=name))
over = pd.concat(over, ignore_index=True)
display(tables.show(pd.DataFrame([{"run": name, **{LAYER_COL[L]: ", ".join(C.head_name(h) for h in heads_r if h[0] == L) or "–"
                                          for L in LAYER_COL}} for name, heads_r in circuits.items()]),
            caption=f"Each run's own circuit (effect ≥ {p.min_effect:g} on training-template prompts, final checkpoint)"))
SCORES = ["accuracy", "logit_diff", *LAYER_COL.values(), *C.CLASSES]
rises = pd.DataFrame([{"run": name, "score": col, "step": C.half_rise_step(d.step.tolist(), d[col].tolist())}
                      for name, d in over.groupby("run", sort=False) for col in SCORES
                      if col in d and d[col].notna().any()])
marks = {name: {r.score: r.step for r in rises[rises.run == name].itertuples()} for name in attn_runs}
parts = [c for c in LAYER_COL.values() if over[c].notna().any()]
fig = plots.class_scores_over_training(
    over.drop(columns=list(C.CLASSES)), "accuracy",
    "Fig. 4: summed total effect of each run's circuit heads per layer, and held-out-template accuracy, over training",
    marks, extra=parts, ylabel="nats of logit difference\n(accuracy: share)")
ATTENTION_CLASSES = ["duplicate token", "induction", "previous token"]  # the patching-based classes are fractions of
# the logit difference, which are unstable while it is near 0 (up to ±50 early in training), so they are not drawn
if over[ATTENTION_CLASSES].notna().to_numpy().any():
    fig = plots.class_scores_over_training(
        over.drop(columns=["name mover", "s-inhibition"]), "accuracy",
        "Fig. 4b: attention-based head-class scores of Wang et al. (best head of each class) over training", marks)
order = [s_ for s_ in ("accuracy", *parts) if s_ in set(rises.score)]
fig = plots.formation_order(rises[rises.score.isin(order)], order,
                            "Fig. 5: formation step of the behaviour and of each layer's circuit heads, per seed")

# %%
wide = rises.pivot(index="run", columns="score", values="step").reindex(columns=order)
ranks = wide.rank(axis=1, method="min")
same_order = (ranks == ranks.loc[MAIN]).all(axis=1) & wide.notna().all(axis=1)
ld_rise = rises[rises.score == "logit_diff"].set_index("run").step.reindex(wide.index)
display(tables.show(wide.assign(**{"logit difference (not ranked)": ld_rise}).reset_index(),
                    caption="Formation step (half-rise) of each score, per seed; the order compared across seeds is "
                    "that of the behaviour's accuracy and the circuit's layers (the logit difference, in the same nats "
                    "as the circuit's effects, is shown beside them)"))
if len(attn_runs) > 1 and len(order) > 1:
    share, ci = stats.share_ci(same_order.drop(MAIN).to_numpy())
    n_orders = float(np.prod(range(1, len(order) + 1)))
    findings.record(f"Seeds whose behaviour and per-layer circuit heads form in the main seed's order (of "
                    f"{len(attn_runs) - 1} other seeds; {len(order)} parts)", share, unit="share of seeds", ci=ci,
                    control="random", control_value=1 / n_orders, figure="Fig. 5",
                    verdict=findings.verdict_from(share, 1 / n_orders, ci))
lag = {name: (wide.loc[name, "accuracy"] - wide.loc[name, parts].max()) if parts else float("nan")
       for name in attn_runs}
display(Markdown("Behaviour's formation step minus the last layer's circuit heads', per seed: " + ", ".join(
    f"{k}: " + (f"{v:+,.0f} steps" if np.isfinite(v) else "not defined (a score never rose)") for k, v in lag.items())
    + " (negative: the behaviour rises before the last part of its circuit). The same on the logit difference: "
    + ", ".join(f"{k}: " + (f"{ld_rise[k] - wide.loc[k, parts].max():+,.0f} steps"
                            if parts and np.isfinite(ld_rise[k] - wide.loc[k, parts].max()) else "not defined")
                for k in attn_runs) + "."))

# %% [markdown]
# ## 6. Which training windows drove the formation? TracIn
#
# As in report 6: a sample of `n_attr` windows that the main run trained on, `attr_ioi_frac` of them carrying an IOI
# sentence (a low base rate leaves room for enrichment); the objective is minus the logit difference on
# held-out-template prompts, so that a positive score means a gradient step on the window raises the logit difference;
# gradients with respect to every attention weight, weighted per window by the learning rate over its visits
# (`visit_weights`) at `n_tracin` checkpoints. **Pre-registered:** the ledger reads the enrichment of IOI windows
# among the top `top_frac` (the whole curve is the figure); it counts when its exact hypergeometric p ≤ 0.05 and its
# interval lies above 1. Controls: the same windows scored with the gradients at initialisation only (every visit
# at step 0), and the other seeds (their own visits and checkpoints).

# %%
FRACS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
tc_main = setups[MAIN].cfg.train
ioi_mask = data[MAIN].mix.mask
seen = torch.nonzero(attribution.visits(len(data[MAIN].tokens.train), tc_main) > 0)[:, 0]
idx = seen[attribution.stratified_sample(ioi_mask[seen], p.n_attr, p.attr_ioi_frac, seed=seed)]
labels = ioi_mask[idx].numpy()
weight_names = [n for L in range(s.cfg.model.n_layers) for n in attribution.attention_weight_names(L)]
obj_prompts = sets["heldout_templates"].select(torch.arange(min(64, p.n_eval)))
enrich, tracins = [], {}
for name in [*attn_runs, "init only"]:
    run = MAIN if name == "init only" else name
    picked = ckpts[run][:1] if name == "init only" else attribution.pick_checkpoints(ckpts[run], p.n_tracin)
    at = [K.checkpoint_step(q) for q in picked]
    tc = setups[run].cfg.train
    W = attribution.visit_weights(idx, len(data[run].tokens.train), tc, at, end=tc.max_steps)
    key = {"run": ckpts[run][0].parent.name, "steps": at, "idx": idx.tolist(), "objective": [64, p.n_eval, p.data_seed],
           "names": weight_names, "version": K.CACHE_VERSION}
    tracins[name] = attribution.cached_tracin(K.tracin_path(key), lambda picked=picked, W=W, run=run: attribution.tracin(
        attribution.hooked_checkpoints(picked, device), weight_names, [data[run].tokens.train[idx].to(device)],
        {"ioi": K.ld_objective(obj_prompts)}, W, progress=False))
    vis = (W.sum(0) > 0).numpy()
    if 0 < labels[vis].sum() < vis.sum():  # a run that trained on none of the sampled IOI windows has no curve
        enrich.append(attribution.enrichment_curve(tracins[name].scores["ioi"].numpy()[vis], labels[vis], FRACS)
                      .assign(run=name, n=int(vis.sum())))
    else:
        display(Markdown(f"{name}: trained on {int(labels[vis].sum())} of the sampled IOI windows and "
                         f"{int((~labels[vis]).sum())} others, so no enrichment can be read."))
enrich = pd.concat(enrich, ignore_index=True)
fig = plots.enrichment_curves(enrich, p.top_frac, "Fig. 6: enrichment of IOI windows among the top-scored by TracIn "
                              "(1 = chance), with exact 95% intervals")

# %%
for name in enrich.run.unique():
    r = enrich[(enrich.run == name) & np.isclose(enrich.frac, p.top_frac)].iloc[0]
    findings.record(f"Enrichment of IOI windows among the top {p.top_frac:.0%} by TracIn influence on the held-out "
                    f"logit difference, {name if name != 'init only' else MAIN + ', gradients at initialisation only'}",
                    float(r.enrichment), unit="× base rate", ci=(float(r.ci_low), float(r.ci_high)), control="random",
                    control_value=1.0, p=float(r.p), figure="Fig. 6",
                    verdict=findings.verdict_from_p(float(r.enrichment) - 1, float(r.p),
                                                    (float(r.ci_low) - 1, float(r.ci_high) - 1)))
tables.show(enrich[np.isclose(enrich.frac, p.top_frac)][["run", "n", "k", "hits", "enrichment", "ci_low", "ci_high", "p"]]
            .rename(columns={"n": "windows scored", "k": f"top {p.top_frac:.0%}", "ci_low": "95% CI low",
                             "ci_high": "95% CI high", "p": "exact p"}),
            caption=f"Enrichment at the pre-registered top {p.top_frac:.0%} (base rate {labels.mean():.0%} IOI windows)")

# %% [markdown]
# ## Controls
#
# Each claim above stands next to its control: the behaviour and the held-out-name accuracy against the same model
# at initialisation; the circuit's faithfulness against every other head set of its size; the formation order
# against the chance that a seed repeats it; the enrichment against chance (1) with the gradients at initialisation
# and the other seeds as further controls. The with-MLP run repeats the behaviour's claims and the circuit's
# faithfulness on a second architecture.

# %% [markdown]
# ## Conclusion
#
# The headline and the table below are rendered from this notebook's ledger. Limitations: the models are small
# (2 layers here, against GPT-2 small's 12), so a circuit of GPT-2's depth cannot exist in them and Wang et al.'s
# classes are hypotheses to test, not labels to find; the IOI sentences are templated and make up a large share of
# the training windows, much more than in natural text; path patching freezes the other heads but recomputes the
# LayerNorms; formation steps are read on the saved checkpoints (log-spaced early, evenly later), so two events
# between the same checkpoints are not ordered; TracIn uses the gradient of the nearest checkpoint for every visit.

# %%
recs = findings.load("08_ioi_circuit", preset)
def rec(prefix):
    hit = recs[recs.name.str.startswith(prefix)]
    return None if hit.empty else hit.iloc[0]


r_ld, r_names, r_faith = rec("IOI logit difference"), rec("IOI accuracy on held-out names"), rec("Faithfulness")
r_en = rec("Enrichment of IOI windows")
parts = []
if r_ld is not None:
    parts.append(f"At the end of training the main run prefers the IO by **{findings.fmt(r_ld.value)} nats** on "
                 f"held-out templates (95% CI {findings.fmt(r_ld.ci_low)}–{findings.fmt(r_ld.ci_high)}; "
                 f"{findings.fmt(r_ld.control_value)} at initialisation: *{r_ld.verdict}*), and is right on "
                 f"{r_names.value:.0%} of prompts with held-out names (*{r_names.verdict}* against initialisation).")
if r_faith is not None:
    parts.append(f"The {len(circuit)} heads {', '.join(map(C.head_name, circuit))} keep {findings.fmt(r_faith.value)} of "
                 f"the logit difference alone, against a median {findings.fmt(r_faith.control_value)} for other head sets "
                 f"of that size (p = {findings.fmt(r_faith.p)}: *{r_faith.verdict}*).")
if r_en is not None:
    parts.append(f"IOI windows are {findings.fmt(r_en.value)}× over-represented among the top {p.top_frac:.0%} by TracIn "
                 f"(p = {findings.fmt(r_en.p)}: *{r_en.verdict}*).")
findings.set_headline(" ".join(parts) or "No finding was recorded.")
findings.conclusion()
