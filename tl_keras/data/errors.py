"""Bad-input bookkeeping: status codes carried by each example, and `ErrorCounter`.

Every example travels through the pipeline with an int32 `status`. Checks that can be made
without raising (no frames, missing label, label out of range, too many pixels, sampled
frames of different sizes, truncated TFRecord file) set it directly; the two failures
TensorFlow can only report by raising (a record that is not a valid proto, a JPEG that does
not decode) are caught per example and turned into a status too (see `pipeline.py`). At the
end of the pipeline a bad example is either dropped and counted (`on_error="skip"`) or
raises an error that names the file, the record and the reason (`on_error="raise"`). A
whole pass over the files that yields no good example is always an error (`pipeline.py`),
so a training loop never waits forever.

The counter lives in `tf.lookup.experimental.MutableHashTable`s: no Python callback, works in
graph mode inside `tf.data`, is not mirrored by a distribution strategy, and is readable
eagerly after (or during) iteration.
"""

from __future__ import annotations

import logging

import tensorflow as tf

__all__ = ["ErrorCounter", "REASONS", "Status"]

logger = logging.getLogger("tl_keras.data")


class Status:
    """int32 status codes of an example. `OK` is 0; everything else is a reason to skip."""

    OK = 0
    TRUNCATED_FILE = 1
    MALFORMED_RECORD = 2
    NO_FRAMES = 3
    MISSING_LABEL = 4
    LABEL_OUT_OF_RANGE = 5
    CORRUPT_JPEG = 6
    TOO_MANY_PIXELS = 7
    # Internal markers, never counted: a TFRecord file was read completely; a pass over the
    # data ended (the skip totals are printed then).
    END_OF_FILE = 8
    END_OF_PASS = 9
    MIXED_FRAME_SIZES = 10


# code -> (short key used in counts, human-readable reason used in messages)
# Messages avoid quotes: tf.debugging.Assert escapes them.
REASONS = {
    Status.OK: ("ok", "ok"),
    Status.TRUNCATED_FILE: (
        "truncated_file",
        "truncated or corrupt TFRecord file (the records before the damage were kept, "
        "the rest of the file is lost)",
    ),
    Status.MALFORMED_RECORD: ("malformed_record", "record does not parse as the expected proto"),
    Status.NO_FRAMES: ("no_frames", "record has no frames / no encoded image"),
    Status.MISSING_LABEL: ("missing_label", "record has no label (label key missing or empty)"),
    Status.LABEL_OUT_OF_RANGE: (
        "label_out_of_range",
        "label index outside [0, num_classes) (after subtracting label_offset)",
    ),
    Status.CORRUPT_JPEG: ("corrupt_jpeg", "a sampled JPEG frame could not be decoded"),
    Status.TOO_MANY_PIXELS: (
        "too_many_pixels",
        "the header of a sampled JPEG frame claims more pixels than max_frame_pixels",
    ),
    Status.MIXED_FRAME_SIZES: (
        "mixed_frame_sizes",
        "the sampled JPEG frames do not all have the same height and width (write every "
        "frame of a video at one size)",
    ),
    Status.END_OF_FILE: ("end_of_file", "end of file"),
    Status.END_OF_PASS: ("end_of_pass", "end of a pass over the data"),
}

_NUM_CODES = max(REASONS) + 1
_KEYS = [REASONS.get(i, ("unknown", "unknown"))[0] for i in range(_NUM_CODES)]
_MESSAGES = [REASONS.get(i, ("unknown", "unknown"))[1] for i in range(_NUM_CODES)]


def reason_key(status):
    """Graph op: int32 status -> its short key (string tensor)."""
    return tf.gather(tf.constant(_KEYS), status)


def reason_message(status):
    """Graph op: int32 status -> its human-readable reason (string tensor)."""
    return tf.gather(tf.constant(_MESSAGES), status)


def bad_example_message(status, filename, index):
    """Graph op: 'record 12 of file /path/x: <reason>'."""
    return tf.strings.join(
        [
            "record ",
            tf.strings.as_string(index),
            " of file ",
            filename,
            ": ",
            reason_message(status),
        ]
    )


def print_line(message):
    """Graph op: print a string scalar to stderr as is (`tf.print` would quote it)."""
    return tf.raw_ops.PrintV2(input=message, output_stream="stderr", end="\n")


class ErrorCounter:
    """Counts skipped examples by reason and by file; readable after iteration.

    `video_dataset` / `image_dataset` create one (or use the one passed as `error_counter=`)
    and attach it to the returned dataset as `dataset.error_counter`:

    >>> ds = video_dataset(..., on_error="skip")
    >>> for batch in ds: ...
    >>> ds.error_counter.counts()   # {'corrupt_jpeg': 2, 'truncated_file': 1}
    >>> ds.error_counter.log()      # one WARNING line via the `tl_keras.data` logger

    Each skip is also printed to stderr as it happens (file, record index, reason), and the
    running totals once at the end of each pass over the data.
    """

    def __init__(self):
        with tf.init_scope():
            self._by_reason = tf.lookup.experimental.MutableHashTable(
                tf.string, tf.int64, default_value=0, name="tl_keras_skipped_by_reason"
            )
            self._by_file = tf.lookup.experimental.MutableHashTable(
                tf.string, tf.int64, default_value=0, name="tl_keras_skipped_by_file"
            )

    # -- graph side ----------------------------------------------------------------------------

    def record(self, status, filename):
        """Graph op: count one skipped example with this status from this file."""
        key = reason_key(status)
        one = tf.constant(1, tf.int64)
        a = self._by_reason.insert(key, self._by_reason.lookup(key) + one)
        b = self._by_file.insert(filename, self._by_file.lookup(filename) + one)
        return tf.group(a, b)

    def summary_tensor(self):
        """Graph op: 'reason=count, ...' string of the current totals and their sum."""
        keys, values = self._by_reason.export()
        parts = tf.strings.join([keys, tf.strings.as_string(values)], separator="=")
        return tf.strings.reduce_join(parts, separator=", "), tf.reduce_sum(values)

    def files_summary_tensor(self):
        """Graph op: 'file=count, ...' string of the skipped examples per file."""
        keys, values = self._by_file.export()
        parts = tf.strings.join([keys, tf.strings.as_string(values)], separator="=")
        return tf.strings.reduce_join(parts, separator=", ")

    # -- Python side ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Skipped examples per reason key, e.g. `{'corrupt_jpeg': 2}` (eager)."""
        keys, values = self._by_reason.export()
        return {k.decode(): int(v) for k, v in sorted(zip(keys.numpy(), values.numpy())) if v}

    def files(self) -> dict[str, int]:
        """Skipped examples per TFRecord file (eager)."""
        keys, values = self._by_file.export()
        return {k.decode(): int(v) for k, v in sorted(zip(keys.numpy(), values.numpy())) if v}

    @property
    def total(self) -> int:
        """Number of skipped examples so far."""
        return sum(self.counts().values())

    def reset(self) -> None:
        """Forget all counts."""
        for table in (self._by_reason, self._by_file):
            keys, _ = table.export()
            if keys.shape[0]:
                table.remove(keys)

    def summary(self) -> str:
        """One line: 'skipped 3 bad examples: corrupt_jpeg=2, truncated_file=1'."""
        counts = self.counts()
        if not counts:
            return "skipped 0 bad examples"
        parts = ", ".join(f"{k}={v}" for k, v in counts.items())
        return f"skipped {sum(counts.values())} bad examples: {parts} (files: {self.files()})"

    def log(self, level: int = logging.WARNING) -> None:
        """Log `summary()` through the `tl_keras.data` logger (at INFO if nothing was skipped)."""
        logger.log(level if self.total else logging.INFO, "tl_keras.data: %s", self.summary())

    def __repr__(self) -> str:
        return f"ErrorCounter({self.counts()})"
