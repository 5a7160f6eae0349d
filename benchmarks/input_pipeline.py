"""Input pipeline throughput: training clips/s of `tl_keras.data.video_dataset` vs a naive one.

    python benchmarks/input_pipeline.py            # full run, the table in BENCHMARKS.md
    python benchmarks/input_pipeline.py --quick    # < 1 minute, for CI

Both pipelines make the same thing from the same records: 32-frame training clips (stride 2)
of 224 x 224, random crop, flip, [-1, 1], batched. The records are written by this script in
a temp dir: videos of 300 JPEG frames at 256 x 340 (short side 256, as the writer stores
Kinetics), a textured scene panning across the frame.

- `tl_keras`: `video_dataset(split="train")`: samples the clip first and decodes only its
  32 frames, with the crop window fused into the JPEG decode.
- `naive`: the same `tf.data` parallelism (parallel map, AUTOTUNE, prefetch), but it decodes
  every frame of the video, then samples the clip, resizes, crops and flips.

Repetitions alternate between the two (interleaved, fresh iterator each time, first batch
not timed) in one process; the median clips/s of each and their ratio are printed, with the
CPU time the process spent per clip (all tf.data threads; less sensitive than wall time to
other processes on the machine) and the load average before and after.
"""

import argparse
import datetime
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

NUM_FRAMES, STRIDE, CROP, MIN_RESIZE = 32, 2, 224, 256


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small run (< 1 minute) for CI")
    p.add_argument("--num_videos", type=int, default=None)
    p.add_argument("--video_frames", type=int, default=300)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument(
        "--batches", type=int, default=None, help="timed batches per repetition (tl_keras)"
    )
    p.add_argument("--naive_batches", type=int, default=None, help="timed batches (naive)")
    return p.parse_args(argv)


def scene(rng, height=256, width=340, pan=2):
    """A textured 'scene' larger than the frame, so frames can pan across it."""
    big = rng.uniform(0, 255, size=(height // 8 + 8, (width + 300 * pan) // 8 + 8, 3))
    big = tf.image.resize(big[None], (big.shape[0] * 8, big.shape[1] * 8), "bicubic")[0].numpy()
    yy, xx = np.mgrid[0 : big.shape[0], 0 : big.shape[1]]
    big += 25 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 11.0)[..., None]  # finer detail
    return np.clip(big, 0, 255).astype(np.uint8)


def make_records(directory, num_videos, video_frames, seed=0):
    """`num_videos` records of `video_frames` 256 x 340 JPEG frames; returns (pattern, MB)."""
    rng = np.random.default_rng(seed)
    records = []
    unique = min(video_frames, 60)  # encode 60 distinct frames and cycle them (same decode cost)
    for v in range(num_videos):
        world = scene(rng)
        jpegs = [
            writer.encode_jpeg(np.ascontiguousarray(world[:256, 2 * i : 2 * i + 340]), 90)
            for i in range(unique)
        ]
        frames = [jpegs[i % unique] for i in range(video_frames)]
        records.append(writer.make_sequence_example(frames, [v % 400]).SerializeToString())
    paths = writer.write_sharded(
        records, os.path.join(directory, "bench"), num_shards=min(4, num_videos)
    )
    megabytes = sum(os.path.getsize(p) for p in paths) / 1e6
    return os.path.join(directory, f"bench@{len(paths)}"), megabytes


def ours(pattern, batch_size):
    return data.video_dataset(
        pattern,
        num_classes=400,
        split="train",
        num_frames=NUM_FRAMES,
        stride=STRIDE,
        crop_size=CROP,
        min_resize=MIN_RESIZE,
        batch_size=batch_size,
        seed=0,
    )


def naive(pattern, batch_size):
    """Decode every frame of the video, then sample the clip and augment."""
    decoder = data.VideoDecoder()
    files = data.expand_file_pattern(pattern)

    def parse(serialized, seed):
        s = tf.random.experimental.stateless_split(seed, 4)
        decoded = decoder.decode(serialized)
        frames = video_ops.decode_jpeg_frames(decoded["frames"])  # all frames: [N, H, W, 3]
        idx = video_ops.random_clip_indices(tf.shape(frames)[0], NUM_FRAMES, STRIDE, s[0])
        clip = tf.gather(frames, idx)  # [T, H, W, 3]
        clip = video_ops.random_resize_smallest(clip, MIN_RESIZE, (0.9, 1.33), s[1], min_size=CROP)
        clip = video_ops.random_crop(clip, CROP, s[2])
        clip = video_ops.random_flip_left_right(clip, s[3])
        label = tf.one_hot(decoded["labels"][0], 400)
        return video_ops.normalize(clip), label

    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=0)
    ds = ds.interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE
    )
    ds = ds.shuffle(64, seed=0).repeat()
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip(ds, seeds).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def measure(ds, batches, batch_size):
    """(clips per second of wall time, CPU milliseconds of this process per clip)."""
    it = iter(ds)
    next(it)  # start-up and the first batch are not timed
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        x, _ = next(it)
    x.numpy()
    clips = batches * batch_size
    return clips / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / clips


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


def main(argv=None):
    args = parse_args(argv)
    q = args.quick
    num_videos = args.num_videos or (2 if q else 8)
    repeats = args.repeats or (2 if q else 5)
    batches = args.batches or (4 if q else 8)
    naive_batches = args.naive_batches or (1 if q else 3)
    bs = args.batch_size
    cpu, nproc = machine()
    load_before = os.getloadavg()
    print(
        f"date: {datetime.date.today().isoformat()}  machine: nproc={nproc}, {cpu}, "
        f"{platform.system()}  tensorflow {tf.__version__}  load average: "
        + " ".join(f"{v:.2f}" for v in load_before)
    )
    print(
        "command: python "
        + " ".join([os.path.relpath(__file__)] + (argv if argv is not None else sys.argv[1:]))
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pattern, mb = make_records(tmp, num_videos, args.video_frames)
        print(
            f"records: {num_videos} videos x {args.video_frames} frames of 256x340 JPEG "
            f"({mb:.1f} MB) written in {time.perf_counter() - t0:.1f} s; "
            f"clip: {NUM_FRAMES} frames, "
            f"stride {STRIDE}, {CROP}x{CROP}, batch {bs}"
        )
        pipelines = {
            "tl_keras": (ours(pattern, bs), batches),
            "naive": (naive(pattern, bs), naive_batches),
        }
        rates = {name: [] for name in pipelines}
        cpu_ms = {name: [] for name in pipelines}
        for r in range(repeats):
            order = list(pipelines) if r % 2 == 0 else list(pipelines)[::-1]  # interleaved
            for name in order:
                ds, n = pipelines[name]
                rate, ms = measure(ds, n, bs)
                rates[name].append(rate)
                cpu_ms[name].append(ms)
            print(
                f"  repetition {r + 1}: "
                + ", ".join(
                    f"{k} {rates[k][-1]:.2f} clips/s ({cpu_ms[k][-1]:.0f} CPU ms/clip)"
                    for k in pipelines
                ),
                flush=True,
            )
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_ms = {k: statistics.median(v) for k, v in cpu_ms.items()}
    print("\n| pipeline | clips/s per repetition | median clips/s | median CPU ms per clip |")
    print("|---|---|---|---|")
    for name, values in rates.items():
        print(
            f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {med[name]:.2f} "
            f"| {med_ms[name]:.0f} |"
        )
    print(
        f"\nratio tl_keras / naive (median clips/s): {med['tl_keras'] / med['naive']:.1f}x; "
        f"CPU per clip naive / tl_keras: {med_ms['naive'] / med_ms['tl_keras']:.1f}x"
    )
    print("load average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    return med


if __name__ == "__main__":
    main()
