"""Report 7's tool on the command line: which sub-models a prompt uses, and its prediction with some ablated.

    python -m lib.submodels explain --prompt "He played for the national football" --ablate Athlete --preset cpu
"""

from __future__ import annotations

import argparse
from typing import Mapping, Sequence

import pandas as pd
from torch import Tensor

from lib.analysis import prompts
from lib.core import config, data
from lib.core.model import to_hooked
from lib.core.runs import get_or_train
from lib.reports.submodel_tool.kernel import KINDS, METHODS, Explanation, SubModel, explain, find_submodels


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib.submodels", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="which sub-models a prompt uses; its prediction with some of them ablated")
    e.add_argument("--prompt", required=True, help="text whose next token is predicted")
    e.add_argument("--ablate", action="append", default=None,
                   help="concept to ablate (repeat the flag; 'A+B' ablates A and B together); default: each alone")
    e.add_argument("--preset", default="cpu", help="base model preset: smoke, cpu or gpu")
    e.add_argument("--method", default="selectivity", help=f"one of {METHODS} (sparse needs a k-WTA model)")
    e.add_argument("--intensity", type=float, default=1.0, help="impairment intensity (1 = full ablation)")
    e.add_argument("--kind", default="zero", help=f"impairment kind, one of {KINDS}")
    e.add_argument("--top-k", type=int, default=5, help="next tokens shown per condition")
    e.add_argument("--frac", type=float, default=0.025, help="units per hook, as a fraction of its width")
    e.add_argument("--n-windows", type=int, default=16, help="text windows per concept used to find sub-models")
    return p


def _default_setup(preset: str, n_windows: int):
    """(hooked base model of the preset, its tokenizer, concept windows: DBpedia classes and toxic/harmless)."""
    cfg = config.resolve(preset, attention_only=False)
    m, _, _ = get_or_train(cfg, progress=False)
    tok = data.get_tokenizer(cfg.data)
    concepts = {s: prompts.topic_windows(tok, s, "fit", cfg.model.n_ctx, n_windows) for s in prompts.TOPIC_SETS}
    return to_hooked(m), tok, concepts


def main(argv: Sequence[str] | None = None, *, model=None, tokenizer=None,
         concepts: Mapping[str, Mapping[str, Tensor]] | None = None) -> Explanation:
    """The command line; model, tokenizer and concept sets (set -> concept -> windows) may be passed in (tests)."""
    args = _parser().parse_args(argv)
    if model is None:
        model, tokenizer, concepts = _default_setup(args.preset, args.n_windows)
    subs: dict[str, SubModel] = {}
    for group in concepts.values():  # concepts compete within their own set (DBpedia classes; toxic vs harmless)
        subs.update(find_submodels(model, group, args.method, frac=args.frac, progress=False))
    ablate = None if args.ablate is None else [a.split("+") for a in args.ablate]
    ex = explain(model, args.prompt, subs, tokenizer=tokenizer, ablate=ablate, intensity=args.intensity,
                 kind=args.kind, top_k=args.top_k)
    act = ex.activity.groupby("submodel", sort=False).activity
    print(f"Sub-models ({args.method}): activity = mean z-score of their units; highest at the last position\n")
    print(pd.DataFrame({"last position": act.last(), "max": act.max()}).sort_values("last position",
                                                                                   ascending=False).round(2).head(8)
          .to_string())
    print(f"\nNext token after {''.join(ex.tokens)!r}\n")
    print(ex.table().to_string(index=False))
    return ex
