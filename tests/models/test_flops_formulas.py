"""`tl_keras.models.flops_formulas`: each per-layer formula's parameter count is what the
built layer holds, and its MACs the hand count."""

import keras
import numpy as np
import pytest

from tl_keras.layers import TokenFuser, TokenLearner, TokenLearnerV1, TransformerBlock
from tl_keras.layers import VectorAttention
from tl_keras.layers.tokenizers import make_fuser, make_tokenizer
from tl_keras.models import flops_formulas as f

T, N, C, S = 2, 9, 8, 3  # frames, positions per frame (3x3), channels, tokens per frame


def trainable(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


def test_block():
    block = TransformerBlock(2, 16)
    block.build((None, N, C))
    macs, params = f.block_cost(N, C, 16)
    assert params == trainable(block)
    assert macs == 4 * N * C * C + 2 * N * N * C + 2 * N * C * 16


@pytest.mark.parametrize("version", ["1.1", "1", "grid", "pool", "fc", "pool_mlp"])
def test_tokenizer_params(version):
    layer = make_tokenizer(version, S, temporal=True, spatial_shape=(3, 3))
    layer.build((None, T, N, C))
    assert f.tokenizer_cost(version, T, N, C, S)[1] == trainable(layer)


def test_tokenizer_macs():
    v11 = f.tokenizer_cost("1.1", T, N, C, S, bottleneck_dim=4)[0]
    assert v11 == T * (N * C * 4 + N * 4 * S + S * N * C)
    v1 = f.tokenizer_cost("1", T, N, C, S, num_conv_layers=2)[0]
    assert v1 == T * (9 * N * C * S + 9 * N * S * S + S * N * C)
    assert f.TL_BOTTLENECK == TokenLearner(S).bottleneck_dim
    assert f.V1_CONV_LAYERS == TokenLearnerV1(S).num_conv_layers


@pytest.mark.parametrize("mix_over_time", [True, False])
def test_tokenfuser(mix_over_time):
    layer = TokenFuser(mix_tokens_over_time=mix_over_time, temporal=True)
    layer.build((None, T * S, C), (None, T, N, C))
    cost = f.fuser_cost("tokenfuser", T, N, C, S, mix_tokens_over_time=mix_over_time)
    assert cost.params == trainable(layer)
    mixing = C * (T * S) ** 2 if mix_over_time else T * C * S * S
    b = f.FUSER_BOTTLENECK
    assert cost.macs == mixing + T * (N * C * b + N * b * S + N * S * C)


def test_reprojection_fuser():
    layer = make_fuser("reprojection", temporal=True, num_heads=2)
    layer.build((None, T * S, C), (None, T, N, C))
    assert f.fuser_cost("reprojection", T, N, C, S, num_heads=2).params == trainable(layer)


def test_attention():
    va = VectorAttention()
    va.build((None, T * S, C))
    assert f.vector_attention_cost(T * S, C)[1] == trainable(va)
    mha = keras.layers.MultiHeadAttention(2, C // 2)
    mha.build((None, N, C), (None, N, C))
    macs, params = f.mhsa_cost(N, N, C, 2)
    assert params == trainable(mha) and macs == 4 * N * C * C + 2 * N * N * C


def test_dense_conv_cost():
    assert f.dense_cost(3, 4, positions=5) == (60, 16)
    assert f.dense_cost(3, 4, use_bias=False) == (12, 12)
    assert f.conv_cost(10, 9, 8, 8, groups=8) == (10 * 9 * 8, 9 * 8)
    cost = f.Cost().add("a", 1, 2).add("a", 3, 4).extend("x_", f.Cost().add("b", 5, 6))
    assert (cost.macs, cost.params, cost.parts) == (9, 12, {"a": (4, 6), "x_b": (5, 6)})
