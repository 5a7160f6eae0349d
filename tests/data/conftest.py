"""Fixtures for tl_keras.data tests: tiny JPEG videos written as DMVR TFRecords in tmp_path."""

import os
import types

import numpy as np
import pytest

from tl_keras.data import writer
from tl_keras.data.pipeline import shard_filenames

# Frame t of a "counting" video is a flat grey of value 8 * t + 4, so a decoded frame's mean
# tells which stored frame it is (JPEG error on a flat image is far below 4).
COUNT_STEP, COUNT_BASE, MAX_COUNT_FRAMES = 8, 4, 31


def counting_frames(num_frames, height=24, width=32):
    assert num_frames <= MAX_COUNT_FRAMES
    values = COUNT_BASE + COUNT_STEP * np.arange(num_frames)
    return np.broadcast_to(values[:, None, None, None], (num_frames, height, width, 3)).astype(
        np.uint8
    )


def frame_ids(video):
    """Indices of the stored frames a decoded clip `[..., T, H, W, 3]` in [-1, 1] came from."""
    pixels = (np.asarray(video) + 1.0) * 127.5
    means = pixels.mean(axis=(-3, -2, -1))
    return np.rint((means - COUNT_BASE) / COUNT_STEP).astype(int)


class Records:
    """Builds SequenceExample records and TFRecord files under a directory."""

    def __init__(self, root):
        self.root = str(root)

    def jpegs(self, frames, quality=95):
        return [writer.encode_jpeg(f, quality) for f in frames]

    def record(self, frames=None, labels=(0,), *, num_frames=6, height=24, width=32, **kwargs):
        """Serialized record; `frames` is uint8 [T,H,W,3] or a list of encoded bytes."""
        if frames is None:
            frames = counting_frames(num_frames, height, width)
        if isinstance(frames, np.ndarray):
            frames = self.jpegs(frames)
        return writer.make_sequence_example(
            list(frames), list(labels), **kwargs
        ).SerializeToString()

    def write(self, name, records):
        path = os.path.join(self.root, name)
        writer.write_tfrecord(path, records)
        return path

    def dataset_files(self, num_files=2, per_file=3, num_classes=3, **record_kwargs):
        """Files `data-0000i-of-0000n` whose records have labels 0..; returns the `@n` pattern."""
        paths = shard_filenames(os.path.join(self.root, "data"), num_files)
        k = 0
        for path in paths:
            recs = []
            for _ in range(per_file):
                recs.append(self.record(labels=(k % num_classes,), **record_kwargs))
                k += 1
            writer.write_tfrecord(path, recs)
        return os.path.join(self.root, f"data@{num_files}")


@pytest.fixture
def records(tmp_path):
    return Records(tmp_path)


def collect(ds):
    """All (videos, labels) of a finite dataset, concatenated over batches, as numpy."""
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture
def helpers():
    """Plain helper functions (test modules cannot import conftest under importlib mode)."""
    return types.SimpleNamespace(
        counting_frames=counting_frames, frame_ids=frame_ids, collect=collect
    )
