"""Sub-model validation (report 7): the batched neuron-game path vs one hooked forward per sub-model, side by side.

    python bench/submodel_validate.py                   # cpu preset, notebook 7's DBpedia concepts, 3 repetitions
    python bench/submodel_validate.py --threads 1 --reps 5

Both variants validate the same selectivity sub-models (every MLP layer's hook_post, as notebook 7's first method)
and the same sub-models restricted to the last layer (as its Shapley method) against notebook 7's n_random
size-matched random sub-models, on its held-out keyword prompts. Repetitions run the variants in turn (round robin)
and ratios are taken within a repetition, so load shared by a repetition cancels. Speed does not depend on the
weights, so the model is the preset's architecture at initialisation (nothing is trained; --trained takes notebook 1's
model from artifacts/ instead). Prints sub-model
damages/s, the ratio to the loop, and the largest difference between the two paths' scores.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from lib.analysis import prompts
from lib.core import bench, config, data, model, runs, train
from lib.reports.submodel_tool import kernel as submodels, params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES)
    ap.add_argument("--reps", type=int, default=3, help="repetitions (each runs every variant once)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--trained", action="store_true",
                    help="notebook 1's trained with-MLP model from artifacts/ (the speed is the same; the check of "
                         "p-values and verdicts is then on the sub-models report 7 validates)")
    return ap.parse_args()


def setup(preset: str, trained: bool = False):
    """Model (at initialisation, or notebook 1's trained one), notebook 7's DBpedia validation prompts and
    selectivity sub-models (all MLP layers, and the same restricted to the last layer)."""
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
    return cfg, nb, hooked, val, subs


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{bench.machine()}; {bench.load()}")
    cfg, nb, hooked, val, subs = setup(args.preset, args.trained)
    m = cfg.model
    n_damages = 2 * nb.n_random + 1 + 2 * len(next(iter(subs.values())))
    print(f"{args.preset}: {m.n_layers}L d_model {m.d_model} d_mlp {m.d_mlp} vocab {m.d_vocab}; {len(val)} held-out "
          f"keyword prompts of {len(set(val.topics))} concepts (mean {val.lengths.float().mean():.1f}, max "
          f"{val.tokens.shape[1]} tokens); n_random {nb.n_random}: {n_damages} sub-model damages per validation")
    for where, sm in subs.items():
        run = {"loop": lambda sm=sm: submodels.validate(hooked, sm, val, n_random=nb.n_random, fast=False,
                                                        progress=False),
               "batched": lambda sm=sm: submodels.validate(hooked, sm, val, n_random=nb.n_random, progress=False)}
        out = {k: fn() for k, fn in run.items()}  # warm-up, and the scores to compare
        diff = max(abs(out["loop"][c].scores[k] - out["batched"][c].scores[k]) for c in sm
                   for k in ("own", "other", "gap", "kept", "random_mean", "random_q95", "layer_damage"))
        same = all(out["loop"][c].scores[k] == out["batched"][c].scores[k] for c in sm
                   for k in ("p", "kept_p", "beats_random"))
        res = bench.round_robin({k: (lambda f=fn: n_damages / bench.seconds(f)) for k, fn in run.items()}, args.reps)
        ratio = bench.summarize([a / b for a, b in zip(res["batched"], res["loop"])])
        print(f"\n== sub-models at {where} ({next(iter(sm.values())).size} units each)")
        print(f"  max |batched - loop| over the scores in nats: {diff:.2e}; p-values and verdicts identical: {same}")
        print(f"{'variant':<12}{'damages/s':>12}{'IQR':>8}{'x loop':>9}{'IQR':>8}   ({bench.cpu_capability()})")
        for k, vals in res.items():
            s = bench.summarize(vals)
            r = bench.summarize([a / b for a, b in zip(vals, res["loop"])])
            print(f"{k:<12}{s.median:>12.2f}{s.iqr:>8.2f}{r.median:>9.2f}{r.iqr:>8.2f}")
        print(f"  batched / loop: {ratio.median:.2f} [{bench.cpu_capability()}]")
    print(f"\n({bench.load()})")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
