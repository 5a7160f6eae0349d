"""The bottleneck TokenLearner module against the independent NumPy reference:
TokenLearner (one conv, sigmoid, average pooling) -> LN -> VectorAttention over the
T*S tokens (+ residual) -> TokenFuser (+ residual)."""

import numpy as np
import pytest

import numpy_reference as ref
from test_case import to_numpy
from tl_keras.convert import load_flax_params
from tl_keras.layers import VectorAttention
from tl_keras.layers.conv2plus1d import SpaceTimeModule, TokenLearnerModule

RNG = np.random.default_rng(5)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


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
