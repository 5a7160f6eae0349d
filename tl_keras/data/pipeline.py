"""`video_dataset` and `image_dataset`: files -> batched, augmented `tf.data` pipelines.

Stages (video):

1. `file_pattern` -> sorted file list (globs, comma lists, `name@N` shard specs, local or
   `gs://`); with an `input_context` each input pipeline keeps every N-th file.
2. Records: parallel interleave over files. Each file is read with `ignore_errors`, so a
   truncated or corrupt file keeps every record before the damage; the bytes read are compared
   with the file size and a damaged file yields one extra "truncated file" example.
3. Shuffle records, mark the end of the pass, repeat (train: numbered passes); attach a random
   seed (`Dataset.random`) so augmentation is reproducible with `seed=` and differs between
   epochs. Repeating records (not parsed clips) keeps the parallel stages busy across epochs.
4. Per example, in parallel: decode the proto, validate, sample frame indices, check the kept
   JPEG headers, decode only the kept frames, augment. Failures TensorFlow can only raise
   (a malformed proto, an undecodable JPEG) are caught per example and become a status.
   Small examples (under 1 MB of output, e.g. the built-in data) are parsed in groups of up
   to 16 per call, and a group in which something raised is parsed again one by one.
5. Bad examples: counted and dropped (`on_error="skip"`), or an error naming the file, the
   record and the reason (`on_error="raise"`). Totals are printed at the end of each pass and
   kept in `dataset.error_counter` (an `ErrorCounter`). A pass that yields no good example
   (only random bytes, zero-byte files, every record bad) raises from `next()`, naming the
   files and the skip counts, instead of repeating forever.
6. `split="segments"` only: every video is numbered (`video_id`, unique over the input
   pipelines) and split into its segment views, one element each (see `video_dataset`).
7. Batch, prefetch.

With `service_address` (`tf.data` service, `_through_service`) stages 1-4 run on the service's
workers and stages 5-7 stay in this process: skips are counted, printed and raised here, in
`dataset.error_counter`, exactly as without the service.
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
from typing import Sequence

import tensorflow as tf

from tl_keras.data.datasets import get_dataset_info
from tl_keras.data.decoders import ImageDecoder, VideoDecoder
from tl_keras.data.errors import ErrorCounter, Status, bad_example_message, print_line
from tl_keras.data import video_ops
from tl_keras.data.parsers import (
    DEFAULT_MAX_FRAME_PIXELS,
    OUTPUT_DTYPES,
    ImageParser,
    VideoParser,
)

__all__ = ["video_dataset", "image_dataset", "expand_file_pattern", "shard_filenames"]

logger = logging.getLogger("tl_keras.data")

AUTOTUNE = tf.data.AUTOTUNE
_GLOB_CHARS = ("*", "?", "[")
_SHARD_SPEC = re.compile(r"^(?P<name>.+)@(?P<num>\d+)$")
_RECORD_OVERHEAD = 16  # TFRecord framing: uint64 length + 2 x uint32 CRC per record


# --------------------------------------------------------------------------------------------
# File patterns.
# --------------------------------------------------------------------------------------------


def shard_filenames(name: str, num_shards: int) -> list[str]:
    """`name-00000-of-00004` ... for `num_shards` shards (the `name@4` convention)."""
    return [f"{name}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def _pattern_parts(file_pattern) -> list[str]:
    if isinstance(file_pattern, (list, tuple)):
        parts = [str(p) for p in file_pattern]
    elif file_pattern is None:
        parts = []
    else:
        parts = str(file_pattern).split(",")
    return [p.strip() for p in parts if p and p.strip()]


def expand_file_pattern(file_pattern: str | Sequence[str]) -> list[str]:
    """Expand globs, comma-separated lists and `name@N` shard specs into a file list.

    Globs are sorted; the order of comma-separated parts is kept; duplicates are dropped.
    Raises `ValueError` for an empty pattern or a glob that matches nothing and
    `FileNotFoundError` for a named file or shard that does not exist; both name the pattern.
    """
    parts = _pattern_parts(file_pattern)
    if not parts:
        raise ValueError(
            f"file_pattern={file_pattern!r} is empty: give a path, a glob, a "
            "comma-separated list or a name@N shard spec"
        )
    files: list[str] = []
    for part in parts:
        match = _SHARD_SPEC.match(part)
        if match:
            num = int(match.group("num"))
            if num < 1:
                raise ValueError(f"file_pattern={file_pattern!r}: shard spec {part!r} needs N >= 1")
            names = shard_filenames(match.group("name"), num)
            missing = [n for n, ok in zip(names, _parallel(tf.io.gfile.exists, names)) if not ok]
            if missing:
                raise FileNotFoundError(
                    f"file_pattern={file_pattern!r}: {len(missing)} of the {num} shards of "
                    f"{part!r} do not exist, e.g. {missing[0]!r}"
                )
            files.extend(names)
        elif any(c in part for c in _GLOB_CHARS):
            matched = sorted(tf.io.gfile.glob(part))
            if not matched:
                raise ValueError(f"file_pattern={file_pattern!r}: {part!r} matched no files")
            files.extend(matched)
        else:
            if not tf.io.gfile.exists(part):
                raise FileNotFoundError(
                    f"file_pattern={file_pattern!r}: file {part!r} does not exist"
                )
            files.append(part)
    return list(dict.fromkeys(files))


def _file_size(path: str) -> int:
    """Size in bytes; -1 if unknown; -2 for a directory."""
    try:
        stat = tf.io.gfile.stat(path)
    except (tf.errors.OpError, OSError):
        return -1
    return -2 if stat.is_directory else int(stat.length)


def _parallel(fn, items: Sequence[str]) -> list:
    """`[fn(x) for x in items]` on a thread pool: one request each on GCS, so overlap them."""
    if len(items) <= 4:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(fn, items))


def _file_sizes(files: Sequence[str]) -> list[int]:
    """Sizes in bytes (-1 if unknown). A directory is a `ValueError` naming it; zero-byte
    files (valid TFRecord files without records) are named in one warning."""
    sizes = _parallel(_file_size, files)
    dirs = [f for f, n in zip(files, sizes) if n == -2]
    if dirs:
        raise ValueError(
            f"file_pattern: {dirs[0]!r} is a directory, not a TFRecord file"
            + (f" (and {len(dirs) - 1} more)" if len(dirs) > 1 else "")
            + "; give a glob such as DIR/*.tfrecord"
        )
    empty = [f for f, n in zip(files, sizes) if n == 0]
    if empty:
        logger.warning(
            "tl_keras.data: %d of %d files are empty (0 bytes, no records), e.g. %s",
            len(empty),
            len(files),
            empty[0],
        )
    return sizes


def _describe_files(files: Sequence[str], limit: int = 3) -> str:
    """'2 files: a, b' / '40 files: a, b, c and 37 more' (for error messages)."""
    shown = ", ".join(files[:limit])
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return f"{len(files)} file{'s' if len(files) != 1 else ''}: {shown}{more}"


# --------------------------------------------------------------------------------------------
# Records, with truncation detection.
# --------------------------------------------------------------------------------------------


def _read_tfrecord_file(filename, size):
    """Records of one file as `{record, filename, index, status}`; damage -> one bad element.

    `ignore_errors` makes TFRecordDataset stop at the first damaged record and move on; the
    records before it are kept. A sentinel after the last record compares the bytes read with
    the file size (`size < 0`: unknown, not checked).
    """
    records = tf.data.TFRecordDataset(filename).ignore_errors()
    records = records.map(lambda r: (r, False))
    records = records.concatenate(tf.data.Dataset.from_tensors((tf.constant(""), True)))

    def step(state, item):
        index, nbytes = state
        record, is_end = item
        length = tf.cast(tf.strings.length(record, unit="BYTE"), tf.int64) + _RECORD_OVERHEAD
        nbytes = nbytes + tf.where(is_end, tf.constant(0, tf.int64), length)
        complete = tf.logical_or(size < 0, tf.equal(nbytes, size))
        status = tf.where(
            is_end, tf.where(complete, Status.END_OF_FILE, Status.TRUNCATED_FILE), Status.OK
        )
        element = {"record": record, "filename": filename, "index": index, "status": status}
        return (index + 1, nbytes), element

    records = records.scan((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), step)
    return records.filter(lambda e: tf.not_equal(e["status"], Status.END_OF_FILE))


def _records(
    files, *, shuffle: bool, seed, input_context, deterministic: bool, cycle_length: int | None
):
    """Interleaved record elements of `files`, sharded for `input_context`, and the list of
    files this input pipeline reads."""
    record_shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= n:
            files = files[i::n]
        else:
            logger.warning(
                "tl_keras.data: %d files for %d input pipelines: sharding by record instead of "
                "by file (every pipeline reads every file)",
                len(files),
                n,
            )
            record_shard = (n, i)
    sizes = _file_sizes(files)
    shuffle_files = shuffle and record_shard is None
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files, tf.string), tf.constant(sizes, tf.int64))
    )
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = min(len(files), cycle_length or 16)
    ds = ds.interleave(
        _read_tfrecord_file,
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=min(cycle, AUTOTUNE if cycle > 1 else 1),
        deterministic=deterministic or record_shard is not None,
    )
    if record_shard is not None:
        ds = ds.shard(*record_shard)
    return ds, list(files)


def _shuffled(ds, shuffle: bool, buffer_size: int, seed):
    return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True) if shuffle else ds


_FOREVER = 2**62
_PASS_SEED_STEP = 1_000_003  # seed[1] += pass * this (`_with_seeds`)


def _passes(one_pass, repeat: bool):
    """`((element, position in its pass), pass number)` for one pass or, with `repeat`,
    for passes 0, 1, ... forever. Native zips, no per-element function (the `flat_map`
    function runs once per pass); `_with_seeds` merges the numbers into the element."""
    numbered = tf.data.Dataset.zip(one_pass, tf.data.Dataset.range(_FOREVER))
    if not repeat:
        zero = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat()
        return tf.data.Dataset.zip(numbered, zero)
    return tf.data.Dataset.range(_FOREVER).flat_map(
        lambda p: tf.data.Dataset.zip(numbered, tf.data.Dataset.from_tensors(p).repeat())
    )


def _with_seeds(ds, *, random: bool, seed, input_context=None):
    """Elements of `_passes` -> the record dict with `seed` (int64 `[2]`, fresh on every
    pass, or zeros when not random) and `pass`; the `END_OF_PASS` marker's `index` becomes
    the number of records of its pass (for `_track_passes`).

    Each input pipeline gets its own stream, so replicas do not share augmentations.
    """

    def merge(item, seeds):
        (e, position), p = item
        end = tf.equal(e["status"], Status.END_OF_PASS)
        return {**e, "pass": p, "index": tf.where(end, position, e["index"]), "seed": seeds}

    def merge_random(item, seeds):
        # The pass number is folded into the seed: a tf.data service worker handed pass p
        # (`distributed_epoch`) restarts the random stream, and must not repeat the
        # augmentations another worker drew for its own pass.
        p = item[1]
        return merge(item, seeds + tf.stack([tf.zeros_like(p), p * _PASS_SEED_STEP]))

    if seed is not None and input_context is not None:
        seed = seed * 1_000_003 + input_context.input_pipeline_id
    if not random:
        return ds.map(lambda numbered, p: merge((numbered, p), tf.zeros([2], tf.int64)))
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(ds, seeds).map(merge_random)


# --------------------------------------------------------------------------------------------
# Per-example parsing that turns raised errors into statuses.
# --------------------------------------------------------------------------------------------


# Examples parsed per call when their outputs are small: the per-example datasets of the
# guarded parse cost about as much CPU as decoding and augmenting a tiny clip, so small
# examples go through in groups (`_guarded_parse`). A group's outputs stay under this many
# bytes; the examples of real datasets (a 32-frame 224 px clip is 4.8 MB) go one by one.
_GROUP_BYTES = 1 << 20
_MAX_GROUP = 16


def _group_size(shape, dtype) -> int:
    """Examples per parse call for parsed outputs of `shape` and `dtype` (1: one by one;
    a shape with an unknown dimension, e.g. `segments`, is always 1)."""
    if any(d is None for d in shape):
        return 1
    size = tf.as_dtype(dtype).size
    for d in shape:
        size *= d
    return int(max(1, min(_MAX_GROUP, _GROUP_BYTES // max(size, 1))))


def _guarded_parse(ds, *, decode, empty_decoded, parser, deterministic: bool, group_size: int = 1):
    """Decode + parse every element in parallel; errors become `MALFORMED_RECORD` / `CORRUPT_JPEG`.

    Each example runs in its own one-element dataset with `ignore_errors`, followed by a
    fallback element carrying the failure status; `take(1)` keeps whichever comes first.

    With `group_size > 1` (small outputs, `_group_size`) the examples go in groups: one
    `map_fn` parses a whole group, and only a group in which something raised is parsed
    again one example at a time, as above. The elements, their order and their statuses are
    the same either way (`tests/data/test_data_bad_input.py`); the group saves the
    per-example datasets, which cost as much as parsing a tiny clip.
    """

    def meta(e):
        return {"filename": e["filename"], "index": e["index"], "pass": e["pass"]}

    def one_example(e):
        single = tf.data.Dataset.from_tensors(e)
        decoded = single.map(
            lambda x: {**meta(x), "seed": x["seed"], "status": x["status"], "decoded": decode(x)}
        ).ignore_errors(log_warning=True)
        decoded = decoded.concatenate(
            single.map(
                lambda x: {
                    **meta(x),
                    "seed": x["seed"],
                    "status": tf.constant(Status.MALFORMED_RECORD),
                    "decoded": empty_decoded(),
                }
            )
        ).take(1)
        parsed = decoded.map(
            lambda d: {**meta(d), **parser.parse(d["decoded"], d["seed"], d["status"])}
        ).ignore_errors(log_warning=True)
        return parsed.concatenate(
            decoded.map(lambda d: {**meta(d), **parser.blank(Status.CORRUPT_JPEG)})
        ).take(1)

    def parallel(ds, fn):
        return ds.interleave(
            fn,
            cycle_length=AUTOTUNE,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=deterministic,
        )

    if group_size <= 1:
        return parallel(ds, one_example)

    def parse_one(e):  # the path of `one_example` on which nothing raises
        return {**meta(e), **parser.parse(decode(e), e["seed"], e["status"])}

    # What `parse_one` returns, without tracing it once more: the record's names and the
    # parser's outputs, whose shapes are static when examples are grouped.
    signature = {k: ds.element_spec[k] for k in ("filename", "index", "pass")}
    signature.update(
        {k: tf.TensorSpec(v.shape, v.dtype) for k, v in parser.blank(Status.OK).items()}
    )

    def one_group(group):  # the elements of up to `group_size` examples, stacked
        together = (
            tf.data.Dataset.from_tensors(group)
            .map(lambda g: tf.map_fn(parse_one, g, fn_output_signature=signature))
            .ignore_errors()
        )
        alone = (
            tf.data.Dataset.from_tensor_slices(group).flat_map(one_example).batch(group_size)
        )
        return together.concatenate(alone).take(1)

    return parallel(ds.batch(group_size), one_group).unbatch()


def _pass_end_marker(ds):
    """Append one `END_OF_PASS` element (same structure as the records) to a pass."""

    def marker(_):
        e = tf.nest.map_structure(
            lambda spec: tf.zeros([d or 0 for d in spec.shape], spec.dtype), ds.element_spec
        )
        return {**e, "status": tf.constant(Status.END_OF_PASS)}

    return ds.concatenate(tf.data.Dataset.range(1).map(marker))


_PASS_SLOTS = 8  # passes tracked at once by `_check` (parallel parsing reorders a little)


def _track_passes(ds, *, counter: ErrorCounter, source: str, on_error: str):
    """Raise once a whole pass over the data is seen to have yielded no good example.

    Without this a repeated pass of only bad (or no) records would never end: the training
    loop would wait forever for a batch. A pass is complete when its end marker and as many
    examples as its marker counted have come out of the (reordering) parallel parse; the
    counts of up to `_PASS_SLOTS` overlapping passes are kept in the scan state, so every
    new iterator starts afresh. The error (an `InvalidArgumentError` from `next()`) names
    the files and the skip counts so far.
    """
    w = _PASS_SLOTS
    prefix = (
        "tl_keras.data: a full pass over the data yielded no good example ("
        + source.replace("'", "")
        + "; "
    )
    hint = ". Check file_pattern and the record format (decoder= with your key names)" + (
        ", or pass on_error=raise to stop at the first bad record." if on_error == "skip" else "."
    )

    def fail(records):
        summary, total = counter.summary_tensor()
        details = tf.strings.join([": ", summary, " (by file: ", counter.files_summary_tensor()])
        message = tf.strings.join(
            [
                prefix,
                tf.strings.as_string(records),
                " records in the pass); skipped ",
                tf.strings.as_string(total),
                " bad examples so far",
                tf.where(total > 0, tf.strings.join([details, ")"]), ""),
                hint,
            ]
        )
        with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
            return tf.constant(False)

    def step(state, e):
        ids, good, seen, expected = state
        p = e["pass"]
        status = e["status"]
        end = tf.equal(status, Status.END_OF_PASS)
        slot = tf.one_hot(tf.math.floormod(p, w), w, on_value=True, off_value=False)
        free = tf.equal(ids, -1)
        mine = tf.logical_and(slot, tf.logical_or(tf.equal(ids, p), free))  # else untracked
        zero = tf.zeros([w], tf.int64)
        ids = tf.where(mine, p, ids)
        good = tf.where(mine, good + tf.cast(tf.equal(status, Status.OK), tf.int64), good)
        seen = tf.where(mine, seen + tf.cast(tf.logical_not(end), tf.int64), seen)
        expected = tf.where(tf.logical_and(mine, end), e["index"], expected)
        done = tf.logical_and(mine, tf.logical_and(expected >= 0, seen >= expected))
        empty = tf.reduce_any(tf.logical_and(done, tf.equal(good, 0)))
        records = tf.reduce_max(tf.where(done, expected, zero))
        ok = tf.cond(empty, lambda: fail(records), lambda: tf.constant(True))
        with tf.control_dependencies([ok]):
            ids = tf.where(done, tf.constant(-1, tf.int64), ids)
        state = (ids, tf.where(done, zero, good), tf.where(done, zero, seen))
        return state + (tf.where(done, tf.constant(-1, tf.int64), expected),), e

    minus = tf.fill([w], tf.constant(-1, tf.int64))
    zeros = tf.zeros([w], tf.int64)
    return ds.scan((minus, zeros, zeros, minus), step)


def _check(ds, *, counter: ErrorCounter, on_error: str, log_skipped: bool, source: str):
    """Drop + count bad examples, or raise naming the file and the reason; raise when a whole
    pass yielded no good example (`_track_passes`).

    The end-of-pass marker is dropped here, after printing the skip totals if there are any.
    """
    ds = _track_passes(ds, counter=counter, source=source, on_error=on_error)

    def pass_end():
        summary, total = counter.summary_tensor()

        def report():
            with tf.control_dependencies(
                [
                    print_line(
                        tf.strings.join(
                            [
                                "tl_keras.data: end of a pass over the data; skipped ",
                                tf.strings.as_string(total),
                                " bad examples so far: ",
                                summary,
                            ]
                        )
                    )
                ]
            ):
                return tf.constant(False)

        return tf.cond(total > 0, report, lambda: tf.constant(False))

    def check(e):
        status = e["status"]
        ok = tf.equal(status, Status.OK)
        message = bad_example_message(status, e["filename"], e["index"])
        if on_error == "raise":
            full = tf.strings.join(
                [
                    "tl_keras.data: bad input: ",
                    message,
                    ". Pass on_error=skip to drop and count such examples instead.",
                ]
            )
            good = tf.logical_or(ok, tf.equal(status, Status.END_OF_PASS))
            with tf.control_dependencies([tf.debugging.Assert(good, [full])]):
                return tf.identity(ok)

        def bad():
            ops = [counter.record(status, e["filename"])]
            if log_skipped:
                ops.append(
                    print_line(tf.strings.join(["tl_keras.data: skipped bad input: ", message]))
                )
            with tf.control_dependencies(ops):
                return tf.constant(False)

        return tf.cond(
            ok,
            lambda: tf.constant(True),
            lambda: tf.cond(tf.equal(status, Status.END_OF_PASS), pass_end, bad),
        )

    return ds.filter(check)


SERVICE_PROCESSING_MODES = ("distributed_epoch", "parallel_epochs")


def _check_service(service_address, service_processing_mode, service_job_name):
    if service_address is None:
        return
    if not isinstance(service_address, str) or not service_address.strip():
        raise ValueError(
            f"service_address={service_address!r}: expected the dispatcher as 'host:port' or "
            "'grpc://host:port' (None: no tf.data service)"
        )
    if service_processing_mode not in SERVICE_PROCESSING_MODES:
        raise ValueError(
            f"service_processing_mode={service_processing_mode!r}: expected one of "
            f"{', '.join(SERVICE_PROCESSING_MODES)}"
        )
    if service_job_name is not None and (
        not isinstance(service_job_name, str) or not service_job_name.strip()
    ):
        raise ValueError(f"service_job_name={service_job_name!r}: expected a non-empty string")


def _through_service(ds, *, address: str, processing_mode: str, job_name, input_context):
    """Run `ds` (records -> parsed examples, statuses included) on the `tf.data` service.

    Everything before this point (reading, shuffling, pass markers, seeds, decoding and
    augmentation) is serialized and runs on the service's workers; the caller keeps the
    check of bad examples (the `ErrorCounter` tables live in this process), batching and
    prefetch. `distributed_epoch`: the dispatcher hands each worker whole passes of a
    repeated pipeline (a finite one: files), so every example is made once per pass; with
    one worker the elements and their order are those of the local pipeline.
    `parallel_epochs`: every worker makes the whole dataset (same seed: the same clips).
    Each input pipeline (tf.distribute worker) reads its own files, so a named job gets the
    pipeline id appended; unnamed jobs are private to the iterator.
    """
    if job_name is not None and input_context is not None:
        if input_context.num_input_pipelines > 1:
            job_name = f"{job_name}_{input_context.input_pipeline_id}"
    return ds.apply(
        tf.data.experimental.service.distribute(
            processing_mode=processing_mode, service=address, job_name=job_name
        )
    )


def _finish(
    ds,
    *,
    batch_size: int,
    input_context,
    drop_remainder: bool,
    deterministic: bool,
    counter: ErrorCounter,
    keys: tuple[str, ...],
    normalize=None,
    large_batches: bool = False,
):
    """Batch the checked example dicts, keep the tuple of `keys` (`(x, y)`, or `(x, y, id)`
    for segments; a map per batch, not per example), prefetch, set the options and attach
    `error_counter`.

    `normalize=(mean, std)` (float32 multi-view test batches, `large_batches`): the
    examples are uint8 pixels, normalised here, per batch (`video_ops.normalize`: a cast and
    a multiply-add, done in place), after the prefetch: a float32 batch of 8 videos of 4 x 3 views is 1.85 GB, so
    at most two uint8 batches are buffered and the float batch is made when asked for; at
    most the caller's batch and the one being made are float32. Other splits normalise
    each clip in the parser's parallel map (measured faster: the work is spread over the
    cores while the pixels are still in cache; `benchmarks/input_pipeline.py`).
    """
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda e: tuple(e[k] for k in keys))
    ds = ds.prefetch(2 if large_batches else AUTOTUNE)
    if normalize is not None:
        mean, std = normalize
        ds = ds.map(lambda x, *rest: (video_ops.normalize(x, mean, std), *rest))
    options = tf.data.Options()
    options.deterministic = deterministic
    if large_batches:
        # tf.data would otherwise run the (sequential) normalisation map in parallel and
        # prefetch after it: several 1.85 GB float batches at once.
        options.experimental_optimization.map_parallelization = False
        options.experimental_optimization.inject_prefetch = False
    if input_context is not None:
        # We shard ourselves; stop tf.distribute from sharding again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    ds = ds.with_options(options)
    ds.error_counter = counter
    return ds


def _check_common(*, on_error, batch_size):
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error={on_error!r}: expected 'skip' or 'raise'")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")


def _pick(value, default, fallback=None):
    """`value` if set, else the dataset default, else `fallback`."""
    if value is not None:
        return value
    return default if default is not None else fallback


def _segment_views(ds, input_context):
    """Checked video elements `[S', T, c, c, 3]` -> one element per segment view, with the
    video's `label` and an int32 `video_id`: `n * num_pipelines + pipeline_id` for the n-th
    video of this input pipeline, so ids are unique over all pipelines (replicas, workers)
    and every view of a video carries the same one."""
    pipelines, pipeline_id = 1, 0
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id

    def views(n, e):
        count = tf.shape(e["video"])[0]
        video_id = tf.cast(n, tf.int32) * pipelines + pipeline_id
        return {
            "video": e["video"],  # [S', T, c, c, 3]
            "label": tf.repeat(e["label"][None], count, axis=0),  # [S', K]
            "video_id": tf.fill([count], video_id),  # [S']
        }

    return ds.enumerate().map(views).unbatch()


def _split_defaults(split, shuffle, repeat, drop_remainder, seed, deterministic):
    """Training shuffles, repeats and drops the last partial batch; evaluation does not.
    Element order is deterministic when seeded or not shuffled, unless set."""
    is_train = split == "train"
    shuffle = is_train if shuffle is None else shuffle
    repeat = is_train if repeat is None else repeat
    drop_remainder = is_train if drop_remainder is None else drop_remainder
    deterministic = (seed is not None or not shuffle) if deterministic is None else deterministic
    return shuffle, repeat, drop_remainder, deterministic


# --------------------------------------------------------------------------------------------
# Public entry points.
# --------------------------------------------------------------------------------------------


def video_dataset(
    file_pattern: str | Sequence[str],
    *,
    dataset: str | None = None,
    num_classes: int | None = None,
    split: str = "train",
    num_frames: int | None = None,
    stride: int | None = None,
    crop_size: int | None = None,
    min_resize: int | None = None,
    num_clips: int | None = None,
    num_crops: int | None = None,
    batch_size: int,
    multilabel: bool | None = None,
    label_offset: int | None = None,
    shuffle: bool | None = None,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    on_error: str = "skip",
    repeat: bool | None = None,
    drop_remainder: bool | None = None,
    scale_jitter: Sequence[float] | None = (0.9, 1.33),
    flip: bool = True,
    normalization="[-1,1]",
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    shuffle_buffer_size: int = 64,
    decoder: VideoDecoder | None = None,
    error_counter: ErrorCounter | None = None,
    deterministic: bool | None = None,
    cycle_length: int | None = None,
    log_skipped: bool = True,
    service_address: str | None = None,
    service_processing_mode: str = "distributed_epoch",
    service_job_name: str | None = None,
    output_dtype: str = "float32",
) -> tf.data.Dataset:
    """Batches of `(videos, labels)` from DMVR-style SequenceExample TFRecords.

    Yields `videos` float32 `[B, T, H, W, 3]` (uint8 pixels with `output_dtype="uint8"`) (`[B, V, T, H, W, 3]` for `split="test"` with
    `V = num_clips * num_crops > 1`, crop-major: `view = crop * num_clips + clip`) and
    `labels` float32 `[B, K]` (one-hot, or multi-hot with `multilabel=True`).

    `split="segments"` yields `(segments [B, T, H, W, 3], labels [B, K], video_ids [B])`:
    each video is cut into `S = max(1, ceil(frames / (num_frames * stride)))` clips that
    evenly cover it (`video_ops.segment_indices`; a video shorter than one clip loops), times
    `num_crops` crops; a batch holds `B` such views, of one or several videos, in order, and
    `video_ids` (int32, unique over the input pipelines) says which video each came from.
    Merge the model's outputs per id (the trainer's `merge_segments`). `num_clips`
    must be 1; `num_crops` defaults to 1 (not the dataset's test protocol).

    Args:
      file_pattern: glob, comma-separated list, `name@N` shard spec, or a list of these.
      dataset: a registered name (`kinetics400`, `kinetics600`, `charades`, `avid`) whose
        facts fill every argument left `None` (classes, multilabel, frames, stride, sizes,
        test views).
      num_classes: K (required unless `dataset` is given).
      split: `train` (random clip, scale jitter, random crop, flip), `validation` (middle clip,
        centre crop), `test` (`num_clips` x `num_crops` views) or `segments` (above).
      num_frames, stride: frames per clip and the step between them (in stored frames);
        a video shorter than the clip loops.
      crop_size, min_resize: output side, and the shorter side frames are resized to before
        cropping (defaults 224 / 256). `crop_size > min_resize` is a `ValueError`.
      batch_size: global batch size; with `input_context` each pipeline yields
        `input_context.get_per_replica_batch_size(batch_size)`.
      label_offset: subtracted from stored label indices (e.g. 1 for 1-based records).
      shuffle: shuffle files and records (default: only for `train`).
      seed: makes file order, shuffling and augmentation reproducible.
      input_context: a `tf.distribute.InputContext`; each input pipeline reads every N-th file.
      on_error: `skip` (drop bad examples, count them in `dataset.error_counter`, print each
        and the totals after each pass) or `raise` (error naming the file, record and reason).
        Either way a whole pass without a good example is an `InvalidArgumentError` naming
        the files and the counts. A directory in `file_pattern` is a `ValueError`; zero-byte
        files are named in a warning.
      repeat: repeat forever (default: only for `train`).
      drop_remainder: drop the last partial batch (default: only for `train`).
      scale_jitter: training scale range for the shorter side (`None`: no jitter).
      normalization: `[-1,1]` (default), `[0,1]`, `imagenet` or `(mean, std)`.
      output_dtype: `float32` (normalised here) or `uint8`: the resized pixels, rounded,
        in `[0, 255]`; a quarter of the bytes through the buffers and to the device. The
        consumer normalises (`tl_keras.data.normalize_inputs(videos, normalization)`; the
        trainer does it on the device with `data.output_dtype=uint8`).
      max_frame_pixels: bad-input limit on `height * width` claimed by a kept frame's header.
      decoder: a `VideoDecoder` with custom key names.
      error_counter: an `ErrorCounter` to count into (default: a new one).
      service_address: a `tf.data` service dispatcher (`host:port`, `tools/data_service.py`):
        reading, decoding and augmentation run on its workers, the bad-example check,
        batching and prefetch here (`dataset.error_counter` counts as usual).
      service_processing_mode: `distributed_epoch` (default: each pass, or each file of a
        finite pipeline, goes to one worker; one worker gives exactly the local elements in
        order) or `parallel_epochs` (every worker makes the whole dataset).
      service_job_name: share one job between clients (default: a private job).
    """
    info = get_dataset_info(dataset) if dataset else None
    if info is not None and info.modality != "video":
        raise ValueError(f"dataset={dataset!r} is an image dataset; use image_dataset")
    _check_common(on_error=on_error, batch_size=batch_size)
    _check_service(service_address, service_processing_mode, service_job_name)
    num_classes = _pick(num_classes, info and info.num_classes)
    if num_classes is None:
        raise ValueError("num_classes is required when no dataset= is given")
    num_frames = _pick(num_frames, info and info.num_frames)
    if num_frames is None:
        raise ValueError("num_frames is required when no dataset= is given")
    is_test = split == "test"
    is_segments = split == "segments"
    num_clips = _pick(num_clips, info.num_test_clips if (info and is_test) else None, 1)
    num_crops = _pick(num_crops, info.num_test_crops if (info and is_test) else None, 1)
    multi_view = is_test and num_clips * num_crops > 1
    parser = VideoParser(
        split=split,
        num_frames=num_frames,
        stride=_pick(stride, info and info.stride, 1),
        crop_size=_pick(crop_size, info and info.crop_size, 224),
        min_resize=_pick(min_resize, info and info.min_resize, 256),
        num_classes=num_classes,
        multilabel=bool(_pick(multilabel, info and info.multilabel, False)),
        num_clips=num_clips,
        num_crops=num_crops,
        label_offset=_pick(label_offset, info and info.label_offset, 0),
        scale_jitter=scale_jitter,
        flip=flip,
        normalization=normalization,
        max_frame_pixels=max_frame_pixels,
        # Multi-view test batches stay uint8 up to the batch and are normalised in
        # `_finish` (memory); otherwise the parallel map normalises each clip.
        output_dtype="uint8" if multi_view else output_dtype,
    )
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(
            f"output_dtype={output_dtype!r}: expected one of {OUTPUT_DTYPES} ('uint8': pixels "
            "in [0, 255], normalised by the consumer, tl_keras.data.normalize_inputs)"
        )
    is_train = split == "train"
    shuffle, repeat, drop_remainder, deterministic = _split_defaults(
        split, shuffle, repeat, drop_remainder, seed, deterministic
    )
    decoder = decoder or VideoDecoder()
    counter = error_counter or ErrorCounter()

    files = expand_file_pattern(file_pattern)
    ds, source = _records(
        files,
        shuffle=shuffle,
        seed=seed,
        input_context=input_context,
        deterministic=deterministic,
        cycle_length=cycle_length,
    )
    ds = _passes(_pass_end_marker(_shuffled(ds, shuffle, shuffle_buffer_size, seed)), repeat)
    ds = _with_seeds(ds, random=is_train, seed=seed, input_context=input_context)
    ds = _guarded_parse(
        ds,
        decode=lambda e: decoder.decode(e["record"]),
        empty_decoded=decoder.empty,
        parser=parser,
        deterministic=deterministic,
        group_size=_group_size(parser.video_shape, parser.output_dtype),
    )
    if service_address is not None:
        ds = _through_service(
            ds,
            address=service_address,
            processing_mode=service_processing_mode,
            job_name=service_job_name,
            input_context=input_context,
        )
    source = _describe_files(source)
    ds = _check(ds, counter=counter, on_error=on_error, log_skipped=log_skipped, source=source)
    if is_segments:
        ds = _segment_views(ds, input_context)
    return _finish(
        ds,
        batch_size=batch_size,
        input_context=input_context,
        drop_remainder=drop_remainder,
        deterministic=deterministic,
        counter=counter,
        keys=("video", "label", "video_id") if is_segments else ("video", "label"),
        normalize=(
            (parser.mean, parser.std)
            if output_dtype == "float32" and parser.output_dtype == "uint8"
            else None
        ),
        large_batches=bool(parser.num_views and parser.num_views > 1),
    )


def image_dataset(
    file_pattern: str | Sequence[str] | None = None,
    *,
    dataset: str = "imagenet2012",
    data_dir: str | None = None,
    split: str = "train",
    tfds_split: str | None = None,
    image_size: int = 224,
    resize_size: int | None = None,
    batch_size: int,
    num_classes: int | None = None,
    label_offset: int | None = None,
    normalization="[-1,1]",
    shuffle: bool | None = None,
    seed: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
    on_error: str = "skip",
    repeat: bool | None = None,
    drop_remainder: bool | None = None,
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    shuffle_buffer_size: int = 1024,
    decoder: ImageDecoder | None = None,
    error_counter: ErrorCounter | None = None,
    deterministic: bool | None = None,
    log_skipped: bool = True,
    service_address: str | None = None,
    service_processing_mode: str = "distributed_epoch",
    service_job_name: str | None = None,
) -> tf.data.Dataset:
    """Batches of `(images [B, S, S, 3] float32, labels [B, K] one-hot)`.

    Source: classic ImageNet TFRecords when `file_pattern` is given (`image/encoded`, 1-based
    `image/class/label`: `label_offset` defaults to 1), else the TFDS dataset `dataset`
    (`imagenet2012`, 0-based labels) from `data_dir` (`tfds_split` defaults to `split`,
    e.g. `"train[:1%]"`).

    `train`: Inception crop + flip; `validation`/`test`: resize the shorter side to
    `resize_size` (default `image_size / 0.875`), centre crop. Bad examples, sharding, seeds,
    `repeat`, `drop_remainder`, `error_counter` and the `service_*` arguments (`tf.data`
    service) behave as in `video_dataset`.
    """
    info = get_dataset_info(dataset) if dataset else None
    if info is not None and info.modality != "image":
        raise ValueError(f"dataset={dataset!r} is a video dataset; use video_dataset")
    _check_common(on_error=on_error, batch_size=batch_size)
    _check_service(service_address, service_processing_mode, service_job_name)
    num_classes = _pick(num_classes, info and info.num_classes)
    if num_classes is None:
        raise ValueError("num_classes is required when no dataset= is given")
    from_tfrecords = file_pattern is not None
    parser = ImageParser(
        split=split,
        image_size=image_size,
        resize_size=resize_size,
        num_classes=num_classes,
        label_offset=_pick(label_offset, 1 if from_tfrecords else 0),
        normalization=normalization,
        max_frame_pixels=max_frame_pixels,
    )
    is_train = split == "train"
    shuffle, repeat, drop_remainder, deterministic = _split_defaults(
        split, shuffle, repeat, drop_remainder, seed, deterministic
    )
    counter = error_counter or ErrorCounter()

    if from_tfrecords:
        decoder = decoder or ImageDecoder()
        files = expand_file_pattern(file_pattern)
        ds, source = _records(
            files,
            shuffle=shuffle,
            seed=seed,
            input_context=input_context,
            deterministic=deterministic,
            cycle_length=None,
        )
        decode, empty = (lambda e: decoder.decode(e["record"])), decoder.empty
    else:
        source = [f"tfds:{dataset}/{tfds_split or split}"]
        ds = _tfds_records(
            dataset,
            data_dir=data_dir,
            split=tfds_split or split,
            shuffle=shuffle,
            seed=seed,
            input_context=input_context,
        )
        decode = lambda e: {"image": e["image"], "labels": e["label"][None]}  # noqa: E731
        empty = lambda: {"image": tf.constant(""), "labels": tf.zeros([0], tf.int64)}  # noqa: E731
    ds = _passes(_pass_end_marker(_shuffled(ds, shuffle, shuffle_buffer_size, seed)), repeat)
    ds = _with_seeds(ds, random=is_train, seed=seed, input_context=input_context)
    ds = _guarded_parse(
        ds,
        decode=decode,
        empty_decoded=empty,
        parser=parser,
        deterministic=deterministic,
        group_size=_group_size(parser.image_shape, tf.float32),
    )
    if service_address is not None:
        ds = _through_service(
            ds,
            address=service_address,
            processing_mode=service_processing_mode,
            job_name=service_job_name,
            input_context=input_context,
        )
    source = _describe_files(source)
    ds = _check(ds, counter=counter, on_error=on_error, log_skipped=log_skipped, source=source)
    return _finish(
        ds,
        batch_size=batch_size,
        input_context=input_context,
        drop_remainder=drop_remainder,
        deterministic=deterministic,
        counter=counter,
        keys=("image", "label"),
    )


def _tfds_records(name: str, *, data_dir, split: str, shuffle: bool, seed, input_context):
    """TFDS examples as record elements `{image (encoded), label, filename, index, status}`."""
    import tensorflow_datasets as tfds  # heavy; only needed for this source

    builder = tfds.builder(name, data_dir=data_dir)
    read_config = tfds.ReadConfig(input_context=input_context, shuffle_seed=seed)
    ds = builder.as_dataset(
        split=split,
        shuffle_files=shuffle,
        read_config=read_config,
        decoders={"image": tfds.decode.SkipDecoding()},
    )
    has_file_name = "file_name" in builder.info.features

    def to_record(index, ex):
        filename = ex["file_name"] if has_file_name else tf.constant(f"tfds:{name}/{split}")
        return {
            "image": ex["image"],
            "label": tf.cast(ex["label"], tf.int64),
            "filename": filename,
            "index": index,
            "status": tf.constant(Status.OK),
        }

    return ds.enumerate().map(to_record, num_parallel_calls=AUTOTUNE)
