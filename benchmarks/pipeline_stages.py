"""Where a training clip's CPU time goes: the input pipeline's stages, one at a time.

    python benchmarks/pipeline_stages.py                 # the three stored sizes
    python benchmarks/pipeline_stages.py --quick         # one size, a few clips (CI)

For each stored frame size (records as `input_pipeline.py` writes them: 250 JPEG frames,
quality 90), the stages of one training clip (32 frames at stride 2, shorter side to 256,
224 x 224 crop) are run on their own, each in one `tf.function` called on one record at a
time with one intra-op thread, and the process CPU time per clip is reported:

- `read`: the TFRecord (the whole ~6-25 MB record) from disk, CRC included;
- `parse`: `parse_single_sequence_example` of it (all 250 frames' strings);
- `headers`: the 32 sampled frames' JPEG headers (`extract_jpeg_shape`);
- `decode full`: the 32 frames decoded whole (the reference pipeline);
- `decode window`: only the window that becomes the crop (`tl_keras`, train/eval);
- `resize full`: the whole frames' shorter side to 256, back to uint8 (the reference);
- `resize window`: the window to 224 x 224, uint8 (`tl_keras`);
- `to float`: a 224 x 224 x 32 uint8 clip to normalised float32 (the reference's last
  step; `tl_keras` with `output_dtype="uint8"` leaves it to the accelerator);
- `deliver uint8` / `deliver float32`: ready clips through `map` (the float one
  normalising), `batch(8)`, `prefetch` and the NumPy conversion, in tf.data with its
  default threads: what handing 4.8 MB (uint8) or 19 MB (float32) per clip to the
  consumer costs, decoding excluded.

The sums: the reference's stages (its clips delivered as float32) and ours (uint8, the
experiments' setting). Decoding the 32 JPEGs (whole or window), reading and parsing the
record are work both pipelines must do, which bounds what any ordering of the rest can save.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import input_pipeline as bench  # noqa: E402  (records and constants shared)

from tl_keras import data  # noqa: E402
from tl_keras.data import video_ops  # noqa: E402


def _cpu_ms(fn, args_list, repeats):
    fn(*args_list[0])  # trace
    best = None
    for _ in range(repeats):
        start = time.process_time()
        for args in args_list:
            out = fn(*args)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
        ms = (time.process_time() - start) / len(args_list) * 1e3
        best = ms if best is None else min(best, ms)
    return best


def stages(pattern, num_clips, repeats):
    files = data.expand_file_pattern(pattern)
    records = [r for r in tf.data.TFRecordDataset(files).take(num_clips)]
    n = len(records)

    def parse(serialized):
        return bench._parse_sequence_example(serialized)[0]

    read_ds = tf.data.TFRecordDataset(files).take(n)
    encoded = [parse(r) for r in records]
    idx = [video_ops.middle_clip_indices(tf.size(e), bench.NUM_FRAMES, bench.STRIDE) for e in encoded]
    kept = [tf.gather(e, i) for e, i in zip(encoded, idx)]
    shape = video_ops.jpeg_frame_shapes(kept[0][:1])[0]
    h, w = int(shape[0]), int(shape[1])
    window = video_ops.center_crop_window(h, w, bench.MIN_RESIZE, bench.CROP)
    full = [video_ops.decode_jpeg_frames(k) for k in kept]
    win = [video_ops.decode_and_crop_jpeg_frames(k, window) for k in kept]
    clip = [video_ops.resize_to_square(x, bench.CROP, tf.uint8) for x in win]

    def read_all():
        start = time.process_time()
        for _ in read_ds:
            pass
        return (time.process_time() - start) / n * 1e3

    read_all()
    out = {"read": min(read_all() for _ in range(repeats))}
    fns = {
        "parse": (tf.function(parse), [(r,) for r in records]),
        "headers": (tf.function(video_ops.jpeg_frame_shapes), [(k,) for k in kept]),
        "decode full": (tf.function(video_ops.decode_jpeg_frames), [(k,) for k in kept]),
        "decode window": (tf.function(lambda k: video_ops.decode_and_crop_jpeg_frames(k, window)),
                          [(k,) for k in kept]),
        "resize full": (tf.function(bench._resize_smallest_uint8), [(f,) for f in full]),
        "resize window": (tf.function(lambda x: video_ops.resize_to_square(x, bench.CROP, tf.uint8)),
                          [(x,) for x in win]),
        "to float": (tf.function(lambda x: tf.cast(x, tf.float32) / 255.0 * 2.0 - 1.0),
                     [(c,) for c in clip]),
    }
    for name, (fn, args) in fns.items():
        out[name] = _cpu_ms(fn, args, repeats)
    for name, dtype in (("deliver uint8", tf.uint8), ("deliver float32", tf.float32)):
        out[name] = min(_delivery_ms(clip[0], dtype) for _ in range(repeats))
    return out


def _delivery_ms(clip, dtype, batch=8, batches=6):
    """CPU ms per clip of handing ready uint8 clips (or normalised float32 ones) to the
    consumer through tf.data: map, batch, prefetch, NumPy."""
    fn = (lambda x: x) if dtype == tf.uint8 else video_ops.normalize
    ds = tf.data.Dataset.from_tensors(clip).repeat().map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    it = iter(ds.batch(batch).prefetch(tf.data.AUTOTUNE))
    next(it).numpy()
    start = time.process_time()
    for _ in range(batches):
        next(it).numpy()
    return (time.process_time() - start) / (batch * batches) * 1e3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one size, 2 clips, 1 repetition")
    p.add_argument("--sizes", default=None, help="stored sizes HxW (default: input_pipeline.SIZES)")
    p.add_argument("--clips", type=int, default=None, help="records per stage (default 8)")
    p.add_argument("--repeats", type=int, default=None, help="best of (default 3)")
    args = p.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    sizes = (args.sizes or ("240x320" if args.quick else ",".join(bench.SIZES))).split(",")
    for size in sizes:
        parts = size.split("x")
        if len(parts) != 2 or not all(v.isdigit() and int(v) > 0 for v in parts):
            p.error(f"--sizes: {size!r} is not HEIGHTxWIDTH in pixels (e.g. 240x320)")
    clips = args.clips or (2 if args.quick else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    cpu, nproc = bench.machine()
    print(f"machine: nproc={nproc}, {cpu}; tensorflow {tf.__version__}; one intra-op thread; "
          f"best of {repeats} over {clips} clips")
    print("command: python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:])))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            hh, ww = (int(v) for v in size.split("x"))
            pattern, _ = bench.make_records(tmp, clips, 250, height=hh, width=ww)
            rows[size] = stages(pattern, clips, repeats)
    names = list(next(iter(rows.values())))
    print("\nCPU ms per clip (32 frames):\n")
    print("| stage | " + " | ".join(sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{rows[s][name]:.1f}" for s in sizes) + " |")
    for label, parts in (
        ("reference (sum)", ("read", "parse", "decode full", "resize full", "deliver float32")),
        ("tl_keras uint8 (sum)", ("read", "parse", "headers", "decode window", "resize window",
                                  "deliver uint8")),
    ):
        print(f"| **{label}** | " + " | ".join(
            f"{sum(rows[s][k] for k in parts):.1f}" for s in sizes) + " |")
    return rows


if __name__ == "__main__":
    main()
