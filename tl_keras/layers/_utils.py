"""Small helpers shared by the layers (backend-agnostic, `keras.ops` only)."""

import math

import keras
from keras import ops

LAYER_NORM_EPSILON = 1e-6  # Flax default; decides numerical equality with the reference.


def dim(x, axis):
    """Static size of `x` along `axis` if known, else a dynamic scalar tensor."""
    static = x.shape[axis]
    if static is not None:
        return static
    return ops.shape(x)[axis]


def check_positive_int(value, name, owner):
    """Raises a ValueError naming `name` unless `value` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"{owner}: `{name}` must be a positive integer, got {value!r}."
        )


def check_rate(value, name, owner):
    """Raises a ValueError naming `name` unless 0 <= value < 1."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{owner}: `{name}` must be a float in [0, 1), got {value!r}.")


def square_side(n, owner, what="input"):
    """Side of a square grid with `n` positions, or a ValueError that says why not."""
    side = int(round(math.sqrt(n))) if n is not None else None
    if side is None or side * side != n:
        raise ValueError(
            f"{owner}: a 3-D {what} [B, N, C] needs a square number of positions N "
            f"or an explicit `spatial_shape=(H, W)`; got N={n}."
        )
    return side


def ensure_built(layer, *shapes):
    """Builds `layer` from input shapes when a public helper is used before any call."""
    if not layer.built:
        layer.build(*[tuple(s) for s in shapes])
        layer.built = True


def layout(shape, temporal, owner):
    """Reads a token-map input shape: returns (time or None, (H, W) or None, N, C).

    Image `[B, N, C]` / `[B, H, W, C]`; video `[B, T, H, W, C]`, or `[B, T, N, C]` when
    `temporal` (a rank-4 input is otherwise `[B, H, W, C]`). ValueError naming `owner`
    for any other rank."""
    rank = len(shape)
    if rank == 3:
        return None, None, shape[1], shape[2]
    if rank == 4 and not temporal:
        h, w = shape[1], shape[2]
        n = h * w if h is not None and w is not None else None
        return None, (h, w), n, shape[3]
    if rank == 4 and temporal:
        return shape[1], None, shape[2], shape[3]
    if rank == 5:
        h, w = shape[2], shape[3]
        n = h * w if h is not None and w is not None else None
        return shape[1], (h, w), n, shape[4]
    raise ValueError(
        f"{owner}: expected an input of rank 3 [B, N, C], 4 [B, H, W, C] "
        f"(or [B, T, N, C] with temporal=True) or 5 [B, T, H, W, C]; "
        f"got rank {rank} with shape {tuple(shape)}."
    )


class ReturnsMapsMixin:
    """For token learners with spatial maps: `layer(x, return_maps=True)` returns
    `(tokens, maps)`, the maps `[B*T, S, N]` those tokens were pooled with (what an
    `UnpoolFuser` needs, without computing them twice). This gives the symbolic output
    of both forms (Keras' default reads `compute_output_shape`, which sees only
    shapes)."""

    def compute_output_spec(self, inputs, *args, return_maps=False, **kwargs):
        shape = tuple(inputs.shape)
        tokens = keras.KerasTensor(self.compute_output_shape(shape), dtype=self.compute_dtype)
        if not return_maps:
            return tokens
        _, _, n, _ = layout(shape, self.temporal, type(self).__name__)
        if n is None:
            spatial = getattr(self, "spatial_shape", None)
            n = spatial[0] * spatial[1] if spatial else None
        return tokens, keras.KerasTensor((None, self.num_tokens, n), dtype=self.compute_dtype)
