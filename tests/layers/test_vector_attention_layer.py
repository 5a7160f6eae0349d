"""VectorAttention: layer contract, numerics against NumPy, per-channel attention."""

import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, to_numpy
from tl_keras.convert import load_flax_params
from tl_keras.layers import VectorAttention

RNG = np.random.default_rng(2)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


class TestVectorAttentionContract(TestCase):
    @pytest.mark.parametrize(
        "kwargs", [{}, {"key_dim": 4}, {"use_gamma": True, "attention_dropout_rate": 0.1}]
    )
    def test_contract(self, kwargs):
        self.run_layer_test(VectorAttention, kwargs, rand(2, 5, 6), (2, 5, 6))


class TestVectorAttentionNumerics:
    @pytest.mark.parametrize("key_dim, gamma", [(None, False), (4, True), (None, True)])
    def test_matches_numpy(self, key_dim, gamma):
        z = rand(2, 7, 6)
        params = ref.random_vector_attention_params(RNG, 6, key_dim=key_dim, gamma=gamma)
        layer = VectorAttention(key_dim=key_dim, use_gamma=gamma)
        layer(z)
        load_flax_params(layer, params)
        np.testing.assert_allclose(
            to_numpy(layer(z)), ref.vector_attention(z, params), atol=1e-5, rtol=1e-5
        )

    def test_one_attention_map_per_channel(self):
        z = rand(1, 5, 6)
        layer = VectorAttention()
        scores = to_numpy(layer.attention_scores(z))
        assert scores.shape == (1, 5, 5, 6)
        np.testing.assert_allclose(scores.sum(axis=2), np.ones((1, 5, 6)), atol=1e-5)
        # Channels attend differently (unlike one-head dot-product attention).
        assert not np.allclose(scores[..., 0], scores[..., 1], atol=1e-3)

    def test_permutation_equivariant(self):
        z = rand(2, 6, 4)
        perm = RNG.permutation(6)
        layer = VectorAttention()
        np.testing.assert_allclose(
            to_numpy(layer(z))[:, perm], to_numpy(layer(z[:, perm])), atol=1e-5
        )


class TestVectorAttentionErrors:
    def test_rank(self):
        with pytest.raises(ValueError, match="rank"):
            VectorAttention()(rand(2, 2, 3, 4))

    def test_key_dim_without_gamma(self):
        with pytest.raises(ValueError, match="use_gamma"):
            VectorAttention(key_dim=3, use_gamma=False)(rand(2, 5, 6))

    def test_arguments(self):
        with pytest.raises(ValueError, match="key_dim"):
            VectorAttention(key_dim=0)
        with pytest.raises(ValueError, match="attention_dropout_rate"):
            VectorAttention(attention_dropout_rate=1.0)
