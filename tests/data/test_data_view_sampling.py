"""Exact view sampling: the pipeline shows a model the frames the reference pipeline shows it.

The reference is DMVR (`dmvr/processors.py`: `sample_linspace_sequence`, `sample_sequence`,
`_get_random_sampling_offset`, `sample_or_pad_sequence_indices`), as Scenic's video loader
uses it; the rule is restated in `tl_keras/data/video_ops.py`. Here it is written again in
plain integer NumPy, and checked against the ops (eagerly and inside `Dataset.map`) and
end to end: records whose frame `i` is a flat colour encoding `i` go through
`video_dataset`, and the frame indices are read back from the output pixels.
"""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data
from tl_keras.data import video_ops as ops
from tl_keras.data import writer

T, STRIDE = 8, 2  # n * s = 16 stored frames
# Stored lengths: 1 and 10 (< n * s: loop), 15 = (n - 1) * s + 1, 16 = n * s, 17, the issue's
# 50 (test starts 0/11/22/34), 64, 65, 100.
LENGTHS = (1, 10, 15, 16, 17, 50, 64, 65, 100)


# -- the reference rule, in NumPy ------------------------------------------------------------


def ref_max_offset(length, t=T, stride=STRIDE):
    return max(0, length - t * stride)


def ref_test_offsets(length, num_clips, t=T, stride=STRIDE):
    """`tf.cast(tf.linspace(0., max_offset, V), tf.int32)` as exact integer truncation; a single
    test clip is the middle clip (Scenic / DMVR `add_image`: `num_test_clips == 1`)."""
    m = ref_max_offset(length, t, stride)
    if num_clips == 1:
        return [m // 2]
    return [k * m // (num_clips - 1) for k in range(num_clips)]


def ref_train_top(length, t=T, stride=STRIDE):
    """Largest training offset: DMVR draws `uniform(maxval=max(L - (n - 1) * s, 1))`."""
    return max(length - (t - 1) * stride, 1) - 1


def ref_clip(length, offset, t=T, stride=STRIDE):
    """The tiled-video gather of `sample_or_pad_sequence_indices(repeat_sequence=True)`."""
    tiled = np.tile(np.arange(length), -(-(offset + t * stride) // length))
    return tiled[offset + stride * np.arange(t)]


# -- the ops against the rule ----------------------------------------------------------------


@pytest.mark.parametrize("t, stride", [(T, STRIDE), (4, 3), (5, 1)])
def test_ops_match_the_rule_eagerly_and_in_dataset_map(t, stride):
    lengths = np.arange(1, 301)
    views = (1, 2, 3, 4, 5, 10)

    def sample(length):
        out = {"middle": ops.middle_clip_indices(length, t, stride)}
        for v in views:
            out[f"test{v}"] = ops.linspace_clip_indices(length, t, stride, v)
        return out

    ds = tf.data.Dataset.from_tensor_slices(lengths.astype(np.int32)).map(sample)
    for length, got in zip(lengths, ds.as_numpy_iterator(), strict=True):
        length = int(length)
        middle = ref_clip(length, ref_max_offset(length, t, stride) // 2, t, stride)
        np.testing.assert_array_equal(got["middle"], middle, err_msg=f"L={length}")
        for v in views:
            want = [ref_clip(length, o, t, stride) for o in ref_test_offsets(length, v, t, stride)]
            np.testing.assert_array_equal(got[f"test{v}"], want, err_msg=f"L={length} V={v}")
    for length in LENGTHS:  # eagerly: the same values
        np.testing.assert_array_equal(
            ops.linspace_clip_indices(length, t, stride, 4).numpy(),
            [ref_clip(length, o, t, stride) for o in ref_test_offsets(length, 4, t, stride)],
        )
        np.testing.assert_array_equal(
            ops.middle_clip_indices(length, t, stride).numpy(),
            ref_clip(length, ref_max_offset(length, t, stride) // 2, t, stride),
        )


@pytest.mark.parametrize("length", [1, 10, 15, 16, 17, 50])
def test_training_offsets_fill_the_reference_range(length):
    top = ref_train_top(length)
    n = 600  # > 36 * ln(36) * 4 draws: every offset of 0..35 is hit (fixed seeds)
    seeds = tf.stack([tf.range(n, dtype=tf.int64), tf.fill([n], tf.constant(5, tf.int64))], 1)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(
        lambda s: ops.random_clip_indices(length, T, STRIDE, s)
    )
    starts = set()
    for idx in ds.as_numpy_iterator():
        np.testing.assert_array_equal(idx, ref_clip(length, int(idx[0])))
        starts.add(int(idx[0]))
    assert starts == set(range(top + 1))  # 0..top, each reached, nothing outside
    eager = ops.random_clip_indices(length, T, STRIDE, tf.constant([3, 5], tf.int64)).numpy()
    assert 0 <= eager[0] <= top and (eager == ref_clip(length, int(eager[0]))).all()


def test_issue_example_fifty_frames():
    # 50 frames, 8 every 2, 4 test clips: starts 0/11/22/34 (not 0/12/23/35), eval at 17.
    assert ref_test_offsets(50, 4) == [0, 11, 22, 34]
    np.testing.assert_array_equal(ops.linspace_clip_indices(50, 8, 2, 4)[:, 0], [0, 11, 22, 34])
    assert int(ops.middle_clip_indices(50, 8, 2)[0]) == 17


# -- end to end: records whose frames encode their index --------------------------------------

STEP, BASE = 8, 4  # channel value = BASE + STEP * digit; JPEG error on a flat frame << STEP / 2


def indexed_frames(length, height=16, width=24):
    """uint8 `[L, H, W, 3]`: frame i is flat, R and G encode `i // 16` and `i % 16`."""
    i = np.arange(length)
    colour = np.stack([BASE + STEP * (i // 16), BASE + STEP * (i % 16), np.full_like(i, 128)], 1)
    return np.broadcast_to(colour[:, None, None, :], (length, height, width, 3)).astype(np.uint8)


def frame_indices(video):
    """Stored-frame index of every output frame `[..., T, h, w, 3]` -> int `[..., T]`."""
    video = np.asarray(video)
    pixels = video.astype(np.float64) if video.dtype == np.uint8 else (video + 1.0) * 127.5
    assert pixels.std(axis=(-3, -2)).max() < 2.0  # each output frame is one flat stored frame
    rgb = pixels.mean(axis=(-3, -2))  # [..., T, 3]
    digits = np.rint((rgb[..., :2] - BASE) / STEP)
    assert np.abs(rgb[..., :2] - (BASE + STEP * digits)).max() < 2.5  # unambiguous
    return (16 * digits[..., 0] + digits[..., 1]).astype(int)


@pytest.fixture(scope="module")
def indexed_file(tmp_path_factory):
    """One record per length in `LENGTHS`, label = its position in `LENGTHS`."""
    path = str(tmp_path_factory.mktemp("views") / "indexed.tfrecord")
    recs = []
    for k, length in enumerate(LENGTHS):
        jpegs = [writer.encode_jpeg(f, 95) for f in indexed_frames(length)]
        recs.append(writer.make_sequence_example(jpegs, [k]).SerializeToString())
    writer.write_tfrecord(path, recs)
    return path


def read(path, split, **kwargs):
    args = dict(
        num_classes=len(LENGTHS),
        split=split,
        num_frames=T,
        stride=STRIDE,
        crop_size=8,
        min_resize=8,
        batch_size=len(LENGTHS),
        normalization="[-1,1]",
    )
    args.update(kwargs)
    return data.video_dataset(path, **args)


def test_validation_is_the_reference_middle_clip(indexed_file):
    videos, labels = next(iter(read(indexed_file, "validation")))
    assert videos.shape == (len(LENGTHS), T, 8, 8, 3)
    got = frame_indices(videos.numpy())
    for row, k in zip(got, labels.numpy().argmax(1), strict=True):
        length = LENGTHS[k]
        np.testing.assert_array_equal(
            row, ref_clip(length, ref_max_offset(length) // 2), err_msg=f"L={length}"
        )


@pytest.mark.parametrize("num_clips, num_crops", [(4, 3), (1, 1)])
def test_test_views_are_the_reference_linspace_clips(indexed_file, num_clips, num_crops):
    ds = read(indexed_file, "test", num_clips=num_clips, num_crops=num_crops)
    videos, labels = next(iter(ds))
    views = num_clips * num_crops
    got = frame_indices(videos.numpy()).reshape(len(LENGTHS), views, T)
    for rows, k in zip(got, labels.numpy().argmax(1), strict=True):
        length = LENGTHS[k]
        clips = [ref_clip(length, o) for o in ref_test_offsets(length, num_clips)]
        # Crop-major views: view = crop * num_clips + clip.
        want = [clips[v % num_clips] for v in range(views)]
        np.testing.assert_array_equal(rows, want, err_msg=f"L={length}")


def test_train_clips_are_strided_runs_from_a_reference_offset(indexed_file):
    ds = read(indexed_file, "train", seed=3, batch_size=3)
    starts = {length: set() for length in LENGTHS}
    for videos, labels in ds.take(12):  # 36 clips: 4 passes over the 9 videos
        for row, k in zip(frame_indices(videos.numpy()), labels.numpy().argmax(1), strict=True):
            length, offset = LENGTHS[k], int(row[0])
            assert 0 <= offset <= ref_train_top(length), (length, offset)
            np.testing.assert_array_equal(row, ref_clip(length, offset), err_msg=f"L={length}")
            starts[length].add(offset)
    assert all(starts[length] == {0} for length in LENGTHS if ref_train_top(length) == 0)
    assert len(starts[100]) > 1  # a random offset, not one fixed clip
