"""Sub-model validation (report 7): its fast paths vs one hooked forward per sub-model, side by side.

    python bench/submodel_validate.py                   # cpu preset, notebook 7's DBpedia concepts, 3 repetitions
    python bench/submodel_validate.py --threads 1 --reps 5

Both variants validate the same sub-models against notebook 7's n_random size-matched random sub-models, on its
held-out keyword prompts:
- selectivity sub-models of every MLP layer's hook_post (notebook 7's first method), and the same restricted to the
  last layer (as its Shapley method): the batched neuron-game path;
- notebook 7's SAE and InfoVAE latent sub-models of the last MLP's output: resumed at the last block's MLP (one pass
  per sub-model over the keyword positions only, lib.analysis.fastpath.evaluate_from_last_mlp).
Repetitions run the variants in turn (round robin) and ratios are taken within a repetition, so load shared by a
repetition cancels. Speed does not depend on the weights, so the model is the preset's architecture at
initialisation (nothing is trained; --trained takes notebook 1's model from artifacts/ instead). Prints sub-model
damages/s, the ratio to the loop, and the largest difference between the two paths' scores.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from lib.analysis import compressors, prompts
from lib.core import bench, config, data, model, runs, train
from lib.reports.submodel_tool import kernel as submodels, params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def parse_args() -> argparse.Namespace:
    ap = bench.arg_parser(__doc__, reps=3)
    ap.add_argument("--trained", action="store_true",
                    help="notebook 1's trained with-MLP model from artifacts/ (the speed is the same; the check of "
                         "p-values and verdicts is then on the sub-models report 7 validates)")
    return ap.parse_args()


def setup(preset: str, trained: bool = False):
    """Model (at initialisation, or notebook 1's trained one), notebook 7's DBpedia validation prompts and
    selectivity sub-models (all MLP layers, and the same restricted to the last layer), and its SAE and InfoVAE
    latent sub-models at the last MLP's output (compressors fit here with notebook 7's settings, not cached)."""
    cfg = config.resolve(preset, attention_only=False)
    nb = report_params.resolve(preset)
    m = runs.load_model(runs.model_dir(cfg))[0] if trained else train.init_model(cfg)
    hooked = model.to_hooked(m.eval())
    tok = data.get_tokenizer(cfg.data)
    _, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, cfg.model.n_ctx, bos=True, seed=0)
    _, val = submodels.split_halves(by_set)
    windows = prompts.topic_windows(tok, "dbpedia", "fit", cfg.model.n_ctx, nb.n_windows)
    val = val["dbpedia"].subset([c for c in windows if c in val["dbpedia"].topics])
    windows = {c: w for c, w in windows.items() if c in val.topics}
    last = f"blocks.{cfg.model.n_layers - 1}.mlp.hook_post"
    subs = {"all MLP layers": submodels.find_submodels(hooked, windows, frac=nb.frac, progress=False),
            "last MLP layer": submodels.find_submodels(hooked, windows, hooks=[last], frac=nb.frac, progress=False)}
    out = f"blocks.{cfg.model.n_layers - 1}.hook_mlp_out"
    acts = submodels.activations(hooked, torch.cat(list(windows.values())), [out])[out]
    for method, d in (("sae", nb.sae_d_latent), ("infovae", nb.infovae_d_latent)):
        ccfg = compressors.CompressorConfig(method=method, d_latent=d, steps=nb.latent_steps, seed=0)
        comp = compressors.fit(acts, ccfg)[0]
        subs[f"{method} latents"] = submodels.find_submodels(hooked, windows, method, k=nb.latent_k, compressor=comp,
                                                             progress=False)
    return cfg, nb, hooked, val, subs


def main() -> None:
    args = parse_args()
    bench.begin(args)
    cfg, nb, hooked, val, subs = setup(args.preset, args.trained)
    m = cfg.model
    n_damages = 2 * nb.n_random + 1 + 2 * len(next(iter(subs.values())))
    print(f"{args.preset}: {m.n_layers}L d_model {m.d_model} d_mlp {m.d_mlp} vocab {m.d_vocab}; {len(val)} held-out "
          f"keyword prompts of {len(set(val.topics))} concepts (mean {val.lengths.float().mean():.1f}, max "
          f"{val.tokens.shape[1]} tokens); n_random {nb.n_random}: {n_damages} sub-model damages per validation")
    for where, sm in subs.items():
        fast = "batched" if submodels.neuron_game_layers(hooked, list(sm.values()), val, "zero", 1.0) else "resumed"
        run = {"loop": lambda sm=sm: submodels.validate(hooked, sm, val, n_random=nb.n_random, fast=False,
                                                        progress=False),
               fast: lambda sm=sm: submodels.validate(hooked, sm, val, n_random=nb.n_random, fast=True,
                                                      progress=False)}
        out = {k: fn() for k, fn in run.items()}  # warm-up, and the scores to compare
        diff = max(abs(out["loop"][c].scores[k] - out[fast][c].scores[k]) for c in sm
                   for k in ("own", "other", "gap", "kept", "random_mean", "random_q95", "layer_damage"))
        same = all(out["loop"][c].scores[k] == out[fast][c].scores[k] for c in sm
                   for k in ("p", "kept_p", "beats_random"))
        res = bench.round_robin({k: (lambda f=fn: n_damages / bench.seconds(f)) for k, fn in run.items()}, args.reps)
        ratio = bench.summarize([a / b for a, b in zip(res[fast], res["loop"])])
        print(f"\n== sub-models at {where} ({next(iter(sm.values())).size} units each)")
        print(f"  max |{fast} - loop| over the scores in nats: {diff:.2e}; p-values and verdicts identical: {same}")
        print(f"{'variant':<12}{'damages/s':>12}{'IQR':>8}{'x loop':>9}{'IQR':>8}   ({bench.cpu_capability()})")
        for k, vals in res.items():
            s = bench.summarize(vals)
            r = bench.summarize([a / b for a, b in zip(vals, res["loop"])])
            print(f"{k:<12}{s.median:>12.2f}{s.iqr:>8.2f}{r.median:>9.2f}{r.iqr:>8.2f}")
        print(f"  {fast} / loop: {ratio.median:.2f} [{bench.cpu_capability()}]")
    print(f"\n({bench.load()})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
