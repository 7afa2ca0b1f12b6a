"""Compression: MMD, KL, PCA, InfoVAE and SAE fits, activation caches, splicing metrics."""

import math

import pytest
import torch

from helpers import f64_tol, fp32_tol, small_mlp_hooked, small_windows
from lib.analysis import compressors, units
from lib.core import artifacts

HOOK = "blocks.0.hook_attn_out"


hooked = pytest.fixture(small_mlp_hooked, scope="module", name="hooked")
tokens = pytest.fixture(small_windows, scope="module", name="tokens")


def plane(n: int = 4096, d: int = 64, seed: int = 0, points_seed: int = 0) -> torch.Tensor:
    """Points on a random 2-D plane in d dimensions (plus an offset; plane from seed), Gaussian along the plane."""
    g = torch.Generator().manual_seed(seed)
    basis, offset = torch.linalg.qr(torch.randn(d, 2, generator=g))[0], torch.randn(d, generator=g)
    u = torch.randn(n, 2, generator=torch.Generator().manual_seed(1000 + points_seed))
    return u @ (basis.T * torch.tensor([[3.0], [1.0]])) + offset


# ---------------------------------------------------------------- MMD and KL


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("bandwidth", [None, "median", 2.0])
def test_mmd_near_zero_for_one_law_and_grows_with_shift(kernel, bandwidth):
    g = torch.Generator().manual_seed(0)
    same = [float(compressors.mmd(torch.randn(200, 4, generator=g), torch.randn(200, 4, generator=g), kernel, bandwidth))
            for _ in range(20)]
    assert abs(sum(same) / len(same)) < 2e-3  # unbiased: mean over draws ≈ 0
    assert min(same) < 0  # ... so single estimates can be negative
    x = torch.randn(300, 4, generator=g)
    shifted = [float(compressors.mmd(x, torch.randn(300, 4, generator=g) + s, kernel, bandwidth)) for s in (0.5, 1.0, 2.0)]
    assert 0.01 < shifted[0] < shifted[1] < shifted[2]


def test_mmd_matches_the_unbiased_formula():
    g = torch.Generator().manual_seed(3)
    # float64 on both sides: the reference sums ~100 kernel values of size <= 1 in another order
    x, y = torch.randn(7, 3, generator=g).double(), torch.randn(5, 3, generator=g).double() + 0.3
    k = lambda a, b: math.exp(-float((a - b).pow(2).sum()) / 6.0)  # h² = 2·dim
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 35
    assert float(compressors.mmd(x, y)) == pytest.approx(xx + yy - 2 * xy, abs=f64_tol(1.0))


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="kernel='gauss'"):
        compressors.mmd(torch.randn(4, 2), torch.randn(4, 2), kernel="gauss")
    with pytest.raises(ValueError, match="bandwidth=-1"):
        compressors.mmd(torch.randn(4, 2), torch.randn(4, 2), bandwidth=-1)


def test_kl_nonnegative_and_zero_at_prior():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(500, 8, generator=g) * 3, torch.randn(500, 8, generator=g) * 5
    assert (compressors.gaussian_kl(mu, logvar) >= 0).all()
    assert (compressors.gaussian_kl(mu * 0, logvar * 0) == 0).all()
    tiny = torch.full((4, 3), 1e-9)
    assert (compressors.gaussian_kl(tiny * 0, tiny) >= 0).all()
    vae = compressors.InfoVAE(64, 2, 16)
    parts = vae.losses(plane(256), compressors.CompressorConfig(d_latent=2, beta=1.0), torch.Generator().manual_seed(0))
    assert parts["kl"] >= 0 and torch.isfinite(parts["loss"])


# ---------------------------------------------------------------- compressors


def test_full_pca_reproduces_activations():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 32, generator=g) @ torch.randn(32, 32, generator=g) * 5 + 3
    pca, _ = compressors.fit(x, compressors.CompressorConfig(method="pca", d_latent=32))
    assert torch.allclose(pca(x), x, atol=1e-3 * float(x.abs().max()))
    assert compressors.fvu(pca, x) < 1e-8
    rnd, _ = compressors.fit(x, compressors.CompressorConfig(method="random", d_latent=32))
    assert compressors.fvu(rnd, x) < 1e-8


def test_pca_keeps_the_top_directions():
    x = plane()
    pca, _ = compressors.fit(x, compressors.CompressorConfig(method="pca", d_latent=2))
    assert compressors.fvu(pca, x) < 1e-6
    one, _ = compressors.fit(x, compressors.CompressorConfig(method="pca", d_latent=1))
    assert compressors.fvu(one, x) == pytest.approx(0.1, abs=0.02)  # variances 9 and 1 along the plane


@pytest.mark.parametrize("method", ["infovae", "sae"])
def test_two_latents_reconstruct_a_plane(method):
    x = plane()
    cfg = compressors.CompressorConfig(method=method, d_latent=2, d_hidden=64, steps=250, batch_size=256, lr=3e-3,
                             sae_expansion=1)
    module, history = compressors.fit(x, cfg)
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert 1 - compressors.fvu(module, plane(512, points_seed=1)) >= 0.95  # held-out points on the same plane


def test_infovae_latents_follow_the_prior():
    x = plane()
    vae, _ = compressors.fit(x, compressors.CompressorConfig(method="infovae", d_latent=2, d_hidden=64, steps=200, lambda_mmd=1.0))
    z = vae.encode(x[:1000])
    assert float(compressors.mmd(z, torch.randn(1000, 2))) < 0.02
    assert z.std(0).min() > 0.5


def test_topk_sae_keeps_at_most_k_active():
    sae, _ = compressors.fit(plane(512), compressors.CompressorConfig(method="sae", d_latent=3, steps=20, sae_expansion=2))
    z = sae.encode(plane(100, points_seed=5))
    assert z.shape == (100, 128) and ((z != 0).sum(-1) <= 3).all() and (z >= 0).all()
    assert sae.n_active == 3 and sae.n_latents == 128


def test_bad_compressor_config_names_the_value():
    with pytest.raises(ValueError, match="method='ica'"):
        compressors.CompressorConfig(method="ica")
    with pytest.raises(ValueError, match="d_latent=0"):
        compressors.CompressorConfig(d_latent=0)
    with pytest.raises(ValueError, match="d_latent=40"):
        compressors.build(compressors.CompressorConfig(method="pca", d_latent=40), 32)


def test_fit_is_deterministic_for_a_seed():
    x = plane(1024)
    cfg = compressors.CompressorConfig(method="infovae", d_latent=2, d_hidden=16, steps=30)
    a, _ = compressors.fit(x, cfg)
    b, _ = compressors.fit(x, cfg)
    assert torch.equal(a(x), b(x))


# ---------------------------------------------------------------- caches and splicing


def test_cache_matches_run_with_cache_and_is_reused(hooked, tokens):
    acts, key = units.cache_activations(hooked, tokens, HOOK, "test", batch_size=7)
    _, cache = hooked.run_with_cache(tokens, names_filter=[HOOK])
    assert torch.allclose(acts, cache[HOOK], rtol=0, atol=fp32_tol(cache[HOOK]))  # other batch shapes
    again, key2 = units.cache_activations(hooked, tokens, HOOK, "test")
    assert key == key2 and torch.equal(acts, again)
    assert units.activation_key(hooked, "blocks.1.hook_mlp_out", tokens) != key
    assert units.activation_key(hooked, HOOK, tokens[:-1]) != key
    assert (artifacts.root() / "activations").is_dir()


