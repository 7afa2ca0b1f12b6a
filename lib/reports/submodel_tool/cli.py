"""Report 7's tool on the command line: which sub-models a prompt uses, and its prediction with some ablated.

    python -m lib.submodels explain --prompt "He played for the national football" --ablate Athlete --preset cpu
    python -m lib.submodels explain --model path/to/hf-folder --concepts my_concepts/ --prompt "..." \
        --ablate Sports --report explain.html

Without --model the base model is ours (trained for --preset if absent) and the concepts are the shipped DBpedia
classes and toxic/harmless comments. --model takes any local model lib.core.pretrained loads (a save_pretrained
folder, a Hugging Face cache name, one of our model artifacts); --concepts a folder with one <Concept>.txt per concept,
one example text per line (even lines find the sub-models, odd lines validate them).

Every sub-model is validated first, as in report 7: ablating it must hurt its own concept's held-out keyword
predictions more than the other concepts', by more than 95% of size-matched random sub-models do, and more than the
same pipeline's sub-model at initialisation. The table printed shows each status; ablating a sub-model that is not
validated is refused unless --allow-unvalidated is given (without --ablate, each validated sub-model is ablated).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from lib.analysis import prompts
from lib.analysis.prompts import KeywordPrompts
from lib.core import artifacts, config, data, pretrained
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
from lib.reports.submodel_tool.page import write_page

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


def _html_path(text: str) -> Path:
    if Path(text).suffix.lower() not in (".html", ".htm"):
        raise argparse.ArgumentTypeError(f"{text!r}: the page is HTML, so the file name must end in .html")
    return Path(text)


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
    e.add_argument("--model", default=None,
                   help="a local model: a save_pretrained folder, a Hugging Face cache name or one of our model "
                        "artifacts (default: our own model of --preset)")
    e.add_argument("--revision", default=None, help="a revision of --model (a checkpointed suite's step)")
    e.add_argument("--concepts", default=None, type=Path,
                   help="folder with one <Concept>.txt per concept, one example text per line (default: the shipped "
                        "DBpedia classes and toxic/harmless comments)")
    e.add_argument("--report", default=None, type=_html_path, help="also write a self-contained HTML page here")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    e.add_argument("--n-ctx", type=_positive_int, default=None,
                   help="tokens per concept window (default: the preset's, at most the model's context)")
    e.add_argument("--preset", default="cpu", choices=config.PRESET_NAMES,
                   help="our base model's preset (without --model) and the keyword-probe settings of shipped sets")
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


@dataclass
class Setup:
    """What the tool runs on: the model, its tokenizer, the same architecture at initialisation, the concept windows
    (set -> concept -> windows), each set's validation prompts, the texts of the probe gate's unigram baseline
    (None: no gate), and a description of the model for the page."""

    model: object
    tokenizer: data.Tokenizer
    init: object | None
    concepts: Mapping[str, Mapping[str, Tensor]]
    validation: Mapping[str, KeywordPrompts] | None
    unigram_texts: Sequence[str] | None
    about: dict


def _default_setup(cfg: config.RunConfig, preset: str, tok, n_windows: int) -> Setup:
    """Our base model of cfg, the same architecture at initialisation, concept windows (DBpedia classes and
    toxic/harmless), each set's held-out validation prompts as in report 7; trains the model if absent."""
    directory = model_dir(cfg)
    if not artifacts.is_complete(directory):
        print(f"No trained base model in {directory}: training it now (report 1 trains the same model; "
              "progress below).", file=sys.stderr, flush=True)
    m, _, _ = get_or_train(cfg, progress=True)
    concepts = {s: prompts.topic_windows(tok, s, "fit", cfg.model.n_ctx, n_windows) for s in prompts.TOPIC_SETS}
    nb = report_params.resolve(preset)
    _, by_set = prompts.keyword_probes(tok, nb.keywords, nb.n_prompts, cfg.model.n_ctx,
                                       bos=cfg.data.task == "windows")
    hooked = to_hooked(m)
    return Setup(hooked, tok, to_hooked(init_model(cfg).eval()), concepts, split_halves(by_set)[1],
                 data.corpus_texts(cfg.data), {"model": f"ours ({preset} preset, {directory})",
                                               **pretrained.architecture(hooked).row()})


def _model_setup(args: argparse.Namespace, device: str) -> Setup:
    """A loaded model (--model), its tokenizer and its architecture at initialisation; concepts from --concepts
    (or the shipped sets), tokenised with the model's tokenizer; all held-out prompts validate."""
    t0 = time.perf_counter()
    model, tok = pretrained.load(args.model, device, revision=args.revision)
    init = pretrained.load_model(args.model, device, revision=args.revision, init=True)
    about = {"model": str(args.model) + (f" @ {args.revision}" if args.revision else ""),
             **pretrained.architecture(model).row(), "layers": model.cfg.n_layers, "d_model": model.cfg.d_model,
             "load_s": round(time.perf_counter() - t0, 1)}
    default_ctx = config.resolve(args.preset).model.n_ctx
    n_ctx = min(args.n_ctx or default_ctx, model.cfg.n_ctx)
    if args.concepts is not None:
        sets = [prompts.concept_texts(args.concepts)]
        kp = prompts.USER_KEYWORDS
    else:
        sets, kp = list(prompts.TOPIC_SETS), report_params.resolve(args.preset).keywords
    concepts = {prompts.set_name(s): prompts.topic_windows(tok, s, "fit", n_ctx, args.n_windows) for s in sets}
    for s, group in concepts.items():
        short = [c for c, w in group.items() if len(w) == 0]
        if short:
            raise ValueError(f"concept(s) {short} of {s!r} have less than one window of {n_ctx} tokens of example "
                             "text: add lines, or pass a smaller --n-ctx")
    _, by_set = prompts.keyword_probes(tok, kp, report_params.resolve(args.preset).n_prompts, n_ctx, bos=True,
                                       topic_sets=sets)
    texts = [t for s in sets for split in prompts.SPLITS for t in prompts.articles(s, split)["text"]]
    return Setup(model, tok, init, concepts, by_set, texts, about)


def main(argv: Sequence[str] | None = None, *, model=None, tokenizer=None,
         concepts: Mapping[str, Mapping[str, Tensor]] | None = None,
         validation: Mapping[str, KeywordPrompts] | None = None, init=None) -> Explanation:
    """The command line; model, tokenizer, concept sets (set -> concept -> windows), validation prompts per set and
    the model at initialisation may be passed in (tests); without validation the sub-models stay unvalidated."""
    parser = _parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if model is not None and args.model is not None:
        parser.error("argument --model: a model was also passed in")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if model is not None:
            setup = Setup(model, tokenizer, init, concepts, validation, None, {"model": "passed in"})
        elif args.model is not None:
            setup = _model_setup(args, device)
        else:
            if args.concepts is not None:
                parser.error("argument --concepts: needs --model (our own models come with the shipped concept sets)")
            cfg = config.resolve(args.preset, attention_only=False)
            tok = data.get_tokenizer(cfg.data)
            _check_prompt(parser, tok, args.prompt, cfg.model.n_ctx)  # before the (possibly long) set-up
            setup = _default_setup(cfg, args.preset, tok, args.n_windows)
    except (FileNotFoundError, ValueError) as e:  # a missing model, bad concept files, an unsupported architecture
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    _check_prompt(parser, setup.tokenizer, args.prompt, setup.model.cfg.n_ctx)
    subs = _submodels(setup.model, setup.concepts, setup.validation, args, progress=args.model is not None)
    if setup.validation is not None and setup.init is not None:
        subs = with_init_control(subs, _submodels(setup.init, setup.concepts, setup.validation, args,
                                                  progress=args.model is not None, desc="at initialisation"))
    if setup.unigram_texts is not None and setup.validation is not None:  # report 7's probe gate
        val_all = prompts.concat(list(setup.validation.values()), setup.tokenizer.eos_id)
        margins = prompts.model_probe_margins(setup.model, setup.tokenizer, val_all, setup.unigram_texts)
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
        ex = explain(setup.model, args.prompt, subs, tokenizer=setup.tokenizer, ablate=ablate,
                     intensity=args.intensity, kind=args.kind, top_k=args.top_k,
                     allow_unvalidated=args.allow_unvalidated)
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    act = ex.activity.groupby("submodel", sort=False).activity
    print("\nActivity (mean z-score of their units), highest at the last position\n")
    print(pd.DataFrame({"last position": act.last(), "max": act.max()}).sort_values("last position",
                                                                                   ascending=False).round(2).head(8)
          .to_string())
    print(f"\nNext token after {''.join(ex.tokens)!r}\n")
    print(ex.predictions.drop(columns="token_id").to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    wall = time.perf_counter() - t0
    if args.report is not None:
        write_page(args.report, ex, subs, setup.about, args, argv, wall)
        print(f"\nWrote {args.report} ({wall:.0f} s)")
    return ex


def _check_prompt(parser: argparse.ArgumentParser, tokenizer, prompt: str, n_ctx: int) -> None:
    n_tokens = len(tokenizer.encode(prompt)) + 1  # + the leading end-of-text token
    if n_tokens > n_ctx:
        parser.error(f"argument --prompt: {n_tokens} tokens do not fit the model's context of {n_ctx} tokens")


def _submodels(model, concepts: Mapping[str, Mapping[str, Tensor]], validation: Mapping[str, KeywordPrompts] | None,
               args: argparse.Namespace, progress: bool = False, desc: str = "") -> dict[str, SubModel]:
    """Sub-models of every concept set (concepts compete within their own set), validated if prompts are given."""
    if progress:
        print(f"Finding and validating sub-models{' ' + desc if desc else ''} ...", file=sys.stderr, flush=True)
    if validation is None:
        return {c: sm for group in concepts.values()
                for c, sm in find_submodels(model, group, args.method, frac=args.frac, progress=progress).items()}
    return find_in_sets(model, concepts, validation, validation, args.method, frac=args.frac, n_random=args.n_random,
                        kind=args.kind, intensity=args.intensity, progress=progress)
