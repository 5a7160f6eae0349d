"""tl_keras.data.video_ops: every op eagerly and inside tf.data (Dataset.map)."""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.data import video_ops as ops


def both(fn, *args):
    """Run `fn(*args)` eagerly and inside `Dataset.map`; assert equal; return the result."""
    eager = tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    ds = tf.data.Dataset.from_tensors(tuple(tf.convert_to_tensor(a) for a in args)).map(fn)
    graph = next(iter(ds.as_numpy_iterator()))
    tf.nest.map_structure(np.testing.assert_array_equal, eager, graph)
    return eager


def seed(i):
    return tf.constant([i, 7], tf.int64)


def over_seeds(fn, x, n):
    """`fn(x, seed(i))` for i < n, eagerly and in one `Dataset.map`; asserts equal; returns list."""
    eager = [fn(x, seed(i)).numpy() for i in range(n)]
    x = tf.convert_to_tensor(x)
    ds = tf.data.Dataset.range(n).map(lambda i: fn(x, tf.stack([i, tf.constant(7, tf.int64)])))
    for a, b in zip(eager, ds.as_numpy_iterator(), strict=True):
        np.testing.assert_array_equal(a, b)
    return eager


def position_frames(t=3, h=10, w=14):
    """uint8 [T, H, W, 3] with channel 0 = row, 1 = column, 2 = frame index."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    frames = np.stack(
        [
            np.broadcast_to(y, (t, h, w)),
            np.broadcast_to(x, (t, h, w)),
            np.broadcast_to(np.arange(t)[:, None, None], (t, h, w)),
        ],
        axis=-1,
    )
    return frames.astype(np.uint8)


# -- temporal sampling ---------------------------------------------------------------------------
# The reference rule (DMVR `dmvr/processors.py`, see `video_ops`), for n frames every s in L:
# test offsets int(linspace(0, max(0, L - n*s), V)), eval offset max(0, L - n*s) // 2,
# train offsets uniform in [0, max(0, L - (n-1)*s - 1)]; a short video loops (index mod L).


def rule_max_offset(num_total, t, stride):
    return max(0, num_total - t * stride)


def test_clip_indices_steps_by_stride_and_loops_a_short_video():
    out = both(lambda n, o: ops.clip_indices(n, 4, 2, o), 5, 0)
    np.testing.assert_array_equal(out, [0, 2, 4, 1])


def test_random_clip_indices_offsets_cover_the_valid_range():
    n, t, stride = 40, 5, 3
    top = n - (t - 1) * stride - 1  # DMVR: maxval = L - (n-1)*s, exclusive -> 0..27
    starts = set()
    for idx in over_seeds(lambda n_, s: ops.random_clip_indices(n_, t, stride, s), n, 200):
        np.testing.assert_array_equal(np.diff(idx), stride)
        assert 0 <= idx[0] and idx[-1] < n
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) == top
    assert len(starts) > 20  # spread over the range, not stuck


def test_random_clip_indices_same_seed_same_clip_and_short_video_loops():
    a = ops.random_clip_indices(100, 8, 2, seed(3)).numpy()
    b = ops.random_clip_indices(100, 8, 2, seed(3)).numpy()
    np.testing.assert_array_equal(a, b)
    short = both(lambda n, s: ops.random_clip_indices(n, 8, 1, s), 5, seed(1))
    np.testing.assert_array_equal(short, [0, 1, 2, 3, 4, 0, 1, 2])


@pytest.mark.parametrize("num_total", [5, 8, 20, 21, 23])
def test_middle_clip_indices(num_total):
    # 4 frames every 2: offset max(0, L - 8) // 2 (21 -> 6, where "L - span 7" gave 7).
    offset = rule_max_offset(num_total, 4, 2) // 2
    expected = (offset + 2 * np.arange(4)) % num_total
    out = both(lambda n: ops.middle_clip_indices(n, 4, 2), num_total)
    np.testing.assert_array_equal(out, expected)


def test_linspace_clip_indices_truncates_linspace_to_max_offset():
    # 21 frames, 4 every 2: max_offset 13, linspace 0, 6.5, 13 -> offsets 0, 6, 13.
    out = both(lambda n: ops.linspace_clip_indices(n, 4, 2, 3), 21)
    np.testing.assert_array_equal(out, [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]])
    # The example: 50 frames, 8 every 2, 4 clips -> starts 0 / 11 / 22 / 34.
    out = both(lambda n: ops.linspace_clip_indices(n, 8, 2, 4), 50)
    np.testing.assert_array_equal(out[:, 0], [0, 11, 22, 34])
    np.testing.assert_array_equal(np.diff(out, axis=1), 2)
    # One clip is the middle clip (the reference's single test clip), not offset 0.
    one = both(lambda n: ops.linspace_clip_indices(n, 4, 2, 1), 21)
    np.testing.assert_array_equal(one, [[6, 8, 10, 12]])


def test_linspace_clip_indices_short_video_all_clips_loop_from_zero():
    out = both(lambda n: ops.linspace_clip_indices(n, 4, 2, 3), 5)  # 5 < 4 * 2
    np.testing.assert_array_equal(out, [[0, 2, 4, 1]] * 3)


@pytest.mark.parametrize(
    "num_total, expected",
    [
        # 4 frames every 2: a segment steps over 8 stored frames and spans 7.
        (5, [[0, 2, 4, 1]]),  # shorter than one segment: one clip, looping
        (8, [[0, 2, 4, 6]]),  # exactly one segment: the middle clip (max_offset 8 - 8 = 0)
        (9, [[0, 2, 4, 6], [2, 4, 6, 8]]),  # just over one: two, the last ends at frame 8
        # 2.5 segments -> 3, offsets k * 13 // 2 = 0, 6, 13: the last ends at the last frame.
        (20, [[0, 2, 4, 6], [6, 8, 10, 12], [13, 15, 17, 19]]),
    ],
)
def test_segment_indices_cover_the_whole_video(num_total, expected):
    out = both(lambda n: ops.segment_indices(n, 4, 2), num_total)
    np.testing.assert_array_equal(out, expected)
    assert both(lambda n: ops.num_segments(n, 4, 2), num_total) == len(expected)


@pytest.mark.parametrize("stride", [1, 3])
def test_segment_indices_cover_every_frame_without_looping(stride):
    t = 8
    span, length = (t - 1) * stride + 1, t * stride
    for n in range(1, 80):
        idx = ops.segment_indices(n, t, stride).numpy()  # [S, 8]
        assert idx.shape == (max(1, -(-n // length)), t)
        if n >= span:  # at least one clip's span: no clip wraps around
            assert (np.diff(idx, axis=1) == stride).all()
        if len(idx) > 1:  # first frame to last; between clips at most one sample is skipped
            start, end = idx[:, 0], idx[:, -1]
            assert start[0] == 0 and end[-1] == n - 1
            assert (start[1:] - end[:-1] <= 2 * stride - 1).all()
        else:  # one segment: the middle clip, as the validation split takes
            np.testing.assert_array_equal(idx[0], ops.middle_clip_indices(n, t, stride).numpy())


# -- decoding ------------------------------------------------------------------------------------


@pytest.fixture
def jpegs():
    frames = np.stack([np.full((24, 32, 3), 40 * (i + 1), np.uint8) for i in range(3)])
    frames[:, 5:9, 20:30] = 250  # a bright patch to check crop windows
    return frames, tf.constant([tf.io.encode_jpeg(f, quality=100).numpy() for f in frames])


def test_jpeg_frame_shapes_reads_headers(jpegs):
    _, encoded = jpegs
    np.testing.assert_array_equal(both(ops.jpeg_frame_shapes, encoded), [[24, 32, 3]] * 3)


def test_decode_jpeg_frames(jpegs):
    frames, encoded = jpegs
    out = both(ops.decode_jpeg_frames, encoded)
    assert out.shape == (3, 24, 32, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames).mean() < 2


def test_decode_and_crop_jpeg_frames_equals_decode_then_crop(jpegs):
    _, encoded = jpegs
    window = tf.constant([4, 18, 8, 12])
    out = both(ops.decode_and_crop_jpeg_frames, encoded, window)
    full = ops.decode_jpeg_frames(encoded).numpy()
    assert out.shape == (3, 8, 12, 3)
    assert np.abs(out.astype(int) - full[:, 4:12, 18:30]).max() <= 3


# -- spatial ops ---------------------------------------------------------------------------------


def test_resize_smallest_landscape_portrait_and_noop():
    land = np.zeros((2, 24, 32, 3), np.uint8)
    assert both(lambda f: ops.resize_smallest(f, 12), land).shape == (2, 12, 16, 3)
    port = np.zeros((2, 30, 20, 3), np.uint8)
    assert both(lambda f: ops.resize_smallest(f, 10), port).shape == (2, 15, 10, 3)
    frames = position_frames()
    same = both(lambda f: ops.resize_smallest(f, 10), frames)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, frames.astype(np.float32))


def test_random_resize_smallest_stays_in_scale_range_and_above_min_size():
    frames = np.zeros((1, 20, 30, 3), np.uint8)
    sides = set()
    fn = lambda f, s: ops.random_resize_smallest(f, 20, (0.5, 1.5), s, min_size=16)  # noqa: E731
    for i in range(30):  # output shapes differ, so each seed is its own Dataset.map
        out = both(fn, frames, seed(i)) if i < 3 else fn(frames, seed(i)).numpy()
        short = min(out.shape[1:3])
        assert 16 <= short <= 30
        assert (
            out.shape[2] == round(out.shape[1] * 1.5)
            or abs(out.shape[2] / out.shape[1] - 1.5) < 0.05
        )
        sides.add(short)
    assert len(sides) > 5


def test_random_crop_same_window_in_every_frame():
    frames = position_frames(t=3, h=10, w=14)
    offsets = set()
    for out in over_seeds(lambda f, s: ops.random_crop(f, 6, s), frames, 20):
        assert out.shape == (3, 6, 6, 3)
        y0, x0 = int(out[0, 0, 0, 0]), int(out[0, 0, 0, 1])
        np.testing.assert_array_equal(out, frames[:, y0 : y0 + 6, x0 : x0 + 6])
        offsets.add((y0, x0))
    assert len(offsets) > 5


def test_random_flip_left_right_flips_whole_clip_sometimes():
    frames = position_frames()
    flipped = 0
    for out in over_seeds(ops.random_flip_left_right, frames, 40):
        if np.array_equal(out, frames[:, :, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, frames)
    assert 8 <= flipped <= 32


def test_center_crop():
    frames = position_frames(h=10, w=14)
    out = both(lambda f: ops.center_crop(f, 6), frames)
    np.testing.assert_array_equal(out, frames[:, 2:8, 4:10])


def test_three_crops_along_the_longer_side():
    land = position_frames(h=10, w=16)
    out = both(lambda f: ops.three_crops(f, 10), land)
    assert out.shape == (3, 3, 10, 10, 3)
    for view, x0 in zip(out, (0, 3, 6)):
        np.testing.assert_array_equal(view, land[:, :, x0 : x0 + 10])
    port = position_frames(h=16, w=10)
    out = both(lambda f: ops.three_crops(f, 8), port)
    for view, y0 in zip(out, (0, 4, 8)):
        np.testing.assert_array_equal(view, port[:, y0 : y0 + 8, 1:9])


def test_normalize_ranges():
    x = np.array([[0, 255, 51]], np.uint8).reshape(1, 1, 1, 3)
    np.testing.assert_allclose(
        both(ops.normalize, x).ravel(), [-1.0, 1.0, 51 / 127.5 - 1], rtol=1e-6
    )
    mean, std = (0.5, 0.5, 0.2), (0.5, 0.25, 0.1)
    out = both(lambda v: ops.normalize(v, mean, std), x).ravel()
    np.testing.assert_allclose(
        out, [(0 - 0.5) / 0.5, (1 - 0.5) / 0.25, (0.2 - 0.2) / 0.1], atol=1e-6
    )


def test_normalize_default_equals_fused_without_dequantize():
    """The default (cast + multiply-add: pipelines, serving graphs, other runtimes) gives
    the values of the fused uint8 kernel (`fused=True`), from a graph with no Bitcast /
    Dequantize op (OpenVINO converts neither)."""
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for m, s in ((None, None), (mean, std)):
        fused = both(lambda v: ops.normalize(v, m, s, fused=True), x)
        plain = both(lambda v: ops.normalize(v, m, s), x)
        np.testing.assert_allclose(plain, fused, atol=2e-6)
    graph = tf.function(lambda v: ops.normalize(v, mean, std)).get_concrete_function(
        tf.TensorSpec([None, 16, 16, 3], tf.uint8)
    ).graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"Bitcast", "Dequantize"}, op_types


# -- the evaluation crop window (shared by VideoParser and the serving pre-processing) -----------


def test_center_crop_window_is_the_crop_of_the_resized_frame():
    # 40 x 60 frame, shorter side 40 -> 20 (scale 1/2), crop 8: a 16 x 16 window, centred.
    window = both(lambda h, w: ops.center_crop_window(h, w, 20, 8), 40, 60)
    np.testing.assert_array_equal(window, [12, 22, 16, 16])
    # Portrait; the window rounds (crop 7 of 20: 14 of 40) and is centred on the longer side.
    window = both(lambda h, w: ops.center_crop_window(h, w, 20, 7), 60, 40)
    np.testing.assert_array_equal(window, [23, 13, 14, 14])
    # Upscaling: shorter side 10 -> 20, crop 20: a window of the whole shorter side.
    window = both(lambda h, w: ops.center_crop_window(h, w, 20, 20), 10, 16)
    np.testing.assert_array_equal(window, [0, 3, 10, 10])
    # Training's jittered shorter side (a float tensor) gives the window size the same way.
    size = both(lambda s: ops.resized_crop_window_size(40, 60, s, 8), tf.constant(40.0))
    np.testing.assert_array_equal(size, [8, 8])


def test_crop_to_window_equals_decode_and_crop(jpegs):
    _, encoded = jpegs
    window = tf.constant([4, 18, 8, 12])
    decoded = ops.decode_jpeg_frames(encoded)
    out = both(ops.crop_to_window, decoded, window)
    np.testing.assert_array_equal(out, decoded.numpy()[:, 4:12, 18:30])
    fused = ops.decode_and_crop_jpeg_frames(encoded, window).numpy()
    assert np.abs(out.astype(int) - fused).max() <= 3


def test_resize_to_square_resizes_or_only_casts():
    frames = position_frames(h=10, w=14)
    out = both(lambda f: ops.resize_to_square(f, 6), frames)
    assert out.shape == (3, 6, 6, 3) and out.dtype == np.float32
    same = both(lambda f: ops.resize_to_square(f, 10), frames[:, :, :10])
    np.testing.assert_array_equal(same, frames[:, :, :10].astype(np.float32))
