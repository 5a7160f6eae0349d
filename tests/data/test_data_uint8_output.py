"""`output_dtype="uint8"`: the pipeline hands out pixels, the consumer normalises them.

Same records, same seed: the uint8 clips, normalised by `data.normalize_inputs`, are the
float32 pipeline's clips up to the rounding of resized pixels (half a grey level), in every
split; frames that need no resize pass through bit for bit. The three-crop test views
decode and resize only the band the crops cover (`video_ops.three_crop_band`): checked
against the reference's order of work (decode the whole frames, resize, crop).
"""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data
from tl_keras.data import video_ops, writer

HALF_LEVEL = 0.5 / 127.5 + 1e-6  # [-1, 1] units


def _textured(num_frames, height, width, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (num_frames, height // 4 + 1, width // 4 + 1, 3))
    big = tf.image.resize(small, (height, width), "bicubic").numpy()
    return np.clip(big, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pattern(tmp_path_factory):
    """Two videos of 20 textured JPEG frames, 40 x 56 (landscape) and 56 x 40 (portrait)."""
    root = tmp_path_factory.mktemp("uint8")
    records = []
    for i, (h, w) in enumerate(((40, 56), (56, 40))):
        frames = [writer.encode_jpeg(f, 95) for f in _textured(20, h, w, seed=i)]
        records.append(writer.make_sequence_example(frames, [i]).SerializeToString())
    path = str(root / "videos.tfrecord")
    writer.write_tfrecord(path, records)
    return path


def _batches(pattern, output_dtype, **kwargs):
    ds = data.video_dataset(pattern, num_classes=2, num_frames=4, stride=2, batch_size=2,
                            seed=3, output_dtype=output_dtype, **kwargs)
    return [tuple(np.asarray(t) for t in b) for b in ds.take(2)]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(split="train", crop_size=24, min_resize=32),
        dict(split="validation", crop_size=24, min_resize=32),
        dict(split="test", crop_size=24, min_resize=32, num_clips=2, num_crops=3),
        dict(split="test", crop_size=24, min_resize=32, num_clips=2, num_crops=1),
        dict(split="segments", crop_size=24, min_resize=32, num_crops=3),
    ],
    ids=["train", "validation", "test_3_crops", "test_1_crop", "segments"],
)
def test_uint8_clips_normalised_are_the_float32_clips(pattern, kwargs):
    want = _batches(pattern, "float32", **kwargs)
    got = _batches(pattern, "uint8", **kwargs)
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        assert g[0].dtype == np.uint8 and w[0].dtype == np.float32
        assert g[0].shape == w[0].shape
        normalised = np.asarray(data.normalize_inputs(g[0]))
        np.testing.assert_allclose(normalised, w[0], rtol=0, atol=HALF_LEVEL)
        for a, b in zip(g[1:], w[1:]):  # labels (and segment ids): unchanged
            np.testing.assert_array_equal(a, b)


def test_frames_that_need_no_resize_pass_through_bit_for_bit(tmp_path):
    """Stored at the crop size: the uint8 clip is the decoded JPEG, untouched."""
    frames = _textured(6, 24, 24)
    jpegs = [writer.encode_jpeg(f, 95) for f in frames]
    path = str(tmp_path / "v.tfrecord")
    writer.write_tfrecord(path, [writer.make_sequence_example(jpegs, [0]).SerializeToString()])
    (clip,), _ = next(iter(data.video_dataset(
        path, num_classes=1, num_frames=6, stride=1, crop_size=24, min_resize=24,
        split="validation", batch_size=1, output_dtype="uint8")))
    decoded = np.stack([tf.io.decode_jpeg(j).numpy() for j in jpegs])
    np.testing.assert_array_equal(np.asarray(clip), decoded)


@pytest.mark.parametrize("shape", [(40, 56), (56, 40), (32, 45)])
def test_three_crop_band_matches_resizing_the_whole_frame(shape):
    """Decode the band, resize it, crop three times == decode, resize, crop three times
    (the reference's order): exact along the longer side; across it, the band's window is
    rounded to whole stored pixels, so a few pixels differ by a grey level or so."""
    h, w = shape
    encoded = tf.constant([writer.encode_jpeg(f, 95) for f in _textured(3, h, w)])
    full = video_ops.resize_smallest(video_ops.decode_jpeg_frames(encoded), 32)
    want = video_ops.three_crops(full, 24).numpy()
    window, size = video_ops.three_crop_band(h, w, 32, 24)
    band = video_ops.decode_and_crop_jpeg_frames(encoded, window)
    got = video_ops.three_crops(video_ops.resize_to(band, size), 24).numpy()
    assert got.shape == want.shape == (3, 3, 24, 24, 3)
    err = np.abs(got - want)
    assert err.mean() < 1.0 and np.percentile(err, 99) < 8, (err.mean(), err.max())
    if min(h, w) == 32:  # no resize: the band is the crops' pixels exactly
        np.testing.assert_array_equal(got, want)


def test_three_crop_band_inside_tf_data():
    ds = tf.data.Dataset.from_tensor_slices(tf.constant([[240, 320], [480, 270]]))
    bands = list(ds.map(lambda s: video_ops.three_crop_band(s[0], s[1], 256, 224)))
    (w0, s0), (w1, s1) = [(w.numpy().tolist(), s.numpy().tolist()) for w, s in bands]
    # Landscape: the whole width, the centred rows of one 224 crop of the resized frame.
    assert w0 == [15, 0, 210, 320] and s0 == [224, 341]
    # Portrait: the whole height, the centred columns.
    assert w1 == [0, 17, 480, 236] and s1 == [455, 224]  # 224 * 270 / 256 = 236.25


def test_resize_to_uint8_rounds_to_nearest():
    x = np.random.default_rng(0).integers(0, 256, (2, 9, 13, 3)).astype(np.uint8)
    f = video_ops.resize_to(x, [5, 7]).numpy()
    u = video_ops.resize_to(x, [5, 7], tf.uint8).numpy()
    assert u.dtype == np.uint8
    np.testing.assert_array_equal(u, np.floor(f + 0.5).astype(np.uint8))


def test_bad_output_dtype_is_named():
    with pytest.raises(ValueError, match="output_dtype='float16'"):
        data.VideoParser(split="train", num_frames=2, stride=1, crop_size=8, min_resize=8,
                         num_classes=2, output_dtype="float16")
