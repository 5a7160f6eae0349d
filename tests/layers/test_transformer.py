"""The model-building layers: embeddings, attention, transformer block, encoder placement."""

import math

import keras
import numpy as np
import pytest

import numpy_reference as ref
from test_case import TestCase, to_numpy
from tl_keras.layers import (
    ClassToken,
    MultiHeadSelfAttention,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    TransformerBlock,
    TubeletEmbedding,
)
from tl_keras.layers.embeddings import resize_position_embedding, tile_position_embedding
from tl_keras.layers.transformer import check_tokenlearner, encoder_layout
from tl_keras.models import TL

RNG = np.random.default_rng(5)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


class TestLayerContracts(TestCase):
    @pytest.mark.parametrize(
        "cls, kwargs, x, out",
        [
            (PatchEmbedding, {"hidden_dim": 6, "patch_size": 4}, (2, 8, 12, 3), (2, 6, 6)),
            (PatchEmbedding, {"hidden_dim": 6, "patch_size": (4, 2)}, (2, 8, 4, 3), (2, 4, 6)),
            (TubeletEmbedding, {"hidden_dim": 6, "patch_size": 4, "tubelet_size": 2},
             (2, 4, 8, 8, 3), (2, 8, 6)),
            (ClassToken, {}, (2, 5, 6), (2, 6, 6)),
            (PositionEmbedding, {}, (2, 5, 6), (2, 5, 6)),
            (MultiHeadSelfAttention, {"num_heads": 2, "attention_dropout_rate": 0.1},
             (2, 5, 8), (2, 5, 8)),
            (TransformerBlock, {"num_heads": 2, "mlp_dim": 16, "dropout_rate": 0.1,
                                "drop_path_rate": 0.1}, (2, 5, 8), (2, 5, 8)),
        ],
    )
    def test_contract(self, cls, kwargs, x, out):
        self.run_layer_test(cls, kwargs, rand(*x), out)

    def test_token_pooling(self):
        x = rand(2, 5, 6)
        np.testing.assert_allclose(to_numpy(TokenPooling("token")(x)), x[:, 0])
        np.testing.assert_allclose(to_numpy(TokenPooling("gap")(x)), x.mean(1), rtol=1e-6)
        self.run_layer_test(TokenPooling, {"mode": "gap"}, x, (2, 6),
                            run_training_check=False)


def numpy_attention(x, p, heads):
    """Reference multi-head attention (Flax MultiHeadDotProductAttention), float64."""
    x = x.astype(np.float64)
    d = x.shape[-1] // heads
    q, k, v = (np.einsum("bnc,chd->bnhd", x, p[n]["kernel"]) + p[n]["bias"]
               for n in ("query", "key", "value"))
    logits = np.einsum("bqhd,bkhd->bhqk", q / math.sqrt(d), k)
    weights = ref.softmax(logits, axis=-1)
    o = np.einsum("bhqk,bkhd->bqhd", weights, v)
    return np.einsum("bqhd,hdc->bqc", o, p["out"]["kernel"]) + p["out"]["bias"]


def attention_params(layer):
    return {
        n: {"kernel": to_numpy(getattr(layer, f"{n}_kernel")).astype(np.float64),
            "bias": to_numpy(getattr(layer, f"{n}_bias")).astype(np.float64)}
        for n in ("query", "key", "value", "out")
    }


def randomize(layer, scale=0.3):
    for w in layer.weights:
        if w.trainable:
            w.assign(RNG.normal(0, scale, w.shape).astype("float32") + to_numpy(w))


class TestNumerics:
    def test_attention_matches_reference(self):
        x = rand(2, 7, 12)
        layer = MultiHeadSelfAttention(3)
        layer(x)
        randomize(layer)
        expected = numpy_attention(x, attention_params(layer), 3)
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-4, rtol=1e-4)

    def test_attention_kernel_shapes_and_init(self):
        layer = MultiHeadSelfAttention(4)
        layer(rand(1, 3, 64))
        assert tuple(layer.query_kernel.shape) == (64, 4, 16)
        assert tuple(layer.out_kernel.shape) == (4, 16, 64)
        # Glorot over the flattened [64, 64] kernel, as Flax's DenseGeneral.
        limit = math.sqrt(6 / 128)
        kernel = to_numpy(layer.query_kernel)
        assert np.abs(kernel).max() <= limit
        assert np.abs(kernel).max() > 0.8 * limit
        assert not np.any(to_numpy(layer.query_bias))

    def test_block_matches_reference(self):
        x = rand(2, 5, 8)
        block = TransformerBlock(num_heads=2, mlp_dim=16)
        block(x)
        randomize(block)
        ln = lambda l: {"scale": to_numpy(l.gamma), "bias": to_numpy(l.beta)}  # noqa: E731
        dense = lambda l: {"kernel": to_numpy(l.kernel), "bias": to_numpy(l.bias)}  # noqa: E731
        x64 = x.astype(np.float64)
        y = x64 + numpy_attention(ref.layer_norm(x64, ln(block.layer_norm_0)),
                                  attention_params(block.attention), 2)
        mlp = {"Dense_0": dense(block.mlp_dense_0), "Dense_1": dense(block.mlp_dense_1)}
        expected = y + ref.mlp_block(ref.layer_norm(y, ln(block.layer_norm_1)), mlp)
        np.testing.assert_allclose(to_numpy(block(x)), expected, atol=1e-4, rtol=1e-4)

    def test_drop_path_drops_whole_examples_and_rescales(self):
        x = rand(64, 3, 8)
        block = TransformerBlock(num_heads=2, mlp_dim=16, drop_path_rate=0.5)
        eval_out = to_numpy(block(x, training=False))
        assert np.allclose(to_numpy(block(x, training=False)), eval_out)
        # With the MLP branch removed, an example is either x (dropped) or
        # x + 2 * attention (kept, rescaled by 1 / 0.5).
        block.mlp_dense_1.kernel.assign(np.zeros(block.mlp_dense_1.kernel.shape, "float32"))
        block.mlp_dense_1.bias.assign(np.zeros(block.mlp_dense_1.bias.shape, "float32"))
        branch = to_numpy(block(x, training=False)) - x
        out = to_numpy(block(x, training=True)) - x
        dropped = np.all(np.abs(out) < 1e-6, axis=(1, 2))
        kept = np.all(np.abs(out - 2 * branch) < 1e-4, axis=(1, 2))
        assert np.all(dropped | kept)
        assert 10 < dropped.sum() < 54

    def test_patch_embedding_is_a_patch_matmul(self):
        x = rand(2, 8, 12, 3)
        layer = PatchEmbedding(5, (4, 6))
        out = to_numpy(layer(x))
        kernel = to_numpy(layer.conv.kernel).reshape(4 * 6 * 3, 5)
        patches = x.reshape(2, 2, 4, 2, 6, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 4, -1)
        np.testing.assert_allclose(out, patches @ kernel + to_numpy(layer.conv.bias), atol=1e-5)

    def test_tubelet_embedding_is_frame_major(self):
        x = rand(1, 4, 8, 8, 3)
        layer = TubeletEmbedding(5, 4, tubelet_size=2)
        out = to_numpy(layer(x))  # [1, 2*2*2, 5]
        kernel = to_numpy(layer.conv.kernel).reshape(-1, 5)  # [t*ph*pw*3, C]
        tubes = x.reshape(1, 2, 2, 2, 4, 2, 4, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
        expected = tubes.reshape(1, 8, -1) @ kernel + to_numpy(layer.conv.bias)
        np.testing.assert_allclose(out, expected, atol=1e-5)

    @pytest.mark.parametrize("cls, shape", [(PatchEmbedding, (1, 10, 8, 3)),
                                            (TubeletEmbedding, (1, 3, 8, 8, 3))])
    def test_indivisible_input(self, cls, shape):
        with pytest.raises(ValueError, match="not divisible"):
            cls(4, 4)(np.zeros(shape, "float32"))


class TestPositionEmbeddingHelpers:
    def test_resize_keeps_prefix_and_identity(self):
        posemb = rand(1, 1 + 16, 3)
        same = resize_position_embedding(posemb, (4, 4), num_prefix_tokens=1)
        np.testing.assert_array_equal(same, posemb)
        out = resize_position_embedding(posemb, (8, 2), num_prefix_tokens=1)
        assert out.shape == (1, 1 + 16, 3)
        np.testing.assert_array_equal(out[:, :1], posemb[:, :1])

    def test_resize_reproduces_a_linear_ramp(self):
        # A function linear in the (half-pixel) coordinates is resized exactly.
        old, new = 4, 6
        coord = (np.arange(old) + 0.5) / old
        grid = coord[:, None] + 2 * coord[None, :]
        out = resize_position_embedding(grid.reshape(1, -1, 1), (new, new))
        c = np.clip((np.arange(new) + 0.5) / new, 0.5 / old, 1 - 0.5 / old)
        np.testing.assert_allclose(out.reshape(new, new), c[:, None] + 2 * c[None, :],
                                   atol=1e-6)

    def test_resize_rejects_non_square_without_grid(self):
        with pytest.raises(ValueError, match="square"):
            resize_position_embedding(rand(1, 6, 2), (2, 2))
        out = resize_position_embedding(rand(1, 6, 2), (4, 3), old_grid=(2, 3))
        assert out.shape == (1, 12, 2)

    def test_tile(self):
        posemb = rand(1, 1 + 4, 2)
        out = tile_position_embedding(posemb, 3, num_prefix_tokens=1)
        assert out.shape == (1, 1 + 12, 2)
        np.testing.assert_array_equal(out[0, 1 + 8:], posemb[0, 1:])


class TestLayout:
    def test_model_a(self):
        layout = encoder_layout(4, TL(8, at=2))
        assert layout == [(False, False), (False, False), (True, False), (False, False)]

    def test_model_b_and_extra_layers(self):
        layout = encoder_layout(4, TL(8, at=2, fuser=True), extra_layers=1)
        assert layout == [(False, False), (False, False)] + [(True, True)] * 3

    def test_plain(self):
        assert encoder_layout(3) == [(False, False)] * 3

    @pytest.mark.parametrize(
        "tl, layers, extra",
        [(TL(8, at=4), 4, 0), (TL(8, at=5), 4, 2), (None, 4, 1), (TL(8, at=1), 4, -1)],
    )
    def test_check_rejects(self, tl, layers, extra):
        with pytest.raises(ValueError, match="at|extra_layers"):
            check_tokenlearner(tl, layers, extra)

    def test_check_accepts_at_after_last_block_with_extra_layers(self):
        check_tokenlearner(TL(8, at=4), 4, 2)
        keras.backend.clear_session()
