"""Writing DMVR-style SequenceExample TFRecords, from frames or from video files.

Building blocks (`encode_jpeg`, `make_sequence_example`, `write_sharded`) are used by the
built-in dataset (`synthetic.py`); `convert_videos` is the logic behind
`tools/make_tfrecords.py`:

- input: a CSV of `path,start,end,labels` rows (seconds; empty start/end = whole video;
  labels `;`-separated for multi-label) and a class list file (one name per line; the line
  number is the label index, so indices are stable across runs);
- each video is decoded with PyAV, optionally resampled to `fps`, resized so its shorter side
  is `min_resize`, and stored as one JPEG per frame;
- rows are spread over `num_shards` shards (a seeded permutation, stable across runs) that are
  written in parallel processes; a finished shard is kept when the conversion is run again
  (resumable); a video that fails to decode is listed in a report CSV and the rest continue.

Video-level and environment-level failures are told apart. A video that is missing, corrupt
or empty is recorded in the report and its shard still counts as finished. A missing decoder
(PyAV, the extra `video`: `pip install -e ".[video]"`) or a missing `video_root` is found by
`preflight` before any work starts; should one appear during the run (an `ImportError` or
`MemoryError` while converting, the root gone), `ConversionEnvironmentError` is raised and the
shard is not marked finished. A shard is finished only when every one of its videos was
written or recorded as a video-level failure, and a run that converted no video at all marks
nothing finished (its cause is almost always the environment: a wrong root, a missing codec),
so the rerun after the fix converts everything.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import random
import time
from typing import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from tl_keras.data import decoders as keys
from tl_keras.data.pipeline import shard_filenames

__all__ = [
    "encode_jpeg",
    "make_sequence_example",
    "write_tfrecord",
    "write_sharded",
    "VideoRow",
    "read_csv",
    "read_class_list",
    "iter_video_frames",
    "decode_video",
    "ConversionResult",
    "ConversionEnvironmentError",
    "INSTALL_DECODER",
    "check_decoder",
    "preflight",
    "convert_videos",
]

logger = logging.getLogger("tl_keras.data")

_STATE_VERSION = 1

INSTALL_DECODER = 'pip install -e ".[video]"  (or: pip install "av>=12")'

# Errors while converting one video that say nothing about the video: the shard is not
# marked finished and the run stops (`ConversionEnvironmentError`).
_ENVIRONMENT_ERRORS = (ImportError, MemoryError)


class ConversionEnvironmentError(RuntimeError):
    """The conversion cannot run here (no decoder, no video root): nothing it touched is
    marked finished."""


def check_decoder() -> None:
    """Raises `ConversionEnvironmentError` (with the install command) unless PyAV imports."""
    try:
        import av  # noqa: F401 - optional dependency (extra "video")
    except ImportError as e:
        raise ConversionEnvironmentError(
            f"the video decoder PyAV cannot be imported ({e}); install it with: "
            f"{INSTALL_DECODER}"
        ) from None


def _check_video_root(video_root: str | None) -> None:
    if video_root and not tf.io.gfile.isdir(video_root):
        raise ConversionEnvironmentError(
            f"video_root {video_root} does not exist or is not a folder"
        )


def preflight(video_root: str | None = None) -> None:
    """The checks `convert_videos` makes before any work: the decoder imports and
    `video_root` (when given) is a folder. Raises `ConversionEnvironmentError`."""
    check_decoder()
    _check_video_root(video_root)


# --------------------------------------------------------------------------------------------
# Examples and files.
# --------------------------------------------------------------------------------------------


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """uint8 `[H, W, 3]` -> JPEG bytes."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"encode_jpeg: expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    return tf.io.encode_jpeg(frame, quality=quality).numpy()


def make_sequence_example(
    frames: Sequence[bytes],
    labels: Sequence[int],
    *,
    label_texts: Sequence[str] | None = None,
    video_filename: str | None = None,
    start_us: int | None = None,
    end_us: int | None = None,
    image_key: str = keys.IMAGE_KEY,
    label_key: str = keys.LABEL_INDEX_KEY,
) -> tf.train.SequenceExample:
    """A DMVR `SequenceExample`: JPEG frames in `feature_lists`, labels etc. in `context`."""
    ex = tf.train.SequenceExample()
    ctx = ex.context.feature
    ctx[label_key].int64_list.value.extend(int(i) for i in labels)
    if label_texts is not None:
        ctx[keys.LABEL_TEXT_KEY].bytes_list.value.extend(t.encode() for t in label_texts)
    if video_filename is not None:
        ctx[keys.VIDEO_FILENAME_KEY].bytes_list.value.append(video_filename.encode())
    if start_us is not None:
        ctx[keys.START_TIMESTAMP_KEY].int64_list.value.append(int(start_us))
    if end_us is not None:
        ctx[keys.END_TIMESTAMP_KEY].int64_list.value.append(int(end_us))
    frame_list = ex.feature_lists.feature_list[image_key]
    for jpeg in frames:
        frame_list.feature.add().bytes_list.value.append(jpeg)
    return ex


def write_tfrecord(path: str, serialized: Iterable[bytes]) -> int:
    """Write records to `path` (local or `gs://`); returns the number written."""
    count = 0
    with tf.io.TFRecordWriter(path) as w:
        for record in serialized:
            w.write(record)
            count += 1
    return count


def write_sharded(serialized: Sequence[bytes], output_prefix: str, num_shards: int) -> list[str]:
    """Round-robin `serialized` records over `output_prefix-0000i-of-0000N`; returns the paths."""
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be >= 1")
    paths = shard_filenames(output_prefix, num_shards)
    for i, path in enumerate(paths):
        write_tfrecord(path, serialized[i::num_shards])
    return paths


# --------------------------------------------------------------------------------------------
# Inputs: CSV rows and class list.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoRow:
    """One CSV row: video path, clip start / end in seconds (None = whole video), labels."""

    path: str
    start: float | None
    end: float | None
    labels: tuple[str, ...]
    line: int = 0

    def as_csv(self) -> list[str]:
        fmt = lambda v: "" if v is None else repr(v)  # noqa: E731
        return [self.path, fmt(self.start), fmt(self.end), ";".join(self.labels)]


def _parse_time(value: str, what: str, path: str, line: int) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{path}:{line}: {what}={value!r} is not a number of seconds") from None


def read_csv(path: str) -> list[VideoRow]:
    """Rows of a `path,start,end,labels` CSV (a header row starting with `path` is skipped)."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"CSV file {path} does not exist")
    rows = []
    with tf.io.gfile.GFile(path, "r") as f:
        for line, fields in enumerate(csv.reader(f), start=1):
            if not fields or not "".join(fields).strip():
                continue
            if line == 1 and fields[0].strip().lower() == "path":
                continue
            if len(fields) != 4:
                raise ValueError(
                    f"{path}:{line}: expected 4 fields path,start,end,labels, "
                    f"got {len(fields)}: {fields}"
                )
            labels = tuple(s.strip() for s in fields[3].split(";") if s.strip())
            start = _parse_time(fields[1], "start", path, line)
            end = _parse_time(fields[2], "end", path, line)
            if start is not None and end is not None and end <= start:
                raise ValueError(f"{path}:{line}: end={end} is not after start={start}")
            rows.append(VideoRow(fields[0].strip(), start, end, labels, line))
    return rows


def read_class_list(path: str) -> list[str]:
    """Class names, one per line; the 0-based line number is the label index."""
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"class list {path} does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
        names = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class list {path}: duplicate class names {duplicates}")
    if not names:
        raise ValueError(f"class list {path} is empty")
    return names


# --------------------------------------------------------------------------------------------
# Decoding video files (PyAV).
# --------------------------------------------------------------------------------------------


def _target_size(height: int, width: int, min_resize: int | None) -> tuple[int, int]:
    if not min_resize:
        return height, width
    scale = min_resize / min(height, width)
    if height <= width:
        return min_resize, max(1, round(width * scale))
    return max(1, round(height * scale)), min_resize


def iter_video_frames(
    path: str,
    *,
    start: float | None = None,
    end: float | None = None,
    fps: float | None = None,
    min_resize: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield uint8 `[H, W, 3]` RGB frames of `path` in `[start, end)` seconds.

    With `fps`, frames are resampled to that rate (the frame shown at each output time is
    kept; frames are dropped or repeated). With `min_resize`, frames are resized so the
    shorter side is `min_resize`. Raises `av` errors (or `OSError`) for unreadable files.
    """
    import av  # optional dependency (extra "video")

    eps = 1e-6
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        if start:
            try:
                container.seek(int(start / stream.time_base), stream=stream, backward=True)
            except av.error.FFmpegError:
                container.seek(0)
        size = None
        cache: dict = {}

        def to_array(frame):
            nonlocal size
            if size is None:
                size = _target_size(frame.height, frame.width, min_resize)
            if id(frame) not in cache:
                cache.clear()
                cache[id(frame)] = frame.to_ndarray(
                    height=size[0], width=size[1], format="rgb24", interpolation="AREA"
                )
            return cache[id(frame)]

        prev = prev_time = next_time = None
        for index, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else index / rate
            if start is not None and t < start - eps:
                continue
            if end is not None and t >= end - eps:
                break
            if fps is None:
                yield to_array(frame)
                continue
            if next_time is None:
                next_time = t
            if prev is not None:
                while next_time < t - eps:  # output times shown by the previous frame
                    yield to_array(prev)
                    next_time += 1.0 / fps
            prev, prev_time = frame, t
        if fps is not None and prev is not None:
            stop = prev_time + 1.0 / rate
            if end is not None:
                stop = min(stop, end)
            while next_time < stop - eps:
                yield to_array(prev)
                next_time += 1.0 / fps


def decode_video(path: str, **kwargs) -> np.ndarray:
    """All frames of `iter_video_frames(path, **kwargs)` as uint8 `[T, H, W, 3]`."""
    frames = list(iter_video_frames(path, **kwargs))
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames)


def _video_example(
    row: VideoRow, path: str, class_index: dict, *, fps, min_resize, jpeg_quality
) -> bytes:
    jpegs = [
        encode_jpeg(f, jpeg_quality)
        for f in iter_video_frames(
            path, start=row.start, end=row.end, fps=fps, min_resize=min_resize
        )
    ]
    if not jpegs:
        raise ValueError("no frames decoded in the requested time range")
    ex = make_sequence_example(
        jpegs,
        [class_index[name] for name in row.labels],
        label_texts=list(row.labels),
        video_filename=row.path,
        start_us=None if row.start is None else round(row.start * 1e6),
        end_us=None if row.end is None else round(row.end * 1e6),
    )
    return ex.SerializeToString()


# --------------------------------------------------------------------------------------------
# Conversion of a CSV of videos, sharded, parallel, resumable.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ConversionResult:
    """What `convert_videos` did."""

    shards: list[str]  # all shard paths
    written: list[str]  # shards written by this run
    kept: list[str]  # shards already complete from an earlier run
    num_examples: int  # examples in all shards
    failures: list[tuple[VideoRow, str]]  # (row, error) of videos that could not be converted
    report_path: str
    num_videos: int = 0  # rows of the CSV

    @property
    def failed_fraction(self) -> float:
        return len(self.failures) / self.num_videos if self.num_videos else 0.0


def _fingerprint(rows: Sequence[VideoRow], options: dict) -> str:
    payload = json.dumps(
        {"rows": [r.as_csv() for r in rows], "options": options, "version": _STATE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()


def _read_state(path: str) -> dict | None:
    try:
        with tf.io.gfile.GFile(path, "r") as f:
            return json.load(f)
    except (tf.errors.OpError, OSError, ValueError):
        return None


def _convert_shard(task: dict, progress_queue=None) -> dict:
    """Write one shard (runs in a worker process or in-process). Returns its state.

    Raises `ConversionEnvironmentError` (nothing marked finished, the partial file removed)
    when the environment fails: `video_root` gone, or an `ImportError` / `MemoryError`."""
    class_index = {name: i for i, name in enumerate(task["class_names"])}
    opts = task["options"]
    failures, count = [], 0
    try:
        _check_video_root(task["video_root"])
        with tf.io.TFRecordWriter(task["tmp_path"]) as w:
            for fields in task["rows"]:
                row = VideoRow(*fields[:3], tuple(fields[3]), fields[4])
                path = row.path
                if task["video_root"] and not os.path.isabs(path) and "://" not in path:
                    path = os.path.join(task["video_root"], path)
                try:
                    if not tf.io.gfile.exists(path):
                        raise FileNotFoundError(f"video file {path} does not exist")
                    example = _video_example(
                        row,
                        path,
                        class_index,
                        fps=opts["fps"],
                        min_resize=opts["min_resize"],
                        jpeg_quality=opts["jpeg_quality"],
                    )
                except _ENVIRONMENT_ERRORS as e:
                    hint = f"; install the decoder with: {INSTALL_DECODER}" if isinstance(
                        e, ImportError) else ""
                    raise ConversionEnvironmentError(
                        f"converting {path}: {type(e).__name__}: {e}{hint}"
                    ) from None
                except Exception as e:  # noqa: BLE001 - a bad video is reported, not fatal
                    failures.append([list(fields), f"{type(e).__name__}: {e}"])
                else:
                    w.write(example)  # a write error (disk full) stops the run
                    count += 1
                if progress_queue is not None:
                    progress_queue.put(1)
    except BaseException:
        if tf.io.gfile.exists(task["tmp_path"]):
            tf.io.gfile.remove(task["tmp_path"])
        raise
    state = {
        "fingerprint": task["fingerprint"],
        "num_examples": count,
        "num_rows": len(task["rows"]),
        "video_root": task["video_root"],
        "failures": failures,
        "shard": task["path"],
    }
    with tf.io.gfile.GFile(task["state_path"], "w") as f:
        json.dump(state, f)
    # The shard appears under its final name only once complete: a killed run leaves none.
    tf.io.gfile.rename(task["tmp_path"], task["path"], overwrite=True)
    return state


def _run_tasks(tasks: list[dict], num_workers: int, progress: bool, total: int,
               worker_initializer=None) -> None:
    bar = _progress_bar(total, progress)
    try:
        if num_workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                _convert_shard(task, _BarQueue(bar))
            return
        ctx = multiprocessing.get_context("spawn")  # TF is not fork-safe
        with ctx.Manager() as manager:
            queue = manager.Queue()
            with concurrent.futures.ProcessPoolExecutor(
                num_workers, mp_context=ctx, initializer=worker_initializer
            ) as pool:
                futures = [pool.submit(_convert_shard, t, queue) for t in tasks]
                pending = set(futures)
                while pending:
                    done, pending = concurrent.futures.wait(pending, timeout=0.2)
                    while not queue.empty():
                        bar.update(queue.get())
                    for fut in done:
                        if fut.exception() is not None:
                            for other in pending:  # shards not started yet
                                other.cancel()
                            # Worker crashes and environment errors (not per-video failures).
                            raise fut.exception()
                while not queue.empty():
                    bar.update(queue.get())
    finally:
        bar.close()


class _BarQueue:
    def __init__(self, bar):
        self.bar = bar

    def put(self, n):
        self.bar.update(n)


class _LogBar:
    """Fallback progress 'bar' when tqdm is not installed: a log line every 10 s."""

    def __init__(self, total):
        self.total, self.n, self.last = total, 0, time.monotonic()

    def update(self, n):
        self.n += n
        if time.monotonic() - self.last > 10 or self.n == self.total:
            self.last = time.monotonic()
            logger.info("make_tfrecords: %d/%d videos", self.n, self.total)

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return _NullBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _LogBar(total)
    return tqdm(total=total, unit="video", desc="make_tfrecords")


class _NullBar:
    def update(self, n):
        pass

    def close(self):
        pass


def convert_videos(
    csv_path: str,
    class_list: str | Sequence[str],
    output: str,
    *,
    video_root: str | None = None,
    num_shards: int = 1,
    fps: float | None = None,
    min_resize: int | None = 256,
    jpeg_quality: int = 90,
    num_workers: int | None = None,
    report_path: str | None = None,
    seed: int = 0,
    progress: bool = True,
    worker_initializer=None,
) -> ConversionResult:
    """Convert the videos listed in `csv_path` into `output-0000i-of-0000N` TFRecord shards.

    Args:
      csv_path: CSV with rows `path,start,end,labels` (see module doc).
      class_list: class list file (one name per line), or the list of names itself.
      output: shard prefix, e.g. `out/train` -> `out/train-00000-of-00004`.
      video_root: directory that relative CSV paths are resolved against.
      num_shards: number of output shards.
      fps: resample to this frame rate (None: keep every decoded frame).
      min_resize: shorter side of the stored frames (None/0: keep the decoded size).
      num_workers: parallel processes (default: min(shards to write, CPU count));
        0 or 1 converts in this process.
      report_path: CSV of failed videos (`path,start,end,labels,error`); default
        `<output dir>/failed_<output name>.csv`. Always written (header only if none failed).
      seed: seed of the row -> shard assignment (keep it fixed to resume).
      worker_initializer: a picklable function each worker process runs first (the tool
        passes `tl_keras._cli.import_tensorflow`: no TensorFlow start-up lines from them).

    Shards whose file exists and whose rows, options and `video_root` match the saved state
    (kept in `<output dir>/.<output name>_state/`), and all of whose videos were written or
    failed for a reason of their own, are kept; the others are (re)written.

    Raises `ConversionEnvironmentError` before any work when PyAV cannot be imported or
    `video_root` is not a folder (and during the run for such a failure, marking nothing
    finished). Videos that fail (missing, corrupt) are in `failures` and the report; a run
    in which no video converted marks no shard finished.
    """
    preflight(video_root)
    rows = read_csv(csv_path)
    class_names = (
        list(class_list) if not isinstance(class_list, str) else read_class_list(class_list)
    )
    known = set(class_names)
    unknown = [(r.line, name) for r in rows for name in r.labels if name not in known]
    if unknown:
        shown = ", ".join(f"line {ln}: {name!r}" for ln, name in unknown[:10])
        raise ValueError(f"{csv_path}: {len(unknown)} labels are not in the class list ({shown})")
    unlabelled = [r.line for r in rows if not r.labels]
    if unlabelled:
        raise ValueError(f"{csv_path}: rows without labels at lines {unlabelled[:10]}")
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}: must be >= 1")

    out_dir, base = os.path.split(output)
    out_dir = out_dir or "."
    tf.io.gfile.makedirs(out_dir)
    state_dir = os.path.join(out_dir, f".{base}_state")
    tf.io.gfile.makedirs(state_dir)
    report_path = report_path or os.path.join(out_dir, f"failed_{base}.csv")

    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    options = {
        "fps": fps,
        "min_resize": min_resize or None,
        "jpeg_quality": jpeg_quality,
        "class_names": class_names,
    }
    paths = shard_filenames(output, num_shards)
    tasks, kept = [], []
    for i, path in enumerate(paths):
        shard_rows = [rows[j] for j in order[i::num_shards]]
        fingerprint = _fingerprint(shard_rows, options)
        state_path = os.path.join(state_dir, f"{i:05d}-of-{num_shards:05d}.json")
        state = _read_state(state_path)
        if tf.io.gfile.exists(path) and _is_finished(state, fingerprint, video_root, shard_rows):
            kept.append(path)
            continue
        tasks.append(
            {
                "path": path,
                "tmp_path": os.path.join(state_dir, f"{i:05d}-of-{num_shards:05d}.tmp"),
                "state_path": state_path,
                "fingerprint": fingerprint,
                "options": options,
                "class_names": class_names,
                "video_root": video_root,
                "rows": [[r.path, r.start, r.end, list(r.labels), r.line] for r in shard_rows],
            }
        )
    if kept:
        logger.info("make_tfrecords: keeping %d finished shards of %s", len(kept), output)
    if num_workers is None:
        num_workers = min(len(tasks), os.cpu_count() or 1)
    _run_tasks(tasks, num_workers, progress, total=sum(len(t["rows"]) for t in tasks),
               worker_initializer=worker_initializer)

    failures, num_examples = [], 0
    for i in range(num_shards):
        state = _read_state(os.path.join(state_dir, f"{i:05d}-of-{num_shards:05d}.json")) or {}
        num_examples += state.get("num_examples", 0)
        for fields, error in state.get("failures", []):
            failures.append(
                (VideoRow(fields[0], fields[1], fields[2], tuple(fields[3]), fields[4]), error)
            )
    failures.sort(key=lambda f: f[0].line)
    with tf.io.gfile.GFile(report_path, "w") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels", "error"])
        for row, error in failures:
            w.writerow(row.as_csv() + [error])
    if rows and num_examples == 0:
        # Nothing converted: almost surely the environment (wrong root, missing codec), so
        # no shard counts as finished and the rerun after the fix converts every video.
        for task in tasks:
            if tf.io.gfile.exists(task["state_path"]):
                tf.io.gfile.remove(task["state_path"])
    if failures:
        row, error = failures[0]
        logger.warning(
            "make_tfrecords: %d of %d videos failed to convert; first (%s, CSV line %d): %s; "
            "all in %s",
            len(failures),
            len(rows),
            row.path,
            row.line,
            error,
            report_path,
        )
    return ConversionResult(
        shards=paths,
        written=[t["path"] for t in tasks],
        kept=kept,
        num_examples=num_examples,
        failures=failures,
        report_path=report_path,
        num_videos=len(rows),
    )


def _is_finished(state, fingerprint, video_root, shard_rows) -> bool:
    """A saved shard state of the same rows and options, whose videos were all written or
    failed for a reason of their own (a state without `num_rows` is from an older writer:
    kept only when it holds examples and no decoder error)."""
    if not state or state.get("fingerprint") != fingerprint:
        return False
    failures = state.get("failures", [])
    if "num_rows" not in state:
        return state.get("num_examples", 0) > 0 and not any(
            error.startswith(("ModuleNotFoundError", "ImportError")) for _, error in failures
        )
    return (
        state.get("video_root") == video_root
        and state["num_rows"] == len(shard_rows)
        and state.get("num_examples", 0) + len(failures) == len(shard_rows)
    )
