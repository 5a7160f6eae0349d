"""TokenLearner (v1.1 and v1) and TokenFuser, as in the paper (Ryoo et al.) and the
reference Scenic implementation.

Shapes handled by every layer here (B batch, T time, H x W grid, N = H*W positions,
C channels, S tokens per frame):

* image: `[B, N, C]` or `[B, H, W, C]`;
* video: `[B, T, H, W, C]`, or `[B, T, N, C]` when the layer is built with
  `temporal=True` (a rank-4 input is otherwise read as `[B, H, W, C]`).

Video is handled per time step with shared weights: `[B, T, N, C] -> [B*T, N, C]`,
and the TokenLearner returns `[B, T*S, C]` (frame-major), never mixing time.
"""

import keras
from keras import ops

from tl_keras.layers._utils import (
    LAYER_NORM_EPSILON,
    ReturnsMapsMixin,
    check_positive_int,
    check_rate,
    dim,
    ensure_built,
    layout,
    square_side,
)
from tl_keras.layers.fused_ops import (
    LayerNorm,
    build_mlp,
    is_float_dense,
    mlp_layers,
    run_mlp,
)


def _check_known(value, what, owner):
    if value is None:
        raise ValueError(f"{owner}: the {what} must be known when the layer is built.")


def _check_normalized(normalized, reference, what, owner):
    """Raises ValueError unless `normalized` (if given) has the shape of `reference`
    (unknown dimensions match anything)."""
    if normalized is None:
        return
    shape, expected = tuple(normalized.shape), tuple(reference.shape)
    if len(shape) != len(expected) or any(
        a is not None and b is not None and a != b for a, b in zip(shape, expected)
    ):
        raise ValueError(
            f"{owner}: `normalized` must have the shape of `{what}` {expected}, got {shape}."
        )


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenLearner(ReturnsMapsMixin, keras.layers.Layer):
    """TokenLearner v1.1: S learned spatial softmax maps pool the input into S tokens.

    `LN -> Dense(bottleneck_dim) -> gelu -> dropout -> Dense(num_tokens) -> dropout`
    gives one logit per (position, token); a softmax over the positions turns them into
    attention maps, which pool the *raw* input: `z[s] = sum_n softmax_n(a[n, s]) x[n]`.

    Args:
        num_tokens: S, tokens produced per image / frame.
        bottleneck_dim: hidden width of the MLP that computes the maps (reference: 64).
        dropout_rate: dropout inside that MLP.
        temporal: read a rank-4 input as `[B, T, N, C]` (video tokens) instead of
            `[B, H, W, C]`.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Input `[B, N, C]`, `[B, H, W, C]`, `[B, T, H, W, C]` or (temporal) `[B, T, N, C]`;
    output `[B, S, C]` for images, `[B, T*S, C]` for video.
    """

    def __init__(self, num_tokens, bottleneck_dim=64, dropout_rate=0.0, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        check_positive_int(bottleneck_dim, "bottleneck_dim", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.num_tokens = num_tokens
        self.bottleneck_dim = bottleneck_dim
        self.dropout_rate = dropout_rate
        self.temporal = bool(temporal)
        self.layer_norm = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="layer_norm"
        )
        self.token_masking = mlp_layers(
            self, bottleneck_dim, num_tokens, dropout_rate, prefix="token_masking_"
        )

    def build(self, input_shape):
        _, _, _, channels = layout(input_shape, self.temporal, type(self).__name__)
        _check_known(channels, "channel dimension", type(self).__name__)
        flat = (None, None, channels)
        self.layer_norm.build(flat)
        build_mlp(self.token_masking, flat)

    def call(self, inputs, training=None, normalized=None, return_maps=False):
        """`normalized` (optional): `inputs` standardised over the channels,
        `(x - mean) / sqrt(var + 1e-6)` without scale or offset (e.g. by
        `keras.layers.LayerNormalization(epsilon=1e-6, center=False, scale=False)`),
        when the caller computes it once for several layers (the encoder does, for the
        TokenLearner and TokenFuser of a fuser block); the output is the same.
        `return_maps=True`: returns `(tokens, maps)` with the `[B*T, S, N]` maps."""
        maps = self.attention_maps(inputs, training=training, normalized=normalized)
        time, _, _, channels = layout(inputs.shape, self.temporal, type(self).__name__)
        feats = ops.reshape(inputs, (-1, dim(maps, 2), channels))  # [B*T, N, C]
        tokens = ops.einsum("bsn,bnc->bsc", maps, feats)  # [B*T, S, C]
        if time is not None:
            tokens = ops.reshape(tokens, (-1, time * self.num_tokens, channels))  # [B, T*S, C]
        return (tokens, maps) if return_maps else tokens

    def attention_maps(self, inputs, training=False, normalized=None):
        """The softmax maps `[B*T, S, N]` (each sums to 1 over the N positions)."""
        ensure_built(self, inputs.shape)
        time, _, n, channels = layout(inputs.shape, self.temporal, type(self).__name__)
        _check_normalized(normalized, inputs, "inputs", type(self).__name__)
        if n is None:
            n = -1
        x = ops.reshape(inputs, (-1, n, channels))  # [B*T, N, C]
        logits = run_mlp(
            self.token_masking, x, training, norm=self.layer_norm, normalized=normalized
        )  # [B*T, N, S]
        logits = ops.transpose(logits, (0, 2, 1))  # [B*T, S, N]
        maps = ops.softmax(ops.cast(logits, "float32"), axis=-1)  # over positions, in fp32
        return ops.cast(maps, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        time, _, _, channels = layout(input_shape, self.temporal, type(self).__name__)
        if time is None:
            return (input_shape[0], self.num_tokens, channels)
        return (input_shape[0], time * self.num_tokens, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            bottleneck_dim=self.bottleneck_dim,
            dropout_rate=self.dropout_rate,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenLearnerV1(ReturnsMapsMixin, keras.layers.Layer):
    """TokenLearner v1 (paper Eq. 1): sigmoid maps from 3x3 convolutions, sum pooling.

    `LN -> (num_conv_layers - 1) x [Conv3x3(S, no bias) -> gelu] -> Conv3x3(S, no bias)`,
    `sigmoid`, then `z[s] = sum_n alpha[n, s] x[n]` over the positions of the raw input
    (`pooling="mean"` divides by N). The paper's ViT uses four convs; the X(2+1)D
    bottleneck computes alpha with a single conv (`num_conv_layers=1`).

    Args:
        num_tokens: S, tokens per image / frame.
        num_conv_layers: number of 3x3 convolutions (reference: 4).
        pooling: `"sum"` (reference) or `"mean"`.
        spatial_shape: `(H, W)` of a flattened `[B, N, C]` / `[B, T, N, C]` input;
            if omitted such an input must be square.
        temporal: read a rank-4 input as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(
        self,
        num_tokens,
        num_conv_layers=4,
        pooling="sum",
        spatial_shape=None,
        temporal=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        check_positive_int(num_conv_layers, "num_conv_layers", owner)
        if pooling not in ("sum", "mean"):
            raise ValueError(f"{owner}: `pooling` must be 'sum' or 'mean', got {pooling!r}.")
        if spatial_shape is not None:
            spatial_shape = tuple(spatial_shape)
            if len(spatial_shape) != 2:
                raise ValueError(
                    f"{owner}: `spatial_shape` must be (H, W), got {spatial_shape!r}."
                )
            for v in spatial_shape:
                check_positive_int(v, "spatial_shape", owner)
        self.num_tokens = num_tokens
        self.num_conv_layers = num_conv_layers
        self.pooling = pooling
        self.spatial_shape = spatial_shape
        self.temporal = bool(temporal)
        self.layer_norm = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="layer_norm"
        )
        self.convs = [
            keras.layers.Conv2D(
                num_tokens,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="lecun_normal",  # Flax nn.Conv default.
                dtype=self.dtype_policy,
                name=f"conv_{i}",
            )
            for i in range(num_conv_layers)
        ]

    def _grid(self, shape):
        """(T or None, H, W, C) of an input shape, resolving flattened positions."""
        owner = type(self).__name__
        time, grid, n, channels = layout(shape, self.temporal, owner)
        if grid is None:
            if self.spatial_shape is not None:
                if n is not None and self.spatial_shape[0] * self.spatial_shape[1] != n:
                    raise ValueError(
                        f"{owner}: `spatial_shape`={self.spatial_shape} does not match "
                        f"the {n} positions of the input."
                    )
                grid = self.spatial_shape
            else:
                side = square_side(n, owner)
                grid = (side, side)
        _check_known(grid[0], "grid height", owner)
        _check_known(grid[1], "grid width", owner)
        return time, grid[0], grid[1], channels

    def build(self, input_shape):
        _, h, w, channels = self._grid(input_shape)
        _check_known(channels, "channel dimension", type(self).__name__)
        self.layer_norm.build((None, h, w, channels))
        in_channels = channels
        for conv in self.convs:
            conv.build((None, h, w, in_channels))
            in_channels = self.num_tokens

    def attention_maps(self, inputs, training=False):
        """The sigmoid maps `[B*T, S, N]` (not normalised)."""
        ensure_built(self, inputs.shape)
        _, h, w, channels = self._grid(inputs.shape)
        x = ops.reshape(inputs, (-1, h, w, channels))  # [B*T, H, W, C]
        x = self.layer_norm(x)
        for i, conv in enumerate(self.convs):
            x = conv(x)  # [B*T, H, W, S]
            if i < len(self.convs) - 1:
                x = ops.gelu(x, approximate=True)
        x = ops.reshape(x, (-1, h * w, self.num_tokens))  # [B*T, N, S]
        x = ops.transpose(x, (0, 2, 1))  # [B*T, S, N]
        return ops.sigmoid(x)

    def call(self, inputs, training=None, return_maps=False):
        """`return_maps=True`: returns `(tokens, maps)` with the `[B*T, S, N]` maps."""
        time, h, w, channels = self._grid(inputs.shape)
        maps = self.attention_maps(inputs, training=training)  # [B*T, S, N]
        feats = ops.reshape(inputs, (-1, h * w, channels))  # [B*T, N, C]
        tokens = ops.einsum("bsn,bnc->bsc", maps, feats)  # [B*T, S, C], sum over positions
        if self.pooling == "mean":
            tokens = tokens / ops.cast(h * w, tokens.dtype)
        if time is not None:
            tokens = ops.reshape(tokens, (-1, time * self.num_tokens, channels))  # [B, T*S, C]
        return (tokens, maps) if return_maps else tokens

    def compute_output_shape(self, input_shape):
        time, _, _, channels = self._grid(input_shape)
        if time is None:
            return (input_shape[0], self.num_tokens, channels)
        return (input_shape[0], time * self.num_tokens, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            num_conv_layers=self.num_conv_layers,
            pooling=self.pooling,
            spatial_shape=self.spatial_shape,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenFuser(keras.layers.Layer):
    """TokenFuser (paper Eq. 2): maps processed tokens back onto the input grid.

    Called as `fuser(tokens, original)`: `tokens` `[B, S, C]` (video `[B, T*S, C]`) are
    the TokenLearner tokens after the transformer, `original` the tensor that went into
    the TokenLearner. The tokens are mixed across the token axis
    (`LN -> Dense(S, zero-init) -> LN`); then every position n of each frame takes
    `sum_s beta[n, s] y[s]` with `beta = sigmoid(MLP(LN(original)))`. The output has the
    shape of `original`; the residual `+ original` is added by the caller. At
    initialisation the output is exactly zero.

    Args:
        bottleneck_dim: hidden width of the MLP that computes beta (reference: 64).
        dropout_rate: dropout in that MLP and on the output.
        use_normalization: the two LayerNorms around the token mixing (reference: True).
        mix_tokens_over_time: for video, mix all `T*S` tokens with one `T*S x T*S`
            matrix (the paper, §2.2); `False` mixes the S tokens of each frame with one
            shared `S x S` matrix (what Scenic's ViViT encoder does).
        temporal: read a rank-4 `original` as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(
        self,
        bottleneck_dim=64,
        dropout_rate=0.0,
        use_normalization=True,
        mix_tokens_over_time=True,
        temporal=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(bottleneck_dim, "bottleneck_dim", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.bottleneck_dim = bottleneck_dim
        self.dropout_rate = dropout_rate
        self.use_normalization = bool(use_normalization)
        self.mix_tokens_over_time = bool(mix_tokens_over_time)
        self.temporal = bool(temporal)
        ln = lambda name: LayerNorm(  # noqa: E731
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name=name
        )
        self.mix_norm1 = ln("fuser_mix_norm1") if use_normalization else None
        self.mix_norm2 = ln("fuser_mix_norm2") if use_normalization else None
        self.input_norm = ln("layer_norm")
        self.output_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="output_dropout"
        )
        # Created in build(): their sizes depend on the number of tokens.
        self.token_mixing = None
        self.token_masking = None

    def _shapes(self, tokens_shape, original_shape):
        owner = type(self).__name__
        if len(tokens_shape) != 3:
            raise ValueError(
                f"{owner}: `tokens` must be [B, S, C] (video [B, T*S, C]); "
                f"got shape {tuple(tokens_shape)}."
            )
        time, _, n, channels = layout(original_shape, self.temporal, owner)
        if tokens_shape[-1] is not None and channels is not None and tokens_shape[-1] != channels:
            raise ValueError(
                f"{owner}: channel mismatch between `tokens` ({tokens_shape[-1]}) and "
                f"`original` ({channels}); both must have the same C."
            )
        total = tokens_shape[1]
        _check_known(total, "number of tokens", owner)
        frames = time or 1
        if total % frames:
            raise ValueError(
                f"{owner}: `tokens` has {total} tokens, not a multiple of the {frames} "
                f"frames of `original`."
            )
        return time, n, channels, total // frames

    def build(self, tokens_shape, original_shape):
        time, _, channels, per_frame = self._shapes(tokens_shape, original_shape)
        _check_known(channels, "channel dimension", type(self).__name__)
        total = tokens_shape[1]
        mixed = total if self.mix_tokens_over_time else per_frame
        self.token_mixing = keras.layers.Dense(
            mixed,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="token_mixing",
        )
        self.token_masking = mlp_layers(
            self, self.bottleneck_dim, per_frame, self.dropout_rate, prefix="token_masking_"
        )
        if self.use_normalization:
            self.mix_norm1.build((None, total, channels))
            self.mix_norm2.build((None, total, channels))
        self.token_mixing.build((None, channels, mixed))
        self.input_norm.build((None, None, channels))
        build_mlp(self.token_masking, (None, None, channels))
        self.output_dropout.build((None, None, channels))

    def call(self, tokens, original, training=None, normalized=None):
        """`normalized` (optional): `original` standardised over the channels, as in
        `TokenLearner.call`; the output is the same."""
        time, n, channels, per_frame = self._shapes(tokens.shape, original.shape)
        _check_normalized(normalized, original, "original", type(self).__name__)
        y = tokens
        if self.use_normalization:
            y = self.mix_norm1(y)
        if time is not None and not self.mix_tokens_over_time:
            y = ops.reshape(y, (-1, per_frame, channels))  # [B*T, S, C]
        # The Dense `token_mixing` over the token axis, `y[t] = sum_s kernel[s, t] y[s] +
        # bias[t]`: with a float kernel one matmul broadcast over the batch (no
        # transposes); a quantized layer runs its own call on `[B', C, S']`.
        if is_float_dense(self.token_mixing):
            mixing = ops.transpose(self.token_mixing.kernel)  # [S'(out), S'(in)]
            y = ops.matmul(mixing, y) + ops.expand_dims(self.token_mixing.bias, 1)  # [B', S', C]
        else:
            y = ops.transpose(self.token_mixing(ops.transpose(y, (0, 2, 1))), (0, 2, 1))
        y = ops.reshape(y, (-1, per_frame, channels))  # [B*T, S, C]
        if self.use_normalization:
            y = self.mix_norm2(y)

        x = ops.reshape(original, (-1, n if n is not None else -1, channels))  # [B*T, N, C]
        beta = run_mlp(
            self.token_masking, x, training, norm=self.input_norm, normalized=normalized
        )  # [B*T, N, S]
        beta = ops.sigmoid(beta)
        out = ops.einsum("bns,bsc->bnc", beta, y)  # [B*T, N, C]
        out = self.output_dropout(out, training=training)
        return ops.reshape(out, ops.shape(original))

    def compute_output_shape(self, tokens_shape, original_shape):
        self._shapes(tokens_shape, original_shape)
        return tuple(original_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            bottleneck_dim=self.bottleneck_dim,
            dropout_rate=self.dropout_rate,
            use_normalization=self.use_normalization,
            mix_tokens_over_time=self.mix_tokens_over_time,
            temporal=self.temporal,
        )
        return config
