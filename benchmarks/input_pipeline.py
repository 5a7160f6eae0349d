"""Input pipeline: clips/s and peak memory of `tl_keras.data.video_dataset` against the
reference pipeline's order of work and a naive one, per mode and stored frame size.

    python benchmarks/input_pipeline.py            # full run, the tables in BENCHMARKS.md
    python benchmarks/input_pipeline.py --quick    # one size, 4 videos: about 3 minutes

Every pipeline makes the same output from the same records (Kinetics-like, written by this
script in a temp dir: DMVR SequenceExample keys, JPEG quality 90, 4 shards): 32-frame clips
at stride 2, shorter side resized to 256, 224 x 224 crops, `[-1, 1]` float32, one-hot
labels, batch 8, no scale jitter; every batch is converted to NumPy. Modes: `train` (random
clip, random crop + flip), `eval` (middle clip, centre crop), `test` (4 clips x 3 crops
along the longer side; videos/s, each video is 12 views).

- `tl_keras`: `video_dataset(...)` with its defaults (float32 out).
- `tl_keras_uint8`: the same with `output_dtype="uint8"` (the consumer normalises; what the
  trainer gets with `data.output_dtype=uint8`). Its batches are uint8.
- `reference`: what DMVR / Scenic's video loader does, written here in plain TF: parse the
  SequenceExample, sample the clip's frame indices (the same rule, `video_ops`), decode
  those JPEGs in full, resize the whole frames' shorter side (back to uint8, as DMVR's
  `resize_smallest`), then crop (one random crop + flip / centre / three crops of the same
  decoded clip), convert to float32 and normalise; parallel map, batch, prefetch.
- `naive` (train only): decodes every frame of the video, then samples and augments.

Throughput: repetitions alternate the pipelines (interleaved, a fresh iterator each time,
its first batch not timed) in one process; the median of each is printed with the CPU time
per clip. Peak memory: each (pipeline, mode) in a fresh process (`--child`), peak resident
set size (`ru_maxrss`) after a fixed number of batches.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tl_keras import data  # noqa: E402
from tl_keras.data import video_ops, writer  # noqa: E402

NUM_FRAMES, STRIDE, CROP, MIN_RESIZE, NUM_CLASSES = 32, 2, 224, 256, 400
TEST_CLIPS, TEST_CROPS = 4, 3
SIZES = ("240x320", "256x340", "480x640")
MODES = ("train", "eval", "test")
PIPELINES = ("tl_keras", "tl_keras_uint8", "reference", "naive")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one size, 4 videos, 1 repetition (about 3 minutes on 2 cores)")
    p.add_argument("--sizes", default=None, help=f"stored frame sizes HxW (default {','.join(SIZES)})")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--pipelines", default=",".join(PIPELINES))
    p.add_argument("--num_videos", type=int, default=None, help="default 16 (quick 4)")
    p.add_argument("--video_frames", type=int, default=250)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=None, help="default 3 (quick 1)")
    p.add_argument("--batches", type=int, default=None,
                   help="timed batches per repetition (default 4; test mode and naive 2)")
    p.add_argument("--memory", default=None,
                   help="sizes whose peak memory per (pipeline, mode) is measured, each in a "
                        "fresh process (default: the first size; 'none' to skip)")
    p.add_argument("--memory_batches", type=int, default=None, help="default 6 (quick 2)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # pattern,pipeline,mode
    return p.parse_args(argv)


# -- records ---------------------------------------------------------------------------------


def scene(rng, height=256, width=340, pan=2):
    """A textured 'scene' larger than the frame, so frames can pan across it."""
    big = rng.uniform(0, 255, size=(height // 8 + 8, (width + 300 * pan) // 8 + 8, 3))
    big = tf.image.resize(big[None], (big.shape[0] * 8, big.shape[1] * 8), "bicubic")[0].numpy()
    yy, xx = np.mgrid[0 : big.shape[0], 0 : big.shape[1]]
    big += 25 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]  # finer detail
    return np.clip(big, 0, 255).astype(np.uint8)


def make_records(directory, num_videos, video_frames, seed=0, height=256, width=340):
    """`num_videos` records of `video_frames` `height x width` JPEG frames (quality 90), 4
    shards; returns `(pattern, MB)`. 60 distinct frames per video are cycled: the decode
    cost of a frame is the same, the records are written in seconds."""
    rng = np.random.default_rng(seed)
    records = []
    unique = min(video_frames, 60)
    for v in range(num_videos):
        world = scene(rng, height, width)
        jpegs = [
            writer.encode_jpeg(np.ascontiguousarray(world[:height, 2 * i : 2 * i + width]), 90)
            for i in range(unique)
        ]
        frames = [jpegs[i % unique] for i in range(video_frames)]
        records.append(writer.make_sequence_example(frames, [v % NUM_CLASSES]).SerializeToString())
    paths = writer.write_sharded(
        records, os.path.join(directory, f"bench{height}x{width}"), num_shards=min(4, num_videos)
    )
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    return os.path.join(directory, f"bench{height}x{width}@{len(paths)}"), megabytes


# -- the pipelines ---------------------------------------------------------------------------

SPLIT = {"train": "train", "eval": "validation", "test": "test"}


def ours(pattern, mode, batch_size, output_dtype="float32"):
    views = dict(num_clips=TEST_CLIPS, num_crops=TEST_CROPS) if mode == "test" else {}
    return data.video_dataset(
        pattern, num_classes=NUM_CLASSES, split=SPLIT[mode], num_frames=NUM_FRAMES,
        stride=STRIDE, crop_size=CROP, min_resize=MIN_RESIZE, batch_size=batch_size,
        scale_jitter=None, seed=0, output_dtype=output_dtype, repeat=True,
        drop_remainder=True, **views,
    )


def _records(pattern, train):
    files = data.expand_file_pattern(pattern)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if train:
        ds = ds.shuffle(len(files), seed=0)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=len(files),
                       num_parallel_calls=tf.data.AUTOTUNE)
    return ds.shuffle(64, seed=0).repeat() if train else ds.repeat()


def _parse_sequence_example(serialized):
    context, sequence = tf.io.parse_single_sequence_example(
        serialized,
        context_features={"clip/label/index": tf.io.VarLenFeature(tf.int64)},
        sequence_features={"image/encoded": tf.io.FixedLenSequenceFeature([], tf.string)},
    )
    return sequence["image/encoded"], tf.sparse.to_dense(context["clip/label/index"])


def _resize_smallest_uint8(frames):
    """DMVR's `resize_smallest`: the whole frames, back to their dtype (uint8)."""
    shape = tf.shape(frames)
    h, w = shape[1], shape[2]
    scale = MIN_RESIZE / tf.cast(tf.minimum(h, w), tf.float32)
    new_h = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
    new_w = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
    new_h = tf.where(h <= w, MIN_RESIZE, new_h)
    new_w = tf.where(h <= w, new_w, MIN_RESIZE)
    return tf.cond(
        tf.logical_and(tf.equal(new_h, h), tf.equal(new_w, w)),
        lambda: frames,
        lambda: tf.cast(tf.image.resize(frames, tf.stack([new_h, new_w])), tf.uint8),
    )


def reference(pattern, mode, batch_size):
    """The reference pipeline's order of work (module docstring)."""
    train = mode == "train"

    def parse(serialized, seed):
        encoded, labels = _parse_sequence_example(serialized)
        n = tf.shape(encoded)[0]
        if train:
            idx = video_ops.random_clip_indices(n, NUM_FRAMES, STRIDE, seed)
        elif mode == "eval":
            idx = video_ops.middle_clip_indices(n, NUM_FRAMES, STRIDE)
        else:
            idx = tf.reshape(video_ops.linspace_clip_indices(n, NUM_FRAMES, STRIDE, TEST_CLIPS), [-1])
        frames = tf.map_fn(lambda x: tf.io.decode_jpeg(x, channels=3), tf.gather(encoded, idx),
                           fn_output_signature=tf.uint8)  # [T, H, W, 3], whole frames
        frames = _resize_smallest_uint8(frames)
        if train:
            s = tf.random.experimental.stateless_split(seed, 2)
            frames = tf.image.stateless_random_crop(frames, [NUM_FRAMES, CROP, CROP, 3], seed=s[0])
            flip = tf.random.stateless_uniform([], seed=s[1]) < 0.5
            frames = tf.cond(flip, lambda: tf.reverse(frames, [2]), lambda: frames)
        elif mode == "eval":
            frames = video_ops.center_crop(frames, CROP)
        else:
            views = video_ops.three_crops(frames, CROP)  # [3, C*T, c, c, 3]
            frames = tf.reshape(views, [-1, NUM_FRAMES, CROP, CROP, 3])  # [V, T, c, c, 3]
        video = tf.cast(frames, tf.float32) / 255.0 * 2.0 - 1.0
        return video, tf.one_hot(labels[0], NUM_CLASSES)

    ds = _records(pattern, train)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def naive(pattern, mode, batch_size):
    """Train only: decode every frame of the video, then sample the clip and augment."""
    assert mode == "train"

    def parse(serialized, seed):
        s = tf.random.experimental.stateless_split(seed, 3)
        encoded, labels = _parse_sequence_example(serialized)
        frames = video_ops.decode_jpeg_frames(encoded)  # all frames: [N, H, W, 3]
        idx = video_ops.random_clip_indices(tf.shape(frames)[0], NUM_FRAMES, STRIDE, s[0])
        clip = video_ops.resize_smallest(tf.gather(frames, idx), MIN_RESIZE)
        clip = video_ops.random_crop(clip, CROP, s[1])
        clip = video_ops.random_flip_left_right(clip, s[2])
        return video_ops.normalize(clip), tf.one_hot(labels[0], NUM_CLASSES)

    ds = _records(pattern, True)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def build(name, pattern, mode, batch_size):
    if name == "tl_keras":
        return ours(pattern, mode, batch_size)
    if name == "tl_keras_uint8":
        return ours(pattern, mode, batch_size, "uint8")
    if name == "reference":
        return reference(pattern, mode, batch_size)
    return naive(pattern, mode, batch_size)


# -- measuring -------------------------------------------------------------------------------


def measure(ds, batches, batch_size):
    """(videos per second of wall time, CPU milliseconds of this process per video)."""
    it = iter(ds)
    next(it)[0].numpy()  # start-up and the first batch are not timed
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        x, _ = next(it)
        x.numpy()
    videos = batches * batch_size
    return videos / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / videos


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or str(
        os.cpu_count()
    )
    return cpu, nproc


def child(spec, batch_size, batches):
    """Peak RSS (MB) of one pipeline and mode, after `batches` batches, in this process."""
    pattern, name, mode = spec.split(",")
    it = iter(build(name, pattern, mode, batch_size))
    for _ in range(batches):
        next(it)[0].numpy()
    # VmHWM: this process image's own high-water mark (`ru_maxrss` survives exec, so a
    # child started by a large parent would report the parent's peak).
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": hwm_kb / 1024}))


def peak_rss(pattern, name, mode, batch_size, batches):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", f"{pattern},{name},{mode}",
         f"--batch_size={batch_size}", f"--memory_batches={batches}"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {mode}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def _cells(modes, pipelines):
    return [(p, m) for m in modes for p in pipelines if not (p == "naive" and m != "train")]


def main(argv=None):
    args = parse_args(argv)
    q = args.quick
    if args.child:
        child(args.child, args.batch_size, args.memory_batches or 2)
        return None
    sizes = (args.sizes or ("240x320" if q else ",".join(SIZES))).split(",")
    modes = args.modes.split(",")
    pipelines = args.pipelines.split(",")
    num_videos = args.num_videos or (4 if q else 16)
    repeats = args.repeats or (1 if q else 3)
    bs = args.batch_size
    memory_sizes = (args.memory or sizes[0]).split(",") if args.memory != "none" else []
    memory_batches = args.memory_batches or (2 if q else 6)
    cpu, nproc = machine()
    print(
        f"date: {datetime.date.today().isoformat()}  machine: nproc={nproc}, {cpu}, "
        f"{platform.system()}  tensorflow {tf.__version__}  load average: "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    print("command: python " + " ".join(
        [os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:])))
    print(f"clips: {NUM_FRAMES} frames, stride {STRIDE}, short side {MIN_RESIZE}, {CROP}x{CROP}, "
          f"batch {bs}; test: {TEST_CLIPS} clips x {TEST_CROPS} crops")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            h, w = (int(v) for v in size.split("x"))
            t0 = time.perf_counter()
            pattern, mb = make_records(tmp, num_videos, args.video_frames, height=h, width=w)
            print(f"\n## stored {size}: {num_videos} videos x {args.video_frames} JPEG frames "
                  f"({mb:.1f} MB), written in {time.perf_counter() - t0:.1f} s", flush=True)
            cells = _cells(modes, pipelines)
            rates = {c: [] for c in cells}
            cpu_ms = {c: [] for c in cells}
            for r in range(repeats):
                order = cells if r % 2 == 0 else cells[::-1]  # interleaved
                for name, mode in order:
                    n = args.batches or (2 if mode == "test" or name == "naive" else 4)
                    rate, ms = measure(build(name, pattern, mode, bs), n, bs)
                    rates[(name, mode)].append(rate)
                    cpu_ms[(name, mode)].append(ms)
                print(f"  repetition {r + 1} done; load average "
                      + " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
            peaks = {}
            if size in memory_sizes:
                for name, mode in cells:
                    if name != "naive":
                        peaks[(name, mode)] = peak_rss(pattern, name, mode, bs, memory_batches)
            print("\n| mode | pipeline | per repetition | median | CPU ms per video | "
                  "vs reference | peak RSS (MB) |")
            print("|---|---|---|---|---|---|---|")
            for name, mode in cells:
                med = statistics.median(rates[(name, mode)])
                ref = rates.get(("reference", mode))
                ratio = f"{med / statistics.median(ref):.2f}x" if ref else "-"
                unit = "videos/s" if mode == "test" else "clips/s"
                peak = peaks.get((name, mode))
                print(f"| {mode} | {name} | "
                      + ", ".join(f"{v:.1f}" for v in rates[(name, mode)])
                      + f" {unit} | {med:.1f} | {statistics.median(cpu_ms[(name, mode)]):.0f} | "
                      f"{ratio} | {f'{peak:.0f}' if peak else '-'} |")
                results.append(dict(size=size, mode=mode, pipeline=name, rates=rates[(name, mode)],
                                    median=med, cpu_ms=statistics.median(cpu_ms[(name, mode)]),
                                    peak_rss_mb=peak))
    print("\nload average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": dict(cpu=cpu, nproc=nproc), "results": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
