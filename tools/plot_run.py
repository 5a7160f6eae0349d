"""Plot a training run's curves: training loss, learning rate and evaluation metrics against
the step, from the run's own records, as one PNG.

    python tools/plot_run.py RUN_DIR                       # -> RUN_DIR/training_curves.png
    python tools/plot_run.py RUN_DIR --output=curves.png

`RUN_DIR` is a training run directory (`--workdir` of an experiment, or the folder a
`--runlocal` run prints). Read: the TensorBoard scalars in `RUN_DIR/train` (`train/loss`,
`train/learning_rate`) and `RUN_DIR/eval/history.jsonl` (the metrics of every evaluation:
top-1 / top-5, mAP, mean class accuracy; else the `eval/` TensorBoard scalars), with the
title from `config.json` and `metrics.json`. The event files are read without TensorFlow
(`tl_keras.plotting.read_run`), so the figure is ready in seconds, also while the run is
still training. Needs matplotlib: `pip install 'tl_keras[plot]'`.
"""

import argparse
import os
import sys

import _common  # tools/_common.py: the script's own directory is on sys.path (no TensorFlow)


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("workdir", metavar="RUN_DIR", help="the training run directory")
    parser.add_argument("--output", default=None,
                        help="the PNG to write (default RUN_DIR/training_curves.png)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG")
    return parser.parse_args(argv)


def run(args):
    """Reads the run and writes the figure (no TensorFlow)."""
    if not os.path.exists(args.workdir):
        raise _common.ToolError(f"{args.workdir}: no such file or directory.")
    if not os.path.isdir(args.workdir):
        raise _common.ToolError(f"{args.workdir}: not a directory (expected a training run "
                                "directory).")
    _common.require_matplotlib()
    from tl_keras import plotting

    fig = plotting.plot_run(args.workdir)
    output = args.output or os.path.join(args.workdir, "training_curves.png")
    plotting.save_figure(fig, output, dpi=args.dpi)
    print(f"plot_run: training curves of {args.workdir} -> {output}")
    return 0


def main(argv=None):
    args = parse_args(argv)
    return _common.run_or_report("plot_run", run, args)


if __name__ == "__main__":
    sys.exit(main())
