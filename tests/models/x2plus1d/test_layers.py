"""X(2+1)D layers (`tl_keras.models.x2plus1d.layers`): (2+1)D conv, space-time attention,
MLP-Mixer, the TokenLearner module (also against the independent NumPy reference), every
module alternative of the slot, the residual unit."""

import keras
import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, gradients, perturb_weights, to_numpy
from tl_keras.convert import load_flax_params
from tl_keras.layers import VectorAttention
from tl_keras.models.x2plus1d.layers import (
    MODULE_DESCRIPTIONS,
    MODULE_TITLES,
    MODULES,
    Conv2Plus1D,
    FactorConv3D,
    FrameBroadcastAttention,
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


class TestVectorTransformer(TestCase):
    """`SpaceTimeAttention(attention="vector")`: Table 14's "Vector transformer (VectT)"."""

    def test_contract(self):
        self.run_layer_test(
            SpaceTimeAttention, {"axis": "joint", "attention": "vector", "dropout_rate": 0.1},
            rand(2, 2, 4, 4, 8), (2, 2, 4, 4, 8),
        )

    def test_matches_vector_attention_on_the_flattened_positions(self):
        layer = SpaceTimeAttention("joint", attention="vector")
        x = rand(2, 2, 3, 3, 8)
        out = to_numpy(layer(x))
        tokens = layer.norm(x.reshape(2, 18, 8))
        expected = x + to_numpy(layer.attention(tokens)).reshape(x.shape)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        assert isinstance(layer.attention, VectorAttention)

    def test_errors(self):
        with pytest.raises(ValueError, match="attention"):
            SpaceTimeAttention(attention="linear")


class TestFrameBroadcastAttention(TestCase):
    @pytest.mark.parametrize("attention", ["vector", "prior"])
    def test_contract(self, attention):
        self.run_layer_test(
            FrameBroadcastAttention, {"attention": attention, "dropout_rate": 0.1},
            rand(*SHAPE), SHAPE,
        )

    @pytest.mark.parametrize("attention", ["vector", "prior"])
    def test_update_is_broadcast_over_each_frame(self, attention):
        layer = FrameBroadcastAttention(attention)
        x = rand(*SHAPE)
        layer(x)
        perturb_weights(layer)
        update = to_numpy(layer(x)) - x  # [B, T, H, W, C]
        np.testing.assert_allclose(
            update, np.broadcast_to(update[:, :, :1, :1], update.shape), atol=1e-5)
        assert np.abs(update).max() > 1e-3

    def test_prior_is_a_fixed_mix_of_the_frames(self):
        """With the prior, the weights do not depend on the input: frame t's update is
        `softmax(P)[t] @ f_v(LN(pooled))`, checked in NumPy."""
        layer = FrameBroadcastAttention("prior")
        x = rand(*SHAPE)
        layer(x)
        prior = rand(4, 4)
        layer.prior.assign(prior)
        p = x.mean(axis=(2, 3))  # [B, T, C]
        mu, var = p.mean(-1, keepdims=True), p.var(-1, keepdims=True)
        ln = (p - mu) / np.sqrt(var + layer.norm.epsilon)
        v = ln @ to_numpy(layer.value.kernel) + to_numpy(layer.value.bias)
        w = np.exp(prior) / np.exp(prior).sum(-1, keepdims=True)
        expected = x + np.einsum("ts,bsc->btc", w, v)[:, :, None, None, :]
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-4)

    def test_vector_mixes_frames_by_content(self):
        """VectT's weights depend on the tokens: changing frame 0 changes the update of
        frame 3 (through the attention, not only through frame 0's value)."""
        layer = FrameBroadcastAttention("vector")
        x = rand(*SHAPE)
        layer(x)
        perturb_weights(layer)
        x2 = x.copy()
        x2[:, 0] += rand(2, 8, 8, 8)
        d = np.abs(to_numpy(layer(x2)) - to_numpy(layer(x)))[:, 3].max()
        assert d > 1e-4

    def test_errors(self):
        with pytest.raises(ValueError, match="attention"):
            FrameBroadcastAttention("mhsa")
        with pytest.raises(ValueError, match="dropout_rate"):
            FrameBroadcastAttention(dropout_rate=1.5)


class TestModuleRegistry:
    def test_every_module_has_a_title_and_table14_rows_a_description(self):
        assert set(MODULE_TITLES) == set(MODULES)
        assert set(MODULE_DESCRIPTIONS) <= set(MODULES)
        for module in ("conv2d_vector_transformer", "conv2d_prior_broadcast",
                       "conv2d_vector_transformer_broadcast"):
            assert MODULES[module][0] == "conv2d"  # Table 14: "Conv2D + transformer"
            assert MODULE_DESCRIPTIONS[module].count(".") >= 1

    def test_config_lists_exactly_the_model_modules(self):
        """`model.module` of the config accepts the names of the registry the model
        uses (`MODULES`), in its order, and nothing else."""
        import typing

        from tl_keras import configs

        hint = typing.get_type_hints(configs.ModelConfig)["module"]
        allowed = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(allowed) == 1
        assert typing.get_args(allowed[0]) == tuple(MODULES)
        cfg = configs.Config()
        configs.apply_overrides(cfg, ["model.module=conv2d_prior_broadcast"])
        assert cfg.model.module == "conv2d_prior_broadcast"
        with pytest.raises(configs.ConfigError, match="model.module"):
            configs.apply_overrides(cfg, ["model.module=conv3d"])


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

    @pytest.mark.slow  # each part is trained alone in tests/layers/test_baselines.py
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


# Modules whose `fit` check (a traced train step, ~2 s each on CPU) runs by default; the
# others train with the slow tests and run their backward eagerly by default.
TRAINED_BY_DEFAULT = ("conv2d_conv1d", "joint_mhsa", "conv2d_mlp_mixer", "conv2d_tokenlearner")


def module_kwargs(module):
    return {"module": module, "num_tokens": 4, "num_heads": 2, "strides": 2}


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
            module_kwargs(module),
            x,
            expected,
            run_mixed_precision_check=module in ("conv2d_tokenlearner", "joint_mhsa"),
            # The other modules' gradients: test_every_module_trains.
            run_training_check=module in TRAINED_BY_DEFAULT,
        )

    @pytest.mark.parametrize("module", sorted(set(MODULES) - set(TRAINED_BY_DEFAULT)))
    def test_every_module_trains(self, module):
        """Every trainable weight gets a gradient (`run_layer_test` covers the rest)."""
        self._check_training(SpaceTimeModule, module_kwargs(module), (rand(*SHAPE),))

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


# ----------------------------------------------------------------------------------------
# The bottleneck TokenLearner module against the independent NumPy reference: TokenLearner
# (one conv, sigmoid, average pooling) -> LN -> VectorAttention over the T*S tokens
# (+ residual) -> TokenFuser (+ residual).


def load_module(layer, channels, num_tokens, frames):
    """Random reference-named parameters, loaded into the module's parts."""
    p_tl = ref.random_v1_params(RNG, channels, num_tokens, num_convs=1)
    p_ln = ref._ln(RNG, channels)
    p_va = ref.random_vector_attention_params(RNG, channels)
    p_fu = ref.random_fuser_params(
        RNG, channels, num_tokens, frames * num_tokens, bottleneck=64
    )
    load_flax_params(layer.token_learner, p_tl)
    load_flax_params(layer.transformer, p_va)
    load_flax_params(layer.token_fuser, p_fu)
    layer.norm.gamma.assign(p_ln["scale"])
    layer.norm.beta.assign(p_ln["bias"])
    return p_tl, p_ln, p_va, p_fu


def numpy_module(x, p_tl, p_ln, p_va, p_fu):
    z = ref.token_learner(x.astype("float64"), p_tl, version="1", pooling="mean")  # [B, T*S, C]
    z = z + ref.vector_attention(ref.layer_norm(z, p_ln), p_va)
    return x + ref.token_fuser(z, x.astype("float64"), p_fu, mix_over_time=True)


class TestVectorAttentionOnLearnedTokens:
    def test_matches_numpy_on_module_tokens(self):
        """VectorAttention on the T*S tokens a TokenLearnerModule produces."""
        x = rand(2, 4, 8, 8, 16)
        module = TokenLearnerModule(4)
        module(x)
        tokens = to_numpy(module.token_learner(x))  # [B, T*S, C] = [2, 16, 16]
        params = ref.random_vector_attention_params(RNG, 16)
        va = VectorAttention()
        va(tokens)
        load_flax_params(va, params)
        np.testing.assert_allclose(
            to_numpy(va(tokens)), ref.vector_attention(tokens, params), atol=1e-4, rtol=1e-4
        )


class TestModuleMatchesNumpy:
    @pytest.mark.parametrize("shape, num_tokens", [((2, 4, 8, 8, 16), 4), ((1, 3, 5, 7, 8), 8)])
    def test_token_learner_module(self, shape, num_tokens):
        x = rand(*shape)
        layer = TokenLearnerModule(num_tokens)
        layer(x)
        params = load_module(layer, shape[-1], num_tokens, shape[1])
        np.testing.assert_allclose(
            to_numpy(layer(x)), numpy_module(x, *params), atol=1e-4, rtol=1e-4
        )

    def test_slot_without_conv2d(self):
        """`SpaceTimeModule("tokenlearner")` is exactly the TokenLearner module."""
        x = rand(2, 4, 8, 8, 16)
        slot = SpaceTimeModule("tokenlearner", num_tokens=4)
        slot(x)
        (inner,) = slot.block_layers
        params = load_module(inner, 16, 4, 4)
        np.testing.assert_allclose(
            to_numpy(slot(x)), numpy_module(x, *params), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize(
    "kernel,strides,groups,filters,channels",
    [
        ((1, 3, 3), (1, 2, 2), 1, 8, 3),  # the stem: strided spatial
        ((1, 3, 3), (1, 1, 1), 16, 16, 16),  # channelwise spatial (depthwise)
        ((3, 1, 1), (1, 1, 1), 16, 16, 16),  # channelwise temporal
        ((3, 1, 1), (2, 1, 1), 1, 12, 6),  # strided temporal
        ((1, 3, 3), (1, 2, 2), 4, 8, 8),  # grouped, not channelwise
        ((3, 3, 3), (1, 1, 1), 1, 4, 3),  # a true 3-D kernel: Conv3D itself
        ((1, 1, 1), (1, 1, 1), 1, 5, 3),  # pointwise
    ],
)
def test_factor_conv3d_equals_conv3d(kernel, strides, groups, filters, channels):
    """`FactorConv3D` runs (1, k, k) / (k, 1, 1) kernels as 2-D (or depthwise) convs: the
    same outputs and gradients as Keras' `Conv3D` with the same kernel."""
    x = rand(2, 6, 9, 10, channels)
    fast = FactorConv3D(filters, kernel, strides=strides, padding="same", groups=groups)
    slow = keras.layers.Conv3D(filters, kernel, strides=strides, padding="same", groups=groups)
    y_fast = to_numpy(fast(x))
    slow.build(x.shape)
    slow.set_weights([w + 0.01 for w in fast.get_weights()])  # a non-zero bias too
    fast.set_weights(slow.get_weights())
    np.testing.assert_allclose(to_numpy(fast(x)), to_numpy(slow(x)), atol=1e-5)
    assert y_fast.shape == tuple(slow.compute_output_shape(x.shape))
    as_model = lambda layer: keras.Sequential([keras.Input(x.shape[1:]), layer])  # noqa: E731
    # Kernel gradients are sums over every position (values near 100): float32 sums in
    # another order differ by a few 1e-6 of them (seen 2e-6 under JAX).
    for a, b in zip(gradients(as_model(fast), x), gradients(as_model(slow), x)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-4, rtol=1e-5)
