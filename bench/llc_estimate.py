"""The LLC estimate (lib.reports.training_dynamics.llc.estimate): its plain tensor dataset and no per-chain
gc.collect() on the CPU, against devinterp's documented path (as_documented=True: a Hugging Face `Dataset` and a
collection before and after every chain), side by side in one run.

    python bench/llc_estimate.py                 # cpu preset, 3 repetitions
    python bench/llc_estimate.py --reps 5 --threads 1

Each timing is one estimate with notebook 6's settings for the preset (chains, draws + burn-in, SGLD batch,
`n_llc_data` sequences of its training split) on its main run's model (the preset's attention-only transformer; at
initialisation, since the time does not depend on the weights), at the grid's smallest step size and largest
localisation. Repetitions run the two variants in turn (lib.core.bench.round_robin) and the ratio is taken within a repetition.
Prints seconds per estimate, the ratio documented / ours (median and IQR over repetitions), and whether the two give the same chains (they must:
the speed-up changes no draw).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from lib.core import bench, data, train
from lib.reports.training_dynamics import kernel as attribution, llc, params as report_params

warnings.filterwarnings("ignore", message=".*HookedTransformer.*", category=DeprecationWarning)


def main() -> None:
    args = bench.arg_parser(__doc__, reps=3).parse_args()
    bench.begin(args)
    nb = report_params.resolve(args.preset)
    cfg, _ = attribution.main_run(args.preset, nb, 0)
    model = train.init_model(cfg).eval()
    tokens = data.load_token_data(cfg.data).train
    tokens = tokens[torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[: nb.n_llc_data]]
    kw = dict(lr=min(nb.llc_lrs), localization=max(nb.llc_localizations), num_chains=nb.llc_chains,
              num_draws=nb.llc_draws, num_burnin=nb.llc_burnin, batch_size=nb.llc_batch, seed=0)
    print(f"preset {args.preset}: {nb.llc_chains} chains x ({nb.llc_burnin} burn-in + {nb.llc_draws} draws), "
          f"batch {nb.llc_batch}, {len(tokens)} sequences of {tokens.shape[1]} tokens; lr {kw['lr']:g}, "
          f"localization {kw['localization']:g}")
    llc.estimate(model, tokens, **{**kw, "num_draws": 4, "num_burnin": 0})  # warm-up (imports, allocator)
    traces: dict[bool, np.ndarray] = {}

    def timed(documented: bool) -> float:
        t0 = time.perf_counter()
        traces[documented] = llc.estimate(model, tokens, as_documented=documented, **kw).trace
        return time.perf_counter() - t0

    names = {True: "devinterp's documented path (as_documented)", False: "ours (tensor rows, no gc)"}
    times = bench.round_robin({names[d]: (lambda d=d: timed(d)) for d in names}, args.reps)
    r = bench.summarize([a / b for a, b in zip(times[names[True]], times[names[False]])])
    print(f"{'variant':<44}{'s / estimate (each rep)':>34}")
    for name, vals in times.items():
        print(f"{name:<44}{'  '.join(f'{t:6.2f}' for t in vals):>34}")
    print(f"ratio documented / ours: median {r.median:.3f} (IQR {r.q1:.3f}-{r.q3:.3f}) over {r.n} reps")
    print(f"same chains (bit-identical loss traces): {np.array_equal(traces[True], traces[False])}")
    print(bench.load())


if __name__ == "__main__":
    main()
