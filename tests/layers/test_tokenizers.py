"""The registry of token learners and fusers: factories by name, and the config's
choices pinned to it."""

import typing

import keras
import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import configs
from tl_keras.layers import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.baselines import UnpoolFuser
from tl_keras.layers.tokenizers import (
    FUSERS,
    TOKENIZERS,
    make_fuser,
    make_tokenizer,
    version_has_maps,
)

BASELINE_TOKENIZERS = {k: v for k, v in TOKENIZERS.items() if k not in ("1.1", "1")}
RNG = np.random.default_rng(3)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def literal_choices(cls, field):
    """The values of a `Literal` (inside an `Optional`) config field."""
    tp = typing.get_type_hints(cls)[field]
    for arg in typing.get_args(tp) or (tp,):
        if typing.get_origin(arg) is typing.Literal:
            return set(typing.get_args(arg))
    raise AssertionError(f"{cls.__name__}.{field} is not a Literal: {tp}")


def test_config_choices_are_the_registry():
    """A name added to the registry must be selectable from a config, and the config
    must offer nothing the registry cannot build."""
    assert literal_choices(configs.TokenLearnerConfig, "version") == set(TOKENIZERS)
    assert literal_choices(configs.ModelConfig, "fuser") == set(FUSERS)
    assert literal_choices(configs.TokenLearnerConfig, "fuser") == set(FUSERS)


def test_tokenlearner_config_fuser_takes_a_bool_or_a_fuser_name():
    cfg = configs.Config()
    for text, value in (("true", True), ("false", False), ("unpool", "unpool"),
                        ("reprojection", "reprojection"), ("tokenfuser", "tokenfuser")):
        configs.set_value(cfg, "model.tokenlearner.fuser", text)
        assert cfg.model.tokenlearner.fuser == value
    with pytest.raises(configs.ConfigError, match="model.tokenlearner.fuser"):
        configs.set_value(cfg, "model.tokenlearner.fuser", "concat")


@pytest.mark.parametrize("version", [v for v in TOKENIZERS if version_has_maps(v)])
@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
def test_return_maps_gives_the_tokens_and_the_maps_that_pooled_them(version, symbolic):
    """`layer(x, return_maps=True)` (what the encoder's unpool fuser uses) returns the
    tokens of `layer(x)` and `attention_maps(x)`, eagerly and in a functional model."""
    layer = make_tokenizer(version, 4, temporal=True, spatial_shape=(4, 4))
    x = rand(2, 3, 16, 6)  # [B, T, N, C]
    if symbolic:
        inp = keras.Input((3, 16, 6))
        tokens, maps = layer(inp, return_maps=True)
        assert tuple(tokens.shape) == (None, 12, 6) and tuple(maps.shape) == (None, 4, 16)
        tokens, maps = keras.Model(inp, [tokens, maps])(x)
    else:
        tokens, maps = layer(x, return_maps=True)
    np.testing.assert_allclose(to_numpy(tokens), to_numpy(layer(x)), atol=1e-6)
    np.testing.assert_allclose(to_numpy(maps), to_numpy(layer.attention_maps(x)), atol=1e-6)
    assert to_numpy(maps).shape == (6, 4, 16)  # [B*T, S, N]


class TestFactories:
    def test_make_tokenizer(self):
        assert isinstance(make_tokenizer("1.1", 8), TokenLearner)
        v1 = make_tokenizer("1", 8, num_conv_layers=1, spatial_shape=(7, 7), temporal=True)
        assert isinstance(v1, TokenLearnerV1)
        assert (v1.num_conv_layers, v1.spatial_shape, v1.temporal) == (1, (7, 7), True)
        for version, cls in BASELINE_TOKENIZERS.items():
            layer = make_tokenizer(version, 4, temporal=True, spatial_shape=(4, 4), dropout_rate=0.1,
                                   name=f"tok_{version}", dtype="mixed_bfloat16")
            assert isinstance(layer, cls) and layer.name == f"tok_{version}"
            assert layer.dtype_policy.name == "mixed_bfloat16"
            out = layer(rand(2, 3, 16, 6))
            assert tuple(out.shape) == (2, 12, 6)
        assert make_tokenizer("pool", 4, pooling="avg").pooling == "avg"

    def test_make_tokenizer_errors(self):
        with pytest.raises(ValueError, match="version"):
            make_tokenizer("2", 8)
        with pytest.raises(ValueError, match="num_conv_layers"):
            make_tokenizer("grid", 8, num_conv_layers=1)

    def test_make_fuser(self):
        assert isinstance(make_fuser("tokenfuser", dropout_rate=0.1), TokenFuser)
        assert isinstance(make_fuser("unpool", temporal=True), UnpoolFuser)
        assert make_fuser("reprojection", num_heads=2).num_heads == 2
        with pytest.raises(ValueError, match="kind"):
            make_fuser("concat")
        with pytest.raises(ValueError, match="bogus"):
            make_fuser("unpool", bogus=1)

    def test_keras_file_round_trip_in_a_model(self, tmp_path):
        """A ViT-style stack with a baseline tokenizer + reprojection saves and reloads."""
        x = rand(2, 16, 6)
        inp = keras.Input((16, 6))
        tokens = make_tokenizer("fc", 4, name="tok")(inp)
        fused = make_fuser("reprojection", num_heads=2, name="fuse")(tokens, inp)
        model = keras.Model(inp, keras.layers.Add()([inp, fused]))
        path = tmp_path / "m.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))
