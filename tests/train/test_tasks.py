"""`tl_keras.train.tasks`: the config keys that choose the transformer's fuser reach the
model built from a config (Fig. 7 fusers; ViViT's token mixing over the clip or per
frame), and a model built either way survives a `.keras` round trip."""

import keras
import numpy as np
import pytest

from test_case import to_numpy
from tl_keras import TL, configs
from tl_keras.configs import ConfigError
from tl_keras.layers import TokenFuser
from tl_keras.layers.tokenizers import FUSERS
from tl_keras.train import tasks

RNG = np.random.default_rng(11)
TINY = ["model.patch_size=8", "model.hidden_dim=32", "model.num_layers=3", "model.num_heads=2",
        "model.mlp_dim=64", "model.num_classes=5", "model.image_size=32"]


def _config(name, *overrides):
    cfg = configs.Config()
    configs.apply_overrides(cfg, [f"model.name={name}", *TINY, *overrides])
    return cfg


def _video_config(*overrides):
    return _config("vivit_b16", "model.num_frames=4", "model.tubelet_size=2",
                   "model.tokenlearner.at=1", "model.tokenlearner.num_tokens=3",
                   "model.tokenlearner.fuser=true", *overrides)


def _randomize(model):
    for w in model.trainable_weights:
        w.assign(to_numpy(w) + RNG.normal(0, 0.2, w.shape).astype("float32"))


@pytest.mark.parametrize("value, fuser", [("true", "tokenfuser"), ("unpool", "unpool"),
                                          ("reprojection", "reprojection")])
def test_tokenlearner_fuser_key_selects_the_fig7_fuser(value, fuser):
    cfg = _config("vit_b16", "model.tokenlearner.at=1", "model.tokenlearner.num_tokens=3",
                  f"model.tokenlearner.fuser={value}")
    assert tasks.model_kwargs(cfg)["tokenlearner"] == TL(3, 1, fuser=fuser)
    model = tasks.build_model(cfg)
    assert type(model.get_layer("tokenfuser_0")) is FUSERS[fuser]


def test_unpool_without_maps_is_a_config_error():
    cfg = _config("vit_b16", "model.tokenlearner.at=1", "model.tokenlearner.fuser=unpool",
                  "model.tokenlearner.version=pool_mlp")
    with pytest.raises(ConfigError, match="unpool"):
        tasks.build_model(cfg)


def test_fuser_mix_tokens_over_time_key(tmp_path):
    """`model.fuser_mix_tokens_over_time` (default: the model's, all T*S tokens): per
    frame, the fuser equals the all-tokens fuser with the block-diagonal mixing matrix
    `I_T (x) K`; any other matrix mixes frames, so the two settings compute different
    functions. Both round-trip through `.keras`."""
    default = tasks.build_model(_video_config())
    assert tasks.model_kwargs(_video_config()).get("fuser_mix_tokens_over_time") is None
    clip = tasks.build_model(_video_config("model.fuser_mix_tokens_over_time=true"))
    frame = tasks.build_model(_video_config("model.fuser_mix_tokens_over_time=false"))
    for model, mixed in ((default, 6), (clip, 6), (frame, 3)):  # T' = 2 token frames, S = 3
        fusers = [layer for layer in model.layers if isinstance(layer, TokenFuser)]
        assert [tuple(f.token_mixing.kernel.shape) for f in fusers] == [(mixed, mixed)] * 2
    assert all(f.mix_tokens_over_time is False for f in frame.layers if isinstance(f, TokenFuser))

    # Same weights everywhere but the mixing; clip's mixing = I_T (x) frame's.
    _randomize(frame)
    for a, b in zip(frame.weights, clip.weights):
        assert a.path == b.path
        if a.path.endswith("token_mixing/kernel"):
            b.assign(np.kron(np.eye(2), to_numpy(a)).astype("float32"))
        elif a.path.endswith("token_mixing/bias"):
            b.assign(np.tile(to_numpy(a), 2))
        else:
            b.assign(a.value)
    x = RNG.uniform(-1, 1, (2, 4, 32, 32, 3)).astype("float32")
    expected = to_numpy(frame(x))
    np.testing.assert_allclose(to_numpy(clip(x)), expected, atol=1e-5)
    kernel = clip.get_layer("tokenfuser_0").token_mixing.kernel
    kernel.assign(to_numpy(kernel) + np.kron([[0, 1], [1, 0]], np.ones((3, 3))).astype("float32"))
    assert np.abs(to_numpy(clip(x)) - expected).max() > 1e-3  # frames mixed

    for name, model in (("clip", clip), ("frame", frame)):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert loaded.get_config() == model.get_config()
        np.testing.assert_array_equal(to_numpy(loaded(x)), to_numpy(model(x)))


def test_fuser_mix_tokens_over_time_is_for_vivit_only(tmp_path):
    for shard in ("train-00000-of-00001", "validation-00000-of-00001"):
        (tmp_path / shard).write_bytes(b"")
    cfg = _config("vit_b16", "model.tokenlearner.at=1", "model.tokenlearner.fuser=true",
                  "model.fuser_mix_tokens_over_time=false", "data.dataset=imagenet2012",
                  f"data.data_dir={tmp_path}", "data.train_pattern=train*")
    with pytest.raises(ConfigError, match="model.fuser_mix_tokens_over_time.*ViViT"):
        tasks.validate(cfg)
