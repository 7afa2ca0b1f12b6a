"""lib.core.config: presets resolve to the model asked for, and bad values are errors that name them."""

import pytest

from lib.core.config import PRESETS, ModelConfig, resolve


@pytest.mark.parametrize("preset", PRESETS)
def test_attention_width_follows_d_model_and_n_heads_unless_d_head_is_given(preset):
    cfg = resolve(preset)
    m = cfg.model
    assert m.n_heads * m.d_head == m.d_model  # every preset: attention as wide as the residual stream
    wide = resolve(preset, d_model=2 * m.d_model, n_heads=2 * m.n_heads)
    assert wide.model.n_heads * wide.model.d_head == wide.model.d_model


def test_overrides_rederive_d_head():
    """The bug this guards against: d_head derived for the default config (128 / 4 = 32) was kept when a preset
    or an override changed d_model or n_heads (smoke trained 64-wide attention at d_model 32)."""
    assert resolve("smoke").model.d_head == 16  # d_model 32, 2 heads
    assert resolve("cpu", n_heads=8).model.d_head == 16
    assert resolve("cpu", d_model=256).model.d_head == 64
    assert resolve("cpu", n_heads=3, d_model=96).model.d_head == 32
    assert resolve("cpu", d_head=16, n_heads=8).model.d_head == 16  # explicit: kept
    assert resolve("cpu").replace(n_heads=2).model.d_head == 64
    assert resolve("gpu").model.d_head == 64 and resolve("gpu", n_heads=8).model.d_head == 64  # the preset's own
    with pytest.raises(ValueError, match="d_head=None.*n_heads=3"):
        resolve("cpu", n_heads=3)  # 128 is not divisible by 3: say so rather than truncate


@pytest.mark.parametrize("override, match", [
    (dict(grad_clip=-1.0), "grad_clip=-1.0"), (dict(grad_clip=0.0), "grad_clip=0.0"),
    (dict(weight_decay=-0.1), "weight_decay=-0.1"), (dict(ln_eps=0.0), "ln_eps=0.0"),
    (dict(ln_eps=-1e-5), "ln_eps=-1e-05"), (dict(init_range=-0.02), "init_range=-0.02"),
    (dict(seed=1.5), "seed=1.5"), (dict(seed=-1), "seed=-1"), (dict(lr="3e-3"), "lr='3e-3'"),
    (dict(attention_only="yes"), "attention_only='yes'"), (dict(attention_only=1), "attention_only=1"),
    (dict(beta2=1.0), "beta2=1.0"), (dict(precision="fp16"), "precision='fp16'"),
    (dict(n_layers=2.0), "n_layers=2.0"), (dict(tokenizer="char"), "tokenizer='char'"),
    (dict(d_modle=64), "d_modle"),
])
def test_bad_values_are_errors_that_name_them(override, match):
    with pytest.raises(ValueError, match=match):
        resolve("smoke", **override)


def test_integers_are_accepted_for_floats_and_lists_for_tuples():
    cfg = resolve("smoke", lr=1, corpus=["dbpedia14_train"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.data.corpus == ("dbpedia14_train",)
    assert ModelConfig(d_model=64, n_heads=2).d_head == 32
