"""k-winners-take-all with duty-cycle boosting (Ahmad & Scheinkman 2019), sparse MLPs, and surgery that puts
them into a frozen HookedTransformer: (a) replace a block's MLP, (b) add a residual sparse layer before ln_final."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre
from transformer_lens.hook_points import HookPoint

from lib.core import artifacts, hooks, pretrained
from lib.core.checks import check, is_int
from lib.core.params import Params

EVAL_BOOST = ("duty", "none")  # eval mode: boost with the learned duty cycles, or plain top-k
ACTS = ("none", "relu", "gelu", "gelu_new", "silu")  # applied before k-WTA ("none": k-WTA is the nonlinearity, as Numenta)
SURGERIES = ("replace_mlp", "residual")
INITS = ("random", "copy")
OBJECTIVES = ("distill", "lm", "both")
KIND = "sparse"  # artifacts.root() / KIND / <name>-<hash>/
_ACT = {"none": lambda x: x, "relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
        "silu": F.silu}  # silu: Llama-family MLPs


# ------------------------------------------------------------------------------------------------ k-WTA


def kwta_mask(scores: Float[Tensor, "... n"], k: int) -> Bool[Tensor, "... n"]:
    """Exactly k True per row (last axis) at the k largest scores; ties at the k-th value go to the lowest index."""
    check(is_int(k) and 1 <= k <= scores.shape[-1], "k", k, f"an integer in [1, {scores.shape[-1]}]")
    kth = scores.topk(k, dim=-1).values[..., -1:]
    mask = scores >= kth
    if bool((mask.sum(-1) == k).all()):  # no tie at the k-th value (the common case): done
        return mask
    above = scores > kth
    tie = mask & ~above
    need = k - above.sum(-1, keepdim=True)
    return above | (tie & (tie.cumsum(-1) <= need))


def boost_factors(duty_cycle: Float[Tensor, " n"], k: int, strength: float) -> Float[Tensor, " n"]:
    """exp(-strength * (duty_cycle - k/n)): > 1 for units that win less often than the target density k/n."""
    return torch.exp(-strength * (duty_cycle - k / duty_cycle.shape[-1]))


def kwta(x: Float[Tensor, "... n"], k: int, duty_cycle: Float[Tensor, " n"] | None = None,
         boost_strength: float = 0.0) -> tuple[Float[Tensor, "... n"], Bool[Tensor, "... n"]]:
    """(output, winner mask): winners chosen on the boosted x keep their un-boosted values, the rest are 0."""
    scores = x.detach()
    if boost_strength > 0 and duty_cycle is not None:
        scores = scores * boost_factors(duty_cycle.to(x.dtype), k, boost_strength)
    mask = kwta_mask(scores, k)
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask


class KWinners(nn.Module):
    """1-D k-winners-take-all over the last axis with Numenta's duty-cycle boosting.

    Training: winners are the top k of a * exp(-boost_strength * (duty_cycle - k/n)); the duty cycles (running
    average of how often each unit wins, over `duty_cycle_period` rows) update. Eval: no update; boosting with the
    learned duty cycles (`eval_boost="duty"`) or none. `decay_boost()` multiplies the strength by
    `boost_strength_factor` (Numenta calls it once per epoch). Duty cycles count winners (Numenta counts positive
    outputs; the two differ only when a winner is <= 0).
    """

    def __init__(self, n_units: int, k: int, boost_strength: float = 1.0, boost_strength_factor: float = 0.9,
                 duty_cycle_period: int = 1000, eval_boost: str = "duty"):
        super().__init__()
        check(is_int(n_units) and n_units > 0, "n_units", n_units, "a positive integer")
        check(is_int(k) and 1 <= k <= n_units, "k", k, f"an integer in [1, n_units={n_units}]")
        check(isinstance(boost_strength, (int, float)) and boost_strength >= 0, "boost_strength", boost_strength,
               "a float >= 0 (0 = plain top-k)")
        check(isinstance(boost_strength_factor, (int, float)) and 0 < boost_strength_factor <= 1,
               "boost_strength_factor", boost_strength_factor, "a float in (0, 1]")
        check(is_int(duty_cycle_period) and duty_cycle_period > 0, "duty_cycle_period", duty_cycle_period,
               "a positive integer (rows)")
        check(eval_boost in EVAL_BOOST, "eval_boost", eval_boost, f"one of {EVAL_BOOST}")
        self.n_units, self.k, self.boost_strength_factor = n_units, k, float(boost_strength_factor)
        self.duty_cycle_period, self.eval_boost = duty_cycle_period, eval_boost
        self.register_buffer("duty_cycle", torch.zeros(n_units))
        self.register_buffer("boost_strength", torch.tensor(float(boost_strength)))
        self.register_buffer("learning_iterations", torch.zeros((), dtype=torch.long))

    def forward(self, x: Float[Tensor, "... n"]) -> Float[Tensor, "... n"]:
        boost = float(self.boost_strength) if (self.training or self.eval_boost == "duty") else 0.0
        out, mask = kwta(x, self.k, self.duty_cycle, boost)
        if self.training:
            self.update_duty_cycle(mask)
        return out

    @torch.no_grad()
    def update_duty_cycle(self, mask: Bool[Tensor, "... n"]) -> None:
        """duty <- (1 - w) duty + w * (share of rows each unit won), w = rows / min(period, rows seen so far)."""
        rows = mask.reshape(-1, self.n_units)
        self.learning_iterations += rows.shape[0]
        period = min(self.duty_cycle_period, int(self.learning_iterations))
        w = min(1.0, rows.shape[0] / period)
        self.duty_cycle.mul_(1 - w).add_(rows.float().mean(0), alpha=w)

    def decay_boost(self) -> None:
        """boost_strength *= boost_strength_factor."""
        self.boost_strength.mul_(self.boost_strength_factor)

    def extra_repr(self) -> str:
        return (f"n_units={self.n_units}, k={self.k}, boost_strength={float(self.boost_strength):.3g}, "
                f"duty_cycle_period={self.duty_cycle_period}, eval_boost={self.eval_boost!r}")


# ------------------------------------------------------------------------------------------- sparse MLP


class SparseMLP(nn.Module):
    """An MLP whose hidden layer is k-WTA (k=None: dense); TransformerLens layout (W_in [d_model, d_mlp], ...) and
    hooks (hook_pre before, hook_post after the k-WTA), so it drops into a block as `mlp`; optional fixed sparse
    input weights (a random `weight_sparsity` share of each unit's inputs held at 0)."""

    def __init__(self, d_model: int, d_mlp: int, k: int | None, act_fn: str = "none", boost_strength: float = 1.0,
                 boost_strength_factor: float = 0.9, duty_cycle_period: int = 1000, eval_boost: str = "duty",
                 weight_sparsity: float = 0.0, init_range: float = 0.02, generator: torch.Generator | None = None):
        super().__init__()
        check(act_fn in ACTS, "act_fn", act_fn, f"one of {ACTS}")
        check(0.0 <= weight_sparsity < 1.0, "weight_sparsity", weight_sparsity, "a float in [0, 1)")
        self.act_fn = act_fn
        self.W_in = nn.Parameter(torch.randn(d_model, d_mlp, generator=generator) * init_range)
        self.b_in = nn.Parameter(torch.zeros(d_mlp))
        self.W_out = nn.Parameter(torch.zeros(d_mlp, d_model))  # zero: the layer starts as "no MLP"
        self.b_out = nn.Parameter(torch.zeros(d_model))
        self.kwta = None if k is None else KWinners(d_mlp, k, boost_strength, boost_strength_factor,
                                                    duty_cycle_period, eval_boost)
        keep = torch.ones(d_model, d_mlp)
        if weight_sparsity > 0:
            n_zero = round(weight_sparsity * d_model)
            for j in range(d_mlp):  # Numenta's SparseWeights: the same number of zeros per unit
                keep[torch.randperm(d_model, generator=generator)[:n_zero], j] = 0.0
        self.register_buffer("weight_mask", keep)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pre = self.hook_pre(x @ (self.W_in * self.weight_mask) + self.b_in)
        h = _ACT[self.act_fn](pre)
        post = self.hook_post(h if self.kwta is None else self.kwta(h))
        return post @ self.W_out + self.b_out


class ResidualSparse(nn.Module):
    """A residual sparse layer x + SparseMLP(LayerNorm(x)) with its own (trainable) LayerNorm; hook_out is the
    layer's write into the residual stream."""

    def __init__(self, d_model: int, mlp: SparseMLP, eps: float = 1e-5):
        super().__init__()
        self.ln = nn.LayerNorm(d_model, eps=eps)
        self.mlp = mlp
        self.hook_out = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return x + self.hook_out(self.mlp(self.ln(x)))


class _SparseBeforeNorm:
    """Mixin for a final norm: run the residual sparse layer `self.sparse` first, then the norm itself."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.sparse(x))


class SparseLayerNorm(_SparseBeforeNorm, LayerNorm):
    """LayerNorm (its hooks and weights unchanged) preceded by a residual sparse layer."""


class SparseLayerNormPre(_SparseBeforeNorm, LayerNormPre):
    """LayerNormPre preceded by a residual sparse layer."""


class SparseRMSNorm(_SparseBeforeNorm, RMSNorm):
    """RMSNorm preceded by a residual sparse layer."""


class SparseRMSNormPre(_SparseBeforeNorm, RMSNormPre):
    """RMSNormPre preceded by a residual sparse layer."""


_SPARSE_NORMS = {LayerNorm: SparseLayerNorm, LayerNormPre: SparseLayerNormPre, RMSNorm: SparseRMSNorm,
                 RMSNormPre: SparseRMSNormPre}


# ---------------------------------------------------------------------------------------------- surgery


@dataclass(frozen=True)
class SparseConfig:
    """One surgery: where the sparse layer goes, its width (None = the model's d_mlp), k (None = dense: the
    control, with act_fn as nonlinearity) and boosting."""

    surgery: str = "replace_mlp"
    layer: int | None = None  # replace_mlp: the block whose MLP is replaced (None = the last block)
    d_sparse: int | None = None
    k: int | None = None
    act_fn: str = "none"
    boost_strength: float = 1.0
    boost_strength_factor: float = 0.9
    duty_cycle_period: int = 20000  # tokens
    eval_boost: str = "duty"
    weight_sparsity: float = 0.0
    init: str = "random"  # "copy": start from the replaced MLP's weights (replace_mlp, same width only)

    def __post_init__(self) -> None:
        check(self.surgery in SURGERIES, "surgery", self.surgery, f"one of {SURGERIES}")
        check(self.init in INITS, "init", self.init, f"one of {INITS}")
        check(self.k is None or (is_int(self.k) and self.k > 0), "k", self.k, "None (dense) or a positive integer")
        check(self.d_sparse is None or (is_int(self.d_sparse) and self.d_sparse > 0), "d_sparse", self.d_sparse,
               "None (the model's d_mlp) or a positive integer")
        check(self.layer is None or (is_int(self.layer) and self.layer >= 0), "layer", self.layer,
               "None (the last block) or a block index >= 0")
        check(self.init == "random" or self.surgery == "replace_mlp", "init", self.init,
               "'random' for surgery='residual' (there is no layer to copy)")

    def replace(self, **kw) -> "SparseConfig":
        """A copy with fields replaced."""
        return dataclasses.replace(self, **kw)


def k_for(frac: float, width: int) -> int:
    """Winners for a fraction of the units (at least 1)."""
    check(0.0 < frac <= 1.0, "frac", frac, "a float in (0, 1]")
    return max(1, round(frac * width))


def width(model, cfg: SparseConfig) -> int:
    """The sparse layer's number of units."""
    return cfg.d_sparse or model.cfg.d_mlp or 4 * model.cfg.d_model


def start_layer(model, cfg: SparseConfig) -> int:
    """The first block whose output the surgery changes (n_layers for the residual layer after the last block)."""
    if cfg.surgery == "residual":
        return model.cfg.n_layers
    layer = model.cfg.n_layers - 1 if cfg.layer is None else cfg.layer
    check(layer < model.cfg.n_layers, "layer", cfg.layer, f"a block index < n_layers={model.cfg.n_layers}")
    return layer


def units_hook(model, cfg: SparseConfig) -> str:
    """Hook name addressing the sparse layer's units (after k-WTA)."""
    return hooks.name("sparse_post") if cfg.surgery == "residual" else hooks.name("mlp_post", start_layer(model, cfg))


def _new_mlp(model, cfg: SparseConfig, generator: torch.Generator) -> SparseMLP:
    n = width(model, cfg)
    check(cfg.k is None or cfg.k <= n, "k", cfg.k, f"None or at most the layer's width {n}")
    return SparseMLP(model.cfg.d_model, n, cfg.k, cfg.act_fn, cfg.boost_strength, cfg.boost_strength_factor,
                     cfg.duty_cycle_period, cfg.eval_boost, cfg.weight_sparsity, model.cfg.d_model ** -0.5, generator)


def _copy_weights(new: SparseMLP, old: nn.Module) -> None:
    """init='copy': the replaced MLP's W_in, b_in, W_out, b_out."""
    for name in ("W_in", "b_in", "W_out", "b_out"):
        src = getattr(old, name, None)
        check(src is not None and src.shape == getattr(new, name).shape, "init", "copy",
               f"'random' here: the replaced MLP has no {name} of shape {tuple(getattr(new, name).shape)}")
        getattr(new, name).data.copy_(src.detach())


def surgery(model, cfg: SparseConfig, seed: int = 0):
    """A frozen copy of `model` (a HookedTransformer) with the sparse layer in place; only the new layer trains."""
    c = model.cfg
    new = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    mlp = _new_mlp(new, cfg, g)
    if cfg.surgery == "replace_mlp":
        # the block calls `mlp` on ln2's output whatever the MLP is, so the whole module (gated or not) is replaced;
        # only copying its weights needs the plain layout (a gated MLP's W_in is half of its input map)
        pretrained.require(model, "k-WTA surgery 'replace_mlp' (use surgery='residual')", mlp=True)
        if cfg.init == "copy":
            pretrained.require(model, "k-WTA surgery with init='copy' (use init='random')", plain_mlp=True)
        block = new.blocks[start_layer(new, cfg)]
        if cfg.init == "copy":
            _copy_weights(mlp, block.mlp)
        block.mlp = mlp.to(c.device, c.dtype)
    else:
        norm_cls = _SPARSE_NORMS.get(type(new.ln_final)) if c.normalization_type else None
        check(norm_cls is not None, "surgery", cfg.surgery,
               f"'replace_mlp': the final norm {type(getattr(new, 'ln_final', None)).__name__} is not one of "
               f"{[t.__name__ for t in _SPARSE_NORMS]}")
        norm = norm_cls(c)
        norm.load_state_dict(new.ln_final.state_dict())
        norm.sparse = ResidualSparse(c.d_model, mlp, c.eps)
        new.ln_final = norm.to(c.device, c.dtype)
    new.setup()  # re-register hook points under their new names
    new.requires_grad_(False)
    sparse_module(new, cfg).requires_grad_(True)
    return new.eval()


def sparse_module(model, cfg: SparseConfig) -> nn.Module:
    """The module the surgery added (what trains and what is saved)."""
    return model.ln_final.sparse if cfg.surgery == "residual" else model.blocks[start_layer(model, cfg)].mlp


def kwinners(model, cfg: SparseConfig) -> KWinners | None:
    """The k-WTA of the surgery's layer (None if dense)."""
    mod = sparse_module(model, cfg)
    return (mod.mlp if isinstance(mod, ResidualSparse) else mod).kwta


# --------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class FitConfig:
    """Training of the new layer: objective 'distill' (KL to the original model's next-token distribution),
    'lm' (cross-entropy) or 'both'; an epoch is one pass over the training windows (boost decays after each)."""

    objective: str = "distill"
    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.objective in OBJECTIVES, "objective", self.objective, f"one of {OBJECTIVES}")
        for name in ("steps", "batch_size"):
            check(is_int(getattr(self, name)) and getattr(self, name) > 0, name, getattr(self, name),
                   "a positive integer")
        check(self.lr > 0, "lr", self.lr, "a positive float")


@torch.no_grad()
def resid_at(model, tokens: Int[Tensor, "n pos"], start: int, batch_size: int = 64) -> Float[Tensor, "n pos d_model"]:
    """The residual stream entering block `start` (n_layers: after the last block), for starting the forward there."""
    out = []
    for i in range(0, len(tokens), batch_size):
        out.append(model(tokens[i : i + batch_size].to(model.cfg.device), stop_at_layer=start).cpu())
    return torch.cat(out)


def _objective(student: Tensor, teacher: Tensor | None, tokens: Tensor, objective: str) -> Tensor:
    """Mean over positions of KL(teacher || student) and/or next-token cross-entropy."""
    loss = student.new_zeros(())
    if objective in ("distill", "both"):
        t = teacher.float().log_softmax(-1)
        loss = loss + F.kl_div(student.float().log_softmax(-1).flatten(0, 1), t.flatten(0, 1), log_target=True,
                               reduction="batchmean")
    if objective in ("lm", "both"):
        loss = loss + F.cross_entropy(student[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
    return loss


def fit(model, teacher, cfg: SparseConfig, fit_cfg: FitConfig, tokens: Int[Tensor, "n pos"],
        resid: Tensor | None = None, progress: bool = True) -> pd.DataFrame:
    """Train the surgery's layer in place (everything else frozen) on `tokens`; history (step, loss, lr, boost).

    `resid` is the residual stream entering the changed block (resid_at(teacher, tokens, start)), shared by runs.
    """
    start, dev = start_layer(model, cfg), model.cfg.device
    resid = resid_at(teacher, tokens, start) if resid is None else resid
    module, kw = sparse_module(model, cfg), kwinners(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=fit_cfg.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(fit_cfg.seed)
    order, pos, rows = torch.randperm(len(tokens), generator=g), 0, []
    model.eval()
    module.train()
    for step in tqdm(range(fit_cfg.steps), desc="fit", disable=not progress, leave=False):
        if pos + fit_cfg.batch_size > len(order):  # epoch end
            order, pos = torch.randperm(len(tokens), generator=g), 0
            if kw is not None:
                kw.decay_boost()
        idx, pos = order[pos : pos + fit_cfg.batch_size], pos + fit_cfg.batch_size
        lr = fit_cfg.lr * min(1.0, (step + 1) / max(1, fit_cfg.warmup))
        lr *= 0.5 * (1 + math.cos(math.pi * step / fit_cfg.steps)) * 0.9 + 0.1  # cosine to 10%
        for group in opt.param_groups:
            group["lr"] = lr
        x = resid[idx].to(dev)
        with torch.no_grad():
            t_logits = teacher(x, start_at_layer=start) if fit_cfg.objective != "lm" else None
        loss = _objective(model(x, start_at_layer=start), t_logits, tokens[idx].to(dev), fit_cfg.objective)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"step": step + 1, "loss": loss.item(), "lr": lr,
                     "boost_strength": float(kw.boost_strength) if kw is not None else 0.0})
    module.eval()
    return pd.DataFrame(rows)


@torch.no_grad()
def lm_loss(model, tokens: Int[Tensor, "n pos"], start: int = 0, resid: Tensor | None = None,
            batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) on `tokens`, from block `start` given its input `resid`."""
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        tok = tokens[i : i + batch_size].to(model.cfg.device)
        x = tok if resid is None else resid[i : i + batch_size].to(model.cfg.device)
        logits = model(x, start_at_layer=None if resid is None else start)
        total += F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tok[:, 1:].flatten(), reduction="sum").item()
        count += tok[:, 1:].numel()
    return total / count


# -------------------------------------------------------------------------------------------- artifacts


def fit_key(base: str, cfg: SparseConfig, fit_cfg: FitConfig, data: dict) -> dict:
    """What a trained sparse layer is keyed by: the base model's artifact, both configs and the data slice."""
    return {"base": base, "sparse": dataclasses.asdict(cfg), "fit": dataclasses.asdict(fit_cfg), "data": data}


def get_or_fit(model, cfg: SparseConfig, fit_cfg: FitConfig, tokens: Tensor, key: dict, name: str = "layer",
               resid: Tensor | None = None, progress: bool = True):
    """(surgered model, history): the trained layer loaded from artifacts/sparse/ if present, else trained and
    saved there (weights.safetensors with the duty cycles, config.json, metrics.json)."""
    new = surgery(model, cfg, seed=fit_cfg.seed)
    module, directory = sparse_module(new, cfg), artifacts.path(KIND, name, key)
    with artifacts.lock(directory):
        if artifacts.is_complete(directory):
            artifacts.verify(directory, artifacts.read_json(directory / "config.json"))
            module.load_state_dict(artifacts.load_tensors(directory / "weights.safetensors", model.cfg.device))
            return new, pd.DataFrame(artifacts.read_json(directory / "metrics.json"))
        history = fit(new, model, cfg, fit_cfg, tokens, resid, progress)
        artifacts.write_json(directory / "metrics.json", history.to_dict(orient="list"))
        artifacts.save_tensors(directory / "weights.safetensors", module.state_dict())
        artifacts.write_json(directory / "config.json", key)
        artifacts.write_manifest(directory, ["weights.safetensors", "config.json", "metrics.json"], key)
    return new, history


# ------------------------------------------------------------------------------------------- measuring




# ------------------------------------------------------------------------------------------- the focus layer


@dataclass(frozen=True)
class SparseLayerParams(Params):
    """The trained k-WTA layer that reports 5 and 7 share: its k (as a share of the layer's units), boosting, and how
    it is fit on the first `n_train` training windows. Report 7 reuses report 5's layer through `focus_layer`."""

    k_frac: float
    steps: int
    batch_size: int
    lr: float
    objective: Literal["distill", "lm", "both"]
    boost_strength: float
    boost_strength_factor: float
    duty_cycle_period: int  # tokens
    n_train: int

    def validate(self) -> None:
        check(0 < self.k_frac <= 1, "SparseLayerParams.k_frac", self.k_frac, "a share in (0, 1]")
        for name in ("steps", "batch_size", "duty_cycle_period", "n_train"):
            check(getattr(self, name) >= 1, f"SparseLayerParams.{name}", getattr(self, name), "an integer >= 1")
        check(self.lr > 0, "SparseLayerParams.lr", self.lr, "a positive number")

    def sparse_config(self, surgery: str = "replace_mlp", k: int | None = None) -> SparseConfig:
        """The surgery with this boosting and k winners (None: dense)."""
        return SparseConfig(surgery, boost_strength=self.boost_strength, boost_strength_factor=self.boost_strength_factor,
                            duty_cycle_period=self.duty_cycle_period).replace(k=k)

    def fit_config(self, seed: int = 0) -> FitConfig:
        """How the layer is trained."""
        return FitConfig(self.objective, self.steps, self.batch_size, self.lr, seed=seed)


SPARSE_LAYER = {
    "smoke": SparseLayerParams(k_frac=0.25, steps=8, batch_size=8, lr=3e-3, objective="lm", boost_strength=1.5,
                               boost_strength_factor=0.9, duty_cycle_period=2000, n_train=32),
    "cpu": SparseLayerParams(k_frac=0.05, steps=200, batch_size=32, lr=3e-3, objective="lm", boost_strength=1.5,
                             boost_strength_factor=0.9, duty_cycle_period=20000, n_train=4096),
    "gpu": SparseLayerParams(k_frac=0.05, steps=3000, batch_size=64, lr=1e-3, objective="distill", boost_strength=1.5,
                             boost_strength_factor=0.9, duty_cycle_period=50000, n_train=16384),
}


def focus_layer(model, base: str, params: SparseLayerParams, train_tokens: Int[Tensor, "n pos"], seed: int = 0,
                progress: bool = False):
    """The focus model (the last MLP replaced by a k-WTA layer at params.k_frac) of the base model whose artifact
    directory is named `base`: loaded from artifacts/sparse/ when report 5 (or an earlier call) trained it."""
    sc = params.sparse_config("replace_mlp", k_for(params.k_frac, model.cfg.d_mlp))
    fc = params.fit_config(seed)
    tokens = train_tokens[: params.n_train]
    return get_or_fit(model, sc, fc, tokens, fit_key(base, sc, fc, {"n_train": len(tokens)}), progress=progress)[0]
