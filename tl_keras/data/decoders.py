"""Decoders: one serialized record -> a dict of tensors (Model Garden style).

A decoder only parses the protocol buffer; it decodes no JPEG and validates nothing, so it is
cheap and never depends on the model or the split. The parsers (`parsers.py`) turn its output
into model inputs.

Video records follow DMVR / TF Model Garden: a `tf.train.SequenceExample` with one JPEG per
frame in `feature_lists["image/encoded"]` and the label indices (several = multi-label) in
`context["clip/label/index"]`. Image records follow the classic ImageNet TFRecords: a
`tf.train.Example` with `image/encoded` and a 1-based `image/class/label`.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "IMAGE_KEY",
    "LABEL_INDEX_KEY",
    "LABEL_TEXT_KEY",
    "VIDEO_FILENAME_KEY",
    "START_TIMESTAMP_KEY",
    "END_TIMESTAMP_KEY",
    "IMAGE_CLASS_LABEL_KEY",
    "VideoDecoder",
    "ImageDecoder",
]

IMAGE_KEY = "image/encoded"
LABEL_INDEX_KEY = "clip/label/index"
LABEL_TEXT_KEY = "clip/label/text"
VIDEO_FILENAME_KEY = "video/filename"
START_TIMESTAMP_KEY = "clip/start/timestamp"
END_TIMESTAMP_KEY = "clip/end/timestamp"
IMAGE_CLASS_LABEL_KEY = "image/class/label"


class VideoDecoder:
    """Parses a serialized DMVR `tf.train.SequenceExample`.

    `decode(serialized)` returns:

    - `frames`: string `[N]`, the encoded JPEG frames (`N = 0` if the key is missing);
    - `labels`: int64 `[L]`, the label indices (`L = 0` if the key is missing);
    - `label_text`: string `[L']`; `video_filename`: string scalar (`""` if missing);
    - `start_timestamp`, `end_timestamp`: int64 scalars in microseconds (`-1` if missing).

    Key names are configurable; pass `None` for an optional key to not read it at all.
    """

    def __init__(
        self,
        *,
        image_key: str = IMAGE_KEY,
        label_key: str = LABEL_INDEX_KEY,
        label_text_key: str | None = LABEL_TEXT_KEY,
        filename_key: str | None = VIDEO_FILENAME_KEY,
        start_key: str | None = START_TIMESTAMP_KEY,
        end_key: str | None = END_TIMESTAMP_KEY,
    ):
        if not image_key or not label_key:
            raise ValueError(
                f"VideoDecoder: image_key and label_key must be non-empty, got "
                f"image_key={image_key!r}, label_key={label_key!r}"
            )
        self.image_key = image_key
        self.label_key = label_key
        self.label_text_key = label_text_key
        self.filename_key = filename_key
        self.start_key = start_key
        self.end_key = end_key

    def _context_features(self):
        features = {self.label_key: tf.io.VarLenFeature(tf.int64)}
        if self.label_text_key:
            features[self.label_text_key] = tf.io.VarLenFeature(tf.string)
        if self.filename_key:
            features[self.filename_key] = tf.io.FixedLenFeature([], tf.string, default_value="")
        for key in (self.start_key, self.end_key):
            if key:
                features[key] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
        return features

    def decode(self, serialized) -> dict:
        """Serialized `SequenceExample` (string scalar) -> dict of tensors (see class doc)."""
        context, sequence = tf.io.parse_single_sequence_example(
            serialized,
            context_features=self._context_features(),
            sequence_features={
                self.image_key: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
            },
        )
        out = {
            "frames": sequence[self.image_key],  # [N]
            "labels": tf.sparse.to_dense(context[self.label_key]),  # [L]
            "label_text": (
                tf.sparse.to_dense(context[self.label_text_key])
                if self.label_text_key
                else tf.zeros([0], tf.string)
            ),
            "video_filename": context[self.filename_key] if self.filename_key else tf.constant(""),
        }
        for name, key in (("start_timestamp", self.start_key), ("end_timestamp", self.end_key)):
            out[name] = context[key] if key else tf.constant(-1, tf.int64)
        return out

    def empty(self) -> dict:
        """A decoded dict with no frames and no labels (same structure as `decode`)."""
        return {
            "frames": tf.zeros([0], tf.string),
            "labels": tf.zeros([0], tf.int64),
            "label_text": tf.zeros([0], tf.string),
            "video_filename": tf.constant(""),
            "start_timestamp": tf.constant(-1, tf.int64),
            "end_timestamp": tf.constant(-1, tf.int64),
        }


class ImageDecoder:
    """Parses a serialized classic ImageNet `tf.train.Example`.

    `decode(serialized)` returns `image` (string scalar, `""` if missing) and `labels`
    (int64 `[L]`, as stored: classic ImageNet TFRecords are 1-based).
    """

    def __init__(self, *, image_key: str = IMAGE_KEY, label_key: str = IMAGE_CLASS_LABEL_KEY):
        self.image_key = image_key
        self.label_key = label_key

    def decode(self, serialized) -> dict:
        """Serialized `Example` (string scalar) -> `{"image", "labels"}`."""
        parsed = tf.io.parse_single_example(
            serialized,
            {
                self.image_key: tf.io.FixedLenFeature([], tf.string, default_value=""),
                self.label_key: tf.io.VarLenFeature(tf.int64),
            },
        )
        return {
            "image": parsed[self.image_key],
            "labels": tf.sparse.to_dense(parsed[self.label_key]),  # [L]
        }

    def empty(self) -> dict:
        """A decoded dict with no image and no label (same structure as `decode`)."""
        return {"image": tf.constant(""), "labels": tf.zeros([0], tf.int64)}
