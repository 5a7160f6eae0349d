"""tl_keras.data.preprocessing: the evaluation pre-processing of raw pixels (what serving, the
few-shot features and the token maps feed a model) is the evaluation pipeline's, exactly."""

import types

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data
from tl_keras.data import writer
import jpeg_images


def _image_record(jpeg, label):
    ex = tf.train.Example()
    ex.features.feature["image/encoded"].bytes_list.value.append(jpeg)
    ex.features.feature["image/class/label"].int64_list.value.append(label)
    return ex.SerializeToString()


def _model_with_input(*shape):
    """What `preprocessing_for` reads of a model: its one input's shape."""
    return types.SimpleNamespace(inputs=[types.SimpleNamespace(shape=(None, *shape))])


def test_image_preprocessing_is_the_evaluation_pipeline(tmp_path):
    prep = data.preprocessing_for(_model_with_input(32, 32, 3))
    assert (prep.min_resize, prep.crop_size) == (37, 32)
    images = [jpeg_images.pixels((45, 38, 3), 5), jpeg_images.pixels((30, 64, 3), 6), jpeg_images.pixels((80, 50, 3), 7)]
    jpegs = [jpeg_images.jpeg(i) for i in images]
    path = str(tmp_path / "images.tfrecord")
    writer.write_tfrecord(path, [_image_record(j, 1) for j in jpegs])
    ds = data.image_dataset(
        path, split="validation", image_size=32, resize_size=37, num_classes=5, batch_size=1,
        on_error="raise",
    )
    pipeline = np.concatenate([x.numpy() for x, _ in ds])
    encoded = data.preprocess_encoded(np.array(jpegs, dtype=object), prep).numpy()
    decoded = np.concatenate([data.preprocess(jpeg_images.decode(j)[None], prep).numpy() for j in jpegs])
    assert pipeline.shape == (3, 32, 32, 3)
    np.testing.assert_allclose(encoded, pipeline, atol=1e-5)
    np.testing.assert_allclose(decoded, pipeline, atol=1e-5)
    assert -1.0 <= pipeline.min() and pipeline.max() <= 1.0


@pytest.mark.parametrize("eval_split", ["validation", "test"])
def test_video_preprocessing_is_the_evaluation_pipeline(tmp_path, eval_split):
    prep = data.Preprocessing(
        kind="video", crop_size=16, min_resize=20, num_frames=4, eval_split=eval_split
    )
    clips = [jpeg_images.pixels((4, 36, 48, 3), 8), jpeg_images.pixels((4, 50, 30, 3), 9)]
    jpegs = [[jpeg_images.jpeg(f) for f in clip] for clip in clips]
    path = str(tmp_path / "videos.tfrecord")
    writer.write_tfrecord(
        path, [writer.make_sequence_example(j, [0]).SerializeToString() for j in jpegs]
    )
    views = {"num_clips": 1, "num_crops": 1} if eval_split == "test" else {}
    ds = data.video_dataset(
        path, split=eval_split, num_frames=4, stride=1, crop_size=16, min_resize=20,
        num_classes=2, batch_size=1, on_error="raise", **views,
    )
    pipeline = np.concatenate([x.numpy() for x, _ in ds])
    assert pipeline.shape == (2, 4, 16, 16, 3)
    for i, clip in enumerate(jpegs):
        encoded = data.preprocess_encoded(np.array([clip], dtype=object), prep).numpy()
        decoded = data.preprocess(np.stack([jpeg_images.decode(j) for j in clip])[None], prep).numpy()
        np.testing.assert_allclose(encoded[0], pipeline[i], atol=1e-5)
        np.testing.assert_allclose(decoded[0], pipeline[i], atol=1e-5)
    # The two evaluation modes really differ (so the test above could fail).
    other = data.Preprocessing(
        kind="video", crop_size=16, min_resize=20, num_frames=4,
        eval_split="test" if eval_split == "validation" else "validation",
    )
    other_out = data.preprocess(np.stack([jpeg_images.decode(j) for j in jpegs[0]])[None], other).numpy()
    assert np.abs(other_out[0] - pipeline[0]).max() > 1e-3


def test_normalization_choices():
    pixels = np.full((1, 8, 8, 3), 255, np.uint8)
    for normalization, value in (("[-1,1]", 1.0), ("[0,1]", 1.0), ("imagenet", (1 - 0.485) / 0.229)):
        prep = data.Preprocessing(kind="image", crop_size=8, min_resize=8, normalization=normalization)
        np.testing.assert_allclose(data.preprocess(pixels, prep).numpy()[..., 0], value, rtol=1e-6)
    with pytest.raises(ValueError, match="normalization"):
        data.Preprocessing(kind="image", crop_size=8, min_resize=8, normalization="bogus")
    with pytest.raises(ValueError, match="min_resize"):
        data.Preprocessing(kind="image", crop_size=8, min_resize=7)


def test_preprocessing_for_reads_the_input_shape():
    video = data.preprocessing_for(_model_with_input(4, 32, 32, 3), min_resize=40,
                                   eval_split="validation")
    assert video == data.Preprocessing(kind="video", crop_size=32, min_resize=40, num_frames=4,
                                       eval_split="validation")
    assert video.input_shape == (4, 32, 32, 3)
    # JSON round trip (the serving info file stores `to_dict()`): lists become tuples.
    mean_std = [[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
    prep = data.Preprocessing(**{**video.to_dict(), "normalization": mean_std})
    assert prep.normalization == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(ValueError, match="input_kind='video'"):
        data.preprocessing_for(_model_with_input(32, 32, 3), input_kind="video")
    with pytest.raises(ValueError, match="crop_size=48 differs from the model's input size 32"):
        data.preprocessing_for(_model_with_input(32, 32, 3), crop_size=48)
    with pytest.raises(ValueError, match="square"):
        data.preprocessing_for(_model_with_input(32, 24, 3))
    with pytest.raises(ValueError, match="exactly one input"):
        data.preprocessing_for(types.SimpleNamespace(inputs=[]))
