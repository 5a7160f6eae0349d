"""Small clips through `video_dataset`: CPU per batch with the grouped parse against the
one-by-one parse (`tl_keras/data/pipeline.py`, `_guarded_parse`).

    python benchmarks/small_clips.py            # the row in BENCHMARKS.md
    python benchmarks/small_clips.py --quick    # 1 repetition of 10 batches (CI: it runs)

The data is the built-in multi-label dataset (`tl_keras.data.synthetic`, `multi`: 16-frame
32 x 32 JPEG videos) read as `charades.py --runlocal` trains on it: 4 frames at stride 2,
28 px random crops of the 32 px frames with scale jitter, flips, batch 64, uint8 out. Each
parsed clip is 9 kB, so the pipeline parses 16 per call (`_group_size`); the one-by-one rows
set the group budget to 0, which is the path every example over 1 MB takes (a real
Kinetics clip). Repetitions alternate the two in one process, each with a fresh iterator
whose first batches are not timed; medians of wall and process CPU time per batch.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402,F401

from tl_keras.data import pipeline, synthetic  # noqa: E402

GROUP_BYTES = pipeline._GROUP_BYTES


def dataset(group_bytes):
    pipeline._GROUP_BYTES = group_bytes
    info = synthetic.make_dataset("multi")
    return pipeline.video_dataset(
        list(info.train_files), num_classes=len(info.class_names), multilabel=True,
        split="train", num_frames=4, stride=2, crop_size=28, min_resize=32, batch_size=64,
        seed=0, output_dtype="uint8",
    )


def time_batches(ds, batches, warmup=3):
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    return ((time.perf_counter() - wall) / batches * 1e3, (time.process_time() - cpu) / batches * 1e3)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 repetition of 10 batches")
    p.add_argument("--repeats", type=positive_int, default=None, help="default 5 (quick 1)")
    p.add_argument("--batches", type=positive_int, default=None, help="timed per repetition (default 60)")
    args = p.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    batches = args.batches or (10 if args.quick else 60)
    modes = {"grouped (16 per call)": GROUP_BYTES, "one by one": 0}
    results = {name: [] for name in modes}
    for _ in range(repeats):
        for name, group_bytes in modes.items():
            results[name].append(time_batches(dataset(group_bytes), batches))
    pipeline._GROUP_BYTES = GROUP_BYTES
    print(f"{repeats} repetitions of {batches} batches of 64 clips [4, 28, 28, 3] uint8")
    print("| parse | wall ms / batch | CPU ms / batch |")
    print("|---|---|---|")
    medians = {}
    for name, runs in results.items():
        medians[name] = [statistics.median(r[i] for r in runs) for i in (0, 1)]
        print(f"| {name} | {medians[name][0]:.1f} | {medians[name][1]:.1f} |")
    grouped, alone = medians["grouped (16 per call)"], medians["one by one"]
    print(f"one by one / grouped: wall {alone[0] / grouped[0]:.2f}x, CPU {alone[1] / grouped[1]:.2f}x")


if __name__ == "__main__":
    main()
