"""Keyword scores (lib.analysis.prompts.keyword_scores): counting the tokens scored above the target in int32 vs the
old path (a bool tensor's default sum, which first copies it to int64), side by side.

    python bench/keyword_scores.py              # cpu preset, 3 repetitions
    python bench/keyword_scores.py --threads 1 --reps 5

1. The function alone, on logits of the shape a neuron-game pass scores (rows x the preset's vocabulary).
2. Notebook 4's neuron game of the last MLP layer (lib.analysis.shapley.NeuronGame.scores), coalitions/s, with the
   old function put in its place. Speed does not depend on the weights, so the model is the preset's architecture
   at initialisation.
Repetitions run the variants in turn (round robin) and ratios are taken within a repetition. Prints the times, the
ratio, and that both give the same scores exactly.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn.functional as F

from lib.analysis import prompts, shapley
from lib.analysis.prompts import IGNORE
from lib.core import bench, config, data, model, train
from lib.reports.neuron_shapley import params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def old_keyword_scores(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """keyword_scores before this change (the reference): `above` summed as a bool tensor."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = targets.to(logits.device)
    valid = targets != IGNORE
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    above = (logits > logits.gather(-1, targets.clamp(min=0)[..., None])).sum(-1)
    top1 = ((above == 0) | ~valid).all(1)
    in5 = ((above < 5) | ~valid).all(1)
    return {"loss": loss.view(valid.shape).sum(1).cpu(), "top1": top1.float().cpu(), "top5": in5.float().cpu()}


def parse_args() -> argparse.Namespace:
    ap = bench.arg_parser(__doc__, reps=3)
    ap.add_argument("--rows", type=int, default=4096, help="keyword prompts x coalitions of part 1")
    ap.add_argument("--coalitions", type=int, default=256, help="coalitions per game timing (part 2)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    bench.begin(args)
    cfg = config.resolve(args.preset, attention_only=False)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.rows, 4, cfg.model.d_vocab, generator=g)
    targets = torch.randint(cfg.model.d_vocab, (args.rows, 4), generator=g)
    targets[::2, 0] = IGNORE  # mixed keyword lengths, as the game's rows have
    same = all(torch.equal(a, b) for a, b in zip(prompts.keyword_scores(logits, targets).values(),
                                                  old_keyword_scores(logits, targets).values()))
    print(f"\n== 1. keyword_scores on logits [{args.rows}, 4, {cfg.model.d_vocab}]; identical scores: {same}")
    run = {"old (bool sum)": lambda: old_keyword_scores(logits, targets),
           "int32 count": lambda: prompts.keyword_scores(logits, targets)}
    _report(bench.round_robin({k: (lambda f=fn: 1.0 / bench.seconds(f)) for k, fn in run.items()}, args.reps),
            "calls/s", "old (bool sum)")

    nb = report_params.resolve(args.preset)
    hooked = model.to_hooked(train.init_model(cfg).eval())
    tok = data.get_tokenizer(cfg.data)
    pr = nb.keywords.prompts(tok, nb.keywords.keywords(tok, "dbpedia"), "dbpedia", nb.n_prompts, cfg.model.n_ctx)
    game = shapley.neuron_game(hooked, pr, [cfg.model.n_layers - 1])
    masks = torch.rand(args.coalitions, game.n_players, generator=g) < torch.rand(args.coalitions, 1, generator=g)

    def scores(fn):
        shapley.keyword_scores = fn  # the game's module-level name: the old function in its place, then restored
        try:
            return game.scores(masks)
        finally:
            shapley.keyword_scores = prompts.keyword_scores

    same = all(torch.equal(a, b) for a, b in zip(scores(prompts.keyword_scores).values(),
                                                  scores(old_keyword_scores).values()))
    print(f"\n== 2. notebook 4's neuron game of the last MLP layer ({game.n_players} players, {len(pr)} prompts), "
          f"{args.coalitions} coalitions; identical scores: {same}")
    run = {"old (bool sum)": lambda: scores(old_keyword_scores), "int32 count": lambda: scores(prompts.keyword_scores)}
    _report(bench.round_robin({k: (lambda f=fn: args.coalitions / bench.seconds(f)) for k, fn in run.items()},
                              args.reps), "coalitions/s", "old (bool sum)")
    print(f"\n({bench.load()})")


def _report(res: dict, unit: str, base: str) -> None:
    print(f"{'variant':<16}{unit:>14}{'IQR':>9}{'x old':>8}{'IQR':>7}   ({bench.cpu_capability()})")
    for k, vals in res.items():
        s = bench.summarize(vals)
        r = bench.summarize([a / b for a, b in zip(vals, res[base])])
        print(f"{k:<16}{s.median:>14.2f}{s.iqr:>9.2f}{r.median:>8.2f}{r.iqr:>7.2f}")


if __name__ == "__main__":
    main()
