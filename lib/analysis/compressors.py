"""Compressors of a component's output: InfoVAE (MMD-VAE) and its baselines (PCA, TopK SAE, random projection),
fitted on activations and stored as artifacts beside them (used by reports 2 and 7).

Every compressor is an `nn.Module` working on raw activations [..., d_in]: `encode(x) -> z`, `decode(z) -> x`,
`forward(x) = decode(encode(x))` (the splice). Internally each one standardises x with the fit data's mean and one
global scale, so losses are fractions of variance. Build one with `fit(acts, CompressorConfig(...))`, or
`get_or_fit(...)` to store it as an artifact beside the activations it was fit on.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from lib.core import artifacts, threads

METHODS = ("infovae", "pca", "sae", "random")
METHOD_LABELS = {"infovae": "InfoVAE", "pca": "PCA", "sae": "TopK SAE", "random": "random projection"}
KERNELS = ("rbf", "imq")


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
                progress: bool, after_step=None, max_threads: int | None = 1) -> pd.DataFrame:
    """Adam with cosine decay to 10% over cfg.steps random minibatches; history every ~2% of steps. On the CPU the
    loop runs on at most max_threads threads (None: torch's count): its operations are too small to gain from more
    (lib.core.threads)."""
    with threads.at_most(max_threads) if acts.device.type == "cpu" and max_threads else nullcontext():
        return _steps(module, acts, cfg, step_loss, g, progress, after_step)


def _steps(module: Compressor, acts: Tensor, cfg: CompressorConfig, step_loss, g: torch.Generator,
           progress: bool, after_step=None) -> pd.DataFrame:
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


def fit(acts: Float[Tensor, "n d_in"], cfg: CompressorConfig, progress: bool = False, max_threads: int | None = 1
        ) -> tuple[Compressor, pd.DataFrame]:
    """Fit cfg's compressor on activations (rows = tokens); returns (module in eval mode, training history).
    max_threads: torch threads of the minibatch loop on the CPU (None: all; the same fit up to float32 rounding,
    since MKL may split a product differently on more threads; faster on one, bench/small_op_threads.py)."""
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
        history = _train_loop(module, acts, cfg, lambda x: module.losses(x, cfg, g), g, progress,
                              max_threads=max_threads)
    else:
        module.init_weights(g)
        history = _train_loop(module, acts, cfg, lambda x: {"loss": (module(x) - x).div(module.scale).pow(2).mean()},
                              g, progress, after_step=module.normalize_decoder, max_threads=max_threads)
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
    artifacts.verify(directory, {"acts": meta["acts"], "cfg": meta["cfg"]})
    cfg = CompressorConfig(**meta["cfg"])
    module = build(cfg, meta["d_in"])
    module.load_state_dict(artifacts.load_tensors(directory / "weights.safetensors"))
    history = pd.DataFrame(artifacts.read_json(directory / "metrics.json"))
    return module.to(device).eval().requires_grad_(False), cfg, history


def get_or_fit(acts: Float[Tensor, "... d_in"], cfg: CompressorConfig, acts_key: Mapping,
               progress: bool = False) -> tuple[Compressor, pd.DataFrame]:
    """Load the compressor fit with cfg on these activations (acts_key from cache_activations) or fit and save it."""
    directory = compressor_path(acts_key, cfg)
    with artifacts.lock(directory):
        if not artifacts.is_complete(directory):
            module, history = fit(acts, cfg, progress)
            artifacts.write_json(directory / "metrics.json", history.to_dict(orient="list"))
            artifacts.save_tensors(directory / "weights.safetensors", module.state_dict())
            key = {"acts": dict(acts_key), "cfg": dataclasses.asdict(cfg)}
            artifacts.write_json(directory / "config.json", {**key, "d_in": module.d_in})
            artifacts.write_manifest(directory, ["weights.safetensors", "config.json", "metrics.json"], key)
    module, _, history = load_compressor(directory, acts.device)
    return module, history


# ---------------------------------------------------------------------------------------------- activations


# ---------------------------------------------------------------------------------------------- splicing


# ---------------------------------------------------------------------------------------------- the sweep


# ---------------------------------------------------------------------------------------------- topics and probes


# ---------------------------------------------------------------------------------------------- latent analysis


