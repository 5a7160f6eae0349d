"""Input embeddings of ViT / ViViT: patch (Conv2D) and tubelet (Conv3D) embeddings, the
class token, the learned position embedding, and NumPy helpers that resize / tile a
position embedding when weights are loaded into a model with a different token grid.

Token order everywhere: row-major over the patch grid, frame-major for video
(`[t, h, w]` flattened), class token (if any) first.
"""

import keras
import numpy as np
from keras import ops

from tl_keras.layers._utils import check_positive_int


def _pair(value, name, owner):
    """`16` or `(16, 16)` -> `(16, 16)`, checked."""
    if isinstance(value, (tuple, list)):
        value = tuple(value)
        if len(value) != 2:
            raise ValueError(f"{owner}: `{name}` must be an int or a pair (h, w), got {value!r}.")
    else:
        value = (value, value)
    for v in value:
        check_positive_int(v, name, owner)
    return value


def _check_divisible(size, patch, what, owner):
    if size is not None and size % patch:
        raise ValueError(
            f"{owner}: the input {what} {size} is not divisible by the patch {what} {patch}."
        )


@keras.saving.register_keras_serializable(package="tl_keras")
class PatchEmbedding(keras.layers.Layer):
    """ViT patch embedding: a `patch x patch` Conv2D with stride `patch`, then flatten.

    Equivalent to cutting non-overlapping patches and applying one shared Dense layer
    (the reference `embedding` convolution, padding VALID, LeCun-normal kernel, zero bias).

    Args:
        hidden_dim: C, the token width.
        patch_size: int or `(ph, pw)`.
        **kwargs: base layer arguments.

    Input `[B, H, W, 3]` (H, W divisible by the patch); output `[B, (H/ph)*(W/pw), C]`.
    """

    def __init__(self, hidden_dim, patch_size, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(hidden_dim, "hidden_dim", owner)
        self.hidden_dim = hidden_dim
        self.patch_size = tuple(patch_size) if isinstance(patch_size, list) else patch_size
        self._patch = _pair(patch_size, "patch_size", owner)
        self.conv = keras.layers.Conv2D(
            hidden_dim,
            self._patch,
            strides=self._patch,
            padding="valid",
            kernel_initializer="lecun_normal",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv",
        )

    def _grid(self, input_shape):
        owner = type(self).__name__
        if len(input_shape) != 4:
            raise ValueError(f"{owner}: expected [B, H, W, C], got shape {tuple(input_shape)}.")
        _check_divisible(input_shape[1], self._patch[0], "height", owner)
        _check_divisible(input_shape[2], self._patch[1], "width", owner)
        h = None if input_shape[1] is None else input_shape[1] // self._patch[0]
        w = None if input_shape[2] is None else input_shape[2] // self._patch[1]
        return h, w

    def build(self, input_shape):
        self._grid(input_shape)
        self.conv.build(tuple(input_shape))

    def call(self, inputs):
        x = self.conv(inputs)  # [B, h, w, C]
        h, w = x.shape[1], x.shape[2]
        n = h * w if h is not None and w is not None else -1
        return ops.reshape(x, (-1, n, self.hidden_dim))  # [B, h*w, C]

    def compute_output_shape(self, input_shape):
        h, w = self._grid(input_shape)
        n = h * w if h is not None and w is not None else None
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, patch_size=self.patch_size)
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class TubeletEmbedding(keras.layers.Layer):
    """ViViT tubelet embedding: a `t x ph x pw` Conv3D with the same stride, then flatten.

    Args:
        hidden_dim: C.
        patch_size: spatial patch, int or `(ph, pw)`.
        tubelet_size: t, frames per tubelet (the "x2" of "16x16x2").
        **kwargs: base layer arguments.

    Input `[B, T, H, W, 3]`; output `[B, (T/t)*(H/ph)*(W/pw), C]`, frame-major.
    The Conv3D kernel is `[t, ph, pw, 3, C]`, the layout of the reference (Flax) kernel.

    With a static input size the conv is computed as what it is, a matmul of the
    non-overlapping tubelets with the conv's kernel (same variables, same values up to
    float summation order): TensorFlow's CPU gradient of a strided Conv3D took 7.8 s for
    the `--runlocal` ViViT's batch on an AMD EPYC host (the matmul form: milliseconds),
    and LiteRT's `CONV_3D` has no int8 kernel (the matmul quantizes).
    """

    def __init__(self, hidden_dim, patch_size, tubelet_size=2, **kwargs):
        super().__init__(**kwargs)
        owner = type(self).__name__
        check_positive_int(hidden_dim, "hidden_dim", owner)
        check_positive_int(tubelet_size, "tubelet_size", owner)
        self.hidden_dim = hidden_dim
        self.patch_size = tuple(patch_size) if isinstance(patch_size, list) else patch_size
        self._patch = _pair(patch_size, "patch_size", owner)
        self.tubelet_size = tubelet_size
        kernel = (tubelet_size,) + self._patch
        self.conv = keras.layers.Conv3D(
            hidden_dim,
            kernel,
            strides=kernel,
            padding="valid",
            kernel_initializer="lecun_normal",
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="conv",
        )

    def _grid(self, input_shape):
        owner = type(self).__name__
        if len(input_shape) != 5:
            raise ValueError(
                f"{owner}: expected [B, T, H, W, C], got shape {tuple(input_shape)}."
            )
        _check_divisible(input_shape[1], self.tubelet_size, "number of frames", owner)
        _check_divisible(input_shape[2], self._patch[0], "height", owner)
        _check_divisible(input_shape[3], self._patch[1], "width", owner)
        sizes = (self.tubelet_size,) + self._patch
        return tuple(None if s is None else s // p for s, p in zip(input_shape[1:4], sizes))

    def build(self, input_shape):
        self._grid(input_shape)
        self.conv.build(tuple(input_shape))

    def call(self, inputs):
        t, h, w = self._grid(inputs.shape)
        if None in (t, h, w):
            x = self.conv(inputs)  # [B, T/t, h, w, C]
            return ops.reshape(x, (-1, ops.shape(x)[1] * ops.shape(x)[2] * ops.shape(x)[3],
                                   self.hidden_dim))
        (pt, ph, pw), c = (self.tubelet_size,) + self._patch, inputs.shape[-1]
        # At most 6-D (LiteRT's TRANSPOSE has no kernel for more).
        x = ops.reshape(inputs, (-1, pt, h, ph, w, pw * c))  # [B*t, pt, h, ph, w, pw*3]
        x = ops.transpose(x, (0, 2, 4, 1, 3, 5))  # [B*t, h, w, pt, ph, pw*3]
        x = ops.reshape(x, (-1, t * h * w, pt * ph * pw * c))  # [B, N, pt*ph*pw*3]
        kernel = ops.cast(self.conv.kernel, self.compute_dtype)
        kernel = ops.reshape(kernel, (pt * ph * pw * c, self.hidden_dim))  # [pt*ph*pw*3, C]
        bias = ops.cast(self.conv.bias, self.compute_dtype)
        return ops.matmul(x, kernel) + bias  # [B, (T/t)*h*w, C]

    def compute_output_shape(self, input_shape):
        t, h, w = self._grid(input_shape)
        n = t * h * w if None not in (t, h, w) else None
        return (input_shape[0], n, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            patch_size=self.patch_size,
            tubelet_size=self.tubelet_size,
        )
        return config


@keras.saving.register_keras_serializable(package="tl_keras")
class ClassToken(keras.layers.Layer):
    """Prepends one learned token (zero-initialised, the reference `cls`): `[B, N, C] ->
    [B, 1 + N, C]`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        self.cls = self.add_weight(
            name="cls", shape=(1, 1, input_shape[-1]), initializer="zeros"
        )

    def call(self, inputs):
        cls = ops.cast(self.cls, inputs.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(inputs)[0], 1, inputs.shape[-1]))  # [B, 1, C]
        return ops.concatenate([cls, inputs], axis=1)  # [B, 1+N, C]

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], n, input_shape[2])


@keras.saving.register_keras_serializable(package="tl_keras")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding `[1, N, C]` (normal, std 0.02, as the reference
    `posembed_input`). Added once, at the input of the encoder."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)

    def build(self, input_shape):
        if input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"{type(self).__name__}: the number of tokens and the width must be known; "
                f"got shape {tuple(input_shape)}."
            )
        self.pos_embedding = self.add_weight(
            name="pos_embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )

    def call(self, inputs):
        return inputs + ops.cast(self.pos_embedding, inputs.dtype)  # [B, N, C]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenPooling(keras.layers.Layer):
    """`[B, N, C] -> [B, C]`: the class token (`"token"`, index 0) or the mean over all
    tokens (`"gap"`)."""

    def __init__(self, mode="gap", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("gap", "token"):
            raise ValueError(f"TokenPooling: `mode` must be 'gap' or 'token', got {mode!r}.")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]  # [B, C]
        return ops.mean(inputs, axis=1)  # [B, C]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


# ----------------------------------------------------------------------------------------
# NumPy helpers used when loading weights (never inside a model).


def _linear_resize_axis(x, new, axis):
    """Linear interpolation along `axis` with half-pixel centres (align_corners=False)."""
    old = x.shape[axis]
    if old == new:
        return x
    pos = (np.arange(new, dtype=np.float64) + 0.5) * old / new - 0.5
    pos = np.clip(pos, 0, old - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, old - 1)
    frac = pos - lo
    shape = [1] * x.ndim
    shape[axis] = new
    frac = frac.reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def resize_position_embedding(posemb, new_grid, old_grid=None, num_prefix_tokens=0):
    """Bilinearly resizes a learned position embedding to another patch grid.

    Args:
        posemb: `[1, P + gh*gw, C]` array (P prefix tokens, e.g. the class token).
        new_grid: `(gh', gw')` of the target model.
        old_grid: `(gh, gw)`; default: a square grid.
        num_prefix_tokens: P; their rows are kept as they are.

    Returns:
        `[1, P + gh'*gw', C]` float32 array.
    """
    posemb = np.asarray(posemb, dtype=np.float32)
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    n, c = grid.shape[1], grid.shape[2]
    if old_grid is None:
        side = int(round(np.sqrt(n)))
        if side * side != n:
            raise ValueError(
                f"resize_position_embedding: {n} grid positions are not a square; "
                "pass `old_grid=(gh, gw)`."
            )
        old_grid = (side, side)
    if old_grid[0] * old_grid[1] != n:
        raise ValueError(f"resize_position_embedding: old_grid {old_grid} does not hold {n}.")
    new_grid = tuple(new_grid)
    if tuple(old_grid) == new_grid:
        return posemb
    grid = grid.reshape(old_grid[0], old_grid[1], c)  # [gh, gw, C]
    grid = _linear_resize_axis(grid, new_grid[0], 0)
    grid = _linear_resize_axis(grid, new_grid[1], 1)  # [gh', gw', C]
    grid = grid.reshape(1, new_grid[0] * new_grid[1], c).astype(np.float32)
    return np.concatenate([prefix, grid], axis=1)


def tile_position_embedding(posemb, num_frames, num_prefix_tokens=0):
    """Repeats a per-frame position embedding over time: `[1, P + N, C] ->
    [1, P + T*N, C]` (frame-major), as when a ViViT is initialised from a ViT."""
    posemb = np.asarray(posemb, dtype=np.float32)
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    return np.concatenate([prefix, np.tile(grid, (1, num_frames, 1))], axis=1)
