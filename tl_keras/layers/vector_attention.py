"""Vector attention (paper Appendix A.1): one attention map per channel."""

import keras
from keras import ops

from tl_keras.layers._utils import check_positive_int, check_rate, ensure_built


@keras.saving.register_keras_serializable(package="tl_keras")
class VectorAttention(keras.layers.Layer):
    """Pairwise vector attention over a set of tokens (the paper's "Vector Transformer").

    `q, k, v = f_q(z), f_k(z), f_v(z)`; the attention *tensor*
    `a[i, j, c] = softmax_j(gamma(q[i] * k[j])[c])` keeps one map per channel (multi-head
    attention with one head per channel), and `y[i, c] = sum_j a[i, j, c] v[j, c]`.
    `gamma` is a linear projection from the query/key width to the value width; it is
    needed when `key_dim` differs from the input width and optional otherwise.

    Memory is `B x N x N x C`: the bottleneck module uses it on `T*S` learned tokens
    (e.g. 64 x 8 = 512), not on all positions.

    Args:
        key_dim: width d of the queries and keys (default: the input width C).
        use_gamma: apply the projection gamma; `None` = only when `key_dim != C`.
        attention_dropout_rate: dropout on the attention tensor.
        use_bias: biases in f_q, f_k, f_v (and gamma).
        **kwargs: base layer arguments.

    Input and output `[B, N, C]`.
    """

    def __init__(
        self,
        key_dim=None,
        use_gamma=None,
        attention_dropout_rate=0.0,
        use_bias=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if key_dim is not None:
            check_positive_int(key_dim, "key_dim", owner)
        check_rate(attention_dropout_rate, "attention_dropout_rate", owner)
        self.key_dim = key_dim
        self.use_gamma = use_gamma
        self.attention_dropout_rate = attention_dropout_rate
        self.use_bias = bool(use_bias)
        self.attention_dropout = keras.layers.Dropout(
            attention_dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.query = self.key = self.value = self.gamma = None

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name=name,
        )

    def _check(self, input_shape):
        owner = type(self).__name__
        if len(input_shape) != 3:
            raise ValueError(
                f"{owner}: expected an input [B, N, C] of rank 3, got shape {tuple(input_shape)}."
            )
        if input_shape[-1] is None:
            raise ValueError(f"{owner}: the channel dimension must be known when built.")
        return input_shape[-1]

    def build(self, input_shape):
        channels = self._check(input_shape)
        key_dim = self.key_dim or channels
        use_gamma = self.use_gamma if self.use_gamma is not None else key_dim != channels
        if not use_gamma and key_dim != channels:
            raise ValueError(
                f"{type(self).__name__}: `key_dim`={key_dim} differs from the input width "
                f"{channels}, so `use_gamma` cannot be False (gamma maps d to C)."
            )
        self.query = self._dense(key_dim, "query")
        self.key = self._dense(key_dim, "key")
        self.value = self._dense(channels, "value")
        for layer in (self.query, self.key, self.value):
            layer.build(input_shape)
        if use_gamma:
            self.gamma = self._dense(channels, "gamma")
            self.gamma.build((None, None, None, key_dim))
        self.attention_dropout.build((None, None, None, channels))

    def attention_scores(self, inputs, training=False):
        """The attention tensor `[B, N(query), N(key), C]`, softmax over the key axis."""
        ensure_built(self, inputs.shape)
        q = self.query(inputs)  # [B, N, d]
        k = self.key(inputs)  # [B, N, d]
        # Broadcast products, not `einsum("bic,bjc->bijc")`: the same values, measured
        # ~3x faster on a 2-core CPU (TF 2.21, [8, 128, 64]).
        logits = q[:, :, None, :] * k[:, None, :, :]  # [B, N, N, d]
        if self.gamma is not None:
            logits = self.gamma(logits)  # [B, N, N, C]
        scores = ops.softmax(ops.cast(logits, "float32"), axis=2)  # over keys j, in fp32
        scores = ops.cast(scores, self.compute_dtype)
        return self.attention_dropout(scores, training=training)

    def call(self, inputs, training=None):
        scores = self.attention_scores(inputs, training=training)  # [B, N, N, C]
        v = self.value(inputs)  # [B, N, C]
        # sum_j scores[b, i, j, c] * v[b, j, c]; measured ~5x faster than the einsum there.
        return ops.sum(scores * v[:, None, :, :], axis=2)  # [B, N, C]

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            key_dim=self.key_dim,
            use_gamma=self.use_gamma,
            attention_dropout_rate=self.attention_dropout_rate,
            use_bias=self.use_bias,
        )
        return config
