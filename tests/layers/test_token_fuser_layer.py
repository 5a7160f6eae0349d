"""TokenFuser: layer contract, numerics against NumPy, zero at init, errors."""

import keras
import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, to_numpy
from tl_keras.convert import load_flax_params
from tl_keras.layers import TokenFuser, TokenLearner

RNG = np.random.default_rng(1)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


class TestTokenFuserContract(TestCase):
    @pytest.mark.parametrize(
        "tokens, original, kwargs",
        [
            ((2, 3, 6), (2, 10, 6), {}),  # [B, N, C]
            ((2, 3, 6), (2, 3, 5, 6), {}),  # [B, H, W, C]
            ((2, 6, 6), (2, 2, 3, 5, 6), {}),  # [B, T, H, W, C], mixing all T*S tokens
            ((2, 6, 6), (2, 2, 3, 5, 6), {"mix_tokens_over_time": False}),
            ((2, 6, 6), (2, 2, 10, 6), {"temporal": True}),  # [B, T, N, C]
            ((2, 3, 6), (2, 10, 6), {"use_normalization": False}),
        ],
    )
    def test_contract(self, tokens, original, kwargs):
        self.run_layer_test(
            TokenFuser,
            {"bottleneck_dim": 8, "dropout_rate": 0.1, **kwargs},
            (rand(*tokens), rand(*original)),
            original,
        )


class TestTokenFuserNumerics:
    @pytest.mark.parametrize(
        "original, mix_over_time",
        [((2, 3, 5, 8), True), ((2, 3, 2, 4, 8), True), ((2, 3, 2, 4, 8), False)],
    )
    def test_matches_numpy(self, original, mix_over_time):
        x = rand(*original)
        frames = original[1] if len(original) == 5 else 1
        s = 4
        tokens = rand(original[0], frames * s, 8)
        mixed = frames * s if mix_over_time else s
        params = ref.random_fuser_params(RNG, 8, s, mixed, bottleneck=6)
        layer = TokenFuser(bottleneck_dim=6, mix_tokens_over_time=mix_over_time)
        layer(tokens, x)
        load_flax_params(layer, params)
        expected = ref.token_fuser(tokens, x, params, mix_over_time=mix_over_time)
        np.testing.assert_allclose(to_numpy(layer(tokens, x)), expected, atol=1e-5, rtol=1e-5)

    @pytest.mark.parametrize("original", [(2, 3, 5, 8), (2, 2, 15, 8)])
    def test_precomputed_normalized_original(self, original):
        x = rand(*original)
        temporal = original[1] == 2
        frames = 2 if temporal else 1
        tokens = rand(2, frames * 4, 8)
        params = ref.random_fuser_params(RNG, 8, 4, frames * 4, bottleneck=6)
        layer = TokenFuser(bottleneck_dim=6, temporal=temporal)
        layer(tokens, x)
        load_flax_params(layer, params)
        standardize = keras.layers.LayerNormalization(epsilon=1e-6, center=False, scale=False)
        normalized = standardize(x)
        np.testing.assert_allclose(
            to_numpy(layer(tokens, x, normalized=normalized)), to_numpy(layer(tokens, x)),
            atol=1e-5,
        )
        with pytest.raises(ValueError, match="`normalized` must have the shape of `original`"):
            layer(tokens, x, normalized=normalized[..., :4])

    def test_zero_at_initialisation(self):
        x = rand(2, 3, 4, 4, 8)
        tokens = TokenLearner(3)(x)
        out = to_numpy(TokenFuser()(tokens, x))
        assert out.shape == x.shape
        assert np.all(out == 0.0)

    def test_returns_same_rank_as_original(self):
        x = rand(2, 3, 5, 8)
        tokens = rand(2, 4, 8)
        fuser = TokenFuser()
        grid = to_numpy(fuser(tokens, x))
        flat = to_numpy(fuser(tokens, x.reshape(2, 15, 8)))
        assert grid.shape == (2, 3, 5, 8) and flat.shape == (2, 15, 8)

    def test_beta_is_sigmoid_not_normalised(self):
        # With identity-like mixing, each output position is sum_s beta[n, s] y[s] with
        # beta in (0, 1) not summing to 1: a constant token value c gives c * sum_s beta.
        x = rand(1, 6, 8)
        params = ref.random_fuser_params(RNG, 8, 3, 3, bottleneck=4)
        layer = TokenFuser(bottleneck_dim=4)
        tokens = rand(1, 3, 8)
        layer(tokens, x)
        load_flax_params(layer, params)
        out = to_numpy(layer(tokens, x))
        expected = ref.token_fuser(tokens, x.reshape(1, 2, 3, 8), params).reshape(1, 6, 8)
        np.testing.assert_allclose(out, expected, atol=1e-5)

    def test_none_batch(self):
        tok = keras.Input((6, 8))
        orig = keras.Input((2, 3, 4, 8))
        out = TokenFuser()(tok, orig)
        assert out.shape == (None, 2, 3, 4, 8)
        model = keras.Model([tok, orig], out)
        assert to_numpy(model([rand(3, 6, 8), rand(3, 2, 3, 4, 8)])).shape == (3, 2, 3, 4, 8)


class TestTokenFuserErrors:
    def test_channel_mismatch(self):
        with pytest.raises(ValueError, match="channel mismatch"):
            TokenFuser()(rand(2, 3, 6), rand(2, 10, 8))

    def test_tokens_rank(self):
        with pytest.raises(ValueError, match="tokens"):
            TokenFuser()(rand(2, 3, 1, 6), rand(2, 10, 6))

    def test_original_rank(self):
        with pytest.raises(ValueError, match="rank"):
            TokenFuser()(rand(2, 3, 6), rand(2, 6))

    def test_tokens_not_multiple_of_frames(self):
        with pytest.raises(ValueError, match="multiple"):
            TokenFuser()(rand(2, 5, 6), rand(2, 2, 3, 3, 6))

    def test_arguments(self):
        with pytest.raises(ValueError, match="bottleneck_dim"):
            TokenFuser(bottleneck_dim=-1)
        with pytest.raises(ValueError, match="dropout_rate"):
            TokenFuser(dropout_rate=-0.1)
