"""The fast Dense / LayerNorm forms: same function as the plain Keras layers, and Keras'
own features (int8 quantization, LoRA, dtype policies) reach through them."""

import keras
import numpy as np
import pytest

from test_case import TestCase, to_numpy
from tl_keras.layers import TokenFuser, TokenLearner, TransformerBlock
from tl_keras.layers.fused_ops import LayerNorm, norm_dense, run_mlp, mlp_layers, build_mlp

RNG = np.random.default_rng(5)


def rand(*shape, scale=1.0, offset=0.0):
    return (offset + scale * RNG.normal(size=shape)).astype("float32")


def perturb(layer, scale=0.3):
    """Every weight moved off its initialisation (zero-init mixing, unit gammas...)."""
    for w in layer.weights:
        w.assign(to_numpy(w) + rand(*w.shape, scale=scale))


def dense_sublayers(layer):
    return [s for s in layer._flatten_layers() if isinstance(s, keras.layers.Dense)]


class TestLayerNorm(TestCase):
    def test_contract(self):
        self.run_layer_test(LayerNorm, {"epsilon": 1e-6}, rand(2, 5, 8), (2, 5, 8))

    @pytest.mark.parametrize("center, scale", [(True, True), (False, False), (True, False)])
    def test_matches_keras_layer_normalization(self, center, scale):
        x = rand(3, 7, 16, scale=3.0, offset=5.0)
        ours = LayerNorm(epsilon=1e-6, center=center, scale=scale)
        theirs = keras.layers.LayerNormalization(epsilon=1e-6, center=center, scale=scale)
        ours.build(x.shape)
        theirs.build(x.shape)
        perturb(ours)
        theirs.set_weights(ours.get_weights())
        self.assertAllClose(ours(x), theirs(x), atol=2e-5, rtol=1e-5)

    def test_half_precision_computed_in_float32(self):
        x = rand(4, 32, scale=100.0, offset=1000.0)  # would lose the variance in fp16
        ours = LayerNorm(dtype="mixed_float16")
        ref = LayerNorm()
        out = ours(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16"
        self.assertAllClose(keras.ops.cast(out, "float32"), ref(x), atol=5e-3, rtol=5e-3)


class TestNormDense:
    def test_folded_equals_dense_of_norm(self):
        x = rand(10, 12, offset=2.0)
        norm, dense = LayerNorm(), keras.layers.Dense(6)
        norm.build(x.shape)
        dense.build(x.shape)
        perturb(norm)
        perturb(dense)
        np.testing.assert_allclose(
            to_numpy(norm_dense(norm, dense, x)), to_numpy(dense(norm(x))), atol=1e-5
        )

    def test_quantized_dense_runs_its_own_call(self):
        x = rand(10, 12)
        norm, dense = LayerNorm(), keras.layers.Dense(6)
        norm.build(x.shape)
        dense.build(x.shape)
        perturb(dense)
        dense.quantize("int8")
        assert dense.quantization_mode == "int8"
        expected = to_numpy(dense(norm(x)))  # Keras' quantized call
        np.testing.assert_allclose(to_numpy(norm_dense(norm, dense, x)), expected, atol=1e-6)

    def test_mlp_matches_keras_sequential(self):
        x = rand(2, 9, 8)
        mlp = mlp_layers(keras.layers.Layer(), 16, 4, 0.0)
        build_mlp(mlp, (None, None, 8))
        for layer in mlp:
            perturb(layer)
        dense_0, _, dense_1, _ = mlp
        expected = dense_1(keras.ops.gelu(dense_0(x), approximate=True))
        np.testing.assert_allclose(to_numpy(run_mlp(mlp, x, False)), to_numpy(expected),
                                   atol=1e-5)


# Layers whose hot path goes through the fast forms: (factory, inputs).
LAYERS = {
    "tokenlearner": (lambda: TokenLearner(4, bottleneck_dim=8), lambda: (rand(2, 16, 8),)),
    "tokenfuser": (lambda: TokenFuser(bottleneck_dim=8), lambda: (rand(2, 4, 8), rand(2, 16, 8))),
    "tokenfuser_video": (
        lambda: TokenFuser(bottleneck_dim=8, mix_tokens_over_time=False),
        lambda: (rand(2, 6, 8), rand(2, 3, 4, 4, 8)),
    ),
    "transformer_block": (lambda: TransformerBlock(2, 16), lambda: (rand(2, 5, 8),)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_int8_quantization_reaches_every_dense(name):
    """After `layer.quantize("int8")` on its Dense sublayers the output stays close to
    float32 (it used to be garbage or an error when the kernels were read directly)."""
    make, inputs = LAYERS[name]
    x = inputs()
    layer = make()
    layer(*x)
    perturb(layer, 0.2)
    expected = to_numpy(layer(*x))
    denses = dense_sublayers(layer)
    assert denses
    for dense in denses:
        dense.quantize("int8")
    got = to_numpy(layer(*x))
    scale = np.abs(expected).max()
    assert np.abs(got - expected).max() <= 0.05 * scale, np.abs(got - expected).max() / scale
    # and it really ran the int8 path: the result is not bit-identical.
    assert not np.array_equal(got, expected)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_lora_changes_output_and_trains(name):
    make, inputs = LAYERS[name]
    x = inputs()
    layer = make()
    layer(*x)
    perturb(layer, 0.2)
    before = to_numpy(layer(*x))
    denses = dense_sublayers(layer)
    for dense in denses:
        dense.enable_lora(2)
    # LoRA starts as the identity update (B = 0); moving B must move the output.
    np.testing.assert_allclose(to_numpy(layer(*x)), before, atol=1e-6)
    for dense in denses:
        dense.lora_kernel_b.assign(rand(*dense.lora_kernel_b.shape, scale=0.5))
    assert np.abs(to_numpy(layer(*x)) - before).max() > 1e-3
    # What trains are the LoRA weights (the kernels are frozen by enable_lora).
    trainable = {w.path for w in layer.trainable_weights}
    for dense in denses:
        assert dense.lora_kernel_a.path in trainable and dense.lora_kernel_b.path in trainable
        assert dense._kernel.path not in trainable
