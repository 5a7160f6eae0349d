"""Convert video files listed in a CSV into DMVR-style SequenceExample TFRecord shards.

Needs the video decoder PyAV, the extra `video`: pip install -e ".[video]" (checked before
any work starts, as is --video_root).

    python tools/make_tfrecords.py --csv=train.csv --class_list=classes.txt \\
        --video_root=/data/kinetics/videos --output=out/train --num_shards=16 \\
        --fps=25 --min_resize=256

CSV rows: `path,start,end,labels` (seconds; empty start/end = whole video; labels separated
by `;` for multi-label; an optional header row starting with `path`). Class list: one name
per line, the line number is the label index. Output: `out/train-00000-of-00016`, ...,
read with `tl_keras.data.video_dataset("out/train@16", ...)`.

Shards are written in parallel processes with a progress bar. Run the same command again to
resume: finished shards are kept (a shard is finished when each of its videos was written or
failed for a reason of its own; a run that converted nothing marks nothing finished). Videos
that fail to decode are listed in a report CSV (default `out/failed_train.csv`), the first
one's reason is printed, and the rest are written.

Exit status: 0 done; 1 no video converted, or more than --max_failures of them failed;
2 bad arguments or environment (no PyAV, no --video_root). The logic is
`tl_keras.data.writer`.
"""

import argparse
import logging
import os
import sys

os.environ.setdefault("TL_KERAS_LAZY_IMPORT", "1")  # tl_keras parts on first use (tl_keras/__init__.py)

from tl_keras import _cli  # noqa: E402  (standard library only)


def _fraction(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1]")
    return value


def parse_args(argv=None):
    parser = _cli.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--csv", required=True, help="CSV of path,start,end,labels rows")
    parser.add_argument("--class_list", required=True, help="class names, one per line")
    parser.add_argument("--output", required=True, help="shard prefix, e.g. out/train")
    parser.add_argument("--video_root", default=None, help="folder relative CSV paths are in")
    parser.add_argument("--num_shards", type=int, default=1)
    parser.add_argument(
        "--fps",
        type=float,
        default=None,
        help="resample to this frame rate (default: keep all frames)",
    )
    parser.add_argument(
        "--min_resize",
        type=int,
        default=256,
        help="shorter side of stored frames; 0 keeps the decoded size",
    )
    parser.add_argument("--jpeg_quality", type=int, default=90)
    parser.add_argument(
        "--num_workers",
        type=int,
        default=None,
        help="parallel processes (default: CPU count; 0 = in this process)",
    )
    parser.add_argument(
        "--report",
        default=None,
        help="CSV of videos that failed (default: <output dir>/failed_<name>.csv)",
    )
    parser.add_argument("--seed", type=int, default=0, help="row -> shard assignment seed")
    parser.add_argument(
        "--max_failures",
        type=_fraction,
        default=None,
        help="exit 1 when more than this fraction of the videos failed (e.g. 0.05); "
        "default: only when none converted",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)  # before importing TensorFlow: --help answers at once
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    _cli.import_tensorflow()  # without TensorFlow's start-up lines
    from tl_keras.data import writer

    try:
        result = writer.convert_videos(
            args.csv,
            args.class_list,
            args.output,
            video_root=args.video_root,
            num_shards=args.num_shards,
            fps=args.fps,
            min_resize=args.min_resize or None,
            jpeg_quality=args.jpeg_quality,
            num_workers=args.num_workers,
            report_path=args.report,
            seed=args.seed,
            progress=not args.no_progress,
            worker_initializer=_cli.import_tensorflow,  # workers start quietly too
        )
    except (ValueError, FileNotFoundError, writer.ConversionEnvironmentError) as e:
        print(f"make_tfrecords: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(result.written)} shards, kept {len(result.kept)} finished shards; "
        f"{result.num_examples} examples in {len(result.shards)} shards of {args.output}; "
        f"{len(result.failures)} videos failed (report: {result.report_path})"
    )
    if result.failures:
        row, error = result.failures[0]
        print(f"first failure: {row.path} (CSV line {row.line}): {error}")
    failed = len(result.failures)
    if result.num_videos and result.num_examples == 0:
        print(
            f"make_tfrecords: error: none of the {result.num_videos} videos converted "
            f"(nothing marked finished); see {result.report_path}",
            file=sys.stderr,
        )
        return 1
    if args.max_failures is not None and result.failed_fraction > args.max_failures:
        print(
            f"make_tfrecords: error: {failed} of {result.num_videos} videos failed, more "
            f"than --max_failures={args.max_failures}; see {result.report_path}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
