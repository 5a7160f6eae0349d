"""tf.data service: clips/s of `video_dataset` in process against the same pipeline read
through a `tf.data` service dispatcher with 1 and with 2 local workers.

    python benchmarks/data_service.py            # the table in BENCHMARKS.md
    python benchmarks/data_service.py --quick    # seconds: proves the script runs

Same records as `benchmarks/input_pipeline.py` (its `make_records`: Kinetics-like JPEG
videos, 4 shards) and the same clips (32 frames at stride 2, short side 256, 224 crop,
batch 8, no scale jitter, every batch converted to NumPy), delivered as uint8 pixels by
default as the experiments do (`--output_dtype=float32`: normalised clips, 4x the bytes
that the workers send). Each service is a dispatcher and
its workers started with `tools/data_service.py` as separate processes on loopback, as on
real machines; the client keeps the bad-example check, batching and prefetch. Repetitions
alternate the three pipelines (interleaved, a fresh iterator and service job each time, its
first batch not timed); the median is printed.

Local workers share this machine's cores with the client: the numbers show the service's
overhead and what a second worker process gives here; on separate machines each worker
brings its own cores.
"""

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import tensorflow as tf  # noqa: E402

import input_pipeline  # noqa: E402  (benchmarks/input_pipeline.py: make_records, measure)
from tl_keras import data  # noqa: E402

TOOL = os.path.join(REPO, "tools", "data_service.py")
PIPELINES = ("in_process", "service_1_worker", "service_2_workers")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny run (seconds) to prove it works")
    p.add_argument("--size", default="240x320", help="stored frame size HxW")
    p.add_argument("--mode", default="train", choices=("train", "eval"))
    p.add_argument("--num_videos", type=int, default=None, help="default 16 (quick 4)")
    p.add_argument("--video_frames", type=int, default=None, help="default 250 (quick 40)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=None, help="default 3 (quick 1)")
    p.add_argument("--batches", type=int, default=None, help="timed batches (default 6, quick 2)")
    p.add_argument("--output_dtype", default="uint8", choices=("uint8", "float32"))
    p.add_argument("--processing_mode", default="distributed_epoch",
                   choices=("distributed_epoch", "parallel_epochs"))
    return p.parse_args(argv)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(args, processes):
    """Start one `tools/data_service.py` server; wait for its 'serving' line."""
    proc = subprocess.Popen([sys.executable, TOOL, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    processes.append(proc)
    line = proc.stdout.readline()
    if "serving" not in line:
        raise RuntimeError(f"tools/data_service.py {' '.join(args)} did not start: {line!r}")
    return line.strip()


def start_service(num_workers, processes):
    """A dispatcher and `num_workers` workers on loopback; returns the dispatcher address."""
    port = _free_port()
    _start(["--dispatcher", f"--port={port}"], processes)
    for _ in range(num_workers):
        _start(["--worker", f"--dispatcher_address=localhost:{port}", f"--port={_free_port()}",
                "--worker_address=localhost:%port%"], processes)
    return f"localhost:{port}"


def build(pattern, mode, batch_size, address=None, processing_mode="distributed_epoch",
          output_dtype="uint8"):
    service = {}
    if address is not None:
        service = dict(service_address=address, service_processing_mode=processing_mode)
    return data.video_dataset(
        pattern, num_classes=input_pipeline.NUM_CLASSES,
        split="train" if mode == "train" else "validation",
        num_frames=input_pipeline.NUM_FRAMES, stride=input_pipeline.STRIDE,
        crop_size=input_pipeline.CROP, min_resize=input_pipeline.MIN_RESIZE,
        batch_size=batch_size, scale_jitter=None, seed=0, repeat=True, drop_remainder=True,
        output_dtype=output_dtype, **service,
    )


def main(argv=None):
    args = parse_args(argv)
    q = args.quick
    num_videos = args.num_videos or (4 if q else 16)
    video_frames = args.video_frames or (40 if q else 250)
    repeats = args.repeats or (1 if q else 3)
    batches = args.batches or (2 if q else 6)
    bs = args.batch_size
    h, w = (int(v) for v in args.size.split("x"))
    cpu, nproc = input_pipeline.machine()
    command = "python " + " ".join(
        [os.path.relpath(__file__, REPO)] + (argv if argv is not None else sys.argv[1:]))
    print(f"date: {datetime.date.today().isoformat()}  machine: nproc={nproc}, {cpu}, "
          f"{platform.system()}  tensorflow {tf.__version__}")
    print(f"command: {command}")
    processes = []
    try:
        addresses = {
            "in_process": None,
            "service_1_worker": start_service(1, processes),
            "service_2_workers": start_service(2, processes),
        }
        with tempfile.TemporaryDirectory() as tmp:
            pattern, mb = input_pipeline.make_records(tmp, num_videos, video_frames, height=h,
                                                      width=w)
            print(f"records: {num_videos} videos x {video_frames} JPEG frames at {args.size} "
                  f"({mb:.1f} MB); mode {args.mode}, batch {bs}, {batches} timed batches, "
                  f"{repeats} repetitions, processing mode {args.processing_mode}, "
                  f"{args.output_dtype} clips", flush=True)
            rates = {name: [] for name in PIPELINES}
            for r in range(repeats):
                order = PIPELINES if r % 2 == 0 else PIPELINES[::-1]  # interleaved
                for name in order:
                    ds = build(pattern, args.mode, bs, addresses[name], args.processing_mode,
                               args.output_dtype)
                    rate, _ = input_pipeline.measure(ds, batches, bs)
                    rates[name].append(rate)
                print(f"  repetition {r + 1} done", flush=True)
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    base = statistics.median(rates["in_process"])
    print("\n| pipeline | clips/s (median) | runs | vs in process |")
    print("|---|---|---|---|")
    for name in PIPELINES:
        med = statistics.median(rates[name])
        runs = ", ".join(f"{v:.1f}" for v in rates[name])
        print(f"| {name} | {med:.1f} | {runs} | {med / base:.2f}x |")
    print(f"\ncommand: {command}")
    return rates


if __name__ == "__main__":
    main()
