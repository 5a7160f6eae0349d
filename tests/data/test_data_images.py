"""image_dataset: classic ImageNet TFRecords (1-based labels) and TFDS imagenet2012."""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data
from tl_keras.data import writer


def image_example(image, label):
    ex = tf.train.Example()
    ex.features.feature["image/encoded"].bytes_list.value.append(
        image if isinstance(image, bytes) else writer.encode_jpeg(image, 95)
    )
    if label is not None:
        ex.features.feature["image/class/label"].int64_list.value.append(label)
    return ex.SerializeToString()


def banded(height=40, width=80):
    """Red outer fifths, blue centre: a centre crop sees only blue."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = 220
    img[:, width // 5 : 4 * width // 5] = (0, 0, 220)
    return img


def test_eval_resize_centre_crop_and_one_based_labels(records):
    path = records.write("val.tfrecord", [image_example(banded(), k) for k in (1, 2, 3)])
    ds = data.image_dataset(path, split="validation", image_size=16, num_classes=3, batch_size=3)
    x, y = next(iter(ds))
    assert x.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(y, np.eye(3))  # stored 1, 2, 3 -> classes 0, 1, 2
    rgb = ((x.numpy() + 1) * 127.5).mean(axis=(0, 1, 2))
    assert rgb[2] > 200 and rgb[0] < 20  # only the blue centre: shorter side 18, crop 16 of 36 wide


def test_train_inception_crop_varies_and_flip(records):
    gradient = np.broadcast_to(
        np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], (48, 64, 3)
    ).copy()
    path = records.write("train.tfrecord", [image_example(gradient, 1)])
    ds = data.image_dataset(path, split="train", image_size=24, num_classes=2, batch_size=1, seed=0)
    views = np.stack([x[0].numpy() for x, _ in ds.take(12)])
    assert views.shape == (12, 24, 24, 3) and views.min() >= -1 and views.max() <= 1
    assert len({v.mean().round(3) for v in views}) > 6  # different crops
    left_right = views[:, :, :3].mean(axis=(1, 2, 3)) < views[:, :, -3:].mean(axis=(1, 2, 3))
    assert left_right.any() and (~left_right).any()  # some crops were flipped


def test_bad_images_skipped_and_counted(records):
    good = writer.encode_jpeg(banded(), 95)
    i = good.index(b"\xff\xc0")
    huge = good[: i + 5] + (60000).to_bytes(2, "big") * 2 + good[i + 9 :]
    recs = [
        image_example(good, 1),
        image_example(b"\xff\xd8junk", 1),
        image_example(huge, 2),
        image_example(good, 0),
        image_example(good, None),
        image_example(good, 2),
    ]
    path = records.write("bad.tfrecord", recs)
    ds = data.image_dataset(
        path, split="validation", image_size=16, num_classes=2, batch_size=8, log_skipped=False
    )
    _, y = next(iter(ds))
    np.testing.assert_array_equal(y.numpy().argmax(1), [0, 1])
    assert ds.error_counter.counts() == {
        "corrupt_jpeg": 1,
        "too_many_pixels": 1,
        "label_out_of_range": 1,
        "missing_label": 1,
    }
    with pytest.raises(tf.errors.InvalidArgumentError, match="record 1 of file"):
        list(
            data.image_dataset(
                path,
                split="validation",
                image_size=16,
                num_classes=2,
                batch_size=8,
                on_error="raise",
            )
        )


def test_tfds_imagenet2012_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        val = data.image_dataset(
            dataset="imagenet2012", split="validation", image_size=32, batch_size=3
        )
        batches = list(val)
        train = data.image_dataset(
            dataset="imagenet2012", split="train", image_size=32, batch_size=3, seed=0
        )
        x, y = next(iter(train))
    assert [b[0].shape for b in batches] == [(3, 32, 32, 3)] * 2
    assert all(b[1].shape == (3, 1000) for b in batches)  # one-hot over 1000 classes
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]).sum(1), 1)
    assert x.shape == (3, 32, 32, 3) and float(tf.reduce_max(tf.abs(x))) <= 1.0
    assert val.error_counter.total == 0


def test_image_dataset_argument_checks(records):
    path = records.write("x.tfrecord", [image_example(banded(), 1)])
    with pytest.raises(ValueError, match="video dataset"):
        data.image_dataset(path, dataset="kinetics400", batch_size=1)
    with pytest.raises(ValueError, match="image_size=64 is larger than resize_size=40"):
        data.image_dataset(path, image_size=64, resize_size=40, batch_size=1)
    with pytest.raises(ValueError, match="image dataset"):
        data.video_dataset(path, dataset="imagenet2012", num_frames=2, batch_size=1)
