"""TokenLearner v1.1 and v1: layer contract, numerics against NumPy, regressions."""

import keras
import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, to_numpy
from tl_keras.convert import load_flax_params
from tl_keras.layers import TokenLearner, TokenLearnerV1

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


class TestTokenLearnerContract(TestCase):
    @pytest.mark.parametrize(
        "shape, kwargs, out",
        [
            ((2, 10, 6), {}, (2, 3, 6)),  # [B, N, C], N not square
            ((2, 3, 5, 6), {}, (2, 3, 6)),  # [B, H, W, C], non-square grid
            ((2, 4, 3, 5, 6), {}, (2, 12, 6)),  # [B, T, H, W, C]
            ((2, 4, 10, 6), {"temporal": True}, (2, 12, 6)),  # [B, T, N, C]
        ],
    )
    def test_v11(self, shape, kwargs, out):
        self.run_layer_test(
            TokenLearner,
            {"num_tokens": 3, "bottleneck_dim": 8, "dropout_rate": 0.1, **kwargs},
            rand(*shape),
            out,
        )

    @pytest.mark.parametrize(
        "shape, kwargs, out",
        [
            ((2, 16, 6), {}, (2, 3, 6)),  # square N
            ((2, 15, 6), {"spatial_shape": (3, 5)}, (2, 3, 6)),
            ((2, 3, 5, 6), {"pooling": "mean"}, (2, 3, 6)),
            ((2, 2, 3, 5, 6), {"num_conv_layers": 1}, (2, 6, 6)),
            ((2, 2, 9, 6), {"temporal": True}, (2, 6, 6)),
        ],
    )
    def test_v1(self, shape, kwargs, out):
        self.run_layer_test(TokenLearnerV1, {"num_tokens": 3, **kwargs}, rand(*shape), out)


class TestTokenLearnerNumerics:
    """Against the independent NumPy implementation, through the reference names."""

    @pytest.mark.parametrize("shape", [(2, 4, 6, 8), (2, 3, 4, 5, 8)])
    def test_v11_matches_numpy(self, shape):
        x = rand(*shape)
        params = ref.random_v11_params(RNG, 8, num_tokens=5, bottleneck=7)
        layer = TokenLearner(5, bottleneck_dim=7)
        layer(x)
        load_flax_params(layer, params)
        np.testing.assert_allclose(to_numpy(layer(x)), ref.token_learner(x, params), atol=1e-5, rtol=1e-5)

    def test_v11_large_offset_input_matches_numpy(self):
        # The LayerNorm's scale and offset are folded into the first MLP kernel; the
        # input is still centred before the matmul, so a large common offset (mean >> std)
        # loses no precision.
        x = rand(2, 3, 4, 8) * 0.1 + 100.0
        params = ref.random_v11_params(RNG, 8, num_tokens=3, bottleneck=7)
        layer = TokenLearner(3, bottleneck_dim=7)
        layer(x)
        load_flax_params(layer, params)
        expected = ref.token_learner(x, params)
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-4, rtol=1e-5)

    @pytest.mark.parametrize("shape, temporal", [((2, 3, 5, 8), False), ((2, 3, 10, 8), True)])
    def test_v11_precomputed_normalized_input(self, shape, temporal):
        x = rand(*shape)
        params = ref.random_v11_params(RNG, 8, num_tokens=4, bottleneck=6)
        layer = TokenLearner(4, bottleneck_dim=6, temporal=temporal)
        layer(x)
        load_flax_params(layer, params)
        standardize = keras.layers.LayerNormalization(epsilon=1e-6, center=False, scale=False)
        normalized = standardize(x)
        np.testing.assert_allclose(
            to_numpy(layer(x, normalized=normalized)), to_numpy(layer(x)), atol=1e-5
        )
        np.testing.assert_allclose(
            to_numpy(layer.attention_maps(x, normalized=normalized)),
            to_numpy(layer.attention_maps(x)), atol=1e-6,
        )
        with pytest.raises(ValueError, match="`normalized` must have the shape of `inputs`"):
            layer(x, normalized=normalized[:, :2])

    def test_v11_flat_and_grid_inputs_agree(self):
        x = rand(2, 3, 5, 8)
        layer = TokenLearner(4)
        np.testing.assert_allclose(
            to_numpy(layer(x)), to_numpy(layer(x.reshape(2, 15, 8))), atol=1e-6
        )
        video = rand(2, 3, 2, 5, 8)
        temporal = TokenLearner(4, temporal=True)
        temporal(video.reshape(2, 3, 10, 8))
        plain = TokenLearner(4)
        plain(video)
        plain.set_weights(temporal.get_weights())
        np.testing.assert_allclose(
            to_numpy(plain(video)), to_numpy(temporal(video.reshape(2, 3, 10, 8))), atol=1e-6
        )

    @pytest.mark.parametrize("pooling", ["sum", "mean"])
    @pytest.mark.parametrize("shape", [(2, 4, 6, 8), (2, 2, 3, 5, 8)])
    def test_v1_matches_numpy(self, shape, pooling):
        x = rand(*shape)
        params = ref.random_v1_params(RNG, 8, num_tokens=4)
        layer = TokenLearnerV1(4, pooling=pooling)
        layer(x)
        load_flax_params(layer, params)
        expected = ref.token_learner(x, params, version="1", pooling=pooling)
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5, rtol=1e-5)

    def test_v1_single_conv_matches_numpy(self):
        x = rand(2, 2, 4, 4, 8)
        params = ref.random_v1_params(RNG, 8, num_tokens=3, num_convs=1)
        layer = TokenLearnerV1(3, num_conv_layers=1)
        layer(x)
        load_flax_params(layer, params)
        expected = ref.token_learner(x, params, version="1")
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5, rtol=1e-5)

    def test_v1_explicit_spatial_shape_equals_grid_input(self):
        x = rand(2, 3, 5, 8)
        grid = TokenLearnerV1(4)
        grid(x)
        flat = TokenLearnerV1(4, spatial_shape=(3, 5))
        flat(x.reshape(2, 15, 8))
        flat.set_weights(grid.get_weights())
        np.testing.assert_allclose(
            to_numpy(flat(x.reshape(2, 15, 8))), to_numpy(grid(x)), atol=1e-6
        )


class TestTokenLearnerRegressions:
    """Bugs seen in other ports."""

    @pytest.mark.parametrize("cls", [TokenLearner, TokenLearnerV1])
    def test_constant_input_gives_that_constant_per_token(self, cls):
        # Softmax over positions (not tokens) makes every v1.1 token a convex combination
        # of positions: a position-constant input yields that constant in every token.
        # Pooling over channels, or softmax over tokens, breaks this.
        v = rand(1, 1, 1, 8)
        x = np.broadcast_to(v, (1, 4, 4, 8)).copy()
        layer = cls(3)
        out = to_numpy(layer(x))
        if cls is TokenLearner:
            np.testing.assert_allclose(out, np.broadcast_to(v[:, 0], (1, 3, 8)), atol=1e-5)
        else:
            # v1: sigmoid maps, sum pooling: token s = (sum_n alpha[n, s]) * v.
            maps = to_numpy(layer.attention_maps(x))  # [1, S, N]
            np.testing.assert_allclose(out, maps.sum(-1)[..., None] * v[:, 0], atol=1e-4)

    def test_v11_maps_are_softmax_over_positions(self):
        x = rand(2, 3, 5, 8)
        maps = to_numpy(TokenLearner(4).attention_maps(x))
        assert maps.shape == (2, 4, 15)
        np.testing.assert_allclose(maps.sum(-1), np.ones((2, 4)), atol=1e-5)
        assert not np.allclose(maps.sum(1), 1.0)

    def test_v11_is_invariant_to_position_order(self):
        # Pooling is a weighted sum over positions: permuting positions (together with
        # the maps they produce) must not change the tokens. A reshape used in place of
        # a transpose mixes positions with tokens and breaks this on non-square inputs.
        x = rand(2, 15, 8)
        perm = RNG.permutation(15)
        layer = TokenLearner(4)
        np.testing.assert_allclose(to_numpy(layer(x)), to_numpy(layer(x[:, perm])), atol=1e-5)

    def test_layer_norm_over_channels(self):
        layer = TokenLearner(4)
        layer(rand(2, 6, 8))
        assert tuple(layer.layer_norm.gamma.shape) == (8,)
        assert layer.layer_norm.epsilon == 1e-6
        # Scaling the input's channels changes nothing in the (normalised) maps.
        x = rand(2, 6, 8)
        np.testing.assert_allclose(
            to_numpy(layer.attention_maps(x)), to_numpy(layer.attention_maps(3.0 * x)), atol=1e-4
        )

    def test_v1_sum_is_n_times_mean(self):
        x = rand(2, 3, 5, 8)
        s = TokenLearnerV1(4, pooling="sum")
        m = TokenLearnerV1(4, pooling="mean")
        s(x)
        m(x)
        m.set_weights(s.get_weights())
        np.testing.assert_allclose(to_numpy(s(x)), 15 * to_numpy(m(x)), rtol=1e-5, atol=1e-5)

    def test_video_never_mixes_time(self):
        x = rand(2, 3, 4, 4, 8)
        layer = TokenLearner(2)
        out = to_numpy(layer(x))
        y = x.copy()
        y[:, 1] += 5.0  # change frame 1 only
        out2 = to_numpy(layer(y))
        np.testing.assert_allclose(out[:, 0:2], out2[:, 0:2], atol=1e-6)  # frame 0 tokens
        np.testing.assert_allclose(out[:, 4:6], out2[:, 4:6], atol=1e-6)  # frame 2 tokens
        assert not np.allclose(out[:, 2:4], out2[:, 2:4])  # frame 1 tokens

    def test_none_batch_in_functional_model(self):
        inp = keras.Input((None, 8))  # unknown batch and unknown number of positions
        model = keras.Model(inp, TokenLearner(3)(inp))
        assert model.output.shape == (None, 3, 8)
        assert to_numpy(model(rand(5, 7, 8))).shape == (5, 3, 8)

    def test_gelu_is_tanh_approximation(self):
        layer = TokenLearner(2, bottleneck_dim=4)
        x = rand(1, 5, 6)
        layer(x)
        params = ref.random_v11_params(RNG, 6, 2, 4)
        load_flax_params(layer, params)
        # The exact (erf) GELU differs from the tanh form by up to ~1e-3, far above tolerance.
        np.testing.assert_allclose(to_numpy(layer(x)), ref.token_learner(x.reshape(1, 1, 5, 6), params), atol=1e-6)

    def test_mlp_initialisers(self):
        layer = TokenLearner(4, bottleneck_dim=256)
        layer(rand(1, 6, 512))
        dense_0 = layer.token_masking[0]
        assert np.abs(to_numpy(dense_0.bias)).max() < 1e-5  # N(0, 1e-6)
        limit = np.sqrt(6 / (512 + 256))  # glorot uniform
        k = to_numpy(dense_0.kernel)
        assert np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit


class TestTokenLearnerErrors:
    @pytest.mark.parametrize("cls", [TokenLearner, TokenLearnerV1])
    @pytest.mark.parametrize("bad", [0, -2, 2.5, None])
    def test_num_tokens(self, cls, bad):
        with pytest.raises(ValueError, match="num_tokens"):
            cls(bad)

    @pytest.mark.parametrize("cls", [TokenLearner, TokenLearnerV1])
    def test_rank(self, cls):
        with pytest.raises(ValueError, match="rank"):
            cls(2)(rand(2, 8))
        with pytest.raises(ValueError, match="rank"):
            cls(2)(rand(1, 2, 2, 2, 2, 2))

    def test_v1_non_square_needs_spatial_shape(self):
        with pytest.raises(ValueError, match="spatial_shape"):
            TokenLearnerV1(2)(rand(2, 15, 8))
        with pytest.raises(ValueError, match="spatial_shape"):
            TokenLearnerV1(2, spatial_shape=(4, 4))(rand(2, 15, 8))

    def test_other_arguments(self):
        with pytest.raises(ValueError, match="bottleneck_dim"):
            TokenLearner(2, bottleneck_dim=0)
        with pytest.raises(ValueError, match="dropout_rate"):
            TokenLearner(2, dropout_rate=1.5)
        with pytest.raises(ValueError, match="pooling"):
            TokenLearnerV1(2, pooling="max")
