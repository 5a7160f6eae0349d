"""Convert video files listed in a CSV into DMVR-style SequenceExample TFRecord shards.

    python tools/make_tfrecords.py --csv=train.csv --class_list=classes.txt \\
        --video_root=/data/kinetics/videos --output=out/train --num_shards=16 \\
        --fps=25 --min_resize=256

CSV rows: `path,start,end,labels` (seconds; empty start/end = whole video; labels separated
by `;` for multi-label; an optional header row starting with `path`). Class list: one name
per line, the line number is the label index. Output: `out/train-00000-of-00016`, ...,
read with `tl_keras.data.video_dataset("out/train@16", ...)`.

Shards are written in parallel processes with a progress bar. Run the same command again to
resume: finished shards are kept. Videos that fail to decode are listed in a report CSV
(default `out/failed_train.csv`); the rest are written. The logic is `tl_keras.data.writer`.
"""

import argparse
import logging
import sys

from tl_keras.data import writer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"make_tfrecords: error: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {len(result.written)} shards, kept {len(result.kept)} finished shards; "
        f"{result.num_examples} examples in {len(result.shards)} shards of {args.output}; "
        f"{len(result.failures)} videos failed (report: {result.report_path})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
