"""Token-learning and fusing alternatives: contract, numerics against NumPy."""

import numpy as np
import pytest

from test_case import TestCase, to_numpy
from tl_keras.layers import TokenLearnerV1
from tl_keras.layers.baselines import (
    FCTokenizer,
    GridTokenizer,
    PoolMLPTokenizer,
    PoolTokenizer,
    ReprojectionFuser,
    UnpoolFuser,
    cell_masks,
    grid_shape,
)


RNG = np.random.default_rng(11)


def rand(*shape):
    return RNG.normal(size=shape).astype("float32")


# Input layouts and the output each token learner must give (S = 4 tokens, C = 6).
LAYOUTS = [
    ((2, 16, 6), {}, (2, 4, 6)),  # [B, N, C], square N
    ((2, 4, 6, 6), {}, (2, 4, 6)),  # [B, H, W, C], non-square
    ((2, 3, 4, 4, 6), {}, (2, 12, 6)),  # [B, T, H, W, C]
    ((2, 3, 16, 6), {"temporal": True}, (2, 12, 6)),  # [B, T, N, C]
]


def some(layouts, keep=(1, 3)):
    """The layouts at `keep` by default; the others only in the slow run."""
    return [
        layout if i in keep else pytest.param(*layout, marks=pytest.mark.slow)
        for i, layout in enumerate(layouts)
    ]


class TestGridAndPool(TestCase):
    @pytest.mark.parametrize("shape, kwargs, out", some(LAYOUTS))
    def test_grid_contract(self, shape, kwargs, out):
        self.run_layer_test(
            GridTokenizer, {"num_tokens": 4, **kwargs}, rand(*shape), out,
            run_training_check=False,  # no weights by design
        )

    @pytest.mark.parametrize("shape, kwargs, out", some(LAYOUTS[1:3], keep=(1,)))
    @pytest.mark.parametrize("pooling", ["max", "avg"])
    def test_pool_contract(self, shape, kwargs, out, pooling):
        self.run_layer_test(
            PoolTokenizer, {"num_tokens": 4, "pooling": pooling, **kwargs}, rand(*shape), out,
            run_training_check=False,
        )

    def test_grid_shape(self):
        assert grid_shape(8, 8, 8) == (2, 4)
        assert grid_shape(8, 7, 7) == (2, 4)
        assert grid_shape(4, 4, 16) == (1, 4)
        assert grid_shape(6, 3, 5) in ((2, 3), (3, 2))
        with pytest.raises(ValueError, match="num_tokens"):
            grid_shape(8, 1, 1)
        masks = cell_masks(8, 7, 7)
        np.testing.assert_array_equal(masks.sum(axis=0), np.ones(49))  # a partition

    @pytest.mark.parametrize("h, w", [(8, 8), (7, 7), (5, 6)])
    def test_numerics(self, h, w):
        """Tokens are the mean / max of each cell of the frame, frame by frame."""
        x = rand(2, 3, h, w, 5)
        masks = cell_masks(8, h, w).reshape(8, h, w).astype(bool)
        flat = x.reshape(2, 3, h, w, 5)
        mean = np.stack([flat[:, :, m].mean(axis=2) for m in masks], axis=2)  # [B, T, S, C]
        mx = np.stack([flat[:, :, m].max(axis=2) for m in masks], axis=2)
        np.testing.assert_allclose(
            to_numpy(GridTokenizer(8)(x)), mean.reshape(2, 24, 5), atol=1e-5
        )
        np.testing.assert_allclose(to_numpy(PoolTokenizer(8)(x)), mx.reshape(2, 24, 5), atol=1e-6)
        np.testing.assert_allclose(
            to_numpy(PoolTokenizer(8, pooling="avg")(x)), mean.reshape(2, 24, 5), atol=1e-5
        )


class TestLearnedTokenizers(TestCase):
    @pytest.mark.parametrize("shape, kwargs, out", some(LAYOUTS))
    def test_fc_contract(self, shape, kwargs, out):
        self.run_layer_test(
            FCTokenizer, {"num_tokens": 4, "dropout_rate": 0.1, **kwargs}, rand(*shape), out
        )

    @pytest.mark.slow
    def test_fc_mix_channels_contract(self):
        self.run_layer_test(
            FCTokenizer, {"num_tokens": 4, "mix_channels": True}, rand(2, 3, 4, 4, 6), (2, 12, 6)
        )

    @pytest.mark.parametrize("shape, kwargs, out", some(LAYOUTS[1:], keep=(1,)))
    def test_pool_mlp_contract(self, shape, kwargs, out):
        self.run_layer_test(
            PoolMLPTokenizer, {"num_tokens": 4, "hidden_dim": 7, "dropout_rate": 0.1, **kwargs},
            rand(*shape), out,
        )

    def test_fc_numerics(self):
        x = rand(2, 3, 4, 5, 6)
        layer = FCTokenizer(4)
        layer(x)
        kernel = RNG.normal(size=(20, 4)).astype("float32")
        bias = RNG.normal(size=(4,)).astype("float32")
        layer.set_weights([kernel, bias])
        frames = x.reshape(6, 20, 6)
        expected = np.einsum("fnc,ns->fsc", frames, kernel) + bias[None, :, None]
        np.testing.assert_allclose(to_numpy(layer(x)), expected.reshape(2, 12, 6), atol=1e-5)
        maps = to_numpy(layer.attention_maps(x))
        np.testing.assert_allclose(maps, np.broadcast_to(kernel.T, (6, 4, 20)), atol=1e-6)

    def test_pool_mlp_numerics(self):
        x = rand(2, 3, 4, 5, 6)
        layer = PoolMLPTokenizer(4, hidden_dim=7)
        layer(x)
        w0, b0, w1, b1 = [RNG.normal(size=w.shape).astype("float32") * 0.3 for w in layer.get_weights()]
        layer.set_weights([w0, b0, w1, b1])
        pooled = x.reshape(6, 20, 6).mean(axis=1)
        h = pooled @ w0 + b0
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
        expected = (h @ w1 + b1).reshape(2, 12, 6)
        np.testing.assert_allclose(to_numpy(layer(x)), expected, atol=1e-5)

    def test_tokens_never_mix_time(self):
        x = rand(2, 3, 4, 4, 6)
        for layer in (FCTokenizer(4), PoolMLPTokenizer(4), GridTokenizer(4), PoolTokenizer(4)):
            base = to_numpy(layer(x))
            x2 = x.copy()
            x2[:, 1] += 1.0
            diff = np.abs(to_numpy(layer(x2)) - base).reshape(2, 3, 4, 6).max(axis=(0, 2, 3))
            assert diff[0] == 0 and diff[2] == 0 and diff[1] > 0, type(layer).__name__


class TestFusers(TestCase):
    @pytest.mark.parametrize(
        "tokens, original, maps, kwargs",
        [
            pytest.param((2, 4, 6), (2, 16, 6), (2, 4, 16), {}, marks=pytest.mark.slow),
            pytest.param((2, 4, 6), (2, 4, 4, 6), (2, 4, 16), {}, marks=pytest.mark.slow),
            ((2, 12, 6), (2, 3, 4, 4, 6), (6, 4, 16), {}),
            ((2, 12, 6), (2, 3, 16, 6), (6, 4, 16), {"temporal": True}),
        ],
    )
    def test_unpool_contract(self, tokens, original, maps, kwargs):
        self.run_layer_test(
            UnpoolFuser, kwargs, (rand(*tokens), rand(*original), rand(*maps)), original,
            run_training_check=False,
        )

    @pytest.mark.parametrize(
        "tokens, original, kwargs",
        [
            pytest.param((2, 4, 6), (2, 4, 4, 6), {"num_heads": 2}, marks=pytest.mark.slow),
            ((2, 12, 6), (2, 3, 4, 4, 6), {"num_heads": 3, "dropout_rate": 0.1}),
            pytest.param((2, 12, 6), (2, 3, 16, 6), {"temporal": True, "mlp_ratio": 0},
                         marks=pytest.mark.slow),
        ],
    )
    def test_reprojection_contract(self, tokens, original, kwargs):
        self.run_layer_test(
            ReprojectionFuser, kwargs, (rand(*tokens), rand(*original)), original
        )

    def test_unpool_numerics(self):
        """out[t, n] = sum_s maps[t, s, n] y[t, s] with the token learner's own maps."""
        x = rand(2, 3, 4, 4, 6)
        tl = TokenLearnerV1(4, num_conv_layers=1)
        tokens = to_numpy(tl(x))  # [B, T*S, C]
        maps = to_numpy(tl.attention_maps(x))  # [B*T, S, N]
        out = to_numpy(UnpoolFuser()(tokens, x, maps))
        y = tokens.reshape(6, 4, 6)
        expected = np.einsum("fsn,fsc->fnc", maps, y).reshape(x.shape)
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-5)

    def test_unpool_of_grid_is_nearest_upsampling(self):
        x = rand(1, 2, 4, 4, 3)
        grid = PoolTokenizer(4)  # 2x2 cells of 2x2 positions, max pooling, indicator maps
        tokens = grid(x)
        out = to_numpy(UnpoolFuser()(tokens, x, grid.attention_maps(x)))
        t = to_numpy(tokens).reshape(1, 2, 2, 2, 3)
        expected = t.repeat(2, axis=2).repeat(2, axis=3)
        np.testing.assert_allclose(out, expected, atol=1e-6)

    def test_reprojection_attends_within_the_frame(self):
        x = rand(2, 3, 4, 4, 6)
        tokens = rand(2, 12, 6)
        layer = ReprojectionFuser(num_heads=2)
        base = to_numpy(layer(tokens, x))
        t2 = tokens.copy()
        t2[:, 4:8] += rand(2, 4, 6)  # the tokens of frame 1
        diff = np.abs(to_numpy(layer(t2, x)) - base).max(axis=(0, 2, 3, 4))
        assert diff[0] == 0 and diff[2] == 0 and diff[1] > 0

    def test_errors(self):
        with pytest.raises(ValueError, match="maps"):
            UnpoolFuser()(rand(2, 4, 6), rand(2, 16, 6), rand(2, 3, 16))
        with pytest.raises(ValueError, match="mlp_ratio"):
            ReprojectionFuser(mlp_ratio=-1)
        with pytest.raises(ValueError, match="channel"):
            ReprojectionFuser()(rand(2, 4, 5), rand(2, 16, 6))
