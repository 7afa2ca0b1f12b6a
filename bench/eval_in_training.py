"""What evaluation during training costs: a training step vs one held-out evaluation (as lib.core.train runs it),
and the share of a whole run it takes at the preset's schedule, side by side in one run.

    python bench/eval_in_training.py                    # cpu preset, both models, 5 repetitions
    python bench/eval_in_training.py --threads 1

A run of max_steps steps evaluates max_steps / eval_every + 1 times; each evaluation scores eval_batches batches
of held-out windows and as many of held-out article openings (`lib.core.train._eval_row`). The evaluation batch
size is the training batch size (current) or larger (the alternatives: fewer, bigger matmuls; the same loss up to
float rounding, printed). Repetitions run the variants in turn (round robin), so load shared by a repetition
cancels. Speed does not depend on the weights: the models are the preset's architectures at initialisation.
"""

from __future__ import annotations

import argparse
import time

from lib.core import bench, config, train as tr
from lib.core.data import load_token_data


def parse_args() -> argparse.Namespace:
    ap = bench.arg_parser(__doc__, reps=5)
    ap.add_argument("--steps", type=int, default=20, help="training steps timed per repetition")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    bench.begin(args)
    for attn in (True, False):
        cfg = config.resolve(args.preset, attention_only=attn)
        tc, data = cfg.train, load_token_data(cfg.data)
        model = tr.init_model(cfg)
        step = bench.make_step(model, tc, tc.precision)
        x = data.train[: tc.batch_size]
        n_eval = tc.eval_batches * tc.batch_size
        sets = (data.val[:n_eval], data.val_beginnings[:n_eval])
        sizes = sorted({tc.batch_size, 4 * tc.batch_size, 8 * tc.batch_size})

        def steps_s() -> float:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x)
            return (time.perf_counter() - t0) / args.steps

        def eval_s(bs: int) -> float:
            t0 = time.perf_counter()
            for tokens in sets:
                tr.evaluate(model, tokens, bs, tc.precision)
            return time.perf_counter() - t0

        for _ in range(3):  # warm-up
            step(x)
        tasks = {"train step": steps_s, **{f"evaluation, batch {bs}": (lambda bs=bs: eval_s(bs)) for bs in sizes}}
        res = bench.round_robin(tasks, args.reps)
        losses = {bs: [tr.evaluate(model, t, bs, tc.precision)["loss"] for t in sets] for bs in sizes}
        n_evals = tc.max_steps // tc.eval_every + 1
        step_t = bench.summarize(res["train step"]).median
        print(f"\n== {args.preset}, {'attention-only' if attn else 'with MLP'}: {cfg.model.n_layers}L d_model "
              f"{cfg.model.d_model} vocab {cfg.model.d_vocab} n_ctx {cfg.model.n_ctx}, batch {tc.batch_size}; a run: "
              f"{tc.max_steps:,} steps, {n_evals} evaluations of 2 x {n_eval} windows ({tc.precision})")
        print(f"  train step: {1e3 * step_t:.1f} ms (IQR {1e3 * bench.summarize(res['train step']).iqr:.1f})   "
              f"[{bench.cpu_capability()}]")
        base = res[f"evaluation, batch {tc.batch_size}"]
        for bs in sizes:
            vals = res[f"evaluation, batch {bs}"]
            e = bench.summarize(vals).median
            r = bench.summarize([a / b for a, b in zip(base, vals)])
            share = n_evals * e / (tc.max_steps * step_t + n_evals * e)
            dl = max(abs(a - b) for a, b in zip(losses[bs], losses[tc.batch_size]))
            print(f"  evaluation, batch {bs:>4}: {1e3 * e:7.1f} ms = {e / step_t:5.2f} steps; {share:6.1%} of a run; "
                  f"x current {r.median:.2f} (IQR {r.iqr:.2f}); |loss - current| {dl:.1e}")
    print(f"\n({bench.load()})")


if __name__ == "__main__":
    main()
