"""Report 7's tool on the command line: which sub-models a prompt uses, and its prediction with some ablated.

    python -m lib.submodels explain --prompt "He played for the national football" --ablate Athlete --preset cpu

Every sub-model is validated first, as in report 7: ablating it must hurt its own concept's held-out keyword
predictions more than the other concepts', by more than 95% of size-matched random sub-models do, and more than the
same pipeline's sub-model at initialisation. The table printed shows each status; ablating a sub-model that is not
validated is refused unless --allow-unvalidated is given (without --ablate, each validated sub-model is ablated).
"""

from __future__ import annotations

import argparse
import sys
from typing import Mapping, Sequence

import pandas as pd
from torch import Tensor

from lib.analysis import prompts
from lib.analysis.prompts import KeywordPrompts
from lib.core import artifacts, config, data
from lib.core.model import to_hooked
from lib.core.runs import get_or_train, model_dir
from lib.core.train import init_model
from lib.reports.submodel_tool import params as report_params
from lib.reports.submodel_tool.kernel import (
    KINDS,
    Explanation,
    SubModel,
    explain,
    find_in_sets,
    find_submodels,
    split_halves,
    validation_table,
    with_init_control,
    with_probe_gate,
)

CLI_METHODS = ("selectivity", "sae", "infovae")  # 'shapley' needs keyword prompts, 'sparse' a k-WTA model


def _number(cast, ok, allowed: str):
    """An argparse type: `cast` the text, then require `ok(value)`; errors name the value and what is allowed."""
    kind = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} is not allowed: {allowed}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_share = _number(float, lambda v: 0 < v <= 1, "a share in (0, 1]")
_intensity = _number(float, lambda v: v >= 0, "a number >= 0 (1 = full ablation)")


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty prompt has no next token to predict")
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lib.submodels", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("explain", help="which sub-models a prompt uses; its prediction with some of them ablated")
    e.add_argument("--prompt", required=True, type=_prompt, help="text whose next token is predicted")
    e.add_argument("--ablate", action="append", default=None,
                   help="concept to ablate (repeat the flag; 'A+B' ablates A and B together); default: each alone")
    e.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES, help="the base model's preset")
    e.add_argument("--method", default="selectivity", choices=CLI_METHODS,
                   help="how sub-models are found")
    e.add_argument("--intensity", type=_intensity, default=1.0, help="impairment intensity (1 = full ablation)")
    e.add_argument("--kind", default="zero", choices=KINDS, help="impairment kind")
    e.add_argument("--top-k", type=_positive_int, default=5, help="next tokens shown per condition")
    e.add_argument("--frac", type=_share, default=0.025, help="units per hook, as a fraction of its width")
    e.add_argument("--n-windows", type=_positive_int, default=16,
                   help="text windows per concept used to find sub-models")
    e.add_argument("--n-random", type=_positive_int, default=20,
                   help="size-matched random sub-models per validation (the control)")
    e.add_argument("--allow-unvalidated", action="store_true",
                   help="also ablate sub-models that failed validation (they are marked as such)")
    return p


def _default_setup(cfg: config.RunConfig, preset: str, tok, n_windows: int):
    """(hooked base model of cfg, the same architecture at initialisation, concept windows: DBpedia classes and
    toxic/harmless, each set's held-out validation prompts as in report 7); trains the model if absent."""
    directory = model_dir(cfg)
    if not artifacts.is_complete(directory):
        print(f"No trained base model in {directory}: training it now (report 1 trains the same model; "
              "progress below).", file=sys.stderr, flush=True)
    m, _, _ = get_or_train(cfg, progress=True)
    concepts = {s: prompts.topic_windows(tok, s, "fit", cfg.model.n_ctx, n_windows) for s in prompts.TOPIC_SETS}
    nb = report_params.resolve(preset)
    _, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, cfg.model.n_ctx,
                                       bos=cfg.data.task == "windows")
    return to_hooked(m), to_hooked(init_model(cfg).eval()), concepts, split_halves(by_set)[1]


def main(argv: Sequence[str] | None = None, *, model=None, tokenizer=None,
         concepts: Mapping[str, Mapping[str, Tensor]] | None = None,
         validation: Mapping[str, KeywordPrompts] | None = None, init=None) -> Explanation:
    """The command line; model, tokenizer, concept sets (set -> concept -> windows), validation prompts per set and
    the model at initialisation may be passed in (tests); without validation the sub-models stay unvalidated."""
    parser = _parser()
    args = parser.parse_args(argv)
    cfg = config.resolve(args.preset, attention_only=False) if model is None else None
    tokenizer = data.get_tokenizer(cfg.data) if model is None else tokenizer
    n_ctx = cfg.model.n_ctx if model is None else model.cfg.n_ctx
    n_tokens = len(tokenizer.encode(args.prompt)) + 1  # + the leading end-of-text token
    if n_tokens > n_ctx:  # checked before the (possibly long) set-up
        parser.error(f"argument --prompt: {n_tokens} tokens do not fit the model's context of {n_ctx} tokens")
    if model is None:
        model, init, concepts, validation = _default_setup(cfg, args.preset, tokenizer, args.n_windows)
    subs = _submodels(model, concepts, validation, args)
    if validation is not None and init is not None:
        subs = with_init_control(subs, _submodels(init, concepts, validation, args))
    if cfg is not None and validation is not None:  # report 7's probe gate: validated only where the probe knows
        val_all = prompts.concat(list(validation.values()), tokenizer.eos_id)
        margins = prompts.model_probe_margins(model, tokenizer, val_all, data.corpus_texts(cfg.data))
        subs = with_probe_gate(subs, margins)
    print(f"Sub-models ({args.method}) and their validation (gap: own-concept minus other-concept loss rise when "
          f"ablated, nats; random_q95: the 95th percentile of {args.n_random} size-matched random sub-models; p: "
          "their permutation p-value; init_gap: the same pipeline at initialisation; kept: nats of its concept's "
          "loss the sub-model preserves alone when the rest of its layer is ablated, vs random (kept_p); "
          "sufficiency: kept as a share of the whole layer's damage)\n")
    print(validation_table(subs).drop(columns="why").round(3).to_string())
    if args.ablate is None:
        ablate = [[n] for n, sm in subs.items() if sm.status == "validated" or args.allow_unvalidated]
        if not ablate:
            print("\nNo sub-model is validated: nothing to ablate (--allow-unvalidated ablates them anyway).")
    else:
        ablate = [a.split("+") for a in args.ablate]
    try:
        ex = explain(model, args.prompt, subs, tokenizer=tokenizer, ablate=ablate, intensity=args.intensity,
                     kind=args.kind, top_k=args.top_k, allow_unvalidated=args.allow_unvalidated)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    act = ex.activity.groupby("submodel", sort=False).activity
    print("\nActivity (mean z-score of their units), highest at the last position\n")
    print(pd.DataFrame({"last position": act.last(), "max": act.max()}).sort_values("last position",
                                                                                   ascending=False).round(2).head(8)
          .to_string())
    print(f"\nNext token after {''.join(ex.tokens)!r}\n")
    print(ex.table().to_string(index=False))
    return ex


def _submodels(model, concepts: Mapping[str, Mapping[str, Tensor]], validation: Mapping[str, KeywordPrompts] | None,
               args: argparse.Namespace) -> dict[str, SubModel]:
    """Sub-models of every concept set (concepts compete within their own set), validated if prompts are given."""
    if validation is None:
        return {c: sm for group in concepts.values()
                for c, sm in find_submodels(model, group, args.method, frac=args.frac, progress=False).items()}
    return find_in_sets(model, concepts, validation, validation, args.method, frac=args.frac, n_random=args.n_random,
                        kind=args.kind, intensity=args.intensity, progress=False)
