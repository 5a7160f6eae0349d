"""The X(2+1)D layers: (2+1)D convolution, the residual unit and the bottleneck modules of
the paper's §6 (Fig. 9, Tables 12-14).

Every layer here takes a video feature map `[B, T, H, W, C]` (B batch, T frames,
H x W grid, C channels):

* `Conv2Plus1D`: a (2+1)D convolution, `k x k` 2-D spatial conv per frame -> BN -> ReLU
  -> `k_t`-tap 1-D temporal conv (X3D's 3-D convs factorised as in the paper §6.1);
* `SpaceTimeAttention`: pre-LN multi-head self-attention (or vector attention,
  `attention="vector"`) + residual over all `T*H*W` positions (`"joint"`), the `H*W`
  positions of each frame (`"spatial"`) or the T frames of each position (`"temporal"`);
* `FrameBroadcastAttention`: attention over per-frame pooled tokens (vector attention, or
  a learned prior alone) whose output is broadcast back to every position (Table 14);
* `FrameMLPMixer`: an MLP-Mixer block over per-frame pooled tokens whose updates are
  broadcast back to every position;
* `TokenLearnerModule`: Fig. 9's core, `x + Fuser(Transformer(TokenLearner(x)), x)`, with
  S tokens per frame and a transformer (VectorAttention or MHSA) over the `T*S` tokens;
* `SpaceTimeModule`: the module slot of an X(2+1)D residual unit, any alternative of
  `MODULES` (`"conv2d_tokenlearner"`, the paper's final model, `"conv2d_conv1d"`, the
  plain backbone, and the ablations of Tables 12-14);
* `X2Plus1DUnit`: the residual bottleneck unit `1x1x1 up -> BN -> ReLU -> module -> BN ->
  ReLU -> 1x1x1 down -> BN (+ shortcut) -> ReLU`.

The module slot keeps the shape: `[B, T, H, W, C] -> [B, T, H/s, W/s, C]` (s the spatial
stride of the first unit of a stage).
"""

import keras
from keras import ops

from tl_keras.layers._utils import (
    LAYER_NORM_EPSILON,
    check_positive_int,
    check_rate,
)
from tl_keras.layers.baselines import UnpoolFuser
from tl_keras.layers.tokenizers import (
    TOKENIZERS,
    make_fuser,
    make_tokenizer,
    tokenizer_has_maps,
)
from tl_keras.layers.vector_attention import VectorAttention

# PySlowFast's X3D batch norm (momentum 0.1 in PyTorch terms) and conv initialisation.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv_init():
    """X3D's convolution initialisation (He normal, fan out)."""
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


@keras.saving.register_keras_serializable(package="tl_keras")
class FactorConv3D(keras.layers.Conv3D):
    """A `Conv3D` (same variables, config and results) that runs a purely spatial
    `(1, kh, kw)` or purely temporal `(kt, 1, 1)` kernel as the 2-D convolution it is:
    frames folded into the batch (`[B*T, H, W, C]`) or positions into the width
    (`[B, T, H*W, C]`); a channelwise one (`groups == C == filters`) as a depthwise conv.
    TensorFlow's CPU kernels for strided or grouped 3-D convolutions (and their gradients)
    ran 7-16x slower than the 2-D ones on the same work here. Other kernels, dilation or
    unknown sizes: `Conv3D` itself."""

    def convolution_op(self, inputs, kernel):
        (kt, kh, kw), (st, sh, sw) = self.kernel_size, self.strides
        size = tuple(inputs.shape[1:])
        if (tuple(self.dilation_rate) != (1, 1, 1) or self.data_format != "channels_last"
                or None in size):
            return super().convolution_op(inputs, kernel)
        t, h, w, c = size
        if kt == 1 and st == 1:  # spatial: every frame on its own
            x = ops.reshape(inputs, (-1, h, w, c))  # [B*T, H, W, C]
            y = self._conv2d(x, kernel[0], (sh, sw))  # [B*T, H', W', F]
            return ops.reshape(y, (-1, t) + tuple(y.shape[1:]))  # [B, T, H', W', F]
        if kh == kw == 1 and sh == sw == 1:  # temporal: every position on its own
            x = ops.reshape(inputs, (-1, t, h * w, c))  # [B, T, H*W, C]
            y = self._conv2d(x, kernel[:, 0], (st, 1))  # [B, T', H*W, F]
            return ops.reshape(y, (-1, y.shape[1], h, w, y.shape[-1]))  # [B, T', H, W, F]
        return super().convolution_op(inputs, kernel)

    def _conv2d(self, x, kernel, strides):
        """`kernel` `[kh, kw, C/groups, F]`."""
        c = x.shape[-1]
        if self.groups == c == self.filters and self.groups > 1:  # channelwise
            depthwise = ops.transpose(kernel, (0, 1, 3, 2))  # [kh, kw, C, 1]
            return ops.depthwise_conv(x, depthwise, strides=strides, padding=self.padding)
        return ops.conv(x, kernel, strides=strides, padding=self.padding)


def conv3d(filters, kernel, strides=(1, 1, 1), groups=1, name=None, dtype=None):
    """A bias-free `"same"` Conv3D with X3D's initialisation (every conv of the family)."""
    return FactorConv3D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=False,
        kernel_initializer=conv_init(),
        dtype=dtype,
        name=name,
    )


def batch_norm(name, zero_init=False, dtype=None):
    """X3D's batch norm (`gamma` zero-initialised for the last BN of a unit)."""
    return keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        gamma_initializer="zeros" if zero_init else "ones",
        dtype=dtype,
        name=name,
    )


def _conv(owner, filters, kernel, strides=(1, 1, 1), groups=1, name=None):
    return conv3d(filters, kernel, strides, groups, name=name, dtype=owner.dtype_policy)


def _bn(owner, name, zero_init=False):
    return batch_norm(name, zero_init, dtype=owner.dtype_policy)


def _check_video(shape, owner, what="input"):
    if len(shape) != 5:
        raise ValueError(
            f"{owner}: expected a video {what} [B, T, H, W, C] of rank 5, got shape "
            f"{tuple(shape)}."
        )
    for axis, label in ((1, "T"), (2, "H"), (3, "W"), (4, "C")):
        if shape[axis] is None:
            raise ValueError(f"{owner}: the {label} dimension must be known; got {tuple(shape)}.")
    return tuple(shape)


def _strided(shape, strides):
    b, t, h, w, c = shape
    return (b, t, -(-h // strides), -(-w // strides), c)


def _build_chain(layers, shape):
    """Builds single-input layers one after the other; returns the final shape."""
    for layer in layers:
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


# ----------------------------------------------------------------------------------------
# (2+1)D convolution.


@keras.saving.register_keras_serializable(package="tl_keras")
class Conv2Plus1D(keras.layers.Layer):
    """(2+1)D convolution: `k x k` spatial conv (per frame, stride s) -> BN -> ReLU ->
    `k_t`-tap temporal conv. No bias; BN and activation after the temporal conv are the
    caller's (the residual unit adds them).

    Args:
        filters: output channels of both convs.
        kernel_size: k of the spatial conv.
        temporal_kernel_size: k_t of the temporal conv.
        strides: spatial stride s.
        depthwise: channel-wise convs (X3D's channel-wise 3x3x3 factorised; needs
            `filters` = input channels). The paper's module numbers (Table 13) are those
            of full convs (the default).
        **kwargs: base layer arguments.

    Input `[B, T, H, W, C]`, output `[B, T, ceil(H/s), ceil(W/s), filters]`.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        temporal_kernel_size=3,
        strides=1,
        depthwise=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        for name, value in (
            ("filters", filters),
            ("kernel_size", kernel_size),
            ("temporal_kernel_size", temporal_kernel_size),
            ("strides", strides),
        ):
            check_positive_int(value, name, owner)
        self.filters = filters
        self.kernel_size = kernel_size
        self.temporal_kernel_size = temporal_kernel_size
        self.strides = strides
        self.depthwise = bool(depthwise)
        self.spatial_conv = self.spatial_norm = self.temporal_conv = None

    def build(self, input_shape):
        owner = type(self).__name__
        shape = _check_video(input_shape, owner)
        if self.depthwise and shape[-1] != self.filters:
            raise ValueError(
                f"{owner}: `depthwise=True` needs `filters` ({self.filters}) equal to the "
                f"input channels ({shape[-1]})."
            )
        k, kt, s = self.kernel_size, self.temporal_kernel_size, self.strides
        self.spatial_conv = _conv(
            self, self.filters, (1, k, k), (1, s, s),
            groups=shape[-1] if self.depthwise else 1, name="spatial_conv",
        )
        self.spatial_norm = _bn(self, "spatial_norm")
        self.temporal_conv = _conv(
            self, self.filters, (kt, 1, 1),
            groups=self.filters if self.depthwise else 1, name="temporal_conv",
        )
        _build_chain([self.spatial_conv, self.spatial_norm, self.temporal_conv], shape)

    def call(self, inputs, training=None):
        x = self.spatial_conv(inputs)  # [B, T, H/s, W/s, F]
        x = ops.relu(self.spatial_norm(x, training=training))
        return self.temporal_conv(x)  # [B, T, H/s, W/s, F]

    def compute_output_shape(self, input_shape):
        shape = _check_video(input_shape, type(self).__name__)
        return _strided(shape, self.strides)[:4] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            temporal_kernel_size=self.temporal_kernel_size,
            strides=self.strides,
            depthwise=self.depthwise,
        )
        return config


# ----------------------------------------------------------------------------------------
# Attention and mixing over a video feature map.

ATTENTION_AXES = ("joint", "spatial", "temporal")
#: The transformers of the modules: MHSA, or the paper's Vector Transformer (Appendix A.1).
TRANSFORMERS = ("vector", "mhsa")


def _mha(owner, num_heads, channels, dropout_rate, name):
    return keras.layers.MultiHeadAttention(
        num_heads,
        max(channels // num_heads, 1),
        dropout=dropout_rate,
        dtype=owner.dtype_policy,
        name=name,
    )


@keras.saving.register_keras_serializable(package="tl_keras")
class SpaceTimeAttention(keras.layers.Layer):
    """Pre-LN self-attention with residual, `x + MHSA(LN(x))` (or `x + VectT(LN(x))`), over

    * `"joint"`: all `T*H*W` positions (one sequence per video; "joint space-time MHSA");
    * `"spatial"`: the `H*W` positions of each frame (T sequences);
    * `"temporal"`: the T frames at each position (`H*W` sequences).

    The standard MHSA of the paper's ablations: `num_heads` heads of width
    `C // num_heads`, query/key/value/output projections with biases (Keras
    `MultiHeadAttention`). `attention="vector"` uses the paper's Vector Transformer
    instead (`VectorAttention`, Appendix A.1: one attention map per channel; Table 14's
    "Vector transformer (VectT)"); its memory is `N x N x C` for N positions per sequence.

    Args:
        axis: `"joint"`, `"spatial"` or `"temporal"`.
        num_heads: attention heads (paper: 8; unused by `"vector"`).
        dropout_rate: dropout on the attention weights.
        attention: `"mhsa"` (default) or `"vector"`.
        **kwargs: base layer arguments.

    Input and output `[B, T, H, W, C]`.
    """

    def __init__(self, axis="joint", num_heads=8, dropout_rate=0.0, attention="mhsa",
                 **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if axis not in ATTENTION_AXES:
            raise ValueError(f"{owner}: `axis` must be one of {ATTENTION_AXES}, got {axis!r}.")
        if attention not in TRANSFORMERS:
            raise ValueError(
                f"{owner}: `attention` must be one of {TRANSFORMERS}, got {attention!r}."
            )
        check_positive_int(num_heads, "num_heads", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.axis = axis
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.attention_type = attention
        self.norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm"
        )
        self.attention = None

    def build(self, input_shape):
        _, _, _, _, c = _check_video(input_shape, type(self).__name__)
        self.norm.build((None, None, c))
        if self.attention_type == "vector":
            self.attention = VectorAttention(
                attention_dropout_rate=self.dropout_rate, dtype=self.dtype_policy,
                name="attention",
            )
            self.attention.build((None, None, c))
        else:
            self.attention = _mha(self, self.num_heads, c, self.dropout_rate, "attention")
            self.attention.build((None, None, c), (None, None, c))

    def call(self, inputs, training=None):
        _, t, h, w, c = inputs.shape
        if self.axis == "joint":
            x = ops.reshape(inputs, (-1, t * h * w, c))  # [B, T*H*W, C]
        elif self.axis == "spatial":
            x = ops.reshape(inputs, (-1, h * w, c))  # [B*T, H*W, C]
        else:
            x = ops.transpose(inputs, (0, 2, 3, 1, 4))  # [B, H, W, T, C]
            x = ops.reshape(x, (-1, t, c))  # [B*H*W, T, C]
        y = self.norm(x)
        if self.attention_type == "vector":
            y = self.attention(y, training=training)
        else:
            y = self.attention(y, y, y, training=training)
        if self.axis == "temporal":
            y = ops.reshape(y, (-1, h, w, t, c))  # [B, H, W, T, C]
            y = ops.transpose(y, (0, 3, 1, 2, 4))  # [B, T, H, W, C]
        else:
            y = ops.reshape(y, (-1, t, h, w, c))  # [B, T, H, W, C]
        return inputs + y

    def compute_output_shape(self, input_shape):
        return _check_video(input_shape, type(self).__name__)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
                      attention=self.attention_type)
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class FrameMLPMixer(keras.layers.Layer):
    """MLP-Mixer block (Tolstikhin et al. 2021) in the temporal slot: the frames are
    average-pooled to T tokens `p` `[B, T, C]`,

    `u = p + TokenMLP(LN(p)^T)^T` (mixing the T frames, per channel), then
    `u = u + ChannelMLP(LN(u))`,

    and the update `u - p` of each frame is added to every position of that frame.
    Token MLP `T -> token_mlp_dim -> T`, channel MLP `C -> channel_mlp_dim -> C`, gelu.
    With the default widths (T and C) this module has the paper's Table 13 size
    (0.38M parameters, ~0 GFLOPs at 64x8x8x432), which a mixer over all `T*H*W`
    positions could not have.

    Args:
        token_mlp_dim: hidden width of the token MLP (default T).
        channel_mlp_dim: hidden width of the channel MLP (default C).
        dropout_rate: dropout inside the MLPs.
        **kwargs: base layer arguments.

    Input and output `[B, T, H, W, C]`.
    """

    def __init__(self, token_mlp_dim=None, channel_mlp_dim=None, dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        for name, value in (("token_mlp_dim", token_mlp_dim), ("channel_mlp_dim", channel_mlp_dim)):
            if value is not None:
                check_positive_int(value, name, owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.token_mlp_dim = token_mlp_dim
        self.channel_mlp_dim = channel_mlp_dim
        self.dropout_rate = dropout_rate
        ln = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name=name
        )
        self.token_norm = ln("token_norm")
        self.channel_norm = ln("channel_norm")
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.token_dense_0 = self.token_dense_1 = None
        self.channel_dense_0 = self.channel_dense_1 = None

    def build(self, input_shape):
        _, t, _, _, c = _check_video(input_shape, type(self).__name__)
        ht = self.token_mlp_dim or t
        hc = self.channel_mlp_dim or c
        dense = lambda units, name: keras.layers.Dense(  # noqa: E731
            units, dtype=self.dtype_policy, name=name
        )
        self.token_dense_0 = dense(ht, "token_dense_0")
        self.token_dense_1 = dense(t, "token_dense_1")
        self.channel_dense_0 = dense(hc, "channel_dense_0")
        self.channel_dense_1 = dense(c, "channel_dense_1")
        self.token_norm.build((None, t, c))
        self.channel_norm.build((None, t, c))
        self.token_dense_0.build((None, c, t))
        self.token_dense_1.build((None, c, ht))
        self.channel_dense_0.build((None, t, c))
        self.channel_dense_1.build((None, t, hc))
        self.dropout.build((None, None, None))

    def _mlp(self, dense_0, dense_1, x, training):
        h = ops.gelu(dense_0(x), approximate=True)
        return dense_1(self.dropout(h, training=training))

    def call(self, inputs, training=None):
        p = ops.mean(inputs, axis=(2, 3))  # [B, T, C]
        y = ops.transpose(self.token_norm(p), (0, 2, 1))  # [B, C, T]
        y = self._mlp(self.token_dense_0, self.token_dense_1, y, training)  # [B, C, T]
        u = p + ops.transpose(y, (0, 2, 1))  # [B, T, C]
        u = u + self._mlp(
            self.channel_dense_0, self.channel_dense_1, self.channel_norm(u), training
        )  # [B, T, C]
        return inputs + (u - p)[:, :, None, None, :]  # [B, T, H, W, C]

    def compute_output_shape(self, input_shape):
        return _check_video(input_shape, type(self).__name__)

    def get_config(self):
        config = super().get_config()
        config.update(
            token_mlp_dim=self.token_mlp_dim,
            channel_mlp_dim=self.channel_mlp_dim,
            dropout_rate=self.dropout_rate,
        )
        return config


#: How `FrameBroadcastAttention` mixes the frame tokens.
BROADCAST_ATTENTIONS = ("vector", "prior")


@keras.saving.register_keras_serializable(package="tl_keras")
class FrameBroadcastAttention(keras.layers.Layer):
    """Attention over one pooled token per frame, broadcast back to every position (the
    "+ broadcasting" rows of the paper's Table 14, which have no TokenLearner and no
    TokenFuser): each frame is average-pooled to a token, `p` `[B, T, C]`, then

    * `"vector"`: `y = VectT(LN(p))`, the Vector Transformer (`VectorAttention`,
      Appendix A.1) over the T frame tokens ("VectT + broadcasting");
    * `"prior"`: `y[t] = sum_s softmax_s(P)[t, s] f_v(LN(p))[s]`, an attention whose
      weights are a learned `T x T` prior `P` alone, with no query-key term (our reading
      of "Prior-only-attention + broadcasting"; `P` starts at zero: a uniform average);

    and `y[t]` is added to every position of frame t: `out = x + y[:, :, None, None, :]`.
    The paper gives only the rows' names; the pooled frame tokens are those of the
    MLP-Mixer row (`FrameMLPMixer`).

    Args:
        attention: `"vector"` or `"prior"`.
        dropout_rate: dropout on the attention weights.
        **kwargs: base layer arguments.

    Input and output `[B, T, H, W, C]` (the `"prior"` weights fix T when built).
    """

    def __init__(self, attention="vector", dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        if attention not in BROADCAST_ATTENTIONS:
            raise ValueError(
                f"{owner}: `attention` must be one of {BROADCAST_ATTENTIONS}, got {attention!r}."
            )
        check_rate(dropout_rate, "dropout_rate", owner)
        self.attention = attention
        self.dropout_rate = dropout_rate
        self.norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name="norm"
        )
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")
        self.transformer = self.value = self.prior = None

    def build(self, input_shape):
        _, t, _, _, c = _check_video(input_shape, type(self).__name__)
        self.norm.build((None, t, c))
        if self.attention == "vector":
            self.transformer = VectorAttention(
                attention_dropout_rate=self.dropout_rate, dtype=self.dtype_policy,
                name="transformer",
            )
            self.transformer.build((None, t, c))
        else:
            self.value = keras.layers.Dense(c, dtype=self.dtype_policy, name="value")
            self.value.build((None, t, c))
            self.prior = self.add_weight(
                name="prior", shape=(t, t), initializer="zeros", trainable=True
            )
        self.dropout.build((None, t, t))

    def call(self, inputs, training=None):
        p = ops.mean(inputs, axis=(2, 3))  # [B, T, C]
        y = self.norm(p)
        if self.attention == "vector":
            y = self.transformer(y, training=training)  # [B, T, C]
        else:
            weights = ops.softmax(ops.cast(self.prior, "float32"), axis=-1)  # [T, T]
            weights = self.dropout(ops.cast(weights, self.compute_dtype), training=training)
            y = ops.einsum("ts,bsc->btc", weights, self.value(y))  # [B, T, C]
        return inputs + y[:, :, None, None, :]  # [B, T, H, W, C]

    def compute_output_shape(self, input_shape):
        return _check_video(input_shape, type(self).__name__)

    def get_config(self):
        config = super().get_config()
        config.update(attention=self.attention, dropout_rate=self.dropout_rate)
        return config


# ----------------------------------------------------------------------------------------
# TokenLearner module (Fig. 9).

def tokenizer_options(tokenizer):
    """Arguments the bottleneck module gives its token learner: for `"1"` the paper's
    single conv computing alpha (§6.1) and the average pooling of Eq. 1."""
    if tokenizer == "1":
        return {"num_conv_layers": 1, "pooling": "mean"}
    return {}


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenLearnerModule(keras.layers.Layer):
    """TokenLearner + transformer + TokenFuser over a video feature map (Fig. 8/9):

    `z = TokenLearner(x)` (S tokens per frame, `[B, T*S, C]`),
    `z = z + Transformer(LN(z))` over the `T*S` tokens (VectorAttention or MHSA),
    `out = x + Fuser(z, x)`.

    Args:
        num_tokens: S, tokens per frame (paper: 8).
        tokenizer: the token learner: `"1"` (paper §6.1: alpha from one 3x3 conv,
            sigmoid, average pooling), `"1.1"`, or a baseline `"grid"`, `"pool"`, `"fc"`,
            `"pool_mlp"` (paper §6.3).
        attention: `"vector"` (VectorAttention, the paper's "Vector Transformer") or
            `"mhsa"` (8-head multi-head self-attention, Table 14).
        fuser: `"tokenfuser"` (paper), `"unpool"` (with the token learner's maps) or
            `"reprojection"`.
        num_heads: heads of the `"mhsa"` attention and of the re-projection fuser.
        dropout_rate: dropout in the token learner / fuser MLPs and on the attention.
        **kwargs: base layer arguments.

    Input and output `[B, T, H, W, C]`.
    """

    def __init__(
        self,
        num_tokens=8,
        tokenizer="1",
        attention="vector",
        fuser="tokenfuser",
        num_heads=8,
        dropout_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        if tokenizer not in TOKENIZERS:
            raise ValueError(
                f"{owner}: unknown `tokenizer`={tokenizer!r}; known: {sorted(TOKENIZERS)}."
            )
        if attention not in TRANSFORMERS:
            raise ValueError(
                f"{owner}: `attention` must be one of {TRANSFORMERS}, got {attention!r}."
            )
        check_positive_int(num_heads, "num_heads", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.num_tokens = num_tokens
        self.tokenizer = tokenizer
        self.attention = attention
        self.fuser = fuser
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        self.token_learner = make_tokenizer(
            tokenizer, num_tokens, dropout_rate=dropout_rate, dtype=policy,
            name="token_learner", **tokenizer_options(tokenizer),
        )
        fuser_kwargs = {"num_heads": num_heads} if fuser == "reprojection" else {}
        try:
            self.token_fuser = make_fuser(
                fuser, dropout_rate=dropout_rate, dtype=policy, name="token_fuser", **fuser_kwargs
            )
        except ValueError as e:
            raise ValueError(f"{owner}: bad `fuser`: {e}") from None
        if isinstance(self.token_fuser, UnpoolFuser) and not tokenizer_has_maps(self.token_learner):
            raise ValueError(
                f"{owner}: `fuser='unpool'` needs a token learner with spatial maps; "
                f"`tokenizer`={tokenizer!r} has none."
            )
        self.norm = keras.layers.LayerNormalization(
            epsilon=LAYER_NORM_EPSILON, dtype=policy, name="norm"
        )
        self.transformer = None

    def build(self, input_shape):
        b, t, _, _, c = _check_video(input_shape, type(self).__name__)
        tokens = (b, t * self.num_tokens, c)
        self.token_learner.build(input_shape)
        self.norm.build(tokens)
        if self.attention == "vector":
            self.transformer = VectorAttention(
                attention_dropout_rate=self.dropout_rate, dtype=self.dtype_policy,
                name="transformer",
            )
            self.transformer.build(tokens)
        else:
            self.transformer = _mha(self, self.num_heads, c, self.dropout_rate, "transformer")
            self.transformer.build(tokens, tokens)
        if isinstance(self.token_fuser, UnpoolFuser):
            maps = (None, self.num_tokens, input_shape[2] * input_shape[3])
            self.token_fuser.build(tokens, input_shape, maps)
        else:
            self.token_fuser.build(tokens, input_shape)

    def call(self, inputs, training=None):
        z = self.token_learner(inputs, training=training)  # [B, T*S, C]
        y = self.norm(z)
        if self.attention == "vector":
            y = self.transformer(y, training=training)
        else:
            y = self.transformer(y, y, y, training=training)
        z = z + y  # [B, T*S, C]
        if isinstance(self.token_fuser, UnpoolFuser):
            maps = self.token_learner.attention_maps(inputs, training=training)  # [B*T, S, N]
            fused = self.token_fuser(z, inputs, maps)
        else:
            fused = self.token_fuser(z, inputs, training=training)
        return inputs + fused  # [B, T, H, W, C]

    def compute_output_shape(self, input_shape):
        return _check_video(input_shape, type(self).__name__)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            tokenizer=self.tokenizer,
            attention=self.attention,
            fuser=self.fuser,
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
        )
        return config


# ----------------------------------------------------------------------------------------
# The module slot.

#: Module name -> its parts, in order. "conv2d" = 3x3 spatial conv -> BN -> ReLU.
MODULES = {
    "conv2d_conv1d": ("conv2d", "conv1d"),
    "joint_mhsa": ("joint_mhsa",),
    "conv2d_joint_mhsa": ("conv2d", "joint_mhsa"),
    "conv2d_mlp_mixer": ("conv2d", "mlp_mixer"),
    "conv2d_temporal_transformer": ("conv2d", "temporal_mhsa"),
    "spatial_temporal_transformer": ("spatial_mhsa", "temporal_mhsa"),
    "conv2d_spatial_temporal_transformer": ("conv2d", "spatial_mhsa", "temporal_mhsa"),
    "tokenlearner": ("tokenlearner",),
    "conv2d_tokenlearner": ("conv2d", "tokenlearner"),
    "tokenlearner_mhsa": ("tokenlearner_mhsa",),
    "conv2d_tokenlearner_mhsa": ("conv2d", "tokenlearner_mhsa"),
    "spatial_tokenlearner": ("spatial_mhsa", "tokenlearner"),
    "conv2d_vector_transformer": ("conv2d", "joint_vectt"),
    "conv2d_prior_broadcast": ("conv2d", "prior_broadcast"),
    "conv2d_vector_transformer_broadcast": ("conv2d", "vectt_broadcast"),
}

#: The paper's name of each module (Tables 12-14).
MODULE_TITLES = {
    "conv2d_conv1d": "Conv2D + Conv1D",
    "joint_mhsa": "Joint space-time MHSA",
    "conv2d_joint_mhsa": "Conv2D + Joint space-time MHSA",
    "conv2d_mlp_mixer": "Conv2D + MLPMixer",
    "conv2d_temporal_transformer": "Conv2D + Temporal transformer",
    "spatial_temporal_transformer": "Spatial + Temporal transformer",
    "conv2d_spatial_temporal_transformer": "Conv2D + Spatial + Temporal transformer",
    "tokenlearner": "Ours (TokenLearner)",
    "conv2d_tokenlearner": "Ours (Conv2D + TokenLearner)",
    "tokenlearner_mhsa": "TokenLearner + MHSA + TokenFuser",
    "conv2d_tokenlearner_mhsa": "Conv2D + TokenLearner + MHSA + TokenFuser",
    "spatial_tokenlearner": "Ours (SpatialT + TokenLearner)",
    "conv2d_vector_transformer": "Vector transformer (VectT)",
    "conv2d_prior_broadcast": "Prior-only-attention + broadcasting",
    "conv2d_vector_transformer_broadcast": "Vector transformer (VectT) + broadcasting",
}

#: What the Table 14 rows compute, from the paper's text (A.5: "we used the module
#: composed of Conv2D + transformer (within the bottleneck)"; A.1 for VectT); the rows
#: without TokenLearner are our reading of their names.
MODULE_DESCRIPTIONS = {
    "conv2d_vector_transformer": (
        "Conv2D + the Vector Transformer (A.1: 'MHSA with the number of heads being "
        "identical to the number of channels') over all T*H*W positions."
    ),
    "conv2d_prior_broadcast": (
        "Conv2D + an attention over the per-frame pooled tokens whose weights are a "
        "learned T x T prior alone (no query-key term), broadcast to every position."
    ),
    "conv2d_vector_transformer_broadcast": (
        "Conv2D + the Vector Transformer over the per-frame pooled tokens (no "
        "TokenLearner), its output broadcast to every position instead of a TokenFuser."
    ),
}

DEFAULT_MODULE = "conv2d_tokenlearner"


def check_module(module, owner):
    if module not in MODULES:
        raise ValueError(f"{owner}: unknown `module`={module!r}; known: {sorted(MODULES)}.")


@keras.saving.register_keras_serializable(package="tl_keras")
class SpaceTimeModule(keras.layers.Layer):
    """The module slot of an X(2+1)D residual unit (between its 1x1x1 projections),
    any alternative of `MODULES`:

    * `"conv2d_conv1d"`: 3x3 Conv2D -> BN -> ReLU -> 3-tap Conv1D (plain X(2+1)D);
    * `"joint_mhsa"`, `"conv2d_joint_mhsa"`: [Conv2D +] MHSA over all T*H*W positions;
    * `"conv2d_mlp_mixer"`: Conv2D + `FrameMLPMixer`;
    * `"conv2d_temporal_transformer"`: Conv2D + temporal MHSA;
    * `"spatial_temporal_transformer"`: spatial MHSA + temporal MHSA;
    * `"conv2d_spatial_temporal_transformer"`: Conv2D + spatial + temporal MHSA;
    * `"tokenlearner"`, `"conv2d_tokenlearner"` (default): [Conv2D +] TokenLearner +
      VectorAttention + TokenFuser;
    * `"tokenlearner_mhsa"`, `"conv2d_tokenlearner_mhsa"`: [Conv2D +] TokenLearner + MHSA
      + TokenFuser;
    * `"spatial_tokenlearner"`: spatial MHSA + TokenLearner + VectorAttention + TokenFuser;
    * `"conv2d_vector_transformer"`: Conv2D + VectorAttention over all T*H*W positions
      (pre-LN, residual; Table 14 "Vector transformer (VectT)");
    * `"conv2d_prior_broadcast"`, `"conv2d_vector_transformer_broadcast"`: Conv2D +
      `FrameBroadcastAttention` (`"prior"` / `"vector"`; Table 14 "Prior-only-attention
      + broadcasting", "VectT + broadcasting").

    "Conv2D" is 3x3 Conv2D -> BN -> ReLU; MHSA is `SpaceTimeAttention` (pre-LN, residual).
    A spatial stride s > 1 goes into the Conv2D; modules without one start with a
    `1 x s x s` average pooling.

    Args:
        module: the alternative (see `MODULES`).
        num_tokens: S of the TokenLearner modules.
        tokenizer: token learner of the TokenLearner modules (`"1"`, `"1.1"`, `"grid"`,
            `"pool"`, `"fc"`, `"pool_mlp"`).
        fuser: fuser of the TokenLearner modules (`"tokenfuser"`, `"unpool"`,
            `"reprojection"`).
        num_heads: heads of every MHSA.
        kernel_size: k of the Conv2D.
        temporal_kernel_size: taps of the Conv1D.
        strides: spatial stride s.
        depthwise: channel-wise Conv2D / Conv1D.
        dropout_rate: dropout of the attention / MLP parts.
        **kwargs: base layer arguments.

    Input `[B, T, H, W, C]`, output `[B, T, ceil(H/s), ceil(W/s), C]`.
    """

    def __init__(
        self,
        module=DEFAULT_MODULE,
        num_tokens=8,
        tokenizer="1",
        fuser="tokenfuser",
        num_heads=8,
        kernel_size=3,
        temporal_kernel_size=3,
        strides=1,
        depthwise=False,
        dropout_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_module(module, owner)
        for name, value in (
            ("num_tokens", num_tokens),
            ("num_heads", num_heads),
            ("kernel_size", kernel_size),
            ("temporal_kernel_size", temporal_kernel_size),
            ("strides", strides),
        ):
            check_positive_int(value, name, owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.module = module
        self.num_tokens = num_tokens
        self.tokenizer = tokenizer
        self.fuser = fuser
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.temporal_kernel_size = temporal_kernel_size
        self.strides = strides
        self.depthwise = bool(depthwise)
        self.dropout_rate = dropout_rate
        self.parts = MODULES[module]
        if any(p.startswith("tokenlearner") for p in self.parts):
            # Validates tokenizer / fuser now rather than at build time.
            self._token_module("tokenlearner_mhsa" in self.parts)
        # Created in build() (their widths need C): the layers and what each one is.
        self.block_layers = []
        self.block_kinds = []

    def _token_module(self, mhsa, name="tokenlearner"):
        return TokenLearnerModule(
            self.num_tokens,
            tokenizer=self.tokenizer,
            attention="mhsa" if mhsa else "vector",
            fuser=self.fuser,
            num_heads=self.num_heads,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        shape = _check_video(input_shape, type(self).__name__)
        c = shape[-1]
        k, kt, s = self.kernel_size, self.temporal_kernel_size, self.strides
        groups = c if self.depthwise else 1
        blocks = []
        if self.parts[0] != "conv2d" and s > 1:
            # 2-D pooling on [B*T, H, W, C] (CPU has no float16 AvgPool3D kernel).
            blocks.append(("pool", keras.layers.AveragePooling2D(
                s, s, padding="same", dtype=self.dtype_policy, name="pool")))
        for part in self.parts:
            if part == "conv2d":
                blocks.append(("conv", _conv(self, c, (1, k, k), (1, s, s), groups, "conv2d")))
                blocks.append(("norm", _bn(self, "conv2d_norm")))
            elif part == "conv1d":
                blocks.append(("conv", _conv(self, c, (kt, 1, 1), groups=groups, name="conv1d")))
            elif part == "joint_vectt":
                blocks.append(("layer", SpaceTimeAttention(
                    "joint", self.num_heads, self.dropout_rate, attention="vector",
                    dtype=self.dtype_policy, name="joint_vectt")))
            elif part in ("prior_broadcast", "vectt_broadcast"):
                blocks.append(("layer", FrameBroadcastAttention(
                    "prior" if part == "prior_broadcast" else "vector", self.dropout_rate,
                    dtype=self.dtype_policy, name=part)))
            elif part.endswith("_mhsa") and not part.startswith("tokenlearner"):
                axis = part[: -len("_mhsa")]
                blocks.append(("layer", SpaceTimeAttention(
                    axis, self.num_heads, self.dropout_rate, dtype=self.dtype_policy,
                    name=f"{axis}_mhsa")))
            elif part == "mlp_mixer":
                blocks.append(("layer", FrameMLPMixer(
                    dropout_rate=self.dropout_rate, dtype=self.dtype_policy, name="mlp_mixer")))
            else:  # tokenlearner, tokenlearner_mhsa
                blocks.append(("layer", self._token_module(part == "tokenlearner_mhsa", part)))
        self.block_kinds = [kind for kind, _ in blocks]
        self.block_layers = [layer for _, layer in blocks]
        for kind, layer in blocks:
            if kind == "pool":
                layer.build((None,) + shape[2:])
                shape = _strided(shape, s)
            else:
                layer.build(shape)
                shape = tuple(layer.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs
        for kind, layer in zip(self.block_kinds, self.block_layers):
            if kind == "norm":
                x = ops.relu(layer(x, training=training))
            elif kind == "conv":
                x = layer(x)
            elif kind == "pool":
                _, t, h, w, c = x.shape
                y = layer(ops.reshape(x, (-1, h, w, c)))  # [B*T, H/s, W/s, C]
                x = ops.reshape(y, (-1, t) + tuple(y.shape[1:]))  # [B, T, H/s, W/s, C]
            else:
                x = layer(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return _strided(_check_video(input_shape, type(self).__name__), self.strides)

    def get_config(self):
        config = super().get_config()
        config.update(
            module=self.module,
            num_tokens=self.num_tokens,
            tokenizer=self.tokenizer,
            fuser=self.fuser,
            num_heads=self.num_heads,
            kernel_size=self.kernel_size,
            temporal_kernel_size=self.temporal_kernel_size,
            strides=self.strides,
            depthwise=self.depthwise,
            dropout_rate=self.dropout_rate,
        )
        return config


# ----------------------------------------------------------------------------------------
# Residual unit.


@keras.saving.register_keras_serializable(package="tl_keras")
class X2Plus1DUnit(keras.layers.Layer):
    """X(2+1)D residual bottleneck unit (X3D's, inverted bottleneck; Fig. 9):

    `1x1x1 conv (inner) -> BN -> ReLU -> SpaceTimeModule -> BN -> ReLU ->
    1x1x1 conv (filters) -> BN (gamma zero-init)`, plus the shortcut (identity, or
    `1x1x1 conv (stride s) -> BN` when the width or the resolution changes), then ReLU.
    No squeeze-excitation, no swish (paper §6.1).

    Args:
        filters: output width.
        inner_filters: width inside the unit (X3D: 2.25 x filters).
        strides: spatial stride s (in the module's Conv2D, or an average pooling).
        module: the module slot (`MODULES`), default the plain `"conv2d_conv1d"`.
        num_tokens, tokenizer, fuser, num_heads, temporal_kernel_size, depthwise,
            dropout_rate: passed to the `SpaceTimeModule`.
        **kwargs: base layer arguments.

    Input `[B, T, H, W, C]`, output `[B, T, ceil(H/s), ceil(W/s), filters]`.
    """

    def __init__(
        self,
        filters,
        inner_filters,
        strides=1,
        module="conv2d_conv1d",
        num_tokens=8,
        tokenizer="1",
        fuser="tokenfuser",
        num_heads=8,
        temporal_kernel_size=3,
        depthwise=False,
        dropout_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(filters, "filters", owner)
        check_positive_int(inner_filters, "inner_filters", owner)
        check_positive_int(strides, "strides", owner)
        self.filters = filters
        self.inner_filters = inner_filters
        self.strides = strides
        self.module = module
        self.num_tokens = num_tokens
        self.tokenizer = tokenizer
        self.fuser = fuser
        self.num_heads = num_heads
        self.temporal_kernel_size = temporal_kernel_size
        self.depthwise = bool(depthwise)
        self.dropout_rate = dropout_rate
        policy = self.dtype_policy
        self.conv_a = _conv(self, inner_filters, (1, 1, 1), name="conv_a")
        self.norm_a = _bn(self, "norm_a")
        self.module_b = SpaceTimeModule(
            module,
            num_tokens=num_tokens,
            tokenizer=tokenizer,
            fuser=fuser,
            num_heads=num_heads,
            temporal_kernel_size=temporal_kernel_size,
            strides=strides,
            depthwise=depthwise,
            dropout_rate=dropout_rate,
            dtype=policy,
            name="module_b",
        )
        self.norm_b = _bn(self, "norm_b")
        self.conv_c = _conv(self, filters, (1, 1, 1), name="conv_c")
        self.norm_c = _bn(self, "norm_c", zero_init=True)
        self.shortcut = self.shortcut_norm = None

    def build(self, input_shape):
        shape = _check_video(input_shape, type(self).__name__)
        if shape[-1] != self.filters or self.strides > 1:
            s = self.strides
            self.shortcut = _conv(self, self.filters, (1, 1, 1), (1, s, s), name="shortcut")
            self.shortcut_norm = _bn(self, "shortcut_norm")
            _build_chain([self.shortcut, self.shortcut_norm], shape)
        _build_chain(
            [self.conv_a, self.norm_a, self.module_b, self.norm_b, self.conv_c, self.norm_c],
            shape,
        )

    def call(self, inputs, training=None):
        x = ops.relu(self.norm_a(self.conv_a(inputs), training=training))  # [B, T, H, W, I]
        x = self.module_b(x, training=training)  # [B, T, H/s, W/s, I]
        x = ops.relu(self.norm_b(x, training=training))
        x = self.norm_c(self.conv_c(x), training=training)  # [B, T, H/s, W/s, F]
        shortcut = inputs
        if self.shortcut is not None:
            shortcut = self.shortcut_norm(self.shortcut(inputs), training=training)
        return ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        shape = _check_video(input_shape, type(self).__name__)
        return _strided(shape, self.strides)[:4] + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            inner_filters=self.inner_filters,
            strides=self.strides,
            module=self.module,
            num_tokens=self.num_tokens,
            tokenizer=self.tokenizer,
            fuser=self.fuser,
            num_heads=self.num_heads,
            temporal_kernel_size=self.temporal_kernel_size,
            depthwise=self.depthwise,
            dropout_rate=self.dropout_rate,
        )
        return config
