"""Fast forms of the `Dense` / `LayerNormalization` compositions in the layers' hot paths.

Why these exist (measured; BENCHMARKS.md, "What was changed in the model code for
speed"): on the TensorFlow backend, oneDNN fuses a 2-D `MatMul` followed by a `BiasAdd`
(and a tanh GELU) into one kernel, but not the 3-D `tensordot` form, and Keras'
LayerNorm formula makes more passes over its input than `(x - mean) * rsqrt(var + eps)`.
So the layers flatten their tokens to `[rows, C]` and

* call their `Dense` sublayers on that 2-D tensor (`Dense.call` on a 2-D input *is*
  `MatMul + BiasAdd`);
* use `LayerNorm`, a `keras.layers.LayerNormalization` over the last axis whose `call`
  takes fewer passes (same variables, same function);
* fold a LayerNorm's scale and offset into the `Dense` that follows it where one narrow
  projection reads a full-resolution input (`norm_dense`; TokenLearner / TokenFuser).

Every helper calls the sublayer itself whenever its variables are not the plain float
matrices the fast form needs, so Keras' model-level features keep working on every
model: `model.quantize("int8")` (a quantized `Dense` runs its own quantized call),
`Dense.enable_lora` (the LoRA kernel is part of `Dense.kernel`, so it trains through the
folded form too) and mixed-precision dtype policies.
"""

import keras
from keras import ops

from tl_keras.layers._utils import LAYER_NORM_EPSILON


def is_float_dense(layer):
    """Whether `layer.kernel` is the float matrix its call multiplies by (not quantized)."""
    return getattr(layer, "quantization_mode", None) is None


def standardize(x, epsilon):
    """`(x - mean) * rsqrt(var + eps)` over the last axis (a LayerNorm before its scale
    and offset), in float32 for half-precision inputs (as Keras). Four passes over `x` in
    TensorFlow graph mode."""
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        x = ops.cast(x, "float32")
    mean = ops.mean(x, axis=-1, keepdims=True)
    centred = x - mean
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    return centred * ops.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="tl_keras")
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis (epsilon 1e-6, the Flax
    default the reference uses), computed as `(x - mean) * rsqrt(var + eps) * gamma +
    beta` in fewer passes over `x` than Keras' own formula (the same function up to
    float32 rounding; in float32 for half-precision inputs, as Keras). Its variables
    (`gamma`, `beta`) are those of `LayerNormalization`, so checkpoints are unchanged.

    Args:
        epsilon: added to the variance.
        center, scale: learn the offset `beta` / the scale `gamma`.
        **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(self, epsilon=LAYER_NORM_EPSILON, center=True, scale=True, **kwargs):
        kwargs.pop("axis", None)  # always the last axis (a saved config carries it)
        super().__init__(axis=-1, epsilon=epsilon, center=center, scale=scale, **kwargs)

    def scale_offset(self, x_hat):
        """The output for an already standardised input `x_hat` (see `standardize`)."""
        y = x_hat
        if self.gamma is not None:
            y = y * ops.cast(self.gamma, y.dtype)
        if self.beta is not None:
            y = y + ops.cast(self.beta, y.dtype)
        return ops.cast(y, self.compute_dtype)

    def call(self, inputs):
        return self.scale_offset(standardize(inputs, self.epsilon))

    def get_config(self):
        config = super().get_config()
        return {k: config[k] for k in ("name", "trainable", "dtype", "epsilon", "center",
                                       "scale") if k in config}


def norm_dense(norm, dense, x, x_hat=None):
    """`dense(norm(x))` for a 2-D `x` `[rows, C]`, a built `LayerNorm` and a `Dense`.

    With a float kernel, the norm's scale and offset are folded into the projection:
    `standardize(x) @ (gamma[:, None] * kernel) + (beta @ kernel + bias)`, the same
    function, saving two passes over `x` for a few `[C, H]`-sized operations on the
    weights (the product is still a fusable `MatMul + BiasAdd`). `x_hat`:
    `standardize(x)` when the caller already has it.
    """
    if x_hat is None:
        x_hat = standardize(x, norm.epsilon)
    if not is_float_dense(dense) or dense.activation is not keras.activations.linear:
        return dense(norm.scale_offset(x_hat))  # quantized: the layer's own call
    kernel = dense.kernel
    x_hat = ops.cast(x_hat, kernel.dtype)  # [rows, C]
    gamma = ops.cast(norm.gamma, kernel.dtype)
    beta = ops.cast(norm.beta, kernel.dtype)
    folded_kernel = ops.expand_dims(gamma, 1) * kernel  # [C, H]
    folded_bias = ops.matmul(ops.expand_dims(beta, 0), kernel)[0] + dense.bias  # [H]
    return ops.add(ops.matmul(x_hat, folded_kernel), folded_bias)  # MatMul + BiasAdd


def mlp_layers(owner, hidden_dim, out_dim, dropout_rate, prefix=""):
    """The reference `MlpBlock` as four sublayers of `owner`:
    `Dense -> gelu(tanh) -> dropout -> Dense -> dropout` (run by `run_mlp`).

    Glorot-uniform kernels and N(0, 1e-6) biases, as in Scenic's MlpBlock.
    """
    dense = lambda units, name: keras.layers.Dense(  # noqa: E731
        units,
        kernel_initializer="glorot_uniform",
        bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
        dtype=owner.dtype_policy,
        name=f"{prefix}{name}",
    )
    return [
        dense(hidden_dim, "dense_0"),
        keras.layers.Dropout(dropout_rate, dtype=owner.dtype_policy, name=f"{prefix}dropout_0"),
        dense(out_dim, "dense_1"),
        keras.layers.Dropout(dropout_rate, dtype=owner.dtype_policy, name=f"{prefix}dropout_1"),
    ]


def build_mlp(mlp, in_shape):
    """Builds the sublayers of `mlp_layers` for inputs of shape `in_shape`."""
    dense_0, drop_0, dense_1, drop_1 = mlp
    dense_0.build(in_shape)
    hidden = tuple(in_shape[:-1]) + (dense_0.units,)
    drop_0.build(hidden)
    dense_1.build(hidden)
    drop_1.build(tuple(in_shape[:-1]) + (dense_1.units,))


def run_mlp(mlp, x, training, norm=None, normalized=None):
    """The MLP of `mlp_layers` on the last axis of `x`, run on flattened rows
    (`[..., C] -> [rows, C]`) so that both Dense layers are fused `MatMul + BiasAdd`.
    With `norm` (a built `LayerNorm`), computes `MLP(norm(x))` through `norm_dense`;
    `normalized` is `x` already standardised (see `TokenLearner.call`)."""
    dense_0, drop_0, dense_1, drop_1 = mlp
    lead = ops.shape(x)[:-1]
    c = x.shape[-1]
    rows = ops.reshape(x, (-1, c))  # [rows, C]
    if norm is None:
        h = dense_0(rows)
    else:
        x_hat = None if normalized is None else ops.reshape(normalized, (-1, c))
        h = norm_dense(norm, dense_0, rows, x_hat)  # [rows, H]
    h = drop_0(ops.gelu(h, approximate=True), training=training)
    y = drop_1(dense_1(h), training=training)  # [rows, out]
    return ops.reshape(y, tuple(lead) + (dense_1.units,))
