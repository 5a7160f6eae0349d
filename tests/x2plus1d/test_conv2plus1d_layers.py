"""X(2+1)D layers: (2+1)D conv, space-time attention, MLP-Mixer, TokenLearner module,
every module alternative of the slot, the residual unit."""

import keras
import numpy as np
import pytest

from test_case import TestCase, to_numpy
from tl_keras.layers.conv2plus1d import (
    MODULES,
    Conv2Plus1D,
    FrameMLPMixer,
    SpaceTimeAttention,
    SpaceTimeModule,
    TokenLearnerModule,
    X2Plus1DUnit,
)

RNG = np.random.default_rng(7)

# A tiny video feature map: B=2, T=4 frames, 8x8 grid, C=8 channels.
SHAPE = (2, 4, 8, 8, 8)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


def gradients(layer, x):
    """Gradients of a scalar of `layer(x)` w.r.t. its trainable weights (any backend)."""
    layer(x)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=True)))
        return [to_numpy(g) for g in tape.gradient(loss, layer.trainable_variables)]
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(tv):
            y, _ = layer.stateless_call(tv, non_trainable, x, training=True)
            return (y**2).sum()

        return [np.asarray(g) for g in jax.grad(loss)(trainable)]
    raise NotImplementedError(backend)


class TestConv2Plus1D(TestCase):
    @pytest.mark.parametrize(
        "kwargs, out",
        [
            ({"filters": 6}, (2, 4, 8, 8, 6)),
            ({"filters": 6, "strides": 2, "temporal_kernel_size": 5}, (2, 4, 4, 4, 6)),
            pytest.param({"filters": 8, "depthwise": True}, (2, 4, 8, 8, 8),
                         marks=pytest.mark.slow),
        ],
    )
    def test_contract(self, kwargs, out):
        self.run_layer_test(Conv2Plus1D, kwargs, rand(*SHAPE), out)

    def test_factorisation(self):
        """A spatial kernel that is zero except at the centre and a temporal kernel that
        is the identity at the middle tap make the unit BN(x) -> ReLU."""
        layer = Conv2Plus1D(8, kernel_size=3, temporal_kernel_size=3)
        x = np.abs(rand(*SHAPE))
        layer(x)
        eye = np.eye(8, dtype="float32")
        spatial = np.zeros((1, 3, 3, 8, 8), "float32")
        spatial[0, 1, 1] = eye
        temporal = np.zeros((3, 1, 1, 8, 8), "float32")
        temporal[1, 0, 0] = eye
        layer.spatial_conv.kernel.assign(spatial)
        layer.temporal_conv.kernel.assign(temporal)
        bn_eps = layer.spatial_norm.epsilon
        expected = x / np.sqrt(1 + bn_eps)  # inference BN with fresh statistics
        np.testing.assert_allclose(to_numpy(layer(x, training=False)), expected, atol=1e-5)

    def test_temporal_conv_mixes_only_time(self):
        layer = Conv2Plus1D(8)
        x = rand(*SHAPE)
        base = to_numpy(layer(x))
        x2 = x.copy()
        x2[:, 0, 0, 0] += 10.0  # a change at frame 0, position (0, 0)
        diff = np.abs(to_numpy(layer(x2)) - base).max(axis=-1)  # [B, T, H, W]
        assert diff[:, 2:].max() < 1e-5  # frames beyond the 3-tap reach are untouched
        assert diff[:, :2, 2:, :].max() < 1e-5 and diff[:, :2, :, 2:].max() < 1e-5


class TestSpaceTimeAttention(TestCase):
    # The three axes also run inside the SpaceTimeModule tests; one contract suffices.
    @pytest.mark.parametrize(
        "axis", ["temporal", pytest.param("joint", marks=pytest.mark.slow),
                 pytest.param("spatial", marks=pytest.mark.slow)]
    )
    def test_contract(self, axis):
        self.run_layer_test(
            SpaceTimeAttention, {"axis": axis, "num_heads": 2, "dropout_rate": 0.1},
            rand(*SHAPE), SHAPE,
        )

    @pytest.mark.parametrize("axis", ["spatial", "temporal"])
    def test_groups_do_not_mix(self, axis):
        layer = SpaceTimeAttention(axis, num_heads=2)
        x = rand(*SHAPE)
        base = to_numpy(layer(x))
        x2 = x.copy()
        x2[:, 1, 2, 3] += rand(2, 8) * 3  # not constant over C (LayerNorm would remove it)
        diff = np.abs(to_numpy(layer(x2)) - base).max(axis=-1)  # [B, T, H, W]
        changed = diff > 1e-6
        if axis == "spatial":
            assert changed[:, 1].any() and not changed[:, [0, 2, 3]].any()
        else:
            assert changed[:, :, 2, 3].any()
            mask = np.ones(changed.shape, bool)
            mask[:, :, 2, 3] = False
            assert not changed[mask].any()

    def test_joint_mixes_everything(self):
        layer = SpaceTimeAttention("joint", num_heads=2)
        x = rand(*SHAPE)
        x2 = x.copy()
        x2[:, 1, 2, 3] += rand(2, 8) * 3
        diff = np.abs(to_numpy(layer(x2)) - to_numpy(layer(x))).max(axis=-1)
        assert (diff > 1e-6).all()

    def test_errors(self):
        with pytest.raises(ValueError, match="axis"):
            SpaceTimeAttention("diagonal")
        with pytest.raises(ValueError, match="rank 5"):
            SpaceTimeAttention()(rand(2, 8, 8))


class TestFrameMLPMixer(TestCase):
    def test_contract(self):
        self.run_layer_test(
            FrameMLPMixer, {"token_mlp_dim": 3, "channel_mlp_dim": 5, "dropout_rate": 0.1},
            rand(*SHAPE), SHAPE,
        )

    def test_update_is_constant_over_each_frame(self):
        layer = FrameMLPMixer()
        x = rand(*SHAPE)
        update = to_numpy(layer(x)) - x  # [B, T, H, W, C]
        np.testing.assert_allclose(update, np.broadcast_to(update[:, :, :1, :1], update.shape), atol=1e-5)


class TestTokenLearnerModule(TestCase):
    @pytest.mark.parametrize(
        "kwargs",
        [
            pytest.param({}, marks=pytest.mark.slow),  # = SpaceTimeModule("tokenlearner")
            pytest.param({"attention": "mhsa", "num_heads": 2}, marks=pytest.mark.slow),
            {"tokenizer": "1.1", "fuser": "unpool"},
            {"tokenizer": "grid", "fuser": "reprojection", "num_heads": 2},
            pytest.param({"tokenizer": "pool", "fuser": "unpool"}, marks=pytest.mark.slow),
            pytest.param({"tokenizer": "fc"}, marks=pytest.mark.slow),
            pytest.param({"tokenizer": "pool_mlp", "dropout_rate": 0.1}, marks=pytest.mark.slow),
        ],
    )
    def test_contract(self, kwargs):
        self.run_layer_test(
            TokenLearnerModule, {"num_tokens": 4, **kwargs}, rand(*SHAPE), SHAPE,
            run_mixed_precision_check=False,  # covered by the module and unit tests
        )

    @pytest.mark.slow  # each part is trained alone in test_baselines_layers.py
    def test_every_tokenizer_and_fuser(self):
        """Forward and backward with every token learner x fuser pair it accepts."""
        x = rand(*SHAPE)
        for tokenizer in ("1", "1.1", "grid", "pool", "fc", "pool_mlp"):
            for fuser in ("tokenfuser", "unpool", "reprojection"):
                if tokenizer == "pool_mlp" and fuser == "unpool":
                    continue
                layer = TokenLearnerModule(
                    4, tokenizer=tokenizer, fuser=fuser, num_heads=2, name=f"{tokenizer}_{fuser}"
                )
                assert tuple(layer(x).shape) == SHAPE
                grads = gradients(layer, x)
                assert all(np.isfinite(g).all() for g in grads), (tokenizer, fuser)

    @pytest.mark.parametrize("fuser", ["unpool", "reprojection"])
    def test_backward_with_fuser_alternatives(self, fuser):
        x = rand(*SHAPE)
        layer = TokenLearnerModule(4, tokenizer="1", fuser=fuser, num_heads=2)
        grads = gradients(layer, x)
        assert grads and all(np.isfinite(g).all() for g in grads)
        assert any(np.abs(g).max() > 0 for g in grads)

    def test_identity_at_initialisation(self):
        """The TokenFuser starts at exactly zero, so the module starts as the identity."""
        x = rand(*SHAPE)
        np.testing.assert_array_equal(to_numpy(TokenLearnerModule(4)(x)), x)

    def test_errors(self):
        with pytest.raises(ValueError, match="unpool"):
            TokenLearnerModule(4, tokenizer="pool_mlp", fuser="unpool")
        with pytest.raises(ValueError, match="tokenizer"):
            TokenLearnerModule(4, tokenizer="2")
        with pytest.raises(ValueError, match="attention"):
            TokenLearnerModule(4, attention="linear")
        with pytest.raises(ValueError, match="fuser"):
            TokenLearnerModule(4, fuser="concat")


class TestSpaceTimeModule(TestCase):
    """Every alternative: builds, runs forward and backward, saves, and has the shape of
    the module it replaces (the plain Conv2D + Conv1D)."""

    @pytest.mark.parametrize("module", sorted(MODULES))
    def test_every_module(self, module):
        x = rand(*SHAPE)
        plain = SpaceTimeModule("conv2d_conv1d", strides=2)
        expected = tuple(plain(x).shape)
        assert expected == (2, 4, 4, 4, 8)
        self.run_layer_test(
            SpaceTimeModule,
            {"module": module, "num_tokens": 4, "num_heads": 2, "strides": 2},
            x,
            expected,
            run_mixed_precision_check=module in ("conv2d_tokenlearner", "joint_mhsa"),
        )

    def test_errors(self):
        with pytest.raises(ValueError, match="module"):
            SpaceTimeModule("conv3d")
        with pytest.raises(ValueError, match="strides"):
            SpaceTimeModule(strides=0)
        with pytest.raises(ValueError, match="fuser"):
            SpaceTimeModule("conv2d_tokenlearner", tokenizer="pool_mlp", fuser="unpool")
        # Non-TokenLearner modules ignore the token options.
        SpaceTimeModule("conv2d_conv1d", tokenizer="pool_mlp", fuser="unpool")


class TestX2Plus1DUnit(TestCase):
    @pytest.mark.parametrize(
        "kwargs, out",
        [
            ({"filters": 8, "inner_filters": 12}, (2, 4, 8, 8, 8)),  # identity shortcut
            pytest.param({"filters": 6, "inner_filters": 12, "strides": 2}, (2, 4, 4, 4, 6),
                         marks=pytest.mark.slow),
            (
                {"filters": 6, "inner_filters": 8, "strides": 2, "module": "conv2d_tokenlearner",
                 "num_tokens": 4},
                (2, 4, 4, 4, 6),
            ),
        ],
    )
    def test_contract(self, kwargs, out):
        self.run_layer_test(
            X2Plus1DUnit, kwargs, rand(*SHAPE), out,
            run_mixed_precision_check="module" not in kwargs,
        )

    def test_starts_as_relu_of_shortcut(self):
        """The last BN's gamma starts at zero, so a fresh unit is ReLU(shortcut)."""
        x = rand(*SHAPE)
        unit = X2Plus1DUnit(8, 12)
        np.testing.assert_allclose(to_numpy(unit(x)), np.maximum(x, 0), atol=1e-6)

    def test_mixed_precision_in_float16(self):
        unit = X2Plus1DUnit(8, 12, module="conv2d_tokenlearner", num_tokens=4, dtype="mixed_float16")
        out = unit(rand(*SHAPE))
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
