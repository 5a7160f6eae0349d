"""The pre-LN transformer block of ViT and the ONE encoder that ViT and ViViT share.

`build_encoder` places TokenLearner exactly as the paper (§3.1 and Fig. 3):

* model "a" (no fuser): TokenLearner once, before block `at` (0-based); the blocks from
  `at` on see S tokens (video: T*S);
* model "b" (fuser): every block from `at` on is `TokenLearner -> block -> fuser`,
  plus the residual (the block input before the TokenLearner), each with its own weights;
  the fuser is `TokenFuser` (Eq. 2) or a Fig. 7 alternative (`tokenlearner.fuser` =
  `"unpool"`: `UnpoolFuser` with the maps of the TokenLearner before the block;
  `"reprojection"`: `ReprojectionFuser` with the encoder's `num_heads`);
* `extra_layers` blocks are appended, i.e. they come after the TokenLearner.

`encoder_layout` is the single description of that placement; `build_encoder` builds it
and `tl_keras.flops` counts it.

Layer names inside an encoder (used by `tl_keras.convert` for checkpoint names):
`encoderblock_{i}` (i over all blocks, extras included), `tokenlearner_{k}` and
`tokenfuser_{k}` (k counts the TokenLearners, 0 for model "a"), `encoder_norm`.
"""

import math

import keras
from keras import ops

from tl_keras.layers._utils import LAYER_NORM_EPSILON, check_positive_int, check_rate, dim
from tl_keras.layers.fused_ops import LayerNorm
from tl_keras.layers.token_learner import TokenFuser, TokenLearner
from tl_keras.layers.tokenizers import (
    FUSERS,
    TOKENIZERS,
    make_fuser,
    make_tokenizer,
    version_has_maps,
)


class _FlatGlorotUniform(keras.initializers.Initializer):
    """Glorot-uniform with the fans of the flattened 2-D kernel `[fan_in, fan_out]`.

    Flax's `DenseGeneral` (the reference attention projections) initialises a kernel of
    shape `[C, H, D]` as if it were `[C, H*D]`; Keras' fan rule for rank-3 kernels would
    not.
    """

    def __init__(self, fan_in, fan_out):
        self.fan_in = fan_in
        self.fan_out = fan_out

    def __call__(self, shape, dtype=None):
        limit = math.sqrt(6.0 / (self.fan_in + self.fan_out))
        return keras.random.uniform(shape, -limit, limit, dtype=dtype)

    def get_config(self):
        return {"fan_in": self.fan_in, "fan_out": self.fan_out}


GELU_FORMS = ("tanh", "exact")


def check_gelu(gelu, owner):
    """`gelu` names a GELU form of the transformer MLP: `"tanh"` or `"exact"`."""
    if gelu not in GELU_FORMS:
        raise ValueError(
            f"{owner}: `gelu` must be 'tanh' (the approximation of the JAX ViT reference) "
            f"or 'exact' (erf, as timm), got {gelu!r}."
        )


def _affine(x, kernel, bias):
    """`x @ kernel + bias` for a 2-D `x`: TensorFlow's oneDNN rewrite fuses this
    `MatMul + BiasAdd` into one kernel (see `tl_keras.layers.fused_ops`)."""
    return ops.add(ops.matmul(x, kernel), bias)


@keras.saving.register_keras_serializable(package="tl_keras")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head dot-product self-attention, numerically as Flax's
    `MultiHeadDotProductAttention` (queries scaled by `1/sqrt(head_dim)` before `QK^T`).

    Variables have the reference shapes: `query/key/value` kernels `[C, H, D]` and biases
    `[H, D]`, `out` kernel `[H, D, C]` and bias `[C]` (glorot-uniform over the flattened
    kernel, zero biases). The projections run as plain `[C, C]` matmuls; the two attention
    products `QK^T` and `AV` are batched matmuls.

    Args:
        num_heads: H; must divide C.
        attention_dropout_rate: dropout on the attention weights.
        **kwargs: base layer arguments.

    Input and output `[B, N, C]`.
    """

    def __init__(self, num_heads, attention_dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_heads, "num_heads", owner)
        check_rate(attention_dropout_rate, "attention_dropout_rate", owner)
        self.num_heads = num_heads
        self.attention_dropout_rate = attention_dropout_rate
        self.attention_dropout = keras.layers.Dropout(
            attention_dropout_rate, dtype=self.dtype_policy, name="attention_dropout"
        )

    def build(self, input_shape):
        owner = type(self).__name__
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(f"{owner}: expected [B, N, C] with known C, got {input_shape}.")
        c = input_shape[-1]
        if c % self.num_heads:
            raise ValueError(
                f"{owner}: the width {c} is not divisible by `num_heads`={self.num_heads}."
            )
        h, d = self.num_heads, c // self.num_heads
        init = _FlatGlorotUniform(c, c)
        for name in ("query", "key", "value"):
            setattr(self, f"{name}_kernel", self.add_weight(
                name=f"{name}_kernel", shape=(c, h, d), initializer=init))
            setattr(self, f"{name}_bias", self.add_weight(
                name=f"{name}_bias", shape=(h, d), initializer="zeros"))
        self.out_kernel = self.add_weight(name="out_kernel", shape=(h, d, c), initializer=init)
        self.out_bias = self.add_weight(name="out_bias", shape=(c,), initializer="zeros")
        self.attention_dropout.build((None, h, None, None))

    def _project(self, x, kernel, bias, n, c):
        y = _affine(x, ops.reshape(kernel, (c, c)), ops.reshape(bias, (c,)))  # [B*N, C]
        return ops.reshape(y, (-1, n, self.num_heads, c // self.num_heads))  # [B, N, H, D]

    def attend(self, x, num_tokens, training=None):
        """The attention on flattened tokens: `[B*N, C] -> [B*N, C]` (N = `num_tokens`).

        `TransformerBlock` calls this directly so that its tokens stay 2-D from one
        LayerNorm to the next (see `tl_keras.layers.fused_ops`)."""
        n, c = num_tokens, x.shape[-1]
        head_dim = c // self.num_heads
        q = self._project(x, self.query_kernel, self.query_bias, n, c)
        k = self._project(x, self.key_kernel, self.key_bias, n, c)
        v = self._project(x, self.value_kernel, self.value_bias, n, c)
        q = ops.transpose(q, (0, 2, 1, 3)) * ops.cast(head_dim ** -0.5, q.dtype)  # [B, H, N, D]
        k = ops.transpose(k, (0, 2, 3, 1))  # [B, H, D, N]
        v = ops.transpose(v, (0, 2, 1, 3))  # [B, H, N, D]
        logits = ops.matmul(q, k)  # [B, H, N(query), N(key)]
        if self.compute_dtype == "float16":
            logits = ops.cast(logits, "float32")  # fp16 would overflow in exp
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)
        weights = self.attention_dropout(weights, training=training)
        out = ops.matmul(weights, v)  # [B, H, N, D]
        out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (-1, c))  # [B*N, C]
        return _affine(out, ops.reshape(self.out_kernel, (c, c)), self.out_bias)

    def call(self, inputs, training=None):
        n, c = dim(inputs, 1), inputs.shape[-1]
        out = self.attend(ops.reshape(inputs, (-1, c)), n, training=training)  # [B*N, C]
        return ops.reshape(out, (-1, n, c))  # [B, N, C]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads, attention_dropout_rate=self.attention_dropout_rate
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class TransformerBlock(keras.layers.Layer):
    """Pre-LN ViT encoder block (the reference `Encoder1DBlock`):

    `x = x + DropPath(Dropout(MHSA(LN(x))))`, then
    `x = x + DropPath(Dropout(Dense(Dropout(gelu(Dense(LN(x)))))))`.

    LayerNorm epsilon 1e-6, MLP kernels glorot-uniform with N(0, 1e-6) biases. The MLP's
    GELU is the tanh approximation (`gelu="tanh"`, the JAX ViT / Scenic reference) or
    the exact erf form (`gelu="exact"`, as timm and keras-hub run their ViTs).
    Stochastic depth (`drop_path_rate`) drops a residual branch per example and rescales
    the kept ones by `1 / (1 - rate)` (as Scenic / timm).

    Args:
        num_heads: attention heads.
        mlp_dim: hidden width of the MLP.
        dropout_rate: dropout after the attention and inside/after the MLP.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic-depth rate of this block.
        gelu: `"tanh"` (approximation) or `"exact"` (erf), the MLP's GELU.
        **kwargs: base layer arguments.

    Input and output `[B, N, C]`.
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        gelu="tanh",
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_heads, "num_heads", owner)
        check_positive_int(mlp_dim, "mlp_dim", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        check_rate(attention_dropout_rate, "attention_dropout_rate", owner)
        check_rate(drop_path_rate, "drop_path_rate", owner)
        check_gelu(gelu, owner)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.gelu = gelu
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        policy = self.dtype_policy
        self.layer_norm_0 = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, dtype=policy, name="layer_norm_0"
        )
        self.attention = MultiHeadSelfAttention(
            num_heads, attention_dropout_rate, dtype=policy, name="attention"
        )
        self.attention_output_dropout = keras.layers.Dropout(
            dropout_rate, dtype=policy, name="attention_output_dropout"
        )
        self.layer_norm_1 = LayerNorm(
            epsilon=LAYER_NORM_EPSILON, dtype=policy, name="layer_norm_1"
        )
        self.mlp_dense_0 = keras.layers.Dense(
            mlp_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=policy,
            name="mlp_dense_0",
        )
        self.mlp_dropout_0 = keras.layers.Dropout(dropout_rate, dtype=policy, name="mlp_dropout_0")
        self.mlp_dense_1 = None  # width = C, known in build()
        self.mlp_dropout_1 = keras.layers.Dropout(dropout_rate, dtype=policy, name="mlp_dropout_1")
        self.seed_generator = keras.random.SeedGenerator() if drop_path_rate else None

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                f"{type(self).__name__}: expected [B, N, C] with known C, got {input_shape}."
            )
        c = input_shape[-1]
        self.mlp_dense_1 = keras.layers.Dense(
            c,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            dtype=self.dtype_policy,
            name="mlp_dense_1",
        )
        shape = tuple(input_shape)
        hidden = shape[:-1] + (self.mlp_dim,)
        self.layer_norm_0.build(shape)
        self.attention.build(shape)
        self.attention_output_dropout.build(shape)
        self.layer_norm_1.build(shape)
        self.mlp_dense_0.build(shape)
        self.mlp_dropout_0.build(hidden)
        self.mlp_dense_1.build(hidden)
        self.mlp_dropout_1.build(shape)

    def _drop_path(self, x, n, training):
        """Stochastic depth on flattened tokens `[B*N, C]` (whole examples dropped)."""
        if not training or not self.drop_path_rate:
            return x
        c = x.shape[-1]
        x = ops.reshape(x, (-1, n, c))  # [B, N, C]
        keep = 1.0 - self.drop_path_rate
        noise = keras.random.uniform(
            (ops.shape(x)[0], 1, 1), seed=self.seed_generator, dtype=x.dtype
        )  # [B, 1, 1]
        return ops.reshape(x * ops.floor(keep + noise) / keep, (-1, c))

    def call(self, inputs, training=None):
        # The tokens are flattened to [B*N, C] for the whole block: every projection is
        # then a plain 2-D matmul + bias, which TensorFlow fuses (see
        # `tl_keras.layers.fused_ops`); same weights, same function.
        n, c = dim(inputs, 1), inputs.shape[-1]
        x = ops.reshape(inputs, (-1, c))  # [B*N, C]
        y = self.attention.attend(self.layer_norm_0(x), n, training=training)
        y = self.attention_output_dropout(y, training=training)
        x = x + self._drop_path(y, n, training)
        y = self.mlp_dense_0(self.layer_norm_1(x))  # [B*N, M]
        y = ops.gelu(y, approximate=self.gelu == "tanh")
        y = self.mlp_dropout_0(y, training=training)
        y = self.mlp_dropout_1(self.mlp_dense_1(y), training=training)  # [B*N, C]
        x = x + self._drop_path(y, n, training)
        return ops.reshape(x, (-1, n, c))  # [B, N, C]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention_dropout_rate=self.attention_dropout_rate,
            drop_path_rate=self.drop_path_rate,
            gelu=self.gelu,
        )
        return config


# ----------------------------------------------------------------------------------------
# TokenLearner placement.

def check_tokenlearner(tokenlearner, num_layers, extra_layers=0, owner="build_encoder"):
    """Validates a TL placement against the encoder depth; raises ValueError naming it.

    `tokenlearner` is any object with `num_tokens`, `at`, `fuser`, `version` (e.g.
    `tl_keras.TL`) or None. The TokenLearner goes before block `at` of the
    `num_layers + extra_layers` blocks, and every extra block must come after it:
    `0 <= at <= num_layers` and `at < num_layers + extra_layers`.
    """
    if not isinstance(extra_layers, int) or isinstance(extra_layers, bool) or extra_layers < 0:
        raise ValueError(f"{owner}: `extra_layers` must be an int >= 0, got {extra_layers!r}.")
    if tokenlearner is None:
        if extra_layers:
            raise ValueError(
                f"{owner}: `extra_layers`={extra_layers} adds blocks after the TokenLearner, "
                "but no `tokenlearner` is given (to make a deeper plain model, raise "
                "`num_layers`)."
            )
        return
    at = tokenlearner.at
    total = num_layers + extra_layers
    if at is None:
        raise ValueError(
            f"{owner}: `tokenlearner` needs `at`, the block (0-based) the TokenLearner goes "
            f"before, e.g. TL({tokenlearner.num_tokens}, at={num_layers // 2})."
        )
    if not 0 <= at < total or at > num_layers:
        raise ValueError(
            f"{owner}: `tokenlearner.at`={at} is out of range: the TokenLearner goes before "
            f"block `at` (0-based) of {num_layers} blocks (+{extra_layers} extra), so `at` "
            f"must be in [0, {min(num_layers, total - 1)}]."
        )
    if tokenlearner.version not in TOKENIZERS:
        raise ValueError(
            f"{owner}: unknown `tokenlearner.version`={tokenlearner.version!r}; "
            f"known: {sorted(TOKENIZERS)}."
        )
    fuser = fuser_name(tokenlearner)
    if fuser is not None and fuser not in FUSERS:
        raise ValueError(
            f"{owner}: unknown `tokenlearner.fuser`={tokenlearner.fuser!r}; known: "
            f"False, True (= 'tokenfuser'), {sorted(FUSERS)}."
        )
    if fuser == "unpool" and not version_has_maps(tokenlearner.version):
        raise ValueError(
            f"{owner}: `tokenlearner.fuser='unpool'` needs a token learner with spatial "
            f"maps; `version`={tokenlearner.version!r} has none."
        )


def fuser_name(tokenlearner):
    """The fuser of a TL placement: None (model "a"), `"tokenfuser"` for `fuser=True`,
    else the `FUSERS` name it gives (`"unpool"`, `"reprojection"`)."""
    if tokenlearner is None or not tokenlearner.fuser:
        return None
    return "tokenfuser" if tokenlearner.fuser is True else str(tokenlearner.fuser)


def encoder_layout(num_layers, tokenlearner=None, extra_layers=0):
    """The placement, block by block: a list of `(tl_before, fuser_after)` pairs, one per
    block (`num_layers + extra_layers` of them). `tl_before` is True where a
    TokenLearner precedes the block; `fuser_after` where a TokenFuser (+ residual)
    follows it."""
    total = num_layers + extra_layers
    if tokenlearner is None:
        return [(False, False)] * total
    at, fuser = tokenlearner.at, bool(tokenlearner.fuser)
    return [
        ((i == at) or (fuser and i >= at), fuser and i >= at) for i in range(total)
    ]


def build_encoder(
    x,
    *,
    num_layers,
    num_heads,
    mlp_dim,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.0,
    tokenlearner=None,
    extra_layers=0,
    num_frames=None,
    grid=None,
    fuser_mix_tokens_over_time=True,
    gelu="tanh",
    dtype=None,
):
    """Applies the encoder to a symbolic (or eager) tensor; returns the normalised tokens.

    Args:
        x: `[B, N, C]` tokens (video: `[B, T*N, C]`, frame-major), position embedding
            already added. No class token may be present when `tokenlearner` is set.
        num_layers, num_heads, mlp_dim: encoder size.
        dropout_rate, attention_dropout_rate: as in `TransformerBlock`; the
            TokenLearner/TokenFuser MLPs get `dropout_rate` too (as the reference).
        drop_path_rate: stochastic depth, growing linearly from 0 at the first block to
            this value at the last.
        tokenlearner: None or a TL spec (`num_tokens`, `at`, `fuser`, `version`);
            `fuser` is False, True / `"tokenfuser"`, `"unpool"` or `"reprojection"`.
        extra_layers: blocks appended after the last one (after the TokenLearner).
        num_frames: T for video (tokens are `T` frames of `N`); None for images.
        grid: `(h, w)` patch grid of one frame (needed by TokenLearner v1).
        fuser_mix_tokens_over_time: video fuser mixes all `T*S` tokens (paper, default)
            or the S tokens of each frame (Scenic's ViViT; needed to load its weights).
        gelu: GELU form of the blocks' MLPs (`TransformerBlock`); the TokenLearner and
            TokenFuser MLPs keep the reference's tanh form.
        dtype: dtype policy of the layers (default: the global policy).

    Returns:
        `[B, N', C]`, after the final LayerNorm (`encoder_norm`); N' = S (video T*S)
        after a TokenLearner without fuser, N otherwise.
    """
    check_tokenlearner(tokenlearner, num_layers, extra_layers)
    layout = encoder_layout(num_layers, tokenlearner, extra_layers)
    total = len(layout)
    c = x.shape[-1]
    video = num_frames is not None
    n_frame = None
    if video:
        n_frame = x.shape[1] // num_frames  # tokens per frame
    tl_index = 0
    fuser_kind = fuser_name(tokenlearner)
    for i, (tl_before, fuser_after) in enumerate(layout):
        residual = x
        if tl_before:
            tl = make_tokenizer(
                tokenlearner.version,
                tokenlearner.num_tokens,
                temporal=video,
                spatial_shape=tuple(grid) if grid is not None else None,
                dropout_rate=dropout_rate,
                dtype=dtype,
                name=f"tokenlearner_{tl_index}",
            )
            if video:
                residual = keras.layers.Reshape(
                    (num_frames, n_frame, c), dtype=dtype, name=f"to_frames_{tl_index}"
                )(x)  # [B, T, N, C]
            if fuser_kind == "unpool":
                # The fuser spreads the tokens back with the maps that pooled them.
                x, maps = tl(residual, return_maps=True)  # [B, (T*)S, C], [B*T, S, N]
                normalized = None
            elif fuser_kind == "tokenfuser" and isinstance(tl, TokenLearner):
                # The TokenLearner and the TokenFuser both normalise this same input
                # (each with its own scale and offset): standardise it once for both.
                normalized = LayerNorm(
                    epsilon=LAYER_NORM_EPSILON, center=False, scale=False, dtype=dtype,
                    name=f"fuser_input_standardize_{tl_index}",
                )(residual)
                x = tl(residual, normalized=normalized)  # [B, S, C] or [B, T*S, C]
            else:
                normalized = None
                x = tl(residual)  # [B, S, C] or [B, T*S, C]
        rate = drop_path_rate * i / max(total - 1, 1)
        x = TransformerBlock(
            num_heads,
            mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=rate,
            gelu=gelu,
            dtype=dtype,
            name=f"encoderblock_{i}",
        )(x)
        if fuser_after:
            name = f"tokenfuser_{tl_index}"
            if fuser_kind == "tokenfuser":
                fused = TokenFuser(
                    dropout_rate=dropout_rate,
                    mix_tokens_over_time=fuser_mix_tokens_over_time,
                    temporal=video,
                    dtype=dtype,
                    name=name,
                )(x, residual, normalized=normalized)  # shape of the residual
            elif fuser_kind == "unpool":
                fused = make_fuser("unpool", temporal=video, dtype=dtype, name=name)(
                    x, residual, maps
                )  # shape of the residual
            else:  # "reprojection": the positions attend to their frame's tokens
                fused = make_fuser(
                    "reprojection", temporal=video, num_heads=num_heads,
                    dropout_rate=dropout_rate, dtype=dtype, name=name,
                )(x, residual)  # shape of the residual
            x = keras.layers.Add(dtype=dtype, name=f"fuser_residual_{tl_index}")(
                [fused, residual]
            )
            if video:
                x = keras.layers.Reshape(
                    (num_frames * n_frame, c), dtype=dtype, name=f"from_frames_{tl_index}"
                )(x)  # [B, T*N, C]
        if tl_before:
            tl_index += 1
    return LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name="encoder_norm")(x)
