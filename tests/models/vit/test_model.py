"""ViT with TokenLearner (`tl_keras.models.vit.model`): placement, arguments, the
transformer trunk (shared with ViViT) against an independent NumPy re-implementation of
the reference (Scenic) models, the model contract (`run_model_test`), tf.data and XLA."""

import math

import keras
import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, layers_of, to_numpy
from tl_keras import TL, flops
from tl_keras.convert import export_flax_params, load_vit_npz, vit_npz_params
from tl_keras.layers import TokenFuser, TokenLearner, TokenLearnerV1, TransformerBlock
from tl_keras.layers.tokenizers import FUSERS, TOKENIZERS
from tl_keras.models import ViT, ViViT, create_model, vit_b16, vivit_b16

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
            mlp_dim=64, num_classes=5)
TINY_VIDEO = dict(TINY, num_frames=4, tubelet_size=2)
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def model_a():
    """`vit_b16(**TINY, tokenlearner=TL(3, at=2))`, shared by the tests that only read it."""
    return vit_b16(**TINY, tokenlearner=TL(3, at=2))


def images(batch=2, size=32):
    return RNG.uniform(-1, 1, (batch, size, size, 3)).astype("float32")


def videos(batch=2, frames=4, size=32):
    return RNG.uniform(-1, 1, (batch, frames, size, size, 3)).astype("float32")


def randomize(model, scale=0.2):
    """Perturbs every weight (zero-initialised head and fusers included)."""
    for w in model.weights:
        if w.trainable:
            w.assign(to_numpy(w) + RNG.normal(0, scale, w.shape).astype("float32"))


def block_tokens(model):
    return [layer.input.shape[1] for layer in layers_of(model, TransformerBlock)]


# ---------------------------------------------------------------------------------------
# Placement.


class TestPlacement:
    def test_plain_vit(self):
        model = vit_b16(**TINY)
        assert block_tokens(model) == [17] * 4  # 16 patches + class token
        assert not layers_of(model, TokenLearner)
        assert model.output.shape == (None, 5)

    def test_model_a_tokenlearner_before_block_at(self, model_a):
        model = model_a
        assert block_tokens(model) == [16, 16, 3, 3]  # gap: no class token
        (tl,) = layers_of(model, TokenLearner)
        assert tl.name == "tokenlearner_0" and tl.num_tokens == 3
        assert not layers_of(model, TokenFuser)
        names = [layer.name for layer in model.layers]
        assert names.index("encoderblock_1") < names.index("tokenlearner_0")
        assert names.index("tokenlearner_0") < names.index("encoderblock_2")

    def test_model_b_fuser_at_every_block_from_at(self):
        model = vit_b16(**TINY, tokenlearner=TL(3, at=1, fuser=True))
        assert block_tokens(model) == [16, 3, 3, 3]
        assert len(layers_of(model, TokenLearner)) == 3
        assert len(layers_of(model, TokenFuser)) == 3
        fusers = layers_of(model, TokenFuser)
        assert [f.name for f in fusers] == ["tokenfuser_0", "tokenfuser_1", "tokenfuser_2"]
        assert model.get_layer("encoder_norm").input.shape[1] == 16  # fused back
        # Each TokenLearner / TokenFuser pair shares one standardisation of its input.
        shared = [layer for layer in model.layers if layer.name.startswith("fuser_input_")]
        assert [layer.name for layer in shared] == [
            f"fuser_input_standardize_{k}" for k in range(3)
        ]
        assert not any(layer.weights for layer in shared)

    def test_tokenlearner_at_zero(self):
        model = vit_b16(**TINY, tokenlearner=TL(2, at=0))
        assert block_tokens(model) == [2, 2, 2, 2]

    def test_extra_layers_come_after_the_tokenlearner(self):
        model = vit_b16(**TINY, tokenlearner=TL(3, at=2), extra_layers=3)
        assert block_tokens(model) == [16, 16, 3, 3, 3, 3, 3]
        assert model.get_layer("encoderblock_6")
        fused = vit_b16(**TINY, tokenlearner=TL(3, at=4, fuser=True), extra_layers=2)
        assert block_tokens(fused) == [16] * 4 + [3, 3]
        assert len(layers_of(fused, TokenFuser)) == 2

    def test_version_1(self):
        model = vit_b16(**TINY, tokenlearner=TL(3, at=2, version="1"))
        (tl,) = layers_of(model, TokenLearnerV1)
        assert tl.spatial_shape == (4, 4)
        assert model(images()).shape == (2, 5)

    def test_non_square_image(self):
        model = vit_b16(**dict(TINY, image_size=(16, 40)), tokenlearner=TL(3, at=2, version="1"))
        assert block_tokens(model)[0] == 2 * 5
        assert model(RNG.normal(size=(1, 16, 40, 3)).astype("float32")).shape == (1, 5)

    def test_pooling_and_representation(self):
        model = vit_b16(**TINY, pooling="gap", representation_size=12)
        assert "cls" not in [layer.name for layer in model.layers]
        assert model.get_layer("pre_logits").units == 12
        features = vit_b16(**TINY, include_top=False)
        assert features.output.shape == (None, 32)


# ---------------------------------------------------------------------------------------
# Arguments.


class TestArguments:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(image_size=30), "image_size"),
            (dict(image_size=(32, 30)), "image_size"),
            (dict(patch_size=0), "patch_size"),
            (dict(hidden_dim=30, num_heads=4), "num_heads"),
            (dict(num_layers=0), "num_layers"),
            (dict(num_classes=0), "num_classes"),
            (dict(dropout_rate=1.0), "dropout_rate"),
            (dict(drop_path_rate=-0.1), "drop_path_rate"),
            (dict(pooling="max"), "pooling"),
            (dict(tokenlearner=TL(4, at=4)), "at"),
            (dict(tokenlearner=TL(4, at=5), extra_layers=2), "at"),
            (dict(tokenlearner=TL(4, at=2), pooling="token"), "pooling"),
            (dict(tokenlearner="4 at 2"), "TL.parse"),
            (dict(extra_layers=2), "extra_layers"),
            (dict(representation_size=-1), "representation_size"),
            (dict(include_top="yes"), "include_top"),
        ],
    )
    def test_value_errors_before_any_weight(self, kwargs, match, monkeypatch):
        made = []
        original = keras.layers.Layer.add_weight
        monkeypatch.setattr(keras.layers.Layer, "add_weight",
                            lambda self, *a, **k: made.append(1) or original(self, *a, **k))
        with pytest.raises(ValueError, match=match):
            vit_b16(**{**TINY, **kwargs})
        assert not made

    def test_user_kwargs_win_over_the_table(self):
        model = create_model("vit_l16", **TINY)
        assert model.resolved.hidden_dim == 32 and model.resolved.num_layers == 4
        assert model.name == "vit_l16"
        assert create_model("vit_b16", name="mine", **TINY).name == "mine"

    def test_tokenlearner_as_string_or_dict(self):
        a = vit_b16(**TINY, tokenlearner="3@2+fuser")
        b = vit_b16(**TINY, tokenlearner={"num_tokens": 3, "at": 2, "fuser": True})
        assert a.resolved.tokenlearner == b.resolved.tokenlearner == TL(3, 2, fuser=True)


# ---------------------------------------------------------------------------------------
# Numerics against an independent NumPy version of the reference models.


def np_block(x, p, heads):
    y = ref.layer_norm(x, p["LayerNorm_0"])
    a = p["MultiHeadDotProductAttention_0"]
    d = x.shape[-1] // heads
    q, k, v = (np.einsum("bnc,chd->bnhd", y, a[n]["kernel"]) + a[n]["bias"]
               for n in ("query", "key", "value"))
    w = ref.softmax(np.einsum("bqhd,bkhd->bhqk", q / math.sqrt(d), k), axis=-1)
    o = np.einsum("bhqk,bkhd->bqhd", w, v)
    x = x + np.einsum("bqhd,hdc->bqc", o, a["out"]["kernel"]) + a["out"]["bias"]
    return x + ref.mlp_block(ref.layer_norm(x, p["LayerNorm_1"]), p["MlpBlock_0"])


def np_model(x, params, *, heads, patch, tubelet, grid, tl, layers, token, mix_over_time):
    """The reference TokenLearnerViT / ViViT forward on a Scenic-named tree (float64)."""
    p = {k: v for k, v in params.items()}
    kernel = p["embedding"]["kernel"]
    c = kernel.shape[-1]
    if x.ndim == 4:
        b, h, w, _ = x.shape
        t_out = 1
        tok = x.reshape(b, h // patch, patch, w // patch, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    else:
        b, t, h, w, _ = x.shape
        t_out = t // tubelet
        tok = x.reshape(b, t_out, tubelet, h // patch, patch, w // patch, patch, 3)
        tok = tok.transpose(0, 1, 3, 5, 2, 4, 6, 7)
    x = tok.reshape(b, -1, kernel.size // c) @ kernel.reshape(-1, c) + p["embedding"]["bias"]
    if token:
        x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, c)), x], axis=1)
    enc = p["Transformer"]
    x = x + enc["posembed_input"]["pos_embedding"]
    k = 0
    for i in range(layers):
        blk = enc[f"encoderblock_{i}"]
        if tl is not None and (i == tl.at or (tl.fuser and i >= tl.at)):
            frames = x.reshape(b, t_out, grid[0], grid[1], c)
            module = "TokenLearnerModuleV11" if tl.version == "1.1" else "TokenLearnerModule"
            one = frames[:, 0] if t_out == 1 else frames
            tokens = ref.token_learner(one, enc[f"{module}_{k}"], version=tl.version)
            y = np_block(tokens, blk, heads)
            if tl.fuser:
                fused = ref.token_fuser(y, one, enc[f"TokenFuser_{k}"],
                                        mix_over_time=mix_over_time)
                x = (fused + one).reshape(b, -1, c)
            else:
                x = y
            k += 1
        else:
            x = np_block(x, blk, heads)
    x = ref.layer_norm(x, enc["encoder_norm"])
    x = x[:, 0] if token else x.mean(1)
    return x @ p["output_projection"]["kernel"] + p["output_projection"]["bias"]


def as64(tree):
    return {k: as64(v) if isinstance(v, dict) else np.asarray(v, np.float64)
            for k, v in tree.items()}


class TestMatchesReference:
    """The trunk of ViT and ViViT (`build_trunk`) against the reference forward; the video
    cases run it on tubelets."""

    @pytest.mark.parametrize(
        "tl, video, mix_over_time",
        [
            (None, False, True),
            (TL(3, at=2), False, True),
            (TL(3, at=1, fuser=True), False, True),
            (TL(2, at=2, version="1"), False, True),
            (TL(2, at=2, fuser=True, version="1"), False, True),
            (TL(3, at=2), True, True),
            (TL(3, at=2, fuser=True), True, True),
            (TL(3, at=2, fuser=True), True, False),
        ],
    )
    def test_forward(self, tl, video, mix_over_time):
        if video:
            model = vivit_b16(**TINY_VIDEO, tokenlearner=tl,
                              fuser_mix_tokens_over_time=mix_over_time)
            x = videos()
        else:
            model = vit_b16(**TINY, tokenlearner=tl)
            x = images()
        randomize(model)
        params = as64(export_flax_params(model))
        expected = np_model(
            x.astype(np.float64), params, heads=2, patch=8, tubelet=2, grid=(4, 4), tl=tl,
            layers=4, token=tl is None, mix_over_time=mix_over_time,
        )
        np.testing.assert_allclose(to_numpy(model(x)), expected, rtol=2e-4, atol=2e-4)


# ---------------------------------------------------------------------------------------
# Keras model contract.


class TestKerasContract(TestCase):
    @pytest.mark.parametrize(
        "kwargs",
        [
            dict(TINY, representation_size=8),
            dict(TINY, tokenlearner=TL(3, at=2)),
            dict(TINY, tokenlearner=TL(3, at=1, fuser=True), representation_size=8),
            dict(TINY, tokenlearner=TL(2, at=2, fuser=True, version="1")),
        ],
        ids=["plain", "tl", "tl_fuser", "tl_v1_fuser"],
    )
    def test_model_contract(self, kwargs, model_a):
        """Config, forward, `.keras` round trip, bfloat16 by value, a gradient for every
        trainable weight (with and without TokenLearner / TokenFuser)."""
        shared = kwargs == dict(TINY, tokenlearner=TL(3, at=2))
        self.run_model_test(ViT, kwargs, images(), (2, 5), model=model_a if shared else None)

    def test_summary(self, model_a):
        lines = []
        model_a.summary(print_fn=lines.append)
        text = "\n".join(lines)
        assert "tokenlearner_0" in text and "encoderblock_3" in text

    def test_fuser_and_head_start_at_zero(self):
        model = vit_b16(**TINY, tokenlearner=TL(3, at=2, fuser=True))
        assert not np.any(to_numpy(model(images())))  # zero head
        for fuser in layers_of(model, TokenFuser):
            assert not np.any(to_numpy(fuser.token_mixing.kernel))

    def test_training_flag_reaches_dropout_and_drop_path(self):
        model = vit_b16(**TINY, dropout_rate=0.3, drop_path_rate=0.3,
                        tokenlearner=TL(3, at=2, fuser=True))
        randomize(model)
        x = images()
        np.testing.assert_array_equal(to_numpy(model(x)), to_numpy(model(x)))
        assert not np.allclose(to_numpy(model(x, training=True)), to_numpy(model(x)))

    @pytest.mark.tf_only
    def test_predict_on_tf_data_and_xla(self):
        import tensorflow as tf  # a TensorFlow-only test

        model = vit_b16(**TINY, tokenlearner=TL(3, at=2, fuser=True))
        randomize(model)
        x = images(6)
        expected = to_numpy(model(x))
        ds = tf.data.Dataset.from_tensor_slices(x).batch(4)
        np.testing.assert_allclose(model.predict(ds, verbose=0), expected, atol=1e-5)
        model.compile(jit_compile=True)
        np.testing.assert_allclose(model.predict(ds, verbose=0), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Fig. 7: the fuser alternatives.


class TestFig7Fusers(TestCase):
    @pytest.mark.parametrize("fuser", sorted(FUSERS))
    @pytest.mark.parametrize("family", ["vit", "vivit"])
    def test_model_contract_per_fuser(self, fuser, family):
        """`TL(..., fuser=name)` builds that fuser after every block from `at` on; config,
        forward, `.keras` round trip, bfloat16, a gradient to every weight; its GFLOPs
        counted from the arguments and from the built model agree."""
        tl = TL(3, at=2, fuser=fuser)
        if family == "vit":
            cls, kwargs, x, frames = ViT, dict(TINY, tokenlearner=tl), images(), 1
        else:
            cls, kwargs, x, frames = ViViT, dict(TINY_VIDEO, tokenlearner=tl), videos(), 2
        model = cls(**kwargs)
        fusers = [layer for layer in model.layers if layer.name.startswith("tokenfuser_")]
        assert [type(f) for f in fusers] == [FUSERS[fuser]] * 2
        assert block_tokens(model) == [16 * frames] * 2 + [3 * frames] * 2
        assert model.get_layer("encoder_norm").input.shape[1] == 16 * frames  # fused back
        assert flops.gflops(model) == pytest.approx(flops.gflops(f"{family}_b16", **kwargs))
        assert flops.count_params(f"{family}_b16", **kwargs) == model.count_params()
        self.run_model_test(cls, kwargs, x, (2, 5), model=model)

    def test_fuser_true_is_tokenfuser(self):
        a = vit_b16(**TINY, tokenlearner=TL(3, at=2, fuser=True))
        b = vit_b16(**TINY, tokenlearner="3@2+tokenfuser")
        assert a.resolved.tokenlearner == b.resolved.tokenlearner == TL(3, 2, "tokenfuser")
        assert [type(layer) for layer in a.layers] == [type(layer) for layer in b.layers]

    def test_unpool_spreads_the_tokens_with_the_maps_that_pooled_them(self):
        """Block output + residual: `x[n] + sum_s maps[s, n] y[s]` per frame, with the
        maps of the TokenLearner before the block (NumPy on the model's tensors)."""
        model = vivit_b16(**TINY_VIDEO, tokenlearner=TL(3, at=3, fuser="unpool"))
        randomize(model)
        tl, block = model.get_layer("tokenlearner_0"), model.get_layer("encoderblock_3")
        probe = keras.Model(model.input, [
            tl.input, tl.output[1], block.output, model.get_layer("fuser_residual_0").output,
        ])
        original, maps, y, out = (to_numpy(t) for t in probe(videos()))
        assert original.shape == (2, 2, 16, 32) and maps.shape == (4, 3, 16)
        np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)  # softmax over positions
        y = y.reshape(4, 3, 32)  # [B*T, S, C]
        expected = original + np.einsum("bsn,bsc->bnc", maps, y).reshape(original.shape)
        np.testing.assert_allclose(out, expected, atol=1e-4)

    def test_errors(self):
        with pytest.raises(ValueError, match="unpool.*pool_mlp"):
            vit_b16(**TINY, tokenlearner=dict(num_tokens=3, at=2, fuser="unpool",
                                              version="pool_mlp"))
        with pytest.raises(ValueError, match="fuser"):
            vit_b16(**TINY, tokenlearner=dict(num_tokens=3, at=2, fuser="concat"))


@pytest.mark.parametrize("version", ["grid", "pool", "fc", "pool_mlp"])
def test_baseline_tokenizers_by_version(version):
    """The ablation baselines go wherever a TokenLearner goes (`TL(version=...)`)."""
    kwargs = dict(TINY, tokenlearner=TL(4, at=2, version=version))
    model = vit_b16(**kwargs)
    assert type(model.get_layer("tokenlearner_0")) is TOKENIZERS[version]
    assert block_tokens(model) == [16, 16, 4, 4]
    randomize(model)
    out = to_numpy(model(images()))
    assert out.shape == (2, 5) and np.all(np.isfinite(out))
    assert TL.parse(f"4@2+{version}") == TL(4, 2, version=version)
    assert flops.gflops(model) == pytest.approx(flops.gflops("vit_b16", **kwargs))
    assert flops.count_params("vit_b16", **kwargs) == model.count_params()
    fresh = vit_b16(**kwargs)
    load_vit_npz(fresh, vit_npz_params(model))
    x = images()
    np.testing.assert_array_equal(to_numpy(fresh(x)), to_numpy(model(x)))
