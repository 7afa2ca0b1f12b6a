"""Report 2 kernel: splicing metrics, the size sweep and stored compressors, thresholds, traversals, probes, and the
same code on a tiny pretrained GPT-2."""

import math

import pytest
import torch

from helpers import fp32_tol, small_mlp_hooked, small_windows
from lib.analysis import compressors, prompts, units
from lib.core import artifacts
from lib.reports.compression_infovae import kernel as compression

HOOK = "blocks.0.hook_attn_out"


hooked = pytest.fixture(small_mlp_hooked, scope="module", name="hooked")
tokens = pytest.fixture(small_windows, scope="module", name="tokens")


def test_identity_splice_reproduces_clean_loss_exactly(hooked, tokens):
    clean = compression.lm_metrics(hooked, tokens, batch_size=10)
    same = compression.lm_metrics(hooked, tokens, [(HOOK, compression.splice_hook(lambda x: x))], batch_size=10)
    assert (clean["per_seq_loss"] == same["per_seq_loss"]).all() and clean["accuracy"] == same["accuracy"]
    assert all(len(hp.fwd_hooks) == 0 for hp in hooked.hook_dict.values())


def test_fraction_recovered_is_one_for_identity_and_zero_for_ablation(hooked, tokens):
    acts, _ = units.cache_activations(hooked, tokens, HOOK)
    mean = acts.reshape(-1, acts.shape[-1]).mean(0)
    refs = compression.references(hooked, tokens, HOOK, mean)
    assert refs["zero"]["loss"] > refs["clean"]["loss"] + 0.01
    ident = compression.splice_row(hooked, tokens, HOOK, lambda x: x, refs)
    assert ident["frac_recovered_zero"] == 1.0 and ident["loss_increase"] == 0.0
    zero = compression.splice_row(hooked, tokens, HOOK, lambda x: x * 0, refs)
    assert zero["frac_recovered_zero"] == pytest.approx(0.0, abs=1e-6)
    ablate = compression.splice_row(hooked, tokens, HOOK, lambda x: mean.expand_as(x), refs)
    assert ablate["frac_recovered_mean"] == pytest.approx(0.0, abs=1e-6)


def test_sweep_and_stored_compressors(hooked, tokens):
    base = compressors.CompressorConfig(steps=20, d_hidden=8, batch_size=64)
    df = compression.sweep(hooked, HOOK, tokens[:16], tokens[16:], [1, 16], ["infovae", "pca", "sae", "random"], [0, 1],
                 base, progress=False)
    assert len(df) == 2 * 4 * 2 and df[["loss", "frac_recovered_zero", "fvu"]].notna().all().all()
    full = df[(df.method == "PCA") & (df.d_latent == 16)]
    assert (full.frac_recovered_zero - 1).abs().max() < 1e-4  # PCA with every component is exact
    acts, key = units.cache_activations(hooked, tokens[:16], HOOK)
    cfg = base.replace(method="infovae", d_latent=16, seed=1)
    assert artifacts.is_complete(compressors.compressor_path(key, cfg))
    module, _ = compressors.get_or_fit(acts, cfg, key)
    refit, _ = compressors.fit(acts, cfg)
    assert torch.allclose(module(acts), refit(acts), rtol=0, atol=fp32_tol(refit(acts)))
    th = compression.thresholds(df)
    assert set(th.seed) == {"mean", 0, 1}


def test_threshold_interpolates_in_log_size():
    assert compression.threshold([1, 2, 4, 8], [0.5, 0.7, 0.8, 1.0], 0.9) == pytest.approx(2 ** 2.5)
    assert compression.threshold([1, 2], [0.95, 1.0], 0.9) == 1.0
    assert math.isnan(compression.threshold([1, 2], [0.1, 0.2], 0.9))
    assert compression.latent_sizes(128) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert compression.latent_sizes(768, n=5)[-1] == 768 and compression.latent_sizes(768, n=5)[0] == 1


def test_traverse_at_the_posterior_mean_is_the_plain_splice(hooked, tokens):
    acts, _ = units.cache_activations(hooked, tokens, HOOK)
    vae, _ = compressors.fit(acts, compressors.CompressorConfig(d_latent=2, d_hidden=8, steps=10))
    prompt = tokens[0]
    mu = float(vae.encode(acts[0, -1])[1])
    probs = compression.traverse(hooked, prompt, HOOK, vae, 1, [mu, mu + 3])
    plain = hooked.run_with_hooks(prompt[None], fwd_hooks=[(HOOK, compression.splice_hook(vae))])[0, -1].softmax(-1)
    assert torch.allclose(probs[0], plain, rtol=0, atol=fp32_tol(1.0))  # probabilities: at most 1
    assert probs.shape == (2, 50) and torch.allclose(probs.sum(-1), torch.ones(2), rtol=0, atol=fp32_tol(1.0))


def test_probe_beats_shuffled_labels_on_separable_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(20)
    feats = torch.randn(80, 5, 6, generator=g) + 5 * torch.nn.functional.one_hot(labels, 6)[:, None].float()
    mask = compression.split_mask(labels)
    assert mask.sum() == 40 and all(mask[labels == c].sum() == 10 for c in range(4))
    acc = compression.probe_accuracy(feats, labels, mask, 4, steps=100)
    shuffled = compression.probe_accuracy(feats, labels, mask, 4, shuffle=True, steps=100)
    assert acc.mean() > 0.95 and shuffled.mean() < 0.6
    table, per_window = compression.probe_table({("m", "good"): feats, ("m", "shuffled"): feats}, labels, mask, 4,
                                      shuffled=[("m", "shuffled")], steps=100)
    assert list(table.features) == ["good", "shuffled"] and (table.ci_low <= table.accuracy).all()
    assert per_window[("m", "good")].mean() == pytest.approx(acc.mean())


def test_on_a_tiny_pretrained_gpt2(tmp_path):
    """Caching, splicing and the sweep run unchanged on a HookedTransformer loaded from local GPT-2 weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lib.core.pretrained import load_pretrained

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_embd=32, n_layer=2, n_head=4)).save_pretrained(
        tmp_path)
    big = load_pretrained(tmp_path)
    windows = prompts.lm_windows_for(big, ["Kum is a village in Iran.", "The film was released in 1999."] * 8, n_ctx=8)
    assert windows.shape[1] == 8 and len(windows) >= 4
    df = compression.sweep(big, "blocks.1.hook_mlp_out", windows[:3], windows[3:], [1, 32], ["pca", "infovae"], [0],
                 compressors.CompressorConfig(steps=5, d_hidden=8), progress=False)
    assert df.loss.notna().all()
    assert df[(df.method == "PCA") & (df.d_latent == 32)].loss_increase.abs().max() < 1e-3
