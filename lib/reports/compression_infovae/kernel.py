"""Report 2 (compression): splice a compressor into a component's output, loss recovered vs latent size, topic
probes on latents, latent traversals. The compressors themselves are shared (lib.analysis.compressors)."""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.analysis import compressors
from lib.analysis.compressors import METHOD_LABELS, Compressor, CompressorConfig, fvu
from lib.analysis.prompts import KeywordPrompts, evaluate
from lib.analysis.stats import bootstrap_ci
from lib.analysis.units import cache_activations, require_hook
from lib.core.hooks import HookFn


def splice_hook(fn: Callable[[Tensor], Tensor]) -> HookFn:
    """A TransformerLens hook replacing the activation [batch, pos, d] by fn(activation) (e.g. a compressor)."""

    def hook_fn(act: Tensor, hook) -> Tensor:
        return fn(act.float()).to(act.dtype).reshape(act.shape)

    return hook_fn


def replace_hook(value: Float[Tensor, " d"]) -> HookFn:
    """A hook setting every position to `value` (zeros: zero-ablation; the data mean: mean-ablation)."""
    return splice_hook(lambda act: value.to(act.device).expand_as(act))


@torch.no_grad()
def lm_metrics(hooked, tokens: Int[Tensor, "n pos"], fwd_hooks: Sequence[tuple[str, HookFn]] = (),
               batch_size: int = 64) -> dict:
    """Next-token loss and accuracy with hooks: {'loss', 'accuracy', 'per_seq_loss' [n], 'per_seq_acc' [n]}."""
    for hook, _ in fwd_hooks:  # a hook that never fires (an MLP hook of an attention-only model) would splice nothing
        if isinstance(hook, str):
            require_hook(hooked, hook, f"splicing at {hook}")
    losses, accs = [], []
    for i in range(0, len(tokens), batch_size):
        x = tokens[i : i + batch_size].to(hooked.cfg.device)
        logits = hooked.run_with_hooks(x, fwd_hooks=list(fwd_hooks)).float()
        lg, tgt = logits[:, :-1], x[:, 1:]
        losses.append(F.cross_entropy(lg.transpose(1, 2), tgt, reduction="none").mean(1).cpu())
        accs.append((lg.argmax(-1) == tgt).float().mean(1).cpu())
    per_seq, per_acc = torch.cat(losses), torch.cat(accs)
    return {"loss": float(per_seq.mean()), "accuracy": float(per_acc.mean()), "per_seq_loss": per_seq.numpy(),
            "per_seq_acc": per_acc.numpy()}


def references(hooked, tokens: Int[Tensor, "n pos"], hook: str, mean: Float[Tensor, " d"],
               batch_size: int = 64) -> dict[str, dict]:
    """lm_metrics of the clean model and of zero- and mean-ablation at `hook`."""
    return {"clean": lm_metrics(hooked, tokens, (), batch_size),
            "zero": lm_metrics(hooked, tokens, [(hook, replace_hook(torch.zeros_like(mean)))], batch_size),
            "mean": lm_metrics(hooked, tokens, [(hook, replace_hook(mean))], batch_size)}


def recovered(loss: float, clean: float, ablated: float) -> float:
    """Fraction of loss recovered: (L_ablated - L) / (L_ablated - L_clean) (1 = clean, 0 = as bad as ablation)."""
    return (ablated - loss) / (ablated - clean)


def splice_row(hooked, tokens: Int[Tensor, "n pos"], hook: str, fn: Callable[[Tensor], Tensor],
               refs: Mapping[str, dict], batch_size: int = 64) -> dict:
    """Metrics of the model with `fn` spliced in at `hook`: loss, loss increase, fraction recovered, accuracy."""
    m = lm_metrics(hooked, tokens, [(hook, splice_hook(fn))], batch_size)
    clean, zero, mean = (refs[k]["loss"] for k in ("clean", "zero", "mean"))
    return {"loss": m["loss"], "loss_increase": m["loss"] - clean,
            "frac_recovered_zero": recovered(m["loss"], clean, zero),
            "frac_recovered_mean": recovered(m["loss"], clean, mean), "accuracy": m["accuracy"],
            "clean_loss": clean, "zero_loss": zero, "mean_loss": mean, "clean_accuracy": refs["clean"]["accuracy"]}


def latent_sizes(d_max: int, n: int | None = None) -> list[int]:
    """Log-spaced latent sizes from 1 to d_max inclusive (powers of two when n is None)."""
    if n is None:
        sizes = [2**i for i in range(int(math.log2(d_max)) + 1)] + [d_max]
    else:
        sizes = np.unique(np.round(np.geomspace(1, d_max, n)).astype(int)).tolist()
    return sorted(set(int(s) for s in sizes))


def sweep(hooked, hook: str, fit_tokens: Int[Tensor, "n pos"], eval_tokens: Int[Tensor, "m pos"],
          sizes: Iterable[int], methods: Iterable[str], seeds: Iterable[int], base: CompressorConfig,
          batch_size: int = 64, progress: bool = True, label: str = "") -> pd.DataFrame:
    """Fit (or load) every (method, size, seed) compressor at `hook`, splice it in on eval_tokens; one row each."""
    acts, key = cache_activations(hooked, fit_tokens, hook, f"{label} fit".strip(), batch_size, progress)
    eval_acts, _ = cache_activations(hooked, eval_tokens, hook, f"{label} eval".strip(), batch_size, progress)
    acts, eval_acts = acts.to(hooked.cfg.device), eval_acts.to(hooked.cfg.device)
    refs = references(hooked, eval_tokens, hook, acts.reshape(-1, acts.shape[-1]).mean(0), batch_size)
    grid = [(m, k, s) for m in methods for k in sizes for s in (seeds if m not in ("pca",) else list(seeds)[:1])]
    rows = []
    for method, k, seed in tqdm(grid, desc=f"sweep {hook}", disable=not progress):
        cfg = base.replace(method=method, d_latent=k, seed=seed)
        module, history = compressors.get_or_fit(acts, cfg, key)
        row = splice_row(hooked, eval_tokens, hook, module, refs, batch_size)
        rows.append({"hook": hook, "method": METHOD_LABELS[method], "d_latent": k, "n_active": module.n_active,
                     "n_latents": module.n_latents, "seed": seed, **row, "fvu": fvu(module, eval_acts),
                     "fit_seconds": float(history["seconds"].iloc[-1])})
    df = pd.DataFrame(rows)
    pca = df[df.method == METHOD_LABELS["pca"]]
    extra = [pca.assign(seed=s) for s in list(seeds)[1:]]  # PCA is deterministic: the same row for every seed
    return pd.concat([df, *extra], ignore_index=True)


def threshold(sizes: Sequence[float], fracs: Sequence[float], level: float = 0.9) -> float:
    """Smallest latent size reaching `level`, interpolated log-linearly between grid points; nan if never reached."""
    sizes, fracs = np.asarray(sizes, float), np.asarray(fracs, float)
    order = np.argsort(sizes)
    sizes, fracs = sizes[order], fracs[order]
    hit = np.nonzero(fracs >= level)[0]
    if len(hit) == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(sizes[0])
    t = (level - fracs[i - 1]) / (fracs[i] - fracs[i - 1])
    return float(2 ** (np.log2(sizes[i - 1]) + t * (np.log2(sizes[i]) - np.log2(sizes[i - 1]))))


def thresholds(df: pd.DataFrame, level: float = 0.9, metric: str = "frac_recovered_zero",
               by: Sequence[str] = ("hook", "method")) -> pd.DataFrame:
    """threshold() per group (rows: `by` + 'seed' or the mean over seeds as seed='mean')."""
    rows = []
    for keys, g in df.groupby(list(by)):
        mean = g.groupby("d_latent")[metric].mean()
        rows.append({**dict(zip(by, keys)), "seed": "mean", "threshold": threshold(mean.index, mean.values, level)})
        for seed, gs in g.groupby("seed"):
            rows.append({**dict(zip(by, keys)), "seed": seed, "threshold": threshold(gs.d_latent, gs[metric], level)})
    return pd.DataFrame(rows)


def linear_probe(x_train: Float[Tensor, "n f"], y_train: Int[Tensor, " n"], x_test: Float[Tensor, "m f"],
                 n_classes: int, steps: int = 200, lr: float = 0.05, weight_decay: float = 1e-4,
                 seed: int = 0) -> Int[Tensor, " m"]:
    """Multinomial logistic regression on standardised features (full-batch Adam); predicted classes for x_test."""
    mu, sd = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mu) / sd, (x_test - mu) / sd
    torch.manual_seed(seed)
    clf = nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(clf(xtr), y_train)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return clf(xte).argmax(-1)


def probe_accuracy(feats: Float[Tensor, "n pos f"], labels: Int[Tensor, " n"], train_mask: Tensor, n_classes: int,
                   shuffle: bool = False, seed: int = 0, **kw) -> np.ndarray:
    """Per-token topic probe: train on windows in train_mask, return per-window accuracy on the others [n_test].

    shuffle=True permutes the training windows' labels (the random control: chance for this probe).
    """
    y = labels.clone()
    if shuffle:
        tr = torch.nonzero(train_mask).squeeze(1)
        y[tr] = y[tr[torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))]]
    pos = feats.shape[1]
    tok_y = y[:, None].expand(-1, pos)
    pred = linear_probe(feats[train_mask].flatten(0, 1), tok_y[train_mask].flatten(), feats[~train_mask].flatten(0, 1),
                        n_classes, seed=seed, **kw)
    return (pred.view(-1, pos) == tok_y[~train_mask]).float().mean(1).numpy()


def probe_table(features: Mapping[tuple[str, str], Tensor], labels: Int[Tensor, " n"], train_mask: Tensor,
                n_classes: int, shuffled: Iterable[tuple[str, str]] = (), steps: int = 200, seed: int = 0
                ) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """probe_accuracy for each {(model, features): tensor [n, pos, f]}; rows with bootstrap 95% CIs, per-window accs.

    Keys in `shuffled` are probed with shuffled training labels (the chance control).
    """
    rows, per_window, shuffled = [], {}, set(shuffled)
    for key, feats in features.items():
        acc = probe_accuracy(feats, labels, train_mask, n_classes, shuffle=key in shuffled, seed=seed, steps=steps)
        per_window[key] = acc
        low, high = bootstrap_ci(acc)
        rows.append({"model": key[0], "features": key[1], "accuracy": float(acc.mean()), "ci_low": low,
                     "ci_high": high})
    return pd.DataFrame(rows), per_window


def split_mask(labels: Int[Tensor, " n"], train_frac: float = 0.5) -> Tensor:
    """Boolean mask: the first train_frac of each class's windows for training (a per-topic split by article)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique():
        idx = torch.nonzero(labels == c).squeeze(1)
        mask[idx[: int(round(train_frac * len(idx)))]] = True
    return mask


@torch.no_grad()
def traverse(hooked, tokens: Int[Tensor, " pos"], hook: str, vae: Compressor, latent: int,
             values: Sequence[float], position: int = -1) -> Float[Tensor, "n_values d_vocab"]:
    """Next-token probabilities at `position` when latent `latent` there is set to each value (others: posterior mean).

    The whole activation at `hook` is replaced by decode(z) at every position, so values = the latent's own mean
    gives the plain splice.
    """
    require_hook(hooked, hook, f"a latent traversal at {hook}")
    vals = torch.tensor(list(values), dtype=torch.float32)
    batch = tokens[None].expand(len(vals), -1).to(hooked.cfg.device)

    def fn(act: Tensor) -> Tensor:
        z = vae.encode(act)
        z[:, position, latent] = vals.to(z.device)
        return vae.decode(z)

    logits = hooked.run_with_hooks(batch, fwd_hooks=[(hook, splice_hook(fn))])
    return logits[:, position].float().softmax(-1).cpu()


def traversal_effect(hooked, prompts: Int[Tensor, "n pos"], hook: str, vae: Compressor, latent: int,
                     delta: float = 2.0, position: int = -1) -> float:
    """Mean total-variation distance between next-token distributions with the latent at ±delta and at 0."""
    tv = []
    for p in prompts:
        probs = traverse(hooked, p, hook, vae, latent, [-delta, 0.0, delta], position)
        tv.append(0.5 * (probs[[0, 2]] - probs[1]).abs().sum(-1).mean())
    return float(torch.stack(tv).mean())


def method_gap(df: pd.DataFrame, a: str, b: str, metric: str = "frac_recovered_zero", max_size: int | None = None,
               by: str = "seed") -> pd.Series:
    """Mean over latent sizes (< max_size if given) of metric(a) - metric(b), per value of `by` (e.g. per seed)."""
    sub = df if max_size is None else df[df["d_latent"] < max_size]
    piv = sub.pivot_table(index=[by, "d_latent"], columns="method", values=metric)
    return (piv[a] - piv[b]).groupby(level=by).mean()


def splice_keyword_scores(model, prompts: KeywordPrompts, hook: str,
                          fn: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
    """Mean keyword loss and top-1 accuracy of `prompts` with fn spliced in at `hook` (None: the clean model)."""
    require_hook(model, hook, f"splicing at {hook}")
    fwd = [] if fn is None else [(hook, splice_hook(fn))]
    return evaluate(model, prompts, fwd)[["loss", "top1"]].mean().to_dict()
