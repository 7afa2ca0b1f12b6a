"""Compressing a component's output: InfoVAE (MMD-VAE) and its baselines (PCA, TopK SAE, random projection),
activation caches keyed by (model, hook, data slice), splicing reconstructions back in, and latent-space analysis.

Every compressor is an `nn.Module` working on raw activations [..., d_in]: `encode(x) -> z`, `decode(z) -> x`,
`forward(x) = decode(encode(x))` (the splice). Internally each one standardises x with the fit data's mean and one
global scale, so losses are fractions of variance. Build one with `fit(acts, CompressorConfig(...))`, or
`get_or_fit(...)` to store it as an artifact beside the activations it was fit on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib import artifacts, hooks

METHODS = ("infovae", "pca", "sae", "random")
METHOD_LABELS = {"infovae": "InfoVAE", "pca": "PCA", "sae": "TopK SAE", "random": "random projection"}
KERNELS = ("rbf", "imq")
HookFn = Callable[[Tensor, object], Tensor]


# ---------------------------------------------------------------------------------------------- MMD


def _scale2(x: Tensor, y: Tensor, bandwidth: float | str | None) -> float:
    """Squared kernel scale h²: 2·dim (None: E|x-y|² of two N(0, I) draws), median pairwise d² ('median'), h²."""
    if bandwidth is None:
        return 2.0 * x.shape[-1]
    if bandwidth == "median":
        z = torch.cat([x, y])
        d2 = torch.cdist(z, z).pow(2)
        return float(d2[~torch.eye(len(z), dtype=torch.bool)].median().clamp_min(1e-12))
    if not (isinstance(bandwidth, (int, float)) and bandwidth > 0):
        raise ValueError(f"bandwidth={bandwidth!r} is not allowed: None, 'median' or a positive number")
    return float(bandwidth) ** 2


def kernel_matrix(a: Float[Tensor, "n d"], b: Float[Tensor, "m d"], kernel: str, h2: float) -> Float[Tensor, "n m"]:
    """k(a_i, b_j): rbf exp(-|a-b|²/h²) or inverse multiquadric h²/(h² + |a-b|²)."""
    d2 = (a.pow(2).sum(-1)[:, None] + b.pow(2).sum(-1)[None, :] - 2 * a @ b.T).clamp_min(0)
    if kernel == "rbf":
        return torch.exp(-d2 / h2)
    if kernel == "imq":
        return h2 / (h2 + d2)
    raise ValueError(f"kernel={kernel!r} is not allowed: one of {KERNELS}")


def mmd(x: Float[Tensor, "n d"], y: Float[Tensor, "m d"], kernel: str = "rbf",
        bandwidth: float | str | None = None) -> Tensor:
    """Unbiased estimate of MMD²(P_x, P_y) (a scalar; ≈ 0 and possibly < 0 when both samples share a law)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be [n, d] and [m, d] with n, m >= 2")
    h2 = _scale2(x, y, bandwidth)
    n, m = len(x), len(y)
    kxx, kyy, kxy = (kernel_matrix(a, b, kernel, h2) for a, b in ((x, x), (y, y), (x, y)))
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * kxy.mean()


def gaussian_kl(mu: Float[Tensor, "n k"], logvar: Float[Tensor, "n k"]) -> Float[Tensor, " n"]:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample (≥ 0; each term clamped against rounding)."""
    per_dim = 0.5 * (mu.pow(2) + torch.expm1(logvar) - logvar).clamp_min(0)
    return per_dim.sum(-1)


# ---------------------------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class CompressorConfig:
    """How to fit one compressor. d_latent is the code size (for the SAE: k, the number of active latents)."""

    method: str = "infovae"  # "infovae" | "pca" | "sae" | "random"
    d_latent: int = 8
    d_hidden: int = 128  # InfoVAE encoder and decoder width
    lambda_mmd: float = 1.0  # InfoVAE: weight of MMD²(aggregate posterior, N(0, I))
    beta: float = 0.0  # InfoVAE: weight of the per-sample KL (0 = the MMD-VAE of the InfoVAE paper)
    kernel: str = "rbf"
    bandwidth: float | None = None  # None = h² = 2·d_latent
    sae_expansion: int = 4  # SAE dictionary size = sae_expansion · d_in
    steps: int = 600
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> ValueError:
            return ValueError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

        if self.method not in METHODS:
            raise bad("method", f"one of {METHODS}")
        if self.kernel not in KERNELS:
            raise bad("kernel", f"one of {KERNELS}")
        for name in ("d_latent", "d_hidden", "sae_expansion", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "a positive integer")
        for name in ("lambda_mmd", "beta"):
            if not getattr(self, name) >= 0:
                raise bad(name, "a number >= 0")
        if not self.lr > 0:
            raise bad("lr", "a positive number")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise bad("bandwidth", "None or a positive number")

    def replace(self, **overrides) -> "CompressorConfig":
        """A copy with fields replaced."""
        return dataclasses.replace(self, **overrides)


# ---------------------------------------------------------------------------------------------- modules


class Compressor(nn.Module):
    """Base: standardisation buffers (mean, one scale) and encode/decode on raw activations."""

    def __init__(self, d_in: int, d_latent: int) -> None:
        super().__init__()
        self.d_in, self.d_latent = d_in, d_latent
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("scale", torch.ones(()))

    @property
    def n_latents(self) -> int:
        """Size of the code returned by encode."""
        return self.d_latent

    @property
    def n_active(self) -> int:
        """Number of non-zero latents per token (all of them, except for the SAE)."""
        return self.d_latent

    def set_stats(self, x: Float[Tensor, "n d_in"]) -> None:
        """Mean and the RMS of centred entries of the fit data (standardised data has mean square 1 per entry)."""
        self.mean.copy_(x.mean(0))
        self.scale.copy_((x - self.mean).pow(2).mean().sqrt().clamp_min(1e-8))

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.scale

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.scale + self.mean

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction decode(encode(x)) (InfoVAE: through the posterior mean)."""
        return self.decode(self.encode(x))


class _Residual(nn.Module):
    """Linear map plus a one-hidden-layer GELU MLP (the linear path makes PCA-like solutions easy to reach)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.skip = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.mlp(x)


class InfoVAE(Compressor):
    """Gaussian-latent VAE: q(z|x) = N(mu(x), diag exp(logvar(x))), decoder p(x|z) with unit-variance Gaussian."""

    def __init__(self, d_in: int, d_latent: int, d_hidden: int) -> None:
        super().__init__(d_in, d_latent)
        self.encoder = _Residual(d_in, d_hidden, 2 * d_latent)
        self.decoder = _Residual(d_latent, d_hidden, d_in)

    def posterior(self, x: Float[Tensor, "... d_in"]) -> tuple[Float[Tensor, "... k"], Float[Tensor, "... k"]]:
        """(mu, logvar) of q(z|x); logvar clamped to [-12, 4]."""
        mu, logvar = self.encoder(self.normalize(x)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 4.0)

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... k"]:
        """Posterior mean."""
        return self.posterior(x)[0]

    def decode(self, z: Float[Tensor, "... k"]) -> Float[Tensor, "... d_in"]:
        return self.denormalize(self.decoder(z))

    def losses(self, x: Float[Tensor, "n d_in"], cfg: CompressorConfig, g: torch.Generator) -> dict[str, Tensor]:
        """recon (mean squared error per entry, standardised), mmd (samples vs N(0,I)), kl (mean per sample), loss."""
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g, device=mu.device)
        recon = (self.decoder(z) - self.normalize(x)).pow(2).mean()
        prior = torch.randn(z.shape, generator=g, device=z.device)
        m = mmd(z, prior, cfg.kernel, cfg.bandwidth)
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + cfg.lambda_mmd * m + cfg.beta * kl, "recon": recon, "mmd": m, "kl": kl}


class PCA(Compressor):
    """Projection on the top-k principal components of the standardised fit data."""

    def __init__(self, d_in: int, d_latent: int) -> None:
        super().__init__(d_in, d_latent)
        self.register_buffer("components", torch.zeros(d_in, d_latent))  # orthonormal columns

    def fit_components(self, x: Float[Tensor, "n d_in"]) -> None:
        """Top-k eigenvectors of the standardised data's second-moment matrix (float64)."""
        xn = self.normalize(x).double()
        _, vecs = torch.linalg.eigh(xn.T @ xn)  # ascending eigenvalues
        self.components.copy_(vecs.flip(-1)[:, : self.d_latent].float())

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... k"]:
        return self.normalize(x) @ self.components

    def decode(self, z: Float[Tensor, "... k"]) -> Float[Tensor, "... d_in"]:
        return self.denormalize(z @ self.components.T)


class RandomProjection(PCA):
    """Projection on k random orthonormal directions (the random baseline of the same size)."""

    def fit_components(self, x: Float[Tensor, "n d_in"], g: torch.Generator | None = None) -> None:
        w = torch.randn(self.d_in, self.d_latent, generator=g, dtype=torch.float64, device=self.components.device)
        self.components.copy_(torch.linalg.qr(w)[0].float())


class TopKSAE(Compressor):
    """TopK sparse autoencoder (Gao et al. 2024): dictionary of `dict_size` unit-norm directions, k active."""

    def __init__(self, d_in: int, k: int, dict_size: int) -> None:
        super().__init__(d_in, k)
        self.dict_size = dict_size
        self.W_enc = nn.Parameter(torch.zeros(d_in, dict_size))
        self.b_enc = nn.Parameter(torch.zeros(dict_size))
        self.W_dec = nn.Parameter(torch.zeros(dict_size, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def n_latents(self) -> int:
        return self.dict_size

    def init_weights(self, g: torch.Generator) -> None:
        """Random unit-norm decoder rows, encoder = decoder transpose."""
        with torch.no_grad():
            w = torch.randn(self.dict_size, self.d_in, generator=g, device=self.W_dec.device)
            self.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
            self.W_enc.copy_(self.W_dec.T)

    def pre_acts(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... dict"]:
        return (self.normalize(x) - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... dict"]:
        """Sparse code: the k largest pre-activations (ReLU'd), zeros elsewhere."""
        vals, idx = self.pre_acts(x).topk(self.d_latent, dim=-1)
        return torch.zeros(*x.shape[:-1], self.dict_size, device=x.device).scatter(-1, idx, F.relu(vals))

    def decode(self, z: Float[Tensor, "... dict"]) -> Float[Tensor, "... d_in"]:
        return self.denormalize(z @ self.W_dec + self.b_dec)

    def normalize_decoder(self) -> None:
        with torch.no_grad():
            self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))


def build(cfg: CompressorConfig, d_in: int) -> Compressor:
    """An unfitted compressor of cfg's method for d_in-dimensional activations."""
    if cfg.method == "infovae":
        return InfoVAE(d_in, cfg.d_latent, cfg.d_hidden)
    if cfg.method in ("pca", "random"):
        if cfg.d_latent > d_in:
            raise ValueError(f"d_latent={cfg.d_latent} is not allowed for {cfg.method}: at most d_in={d_in}")
        return (PCA if cfg.method == "pca" else RandomProjection)(d_in, cfg.d_latent)
    if cfg.d_latent > cfg.sae_expansion * d_in:
        raise ValueError(f"d_latent={cfg.d_latent} is not allowed for the SAE: at most its dictionary size "
                         f"{cfg.sae_expansion * d_in}")
    return TopKSAE(d_in, cfg.d_latent, cfg.sae_expansion * d_in)


# ---------------------------------------------------------------------------------------------- fitting


def _train_loop(module: Compressor, acts: Tensor, cfg: CompressorConfig, step_loss, g: torch.Generator,
                progress: bool, after_step=None) -> pd.DataFrame:
    """Adam with cosine decay to 10% over cfg.steps random minibatches; history every ~2% of steps."""
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=cfg.lr)
    rows, every = [], max(1, cfg.steps // 50)
    for step in tqdm(range(cfg.steps), desc=f"fit {cfg.method} k={cfg.d_latent}", disable=not progress, leave=False):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / cfg.steps)))
        idx = torch.randint(0, len(acts), (min(cfg.batch_size, len(acts)),), generator=g, device=acts.device)
        parts = step_loss(acts[idx])
        opt.zero_grad(set_to_none=True)
        parts["loss"].backward()
        opt.step()
        if after_step is not None:
            after_step()
        if step % every == 0 or step == cfg.steps - 1:
            rows.append({"step": step + 1, **{k: float(v.detach()) for k, v in parts.items()}})
    return pd.DataFrame(rows)


def fit(acts: Float[Tensor, "n d_in"], cfg: CompressorConfig, progress: bool = False
        ) -> tuple[Compressor, pd.DataFrame]:
    """Fit cfg's compressor on activations (rows = tokens); returns (module in eval mode, training history)."""
    acts = acts.reshape(-1, acts.shape[-1]).float()
    g = torch.Generator(device=acts.device).manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear initialises from the global RNG: seed it, then restore it
        torch.manual_seed(cfg.seed)
        module = build(cfg, acts.shape[-1]).to(acts.device)
    module.set_stats(acts)
    t0 = time.perf_counter()
    if isinstance(module, RandomProjection):
        module.fit_components(acts, g)
        history = pd.DataFrame({"step": [0]})
    elif isinstance(module, PCA):
        module.fit_components(acts)
        history = pd.DataFrame({"step": [0]})
    elif isinstance(module, InfoVAE):
        history = _train_loop(module, acts, cfg, lambda x: module.losses(x, cfg, g), g, progress)
    else:
        module.init_weights(g)
        history = _train_loop(module, acts, cfg, lambda x: {"loss": (module(x) - x).div(module.scale).pow(2).mean()},
                              g, progress, after_step=module.normalize_decoder)
    history["seconds"] = time.perf_counter() - t0
    return module.eval().requires_grad_(False), history


@torch.no_grad()
def fvu(module: Compressor, acts: Float[Tensor, "... d_in"]) -> float:
    """Fraction of variance unexplained: |x - x̂|² / |x - mean(x)|² over all rows."""
    x = acts.reshape(-1, acts.shape[-1]).float()
    return float((module(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def compressor_path(acts_key: Mapping, cfg: CompressorConfig) -> Path:
    """Artifact folder of the compressor fit with cfg on the activations named by acts_key."""
    return artifacts.path("compressors", cfg.method, {"acts": dict(acts_key), "cfg": dataclasses.asdict(cfg)})


def load_compressor(directory: Path, device: str | torch.device = "cpu"
                    ) -> tuple[Compressor, CompressorConfig, pd.DataFrame]:
    """(module, config, history) of a compressor saved by get_or_fit."""
    directory = Path(directory)
    meta = artifacts.read_json(directory / "config.json")
    cfg = CompressorConfig(**meta["cfg"])
    module = build(cfg, meta["d_in"])
    module.load_state_dict(artifacts.load_tensors(directory / "weights.safetensors"))
    history = pd.DataFrame(artifacts.read_json(directory / "metrics.json"))
    return module.to(device).eval().requires_grad_(False), cfg, history


def get_or_fit(acts: Float[Tensor, "... d_in"], cfg: CompressorConfig, acts_key: Mapping,
               progress: bool = False) -> tuple[Compressor, pd.DataFrame]:
    """Load the compressor fit with cfg on these activations (acts_key from cache_activations) or fit and save it."""
    directory = compressor_path(acts_key, cfg)
    if not artifacts.is_complete(directory):
        module, history = fit(acts, cfg, progress)
        artifacts.write_json(directory / "metrics.json", history.to_dict(orient="list"))
        artifacts.save_tensors(directory / "weights.safetensors", module.state_dict())
        artifacts.write_json(directory / "config.json", {"cfg": dataclasses.asdict(cfg), "d_in": module.d_in,
                                                         "acts": dict(acts_key)})
    module, _, history = load_compressor(directory, acts.device)
    return module, history


# ---------------------------------------------------------------------------------------------- activations


def fingerprint(model: nn.Module) -> str:
    """Short sha256 of a model's state dict (names, shapes, values): the model part of a cache key."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_hash(t: Tensor) -> str:
    """Short sha256 of a tensor's values and shape (the data-slice part of a cache key)."""
    data = t.detach().cpu().contiguous().numpy().tobytes()
    return hashlib.sha256(str(tuple(t.shape)).encode() + data).hexdigest()[:16]


def activation_key(hooked, hook: str, tokens: Int[Tensor, "n pos"]) -> dict:
    """The cache key: (model fingerprint, hook name, data slice = hash and shape of the tokens)."""
    return {"model": fingerprint(hooked), "hook": hook, "tokens": tensor_hash(tokens), "shape": list(tokens.shape)}


def _layer_of(hook: str) -> int | None:
    """Block index of a 'blocks.{l}.…' hook name, else None (global hooks)."""
    parts = hook.split(".")
    return int(parts[1]) if parts[0] == "blocks" else None


@torch.no_grad()
def collect_activations(hooked, tokens: Int[Tensor, "n pos"], hook: str, batch_size: int = 64,
                        progress: bool = False) -> Float[Tensor, "n pos d"]:
    """Activations at `hook`, streamed in batches; the forward pass stops after the hook's block."""
    layer = _layer_of(hook)
    stop = None if layer is None or hook.startswith("ln_final") else layer + 1
    device = hooked.cfg.device
    out = []
    for i in tqdm(range(0, len(tokens), batch_size), desc=f"cache {hook}", disable=not progress, leave=False):
        _, cache = hooked.run_with_cache(tokens[i : i + batch_size].to(device), names_filter=[hook],
                                         stop_at_layer=stop, return_type=None)
        out.append(cache[hook].float().cpu())
    return torch.cat(out)


def cache_activations(hooked, tokens: Int[Tensor, "n pos"], hook: str, label: str = "", batch_size: int = 64,
                      progress: bool = False) -> tuple[Float[Tensor, "n pos d"], dict]:
    """(activations, key): loaded from the artifact keyed by (model, hook, data slice), else collected and saved.

    `label` is a readable note stored beside the cache (not part of the key).
    """
    key = activation_key(hooked, hook, tokens)
    dest = artifacts.path("activations", hook, key) / "acts.safetensors"
    if dest.is_file():
        return artifacts.load_tensors(dest)["acts"], key
    acts = collect_activations(hooked, tokens, hook, batch_size, progress)
    artifacts.write_json(dest.parent / "config.json", {**key, "label": label})
    artifacts.save_tensors(dest, {"acts": acts})
    return acts, key


# ---------------------------------------------------------------------------------------------- splicing


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


# ---------------------------------------------------------------------------------------------- the sweep


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
        module, history = get_or_fit(acts, cfg, key)
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


# ---------------------------------------------------------------------------------------------- topics and probes


def topic_windows(tok, n_ctx: int, n_per_topic: int, seed: int = 0, split: str = "dbpedia14_test"
                  ) -> tuple[Int[Tensor, "n n_ctx"], Int[Tensor, " n"], list[str]]:
    """The first n_ctx tokens of n_per_topic random articles per DBpedia topic (articles at least n_ctx long).

    `tok` is a lib.data Tokenizer (or anything with encode_batch). Returns (tokens, topic index per window, names).
    """
    from lib.data import load_articles

    df = load_articles(split)
    names = sorted(df["label"].unique())
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i, name in enumerate(names):
        texts = df.loc[df["label"] == name, "text"].tolist()
        ids = [t for t in tok.encode_batch([texts[j] for j in rng.permutation(len(texts))]) if len(t) >= n_ctx]
        if len(ids) < n_per_topic:
            raise ValueError(f"topic {name!r} has only {len(ids)} articles of >= {n_ctx} tokens; "
                             f"n_per_topic={n_per_topic} is too many")
        rows += [t[:n_ctx] for t in ids[:n_per_topic]]
        labels += [i] * n_per_topic
    return torch.tensor(rows), torch.tensor(labels), names


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
    from lib.findings import bootstrap_ci

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


# ---------------------------------------------------------------------------------------------- latent analysis


def top_contexts(latents: Float[Tensor, "n pos k"], tokens: Int[Tensor, "n pos"], tok, latent_ids: Sequence[int],
                 n_top: int = 5, before: int = 8, sign: int = 1) -> pd.DataFrame:
    """The n_top (window, position) pairs with the highest (sign=-1: lowest) value of each latent, with context."""
    rows = []
    for j in latent_ids:
        flat = latents[..., j].flatten()
        for rank, idx in enumerate((sign * flat).topk(n_top).indices.tolist()):
            w, p = divmod(idx, latents.shape[1])
            context = tok.decode(tokens[w, max(0, p - before) : p])
            rows.append({"latent": j, "rank": rank + 1, "value": float(flat[idx]), "context": context,
                         "token": tok.decode(tokens[w, p : p + 1])})
    return pd.DataFrame(rows)


@torch.no_grad()
def traverse(hooked, tokens: Int[Tensor, " pos"], hook: str, vae: Compressor, latent: int,
             values: Sequence[float], position: int = -1) -> Float[Tensor, "n_values d_vocab"]:
    """Next-token probabilities at `position` when latent `latent` there is set to each value (others: posterior mean).

    The whole activation at `hook` is replaced by decode(z) at every position, so values = the latent's own mean
    gives the plain splice.
    """
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


def lm_windows_for(hooked, texts: Sequence[str], n_ctx: int, max_windows: int | None = None) -> Int[Tensor, "n n_ctx"]:
    """Texts tokenised with the model's own (Hugging Face) tokenizer, eos-joined and cut into n_ctx windows."""
    from lib.data import lm_windows

    tok = hooked.tokenizer
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    windows = lm_windows(ids, n_ctx, tok.eos_token_id)
    return windows[:max_windows] if max_windows is not None else windows


def hook_label(hook: str) -> str:
    """A short readable name: 'blocks.1.hook_attn_out' -> 'attn out L1'."""
    layer = _layer_of(hook)
    for kind in hooks.KINDS:
        try:
            if hooks.name(kind, layer) == hook:
                return kind.replace("_", " ") + ("" if layer is None else f" L{layer}")
        except ValueError:
            continue
    return hook
