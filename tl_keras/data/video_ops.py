"""Pure TensorFlow ops on video tensors: frame sampling, JPEG decoding, resizing, cropping.

Every function takes and returns tensors, has no hidden state, and works both eagerly and
inside `tf.data` / `tf.function`. Randomness is *stateless*: random ops take a `seed`, an
int32/int64 tensor of shape `[2]` (split one with `tf.random.experimental.stateless_split`), so
a pipeline with a fixed seed is reproducible element by element.

Conventions: `frames` is `[T, H, W, 3]` (uint8 or float32), a clip of encoded frames is a
`[T]` string tensor, sampled frame indices are int32.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

__all__ = [
    "clip_indices",
    "random_clip_indices",
    "middle_clip_indices",
    "linspace_clip_indices",
    "num_segments",
    "segment_indices",
    "jpeg_frame_shapes",
    "decode_jpeg_frames",
    "decode_and_crop_jpeg_frames",
    "resize_smallest",
    "random_resize_smallest",
    "random_crop",
    "random_flip_left_right",
    "center_crop",
    "resized_crop_window_size",
    "center_crop_window",
    "crop_to_window",
    "resize_to",
    "resize_to_square",
    "three_crop_band",
    "three_crops",
    "normalize",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------
# Temporal sampling: which frame indices to keep. Only the kept frames are ever decoded.
#
# The clips are the reference pipeline's, index for index: DMVR (github.com/google-deepmind/
# dmvr, `dmvr/processors.py`) as `dmvr/modalities.py` `add_image` uses it and Scenic's video
# loader builds it (`scenic/projects/vivit/data/video_tfrecord_dataset.py`, `load_split`:
# `train` -> `sample_sequence(random=True)`, `validation` -> one clip -> `sample_sequence(
# random=False)`, `test` with `num_test_clips > 1` -> `sample_linspace_sequence`). For `n`
# frames every `s` in a video of `L` stored frames:
#
# - test: `max_offset = max(0, L - n * s)`, offsets `linspace(0, max_offset, num_clips)`
#   cast to int32 (truncated), as `sample_linspace_sequence`;
# - eval: offset `max(0, L - n * s) // 2`, as `sample_sequence(random=False)`;
# - train: offset uniform in `[0, L - (n - 1) * s - 1]` (0 if that is negative), as
#   `_get_random_sampling_offset` (`maxval = max(L - (n - 1) * s, 1)`, exclusive): the last
#   sampled frame is at most the last stored one; this bound is `(n - 1) * s`-based, not
#   `n * s`-based like the two above;
# - a video too short for the clip loops: index `(offset + k * s) mod L`, which is what
#   `sample_or_pad_sequence_indices(repeat_sequence=True)` gathers from the tiled video.
# --------------------------------------------------------------------------------------------


def _max_offset(num_total, num_frames: int, stride: int):
    """DMVR's `max(0, L - num_frames * stride)`: the last test clip's offset (see above)."""
    return tf.maximum(tf.cast(num_total, tf.int32) - num_frames * stride, 0)


def _last_fit_offset(num_total, num_frames: int, stride: int):
    """Largest offset whose clip ends on or before the last frame: `max(0, L - (n - 1) * s - 1)`.

    The top of the training offsets (DMVR's `_get_random_sampling_offset`) and the last
    segment's offset in `segment_indices`.
    """
    return tf.maximum(tf.cast(num_total, tf.int32) - (num_frames - 1) * stride - 1, 0)


def clip_indices(num_total, num_frames: int, stride: int, offset):
    """Indices `offset, offset + stride, ...` (`num_frames` of them), looping a short video.

    Returns int32 `[num_frames]`, each index in `[0, num_total)`. `num_total` must be > 0.
    """
    num_total = tf.cast(num_total, tf.int32)
    steps = tf.range(num_frames, dtype=tf.int32) * stride  # [T]
    return tf.math.floormod(tf.cast(offset, tf.int32) + steps, num_total)


def random_clip_indices(num_total, num_frames: int, stride: int, seed):
    """A clip at a uniformly random offset in `[0, max(0, L - (n - 1) * s - 1)]` (training;
    DMVR `sample_sequence(random=True)`). int32 `[num_frames]`."""
    top = _last_fit_offset(num_total, num_frames, stride)
    offset = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=top + 1, dtype=tf.int32)
    return clip_indices(num_total, num_frames, stride, offset)


def middle_clip_indices(num_total, num_frames: int, stride: int):
    """The clip at offset `max(0, L - n * s) // 2` (evaluation; DMVR `sample_sequence(
    random=False)`). int32 `[num_frames]`."""
    return clip_indices(
        num_total, num_frames, stride, _max_offset(num_total, num_frames, stride) // 2
    )


def linspace_clip_indices(num_total, num_frames: int, stride: int, num_clips: int):
    """`num_clips` clips at offsets `int(linspace(0, max(0, L - n * s), num_clips))` (test;
    DMVR `sample_linspace_sequence`, the same float32 `tf.linspace` truncated to int32).

    Returns int32 `[num_clips, num_frames]`. With `num_clips=1` it is the middle clip, as the
    reference takes one test clip (`sample_sequence(random=False)`, not the linspace's 0).
    """
    if num_clips == 1:
        return middle_clip_indices(num_total, num_frames, stride)[None]
    max_offset = tf.cast(_max_offset(num_total, num_frames, stride), tf.float32)
    offsets = tf.cast(tf.linspace(0.0, max_offset, num_clips), tf.int32)  # [V], truncated
    steps = tf.range(num_frames, dtype=tf.int32) * stride  # [T]
    return tf.math.floormod(offsets[:, None] + steps[None, :], tf.cast(num_total, tf.int32))


def num_segments(num_total, num_frames: int, stride: int):
    """Segments of `segment_indices`: `max(1, ceil(num_total / (num_frames * stride)))`, int32."""
    num_total = tf.cast(num_total, tf.int32)
    length = num_frames * stride  # stored frames one segment steps over
    return tf.maximum((num_total + length - 1) // length, 1)


def segment_indices(num_total, num_frames: int, stride: int):
    """Clips that evenly cover the whole video (segment evaluation, paper A.3).

    `S = num_segments(...)` clips of `num_frames` frames every `stride`, the first starting
    at frame 0 and the last ending at the last frame that fits (`offset_k = k * M // (S - 1)`
    with `M = L - (num_frames - 1) * stride - 1`, integer arithmetic), and no clip loops.
    With `stride=1` the clips tile the video, overlapping only as much as rounding
    `num_total` up to whole segments needs; with a larger stride at most one sample position
    is skipped between two clips. One segment (a video no longer than `num_frames * stride`)
    is the middle clip (`middle_clip_indices`), looping a video shorter than the clip as
    `clip_indices` does.

    Returns int32 `[S, num_frames]` (`S` is dynamic), each index in `[0, num_total)`.
    """
    num_total = tf.cast(num_total, tf.int32)
    count = num_segments(num_total, num_frames, stride)
    last = _last_fit_offset(num_total, num_frames, stride)
    k = tf.range(count, dtype=tf.int32)  # [S]
    offsets = tf.where(
        count > 1,
        k * last // tf.maximum(count - 1, 1),
        _max_offset(num_total, num_frames, stride) // 2,
    )  # [S]
    steps = tf.range(num_frames, dtype=tf.int32) * stride  # [T]
    return tf.math.floormod(offsets[:, None] + steps[None, :], num_total)  # [S, T]


# --------------------------------------------------------------------------------------------
# Decoding.
# --------------------------------------------------------------------------------------------


def jpeg_frame_shapes(encoded):
    """Header-only `[height, width, channels]` of each JPEG: int32 `[T, 3]`. Decodes no pixels.

    Raises `InvalidArgumentError` for data that is not a JPEG.
    """
    return tf.map_fn(
        tf.image.extract_jpeg_shape, encoded, fn_output_signature=tf.TensorSpec([3], tf.int32)
    )


def decode_jpeg_frames(encoded):
    """Decode a `[T]` string tensor of JPEGs into uint8 `[T, H, W, 3]` (all frames same size)."""
    return tf.map_fn(
        lambda x: tf.io.decode_jpeg(x, channels=3),
        encoded,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )


def decode_and_crop_jpeg_frames(encoded, crop_window):
    """Decode only the window `[y, x, h, w]` of each JPEG: uint8 `[T, h, w, 3]`.

    Cheaper than decoding whole frames then cropping: libjpeg skips rows outside the window.
    """
    crop_window = tf.cast(crop_window, tf.int32)
    return tf.map_fn(
        lambda x: tf.io.decode_and_crop_jpeg(x, crop_window, channels=3),
        encoded,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )


# --------------------------------------------------------------------------------------------
# Spatial ops. All frames of a clip get the same crop / flip.
# --------------------------------------------------------------------------------------------


def _smallest_side_size(height, width, min_resize):
    """(new_h, new_w) with the shorter side equal to `min_resize`, aspect ratio kept."""
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    target = tf.cast(min_resize, tf.float32)
    scale = target / tf.minimum(h, w)
    new_h = tf.where(h <= w, target, tf.round(h * scale))
    new_w = tf.where(h <= w, tf.round(w * scale), target)
    return tf.cast(new_h, tf.int32), tf.cast(new_w, tf.int32)


def resize_smallest(frames, min_resize, *, antialias: bool = False, dtype=tf.float32):
    """Resize `[T, H, W, C]` so the shorter side is `min_resize` (bilinear). Returns float32
    (or `dtype`: uint8 rounds, as `resize_to`).

    Frames already at that size are only cast.
    """
    shape = tf.shape(frames)
    new_h, new_w = _smallest_side_size(shape[1], shape[2], min_resize)
    if not antialias:
        return resize_to(frames, tf.stack([new_h, new_w]), dtype)
    frames_f = tf.cast(frames, tf.float32)
    same = tf.logical_and(tf.equal(new_h, shape[1]), tf.equal(new_w, shape[2]))
    return tf.cond(
        same,
        lambda: frames_f,
        lambda: tf.image.resize(frames_f, tf.stack([new_h, new_w]), antialias=antialias),
    )  # (antialias: float32 only)


def random_resize_smallest(
    frames, min_resize: int, scale_range: Sequence[float], seed, *, min_size: int = 0
):
    """Scale jitter: resize the shorter side to `min_resize * s`, `s ~ U(scale_range)`.

    The shorter side is never made smaller than `min_size` (pass the crop size), so a
    following crop always fits. Returns float32 `[T, H', W', C]`.
    """
    lo, hi = float(scale_range[0]), float(scale_range[1])
    scale = tf.random.stateless_uniform([], seed=seed, minval=lo, maxval=hi)
    target = tf.maximum(tf.round(float(min_resize) * scale), float(min_size))
    return resize_smallest(frames, tf.cast(target, tf.int32))


def random_crop(frames, crop_size: int, seed):
    """The same random `crop_size x crop_size` window from every frame: `[T, c, c, C]`."""
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    size = tf.stack([shape[0], crop_size, crop_size, shape[3]])
    out = tf.image.stateless_random_crop(frames, size=size, seed=seed)
    return tf.ensure_shape(out, [frames.shape[0], crop_size, crop_size, frames.shape[3]])


def random_flip_left_right(frames, seed, probability: float = 0.5):
    """Mirror the whole clip horizontally with the given probability."""
    frames = tf.convert_to_tensor(frames)
    flip = tf.random.stateless_uniform([], seed=seed) < probability
    return tf.cond(flip, lambda: tf.reverse(frames, axis=[2]), lambda: frames)


def _center_offsets(frames, crop_size: int):
    shape = tf.shape(frames)
    return (shape[1] - crop_size) // 2, (shape[2] - crop_size) // 2


def center_crop(frames, crop_size: int):
    """The central `crop_size x crop_size` window of every frame: `[T, c, c, C]`."""
    frames = tf.convert_to_tensor(frames)
    y, x = _center_offsets(frames, crop_size)
    out = frames[:, y : y + crop_size, x : x + crop_size, :]
    return tf.ensure_shape(out, [frames.shape[0], crop_size, crop_size, frames.shape[3]])


def resized_crop_window_size(height, width, min_resize, crop_size: int):
    """Size `(win_h, win_w)` (int32 scalars) of the window of a `height x width` frame that
    becomes a `crop_size` square crop once the shorter side is resized to `min_resize`.

    The window is `crop_size / scale` pixels with `scale = min_resize / min(height, width)`
    (at least 1, at most the frame), so cropping it and resizing it to `crop_size` equals
    resizing the whole frame and cropping, without resizing the pixels that are thrown away.
    `min_resize` may be a tensor (the training split's scale jitter).
    """
    scale = tf.cast(min_resize, tf.float32) / tf.cast(tf.minimum(height, width), tf.float32)
    window = tf.maximum(tf.cast(tf.round(crop_size / scale), tf.int32), 1)
    return tf.minimum(window, height), tf.minimum(window, width)


def center_crop_window(height, width, min_resize: int, crop_size: int):
    """The centre window `[y, x, win_h, win_w]` (int32 `[4]`) of "resize the shorter side to
    `min_resize`, then centre crop `crop_size`" (see `resized_crop_window_size`).

    The evaluation crop of `VideoParser(split="validation")` (decoded with
    `decode_and_crop_jpeg_frames`) and of the serving pre-processing (`crop_to_window` on
    decoded pixels); follow it with `resize_to_square(frames, crop_size)`.
    """
    win_h, win_w = resized_crop_window_size(height, width, min_resize, crop_size)
    return tf.stack([(height - win_h) // 2, (width - win_w) // 2, win_h, win_w])


def crop_to_window(frames, window):
    """The window `[y, x, h, w]` of every frame of decoded `[T, H, W, C]`: `[T, h, w, C]`
    (what `decode_and_crop_jpeg_frames` returns for the same window of the JPEGs)."""
    window = tf.cast(window, tf.int32)
    y, x, h, w = window[0], window[1], window[2], window[3]
    return frames[:, y : y + h, x : x + w, :]


def resize_to(frames, size, dtype=tf.float32):
    """`[T, h, w, C]` -> `[T, size[0], size[1], C]` in `dtype` (bilinear, `tf.image.resize`).

    Frames already at that size are only cast. `dtype=tf.uint8` rounds the resized pixels
    to the nearest integer (bilinear weights are convex, so they stay in `[0, 255]`), and
    passes uint8 frames that need no resize through untouched: no float copy is made.
    """
    frames = tf.convert_to_tensor(frames)
    dtype = tf.as_dtype(dtype)
    size = tf.cast(size, tf.int32)
    shape = tf.shape(frames)
    same = tf.logical_and(tf.equal(shape[1], size[0]), tf.equal(shape[2], size[1]))

    def to_dtype(x, in_range=False):
        if dtype == tf.uint8 and x.dtype != tf.uint8:
            # Round float pixels (not truncate). Bilinear weights are convex, so pixels
            # resized from uint8 stay in [0, 255] (`in_range`: no clip, a whole pass over
            # the clip less); a caller's float pixels may not.
            x = tf.cast(x, tf.float32)
            if not in_range:
                x = tf.clip_by_value(x, 0.0, 255.0)
            return tf.cast(x + 0.5, dtype)
        return tf.cast(x, dtype)

    def resized():
        return to_dtype(tf.image.resize(frames, size), in_range=frames.dtype == tf.uint8)

    return tf.cond(same, lambda: to_dtype(frames), resized)


def resize_to_square(frames, size: int, dtype=tf.float32):
    """`[T, h, w, C]` -> `[T, size, size, C]` in `dtype` (`resize_to`; only a cast if
    already `size x size`)."""
    frames = tf.convert_to_tensor(frames)
    out = resize_to(frames, [size, size], dtype)
    return tf.ensure_shape(out, [None, size, size, frames.shape[-1]])


def three_crop_band(height, width, min_resize: int, crop_size: int):
    """What "resize the shorter side to `min_resize`, then `three_crops`" keeps of a
    `height x width` frame: the band `[y, x, band_h, band_w]` (int32 `[4]`) of the stored
    frame that the three crops cover together (the whole longer side, the centred
    `resized_crop_window_size` across it), and the size `[h', w']` (int32 `[2]`) that band
    is resized to (`crop_size` across, the resized longer side along).

    Decoding only the band (`decode_and_crop_jpeg_frames`), resizing it and taking
    `three_crops` gives the reference's three crops without decoding or resizing the rows
    (or columns) that no crop uses.
    """
    win_h, win_w = resized_crop_window_size(height, width, min_resize, crop_size)
    new_h, new_w = _smallest_side_size(height, width, min_resize)
    landscape = width >= height
    band_h = tf.where(landscape, win_h, height)
    band_w = tf.where(landscape, width, win_w)
    window = tf.stack([(height - band_h) // 2, (width - band_w) // 2, band_h, band_w])
    size = tf.stack([tf.where(landscape, crop_size, new_h), tf.where(landscape, new_w, crop_size)])
    return window, size


def three_crops(frames, crop_size: int):
    """Three `crop_size` squares along the longer side (start, centre, end): `[3, T, c, c, C]`.

    For landscape frames the crops are left / centre / right, for portrait top / centre /
    bottom; the other axis is centred.
    """
    frames = tf.convert_to_tensor(frames)
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    cy, cx = _center_offsets(frames, crop_size)
    landscape = w >= h
    long_len = tf.where(landscape, w, h)
    starts = tf.stack([0, (long_len - crop_size) // 2, long_len - crop_size])  # [3]
    crops = []
    for i in range(3):
        y = tf.where(landscape, cy, starts[i])
        x = tf.where(landscape, starts[i], cx)
        crops.append(frames[:, y : y + crop_size, x : x + crop_size, :])
    out = tf.stack(crops)  # [3, T, c, c, C]
    return tf.ensure_shape(out, [3, frames.shape[0], crop_size, crop_size, frames.shape[3]])


def normalize(
    frames,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    fused: bool = False,
):
    """Map `[0, 255]` pixels to float32: `[-1, 1]` by default, else `(x / 255 - mean) / std`.

    One cast and one multiply-add per element (TensorFlow reuses the buffer in place, so
    no float32 intermediate stays alive). `fused=True` takes uint8 input through
    `tf.quantization.dequantize` instead (`min + (max - min) * x / 255` per channel, one
    kernel; same values to within 1e-6): measured slower in the input pipeline on this
    CPU (`benchmarks/input_pipeline.py`, 2026-12-07: 58 vs 50 CPU ms per training clip,
    952 vs 828 per 12-view test video), and its `Bitcast` / `Dequantize` ops do not
    convert to OpenVINO.
    """
    mean_ = (0.5, 0.5, 0.5) if mean is None and std is None else (mean if mean is not None else (0.0, 0.0, 0.0))
    std_ = (0.5, 0.5, 0.5) if mean is None and std is None else (std if std is not None else (1.0, 1.0, 1.0))
    frames = tf.convert_to_tensor(frames)
    if fused and frames.dtype == tf.uint8:
        mean_t = tf.constant(mean_, tf.float32)
        std_t = tf.constant(std_, tf.float32)
        # (x / 255 - mean) / std == lo + (hi - lo) * x / 255 with lo = -mean / std and
        # hi = (1 - mean) / std; quint8 shares uint8's bytes, so the bitcast is free.
        return tf.quantization.dequantize(
            tf.bitcast(frames, tf.quint8),
            -mean_t / std_t,
            (1.0 - mean_t) / std_t,
            mode="MIN_COMBINED",
            axis=-1,
        )
    frames = tf.cast(frames, tf.float32)
    if mean is None and std is None:
        return frames * (1.0 / 127.5) - 1.0
    mean_t = tf.constant(mean_, tf.float32)
    std_t = tf.constant(std_, tf.float32)
    # (x / 255 - mean) / std as one multiply-add per element.
    return frames * (1.0 / (255.0 * std_t)) - mean_t / std_t
