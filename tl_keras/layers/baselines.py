"""Alternatives to TokenLearner and TokenFuser from the paper's ablations.

Token learners (paper §3.4 Table 6 and §6.3), each usable wherever a `TokenLearner` goes:
same inputs (`[B, N, C]`, `[B, H, W, C]`, `[B, T, H, W, C]`, or `[B, T, N, C]` with
`temporal=True`), same output (`[B, S, C]`, video `[B, T*S, C]`, frame-major), never
mixing time:

* `GridTokenizer` (`"grid"`): a fixed grid splits every frame into S cells; each token is
  the mean of its cell (Eq. 1 with a fixed, input-independent alpha);
* `PoolTokenizer` (`"pool"`): conventional spatial pooling (max by default) of the
  frame, rearranged as a grid, down to S cells;
* `FCTokenizer` (`"fc"`): tokens generated directly by a dense layer over the positions;
* `PoolMLPTokenizer` (`"pool_mlp"`): global average pooling of the frame, then an MLP
  that generates the S tokens.

Fusers (paper Fig. 7), called like `TokenFuser` (`fuser(tokens, original)`, output of
the shape of `original`, the residual is the caller's):

* `UnpoolFuser` (`"unpool"`): every position takes `sum_s map[s, n] y[s]` with the maps
  of the token learner that made the tokens, so it is called
  `fuser(tokens, original, maps)` with `maps = tokenizer.attention_maps(original)`;
* `ReprojectionFuser` (`"reprojection"`): one more transformer layer whose queries are
  the positions of each frame and whose keys / values are that frame's tokens (the
  "re-projection" of Visual Transformers, Wu et al. 2020).

Their names (`"grid"`, ..., `"unpool"`, ...) and the factories that build any of them
from a name are in `tl_keras.layers.tokenizers`.
"""

import keras
import numpy as np
from keras import ops

from tl_keras.layers._utils import (
    LAYER_NORM_EPSILON,
    ReturnsMapsMixin,
    check_positive_int,
    check_rate,
    ensure_built,
    layout,
    square_side,
)

# ----------------------------------------------------------------------------------------
# Fixed grids.


def grid_shape(num_tokens, height, width, owner="grid_shape"):
    """`(rows, cols)` with `rows * cols == num_tokens` whose cells are the most square.

    E.g. 8 tokens on an 8x8 frame -> (2, 4) (cells of 4x2 positions); on 7x7 -> (2, 4)
    with uneven cells. Raises a ValueError naming `num_tokens` when no split fits.
    """
    best = None
    for rows in range(1, num_tokens + 1):
        if num_tokens % rows:
            continue
        cols = num_tokens // rows
        if rows > height or cols > width:
            continue
        # Aspect ratio of one cell, as far from square as log(h/w).
        score = abs(np.log((height / rows) / (width / cols)))
        if best is None or score < best[0] - 1e-12:
            best = (score, rows, cols)
    if best is None:
        raise ValueError(
            f"{owner}: cannot split a {height}x{width} frame into `num_tokens`={num_tokens} "
            "grid cells (needs rows <= H and cols <= W with rows * cols = num_tokens)."
        )
    return best[1], best[2]


def cell_masks(num_tokens, height, width, owner="cell_masks"):
    """Indicator masks `[S, H*W]` of the S grid cells (row-major cells, positions).

    Cell boundaries are `floor(i * H / rows)` (adaptive pooling), so every position is in
    exactly one cell even when H or W is not a multiple of the grid.
    """
    rows, cols = grid_shape(num_tokens, height, width, owner)
    r_edges = [(i * height) // rows for i in range(rows + 1)]
    c_edges = [(j * width) // cols for j in range(cols + 1)]
    masks = np.zeros((num_tokens, height, width), dtype="float32")
    for i in range(rows):
        for j in range(cols):
            masks[i * cols + j, r_edges[i] : r_edges[i + 1], c_edges[j] : c_edges[j + 1]] = 1.0
    return masks.reshape(num_tokens, height * width)


def _check_spatial_shape(spatial_shape, owner):
    if spatial_shape is None:
        return None
    spatial_shape = tuple(spatial_shape)
    if len(spatial_shape) != 2:
        raise ValueError(f"{owner}: `spatial_shape` must be (H, W), got {spatial_shape!r}.")
    for v in spatial_shape:
        check_positive_int(v, "spatial_shape", owner)
    return spatial_shape


def _resolve_grid(shape, temporal, spatial_shape, owner):
    """(T or None, H, W, C) of an input shape, resolving flattened positions."""
    time, grid, n, channels = layout(shape, temporal, owner)
    if grid is None:
        if spatial_shape is not None:
            if n is not None and spatial_shape[0] * spatial_shape[1] != n:
                raise ValueError(
                    f"{owner}: `spatial_shape`={spatial_shape} does not match the {n} "
                    "positions of the input."
                )
            grid = spatial_shape
        else:
            side = square_side(n, owner)
            grid = (side, side)
    if grid[0] is None or grid[1] is None:
        raise ValueError(f"{owner}: the frame size (H, W) must be known when built.")
    if channels is None:
        raise ValueError(f"{owner}: the channel dimension must be known when built.")
    return time, grid[0], grid[1], channels


def _to_output(tokens, time, num_tokens, channels):
    if time is not None:
        return ops.reshape(tokens, (-1, time * num_tokens, channels))  # [B, T*S, C]
    return tokens  # [B, S, C]


class _Tokenizer(keras.layers.Layer):
    """Shared shape logic of the baseline token learners."""

    def _output_shape(self, input_shape):
        time, _, _, channels = layout(input_shape, self.temporal, type(self).__name__)
        if time is None:
            return (input_shape[0], self.num_tokens, channels)
        return (input_shape[0], time * self.num_tokens, channels)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape)


@keras.saving.register_keras_serializable(package="tl_keras")
class GridTokenizer(ReturnsMapsMixin, _Tokenizer):
    """Fixed-grid tokenization: each frame is split into S grid cells (rows x cols, the
    most square cells, see `grid_shape`) and each token is the mean of its cell.

    This is paper Eq. 1 with a fixed, input-independent alpha (the "fixed split" of
    §6.3). No weights.

    Args:
        num_tokens: S, tokens per image / frame (e.g. 8 -> a 2x4 grid of cells).
        spatial_shape: `(H, W)` of a flattened `[B, N, C]` / `[B, T, N, C]` input; if
            omitted such an input must be square.
        temporal: read a rank-4 input as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_tokens, spatial_shape=None, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        self.num_tokens = num_tokens
        self.spatial_shape = _check_spatial_shape(spatial_shape, owner)
        self.temporal = bool(temporal)
        self._maps = None

    def build(self, input_shape):
        owner = type(self).__name__
        _, h, w, _ = _resolve_grid(input_shape, self.temporal, self.spatial_shape, owner)
        masks = cell_masks(self.num_tokens, h, w, owner)
        self._maps = masks / masks.sum(axis=1, keepdims=True)  # [S, N], mean over cells

    def attention_maps(self, inputs, training=False):
        """The fixed pooling weights `[B*T, S, N]` (each row sums to 1)."""
        ensure_built(self, inputs.shape)
        time, h, w, _ = _resolve_grid(
            inputs.shape, self.temporal, self.spatial_shape, type(self).__name__
        )
        frames = ops.shape(inputs)[0] * (time or 1)
        maps = ops.convert_to_tensor(self._maps, dtype=self.compute_dtype)  # [S, N]
        return ops.broadcast_to(maps[None], (frames, self.num_tokens, h * w))

    def call(self, inputs, return_maps=False):
        """`return_maps=True`: returns `(tokens, attention_maps(inputs))`."""
        time, h, w, channels = _resolve_grid(
            inputs.shape, self.temporal, self.spatial_shape, type(self).__name__
        )
        x = ops.reshape(inputs, (-1, h * w, channels))  # [B*T, N, C]
        maps = ops.convert_to_tensor(self._maps, dtype=x.dtype)  # [S, N]
        tokens = ops.einsum("sn,bnc->bsc", maps, x)  # [B*T, S, C]
        tokens = _to_output(tokens, time, self.num_tokens, channels)
        return (tokens, self.attention_maps(inputs)) if return_maps else tokens

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            spatial_shape=self.spatial_shape,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class PoolTokenizer(ReturnsMapsMixin, _Tokenizer):
    """Spatial pooling to S tokens: the positions are rearranged as the frame grid and
    pooled (max by default, as the pooling attention of MViT) over the S cells of
    `grid_shape` (uneven cells when the frame does not divide).

    With `pooling="avg"` it equals `GridTokenizer`. No weights.

    Args:
        num_tokens: S, tokens per image / frame.
        pooling: `"max"` or `"avg"`.
        spatial_shape: `(H, W)` of a flattened input; default square.
        temporal: read a rank-4 input as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_tokens, pooling="max", spatial_shape=None, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        if pooling not in ("max", "avg"):
            raise ValueError(f"{owner}: `pooling` must be 'max' or 'avg', got {pooling!r}.")
        self.num_tokens = num_tokens
        self.pooling = pooling
        self.spatial_shape = _check_spatial_shape(spatial_shape, owner)
        self.temporal = bool(temporal)
        self._masks = None

    def build(self, input_shape):
        owner = type(self).__name__
        _, h, w, _ = _resolve_grid(input_shape, self.temporal, self.spatial_shape, owner)
        self._masks = cell_masks(self.num_tokens, h, w, owner)  # [S, N] indicators

    def attention_maps(self, inputs, training=False):
        """The cell indicator maps `[B*T, S, N]` (1 inside the cell a token pools)."""
        ensure_built(self, inputs.shape)
        time, h, w, _ = _resolve_grid(
            inputs.shape, self.temporal, self.spatial_shape, type(self).__name__
        )
        masks = self._masks
        if self.pooling == "avg":
            masks = masks / masks.sum(axis=1, keepdims=True)
        frames = ops.shape(inputs)[0] * (time or 1)
        maps = ops.convert_to_tensor(masks, dtype=self.compute_dtype)
        return ops.broadcast_to(maps[None], (frames, self.num_tokens, h * w))

    def call(self, inputs, return_maps=False):
        """`return_maps=True`: returns `(tokens, attention_maps(inputs))`."""
        if return_maps:
            return self.call(inputs), self.attention_maps(inputs)
        time, h, w, channels = _resolve_grid(
            inputs.shape, self.temporal, self.spatial_shape, type(self).__name__
        )
        x = ops.reshape(inputs, (-1, h * w, channels))  # [B*T, N, C]
        if self.pooling == "avg":
            weights = self._masks / self._masks.sum(axis=1, keepdims=True)
            tokens = ops.einsum("sn,bnc->bsc", ops.convert_to_tensor(weights, x.dtype), x)
        else:
            inside = ops.convert_to_tensor(self._masks > 0)  # [S, N]
            lowest = ops.convert_to_tensor(float("-inf"), dtype=x.dtype)
            cells = ops.where(inside[None, :, :, None], x[:, None, :, :], lowest)  # [B*T, S, N, C]
            tokens = ops.max(cells, axis=2)  # [B*T, S, C]
        return _to_output(tokens, time, self.num_tokens, channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            pooling=self.pooling,
            spatial_shape=self.spatial_shape,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class FCTokenizer(ReturnsMapsMixin, _Tokenizer):
    """Direct token generation by a fully connected layer (paper §6.3, method 2).

    Default: a dense layer over the positions of each frame, shared by the channels,
    `z[s, c] = sum_n W[n, s] x[n, c] + b[s]` (learned but input-independent "maps"
    `W^T`, usable by `UnpoolFuser`). `mix_channels=True` is the literal reading "a
    dense layer from `H*W*C` to `S*C`" (`N*C*S*C` weights: 73M per layer at 7x7x432,
    S=8). Needs a known number of positions N.

    Args:
        num_tokens: S, tokens per image / frame.
        mix_channels: dense over positions and channels together.
        dropout_rate: dropout on the tokens.
        temporal: read a rank-4 input as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_tokens, mix_channels=False, dropout_rate=0.0, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.num_tokens = num_tokens
        self.mix_channels = bool(mix_channels)
        self.dropout_rate = dropout_rate
        self.temporal = bool(temporal)
        self.dropout = keras.layers.Dropout(dropout_rate, dtype=self.dtype_policy, name="dropout")

    def _n_c(self, shape):
        owner = type(self).__name__
        _, _, n, channels = layout(shape, self.temporal, owner)
        if n is None or channels is None:
            raise ValueError(
                f"{owner}: the number of positions N and the channels C must be known."
            )
        return n, channels

    def build(self, input_shape):
        n, c = self._n_c(input_shape)
        if self.mix_channels:
            shape_k, shape_b = (n * c, self.num_tokens * c), (self.num_tokens * c,)
        else:
            shape_k, shape_b = (n, self.num_tokens), (self.num_tokens,)
        self.kernel = self.add_weight(
            name="kernel", shape=shape_k, initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=shape_b, initializer="zeros")
        self.dropout.build((None, self.num_tokens, c))

    @property
    def has_maps(self):
        return not self.mix_channels

    def attention_maps(self, inputs, training=False):
        """The learned position weights `W^T` as maps `[B*T, S, N]` (not with
        `mix_channels=True`)."""
        ensure_built(self, inputs.shape)
        if self.mix_channels:
            raise ValueError(
                f"{type(self).__name__}: with `mix_channels=True` the tokens have no "
                "spatial maps (UnpoolFuser cannot use them)."
            )
        time, _, n, _ = layout(inputs.shape, self.temporal, type(self).__name__)
        frames = ops.shape(inputs)[0] * (time or 1)
        maps = ops.cast(ops.transpose(self.kernel), self.compute_dtype)  # [S, N]
        return ops.broadcast_to(maps[None], (frames, self.num_tokens, n))

    def call(self, inputs, training=None, return_maps=False):
        """`return_maps=True`: returns `(tokens, attention_maps(inputs))` (not with
        `mix_channels=True`)."""
        if return_maps:
            return self.call(inputs, training=training), self.attention_maps(inputs)
        time, _, _, _ = layout(inputs.shape, self.temporal, type(self).__name__)
        n, c = self._n_c(inputs.shape)
        if self.mix_channels:
            x = ops.reshape(inputs, (-1, n * c))  # [B*T, N*C]
            tokens = ops.matmul(x, self.kernel) + self.bias  # [B*T, S*C]
            tokens = ops.reshape(tokens, (-1, self.num_tokens, c))  # [B*T, S, C]
        else:
            x = ops.reshape(inputs, (-1, n, c))  # [B*T, N, C]
            tokens = ops.einsum("bnc,ns->bsc", x, self.kernel)  # [B*T, S, C]
            tokens = tokens + self.bias[None, :, None]
        tokens = self.dropout(tokens, training=training)
        return _to_output(tokens, time, self.num_tokens, c)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            mix_channels=self.mix_channels,
            dropout_rate=self.dropout_rate,
            temporal=self.temporal,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class PoolMLPTokenizer(_Tokenizer):
    """Global average pooling per frame, then an MLP generates the S tokens (paper §6.3,
    method 3): `Dense(hidden) -> gelu -> dropout -> Dense(S*C)`, reshaped to `[S, C]`.

    Args:
        num_tokens: S, tokens per image / frame.
        hidden_dim: hidden width of the MLP (default: C).
        dropout_rate: dropout after the hidden layer and on the tokens.
        temporal: read a rank-4 input as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_tokens, hidden_dim=None, dropout_rate=0.0, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_tokens, "num_tokens", owner)
        if hidden_dim is not None:
            check_positive_int(hidden_dim, "hidden_dim", owner)
        check_rate(dropout_rate, "dropout_rate", owner)
        self.num_tokens = num_tokens
        self.hidden_dim = hidden_dim
        self.dropout_rate = dropout_rate
        self.temporal = bool(temporal)
        policy = self.dtype_policy
        self.dropout_0 = keras.layers.Dropout(dropout_rate, dtype=policy, name="dropout_0")
        self.dropout_1 = keras.layers.Dropout(dropout_rate, dtype=policy, name="dropout_1")
        self.dense_0 = self.dense_1 = None

    def build(self, input_shape):
        owner = type(self).__name__
        _, _, _, c = layout(input_shape, self.temporal, owner)
        if c is None:
            raise ValueError(f"{owner}: the channel dimension must be known when built.")
        hidden = self.hidden_dim or c
        self.dense_0 = keras.layers.Dense(hidden, dtype=self.dtype_policy, name="dense_0")
        self.dense_1 = keras.layers.Dense(
            self.num_tokens * c, dtype=self.dtype_policy, name="dense_1"
        )
        self.dense_0.build((None, c))
        self.dropout_0.build((None, hidden))
        self.dense_1.build((None, hidden))
        self.dropout_1.build((None, self.num_tokens * c))

    def call(self, inputs, training=None):
        time, _, n, c = layout(inputs.shape, self.temporal, type(self).__name__)
        x = ops.reshape(inputs, (-1, n if n is not None else -1, c))  # [B*T, N, C]
        pooled = ops.mean(x, axis=1)  # [B*T, C]
        h = ops.gelu(self.dense_0(pooled), approximate=True)  # [B*T, hidden]
        h = self.dropout_0(h, training=training)
        tokens = self.dropout_1(self.dense_1(h), training=training)  # [B*T, S*C]
        tokens = ops.reshape(tokens, (-1, self.num_tokens, c))  # [B*T, S, C]
        return _to_output(tokens, time, self.num_tokens, c)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tokens=self.num_tokens,
            hidden_dim=self.hidden_dim,
            dropout_rate=self.dropout_rate,
            temporal=self.temporal,
        )
        return config


# ----------------------------------------------------------------------------------------
# Fusers.


def _fuser_shapes(owner, tokens_shape, original_shape, temporal):
    if len(tokens_shape) != 3:
        raise ValueError(
            f"{owner}: `tokens` must be [B, S, C] (video [B, T*S, C]); got shape "
            f"{tuple(tokens_shape)}."
        )
    time, _, n, channels = layout(original_shape, temporal, owner)
    if tokens_shape[-1] is not None and channels is not None and tokens_shape[-1] != channels:
        raise ValueError(
            f"{owner}: channel mismatch between `tokens` ({tokens_shape[-1]}) and "
            f"`original` ({channels}); both must have the same C."
        )
    total = tokens_shape[1]
    if total is None or channels is None:
        raise ValueError(f"{owner}: the number of tokens and C must be known.")
    frames = time or 1
    if total % frames:
        raise ValueError(
            f"{owner}: `tokens` has {total} tokens, not a multiple of the {frames} frames "
            "of `original`."
        )
    return time, n, channels, total // frames


@keras.saving.register_keras_serializable(package="tl_keras")
class UnpoolFuser(keras.layers.Layer):
    """Unpooling with the token learner's maps (paper Fig. 7, alternative 1): every
    output token is spread back over the frame with the spatial map that pooled it,
    `out[n] = sum_s maps[s, n] y[s]` per frame. No weights.

    Called `fuser(tokens, original, maps)`: `tokens` `[B, S, C]` (video `[B, T*S, C]`)
    after the transformer, `original` the tensor that went into the token learner, and
    `maps = tokenizer.attention_maps(original)` (`[B*T, S, N]`). Output: the shape of
    `original` (the residual is the caller's).

    Args:
        temporal: read a rank-4 `original` as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, temporal=False, **kwargs):
        super().__init__(**kwargs)
        self.temporal = bool(temporal)

    def _check(self, tokens_shape, original_shape, maps_shape):
        owner = type(self).__name__
        _, n, _, per_frame = _fuser_shapes(owner, tokens_shape, original_shape, self.temporal)
        if len(maps_shape) != 3 or (maps_shape[1] is not None and maps_shape[1] != per_frame) or (
            n is not None and maps_shape[2] is not None and maps_shape[2] != n
        ):
            raise ValueError(
                f"{owner}: `maps` must be [B*T, S, N] = [B*T, {per_frame}, {n}] (the "
                f"token learner's attention_maps); got {tuple(maps_shape)}."
            )

    def build(self, tokens_shape, original_shape, maps_shape):
        self._check(tokens_shape, original_shape, maps_shape)

    def call(self, tokens, original, maps):
        owner = type(self).__name__
        self._check(tokens.shape, original.shape, maps.shape)
        _, _, channels, per_frame = _fuser_shapes(
            owner, tokens.shape, original.shape, self.temporal
        )
        y = ops.reshape(tokens, (-1, per_frame, channels))  # [B*T, S, C]
        out = ops.einsum("bsn,bsc->bnc", ops.cast(maps, y.dtype), y)  # [B*T, N, C]
        return ops.reshape(out, ops.shape(original))

    def compute_output_shape(self, tokens_shape, original_shape, maps_shape):
        self._check(tokens_shape, original_shape, maps_shape)
        return tuple(original_shape)

    def get_config(self):
        config = super().get_config()
        config.update(temporal=self.temporal)
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class ReprojectionFuser(keras.layers.Layer):
    """Re-projection by one more transformer layer (paper Fig. 7, alternative 2; the
    projector of Visual Transformers): the positions of each frame attend to that
    frame's S tokens,

    `a = MHA(query=LN(x), key=value=LN(y))`, then `a = a + MLP(LN(a))` (pre-LN, gelu),

    which brings the token count back to the N positions. Called like `TokenFuser`
    (`fuser(tokens, original)`); output of the shape of `original`, residual by the
    caller.

    Args:
        num_heads: attention heads (head width `C // num_heads`, at least 1).
        mlp_ratio: MLP hidden width as a multiple of C; 0 = no MLP.
        dropout_rate: dropout on the attention weights and in the MLP.
        temporal: read a rank-4 `original` as `[B, T, N, C]`.
        **kwargs: base layer arguments.
    """

    def __init__(self, num_heads=8, mlp_ratio=4.0, dropout_rate=0.0, temporal=False, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(num_heads, "num_heads", owner)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or mlp_ratio < 0:
            raise ValueError(f"{owner}: `mlp_ratio` must be a number >= 0, got {mlp_ratio!r}.")
        check_rate(dropout_rate, "dropout_rate", owner)
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.dropout_rate = dropout_rate
        self.temporal = bool(temporal)
        ln = lambda name: keras.layers.LayerNormalization(  # noqa: E731
            epsilon=LAYER_NORM_EPSILON, dtype=self.dtype_policy, name=name
        )
        self.query_norm = ln("query_norm")
        self.token_norm = ln("token_norm")
        self.mlp_norm = ln("mlp_norm") if mlp_ratio else None
        self.attention = None
        self.mlp_dense_0 = self.mlp_dense_1 = None
        self.mlp_dropout = keras.layers.Dropout(
            dropout_rate, dtype=self.dtype_policy, name="mlp_dropout"
        )

    def build(self, tokens_shape, original_shape):
        _, _, c, per_frame = _fuser_shapes(
            type(self).__name__, tokens_shape, original_shape, self.temporal
        )
        key_dim = max(c // self.num_heads, 1)
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            key_dim,
            dropout=self.dropout_rate,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.query_norm.build((None, None, c))
        self.token_norm.build((None, per_frame, c))
        self.attention.build((None, None, c), (None, per_frame, c))
        if self.mlp_ratio:
            hidden = max(int(round(self.mlp_ratio * c)), 1)
            policy = self.dtype_policy
            self.mlp_dense_0 = keras.layers.Dense(hidden, dtype=policy, name="mlp_dense_0")
            self.mlp_dense_1 = keras.layers.Dense(c, dtype=policy, name="mlp_dense_1")
            self.mlp_norm.build((None, None, c))
            self.mlp_dense_0.build((None, None, c))
            self.mlp_dropout.build((None, None, hidden))
            self.mlp_dense_1.build((None, None, hidden))

    def call(self, tokens, original, training=None):
        _, n, c, per_frame = _fuser_shapes(
            type(self).__name__, tokens.shape, original.shape, self.temporal
        )
        x = ops.reshape(original, (-1, n if n is not None else -1, c))  # [B*T, N, C]
        y = ops.reshape(tokens, (-1, per_frame, c))  # [B*T, S, C]
        kv = self.token_norm(y)
        a = self.attention(self.query_norm(x), kv, kv, training=training)  # [B*T, N, C]
        if self.mlp_ratio:
            h = ops.gelu(self.mlp_dense_0(self.mlp_norm(a)), approximate=True)
            a = a + self.mlp_dense_1(self.mlp_dropout(h, training=training))
        return ops.reshape(a, ops.shape(original))

    def compute_output_shape(self, tokens_shape, original_shape):
        _fuser_shapes(type(self).__name__, tokens_shape, original_shape, self.temporal)
        return tuple(original_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            dropout_rate=self.dropout_rate,
            temporal=self.temporal,
        )
        return config
