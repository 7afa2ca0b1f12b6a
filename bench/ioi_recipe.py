"""When does indirect-object identification form? Candidate training settings for report 8's cpu preset.

Each candidate trains with lib.core.train.train on lib.core's cpu preset windows with IOI sentences mixed in (report
8's data: lib.reports.ioi_circuit), in chunks of --every steps; after each chunk (untimed) it scores the model on
four prompt sets (training templates and names; held-out templates with training names; training templates with
held-out names; both held out): logit difference IO - S at the final position, accuracy (IO above S), top-1 (IO is
the argmax) and name top-1 (the argmax is IO or S). A candidate stops at --budget-s seconds of training, at
--max-steps (the cosine schedule's length), or --after evaluations after the --formed-on set's accuracy first
passes --threshold. Candidates run --parallel at a time, each in its own process on one thread (side by side on 2
cores, as ../shared/NOTES.md measured induction heads), so load hits them alike. --tokenizers instead counts the
single-token corpus first names under each tokenizer option and times the preset's model at their vocabulary sizes.

    python bench/ioi_recipe.py --candidates attn2-f50-noplant mlp2-f50-noplant --formed-on heldout_templates \
        --budget-s 360 --keep /tmp/keep --out bench/results/ioi_recipe_cpu.txt
    python bench/ioi_recipe.py --tokenizers
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lib.core import artifacts, bench, train as tr
from lib.core.config import resolve
from lib.core.data import corpus_texts, get_tokenizer, gpt2_tokenizer, load_articles, train_bpe
from lib.reports.ioi_circuit import data as D, kernel as K, params as P

CANDIDATE = re.compile(r"(attn|mlp)(\d)-f(\d+)(-noplant)?(-freq)?(?:-n(\d+))?(?:-lr([\d.e-]+))?(?:-s(\d+))?")
EXAMPLES = ("attn2-f25", "mlp2-f25", "attn3-f50-noplant", "attn2-f50-noplant-freq-n300")


def candidate(name: str) -> tuple[dict, dict]:
    """(run overrides of the cpu preset, IOI overrides) of a candidate named
    {attn|mlp}{layers}-f{IOI percent}[-noplant][-freq (held-out names: the most frequent)][-n{names}][-lr{lr}]
    [-s{training seed}] (the seed suffix overrides --seed)."""
    m = CANDIDATE.fullmatch(name)
    if not m:
        raise argparse.ArgumentTypeError(f"candidate {name!r} is not allowed: e.g. {', '.join(EXAMPLES)}")
    kind, layers, pct, noplant, freq, n_names, lr, seed = m.groups()
    run = dict(attention_only=kind == "attn", n_layers=int(layers), **({"plant_frac": 0.0} if noplant else {}),
               **({"lr": float(lr)} if lr else {}), **({"seed": int(seed)} if seed else {}))
    ioi = dict(ioi_frac=int(pct) / 100, **({"heldout_names": "frequent"} if freq else {}),
               **({"n_names": int(n_names)} if n_names else {}))
    return run, ioi


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", nargs="+", default=["attn2-f25", "mlp2-f25"], help="e.g. " + ", ".join(EXAMPLES))
    ap.add_argument("--parallel", type=int, default=2, help="candidates trained at once (one thread each)")
    ap.add_argument("--budget-s", type=float, default=360.0, help="training seconds per candidate")
    ap.add_argument("--max-steps", type=int, default=6000, help="the schedule's length (cosine to 0.1 lr)")
    ap.add_argument("--every", type=int, default=100, help="steps between evaluations")
    ap.add_argument("--threshold", type=float, default=0.8, help="accuracy that counts as formed")
    ap.add_argument("--formed-on", default="heldout_templates", choices=list(K.EVAL_SETS),
                    help="the set whose accuracy decides when a candidate has formed (and may stop)")
    ap.add_argument("--after", type=int, default=5, help="evaluations to keep going once formed")
    ap.add_argument("--n-eval", type=int, default=256, help="prompts per evaluation set")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    ap.add_argument("--out", type=Path, default=None, help="append the table to this file")
    ap.add_argument("--json", type=Path, default=None, help="append every evaluation row, per candidate, as JSON lines")
    ap.add_argument("--keep", type=Path, default=None, help="keep each candidate's last checkpoint in KEEP/<name>")
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint kept in KEEP/<name> (exact "
                    "resume; --budget-s then counts this call's training seconds only)")
    ap.add_argument("--tokenizers", action="store_true",
                    help="instead: single-token name counts under each tokenizer option, and their training speed")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # worker: run one candidate, print JSON
    return ap.parse_args()


def setting(name: str, args: argparse.Namespace):
    """The IOISetup of one candidate (chunked cadence: eval and checkpoint every --every steps; report 8's IOI
    parameters at the cpu preset with the candidate's changes)."""
    run, ioi = candidate(name)
    p = P.resolve("cpu", **ioi)
    # relative to lib.core's cpu preset (planted repeats in half the windows unless -noplant), not report 8's run
    cfg = resolve("cpu", **{"seed": args.seed, "lr": args.lr, **run, "max_steps": args.max_steps,
                            "eval_every": args.every, "eval_batches": 1, "checkpoint_every": args.every})
    return K.setup(cfg, p)


def worker(args: argparse.Namespace) -> None:
    """Train one candidate in chunks, scoring after each; print one JSON line."""
    torch.set_num_threads(1)
    s = setting(args.one, args)
    data = K.train_data(s)
    sets = K.eval_prompts(s, args.n_eval)
    rows = [{"step": 0, "seconds": 0.0, **_scores(tr.init_model(s.cfg), sets)}]
    formed_at = None
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        ckpt = args.keep / args.one if args.keep else Path(tmp)
        if not args.resume:
            shutil.rmtree(ckpt, ignore_errors=True)  # a kept folder from an earlier call would be resumed
        saved = tr.list_checkpoints(ckpt)
        start = artifacts.read_json(saved[-1] / "state.json")["history"][-1]["seconds"] if saved else 0.0
        while True:
            model, hist = tr.train(s.cfg, ckpt_dir=Path(ckpt), stop_after=args.every, keep_checkpoints=1,
                                   progress=False, data=data.tokens)
            last = hist.iloc[-1]
            rows.append({"step": int(last["step"]), "seconds": float(last["seconds"]),
                         "val_loss": float(last["val_loss"]), **_scores(model, sets)})
            if formed_at is None and rows[-1][f"{args.formed_on}_accuracy"] > args.threshold:
                formed_at = len(rows) - 1
            done = formed_at is not None and len(rows) - 1 - formed_at >= args.after
            if done or last["seconds"] - start >= args.budget_s or last["step"] >= s.cfg.train.max_steps:
                break
    print(json.dumps({"name": args.one, "rows": rows, "vocab": s.vocab.summary(), "d_vocab": s.cfg.model.d_vocab,
                      "n_windows": len(data.tokens.train), "n_ioi": len(data.mix.rows),
                      "tokens_per_step": s.cfg.train.batch_size * s.cfg.data.n_ctx}))


def _scores(model, sets) -> dict:
    out = {}
    for name, prompts in sets.items():
        sc = K.score(model, prompts)
        out.update({f"{name}_logit_diff": sc["logit_diff"], f"{name}_accuracy": sc["accuracy"],
                    f"{name}_top1": sc["top1"], f"{name}_name_top1": sc["name_top1"]})
    return out


def first(rows: list[dict], key: str, above: float) -> dict | None:
    """The first evaluation row whose `key` exceeds `above`."""
    return next((r for r in rows if r[key] > above), None)


SETS = {"train": "train", "heldout_templates": "tmpl", "heldout_names": "names", "heldout": "both"}


def table(results: list[dict], args: argparse.Namespace) -> str:
    """One line per candidate: speed, the --formed-on set's accuracy at init, the step (seconds) at which each set's
    accuracy first passed the threshold, and the last evaluation's accuracy and logit difference per set."""
    at_cols = " ".join(f"{f'{v} >{args.threshold:g} at':>15s}" for v in SETS.values())
    head = (f"{'candidate':30s} {'tok/s':>6s} {'init acc':>8s} {at_cols}  {'last step':>9s} "
            f"{'acc ' + '/'.join(SETS.values()):>26s} {'logit diff ' + '/'.join(SETS.values()):>30s}")
    lines = [head]
    for res in results:
        rows, tps, z = res["rows"], res["tokens_per_step"], res["rows"][-1]
        speed = z["step"] * tps / max(z["seconds"], 1e-9)
        at = lambda r: "never" if r is None else f"{r['step']} ({r['seconds']:.0f} s)"  # noqa: E731
        ats = " ".join(f"{at(first(rows, f'{k}_accuracy', args.threshold)):>15s}" for k in SETS)
        accs = "/".join(f"{z[f'{k}_accuracy']:.2f}" for k in SETS)
        lds = "/".join(f"{z[f'{k}_logit_diff']:+.1f}" for k in SETS)
        lines.append(f"{res['name']:30s} {speed:6.0f} {rows[0][f'{args.formed_on}_accuracy']:8.2f} {ats}  "
                     f"{z['step']:9d} {accs:>26s} {lds:>30s}")
    return "\n".join(lines)


def curves(results: list[dict]) -> str:
    """Accuracy per set at every evaluation, per candidate (compact)."""
    return "\n".join(f"{r['name']:30s} {v:5s} " + " ".join(f"{x[f'{k}_accuracy']:.2f}" for x in r["rows"])
                     for r in results for k, v in SETS.items())


def single_counts(tok, words: list[str]) -> int:
    """How many of words are one token with a leading space."""
    return sum(len(tok.encode(" " + w)) == 1 for w in words)


def tokenizer_report() -> str:
    """Single-token first names (top 100 / 500 eligible), places and objects under each tokenizer option, and the
    1-thread training speed of the cpu preset's model at each option's vocabulary size (round-robin repetitions)."""
    torch.set_num_threads(1)
    cfg, p = resolve("cpu"), P.resolve("cpu")
    s = K.setup(cfg, p)
    texts = corpus_texts(cfg.data)
    names = D.first_names(load_articles("dbpedia14_train"), D.word_counts(texts), p.min_count)
    words = list(s.vocab.places + s.vocab.objects)
    options = {"cpu preset BPE (vocab 1024)": get_tokenizer(cfg.data),
               "BPE 1024 on corpus + 30k IOI sentences": train_bpe(texts + _ioi_texts(s, names[:100], 30000), 1024),
               "BPE 2048 on corpus": train_bpe(texts, 2048), "BPE 4096 on corpus": train_bpe(texts, 4096),
               "GPT-2": gpt2_tokenizer(),
               f"cpu BPE + IOI merges (report 8, vocab {s.tokenizer.vocab_size})": s.tokenizer}
    lines = [f"# {len(names)} eligible first names (person titles, used >= {p.min_count} times, not common words)",
             f"{'tokenizer':55s} {'vocab':>6s} {'names/100':>9s} {'names/500':>9s} "
             f"{f'places+objects/{len(words)}':>17s}"]
    for label, tok in options.items():
        lines.append(f"{label:55s} {tok.vocab_size:6d} {single_counts(tok, names[:100]):9d} "
                     f"{single_counts(tok, names[:500]):9d} {single_counts(tok, words):17d}")
    lines.append("# training speed, cpu preset model, batch 32 x 64, fp32, 1 thread: tokens/s median (IQR) of 3 reps")
    for vocab in (1024, s.tokenizer.vocab_size, 50257):
        for attn in (True, False):
            lines.append(f"{'attention-only' if attn else 'with MLP':15s} vocab {vocab:6d}: {_speed(vocab, attn)}")
    return "\n".join(lines)


def _ioi_texts(s, names: list[str], n: int) -> list[str]:
    """n IOI sentences as text (random templates, names, places and objects; the IO completes each)."""
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        fill = dict(A=a, B=b, S=b, PLACE=rng.choice(s.vocab.places), OBJECT=rng.choice(s.vocab.objects))
        out.append(rng.choice(D.TEMPLATES).format(**fill) + f" {a}.")
    return out


def _speed(vocab: int, attention_only: bool) -> str:
    cfg = resolve("cpu", attention_only=attention_only, vocab_size=vocab)
    step = bench.make_step(tr.init_model(cfg), cfg.train, "fp32")
    x = torch.randint(0, vocab, (cfg.train.batch_size, cfg.model.n_ctx), generator=torch.Generator().manual_seed(0))
    n = 2 if vocab > 10000 else 10
    step(x)
    tps = bench.round_robin({"s": lambda: x.numel() * n / bench.time_steps(step, x, n)}, 3)["s"]
    q = bench.summarize(tps)
    return f"{q.median:8.0f} ({q.iqr:.0f})"


def _options(args: argparse.Namespace) -> list[str]:
    """The command-line options a worker and the header repeat."""
    out = ["--budget-s", f"{args.budget_s:g}", "--max-steps", str(args.max_steps), "--every", str(args.every),
           "--formed-on", args.formed_on, "--threshold", f"{args.threshold:g}", "--after", str(args.after),
           "--n-eval", str(args.n_eval), "--seed", str(args.seed)]
    out += (["--lr", f"{args.lr:g}"] if args.lr else []) + (["--keep", str(args.keep)] if args.keep else [])
    return out + (["--resume"] if args.resume else [])


def run_candidates(args: argparse.Namespace) -> list[dict]:
    """Every candidate's result, --parallel worker processes at a time."""
    results = []
    for i in range(0, len(args.candidates), args.parallel):
        group = args.candidates[i : i + args.parallel]
        procs = [subprocess.Popen([sys.executable, __file__, *_options(args), "--one", name], stdout=subprocess.PIPE,
                                  text=True) for name in group]
        results += [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        print(f"# after {', '.join(group)}: {bench.load()}", flush=True)
    return results


def write(text: str, args: argparse.Namespace, results: list[dict] = ()) -> None:
    """Print text; append it to --out and the results to --json."""
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n\n")
    if args.json:
        with open(args.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)


def main() -> None:
    args = parse_args()
    if args.one:
        return worker(args)
    if args.tokenizers:
        head = f"# python bench/ioi_recipe.py --tokenizers\n# {bench.machine()}; start {bench.load()}\n"
        return write(head + tokenizer_report() + f"\n# end {bench.load()}", args)
    K.train_data(setting(args.candidates[0], args))  # the tokenizer and the natural-text cache, before the workers
    header = [f"# python bench/ioi_recipe.py --candidates {' '.join(args.candidates)} {' '.join(_options(args))}"
              f"   ({time.strftime('%Y-%m-%d %H:%M')})", f"# {bench.machine()}; worker threads 1; start {bench.load()}"]
    print("\n".join(header), flush=True)
    results = run_candidates(args)
    vocab = f"# d_vocab {results[0]['d_vocab']}, IOI vocabulary {results[0]['vocab']}; {args.n_eval} prompts per set"
    stop = f"; stop {args.after} evaluations after {args.formed_on} accuracy > {args.threshold:g}"
    legend = (f"# accuracy per evaluation (every {args.every} steps from 0); tmpl = held-out templates with training "
              "names, names = training templates with held-out names, both = held-out templates and names")
    write("\n".join(header + [vocab + stop, table(results, args), legend, curves(results), f"# end {bench.load()}"]),
          args, results)


if __name__ == "__main__":
    main()
