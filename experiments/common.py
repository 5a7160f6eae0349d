"""Shared command line of the experiments (`imagenet.py`, `kinetics.py`, `charades.py`,
`avid.py`): flags -> config -> strategy -> `tl_keras.train.run`.

Flags:
  --tpu=NAME               TPU name, `local`, or grpc://host:port (TPUStrategy)
  --strategy=KIND          auto | tpu | mirrored | multi_worker | one_device (default auto)
  --data_dir=PATH          folder of the dataset's TFRecord shards (sets data.data_dir)
  --workdir=PATH           checkpoints, TensorBoard events, config.json, metrics.json, export/
                           (with --runlocal: a fresh temporary folder when not given)
  --mode=MODE              train | evaluate | train_and_evaluate | export
                           (default train_and_evaluate; with --runlocal: train_and_evaluate,
                           then export)
  --set KEY=VALUE ...      override config entries, typed; repeatable
                           (e.g. --set train.num_steps=30 optim.base_lr=0.1)
  --runlocal               tiny TokenLearner model on the built-in dataset, on this machine
  --print_config           print the resolved config and every valid --set key, then exit
  --collective_timeout=S   multi-worker: a collective that waits longer than S seconds fails
                           (a dead peer makes the others exit instead of hanging); default 600

Exit codes: 0 done, 2 configuration error (one line, `NAME.py: error: ...`), 3 NaN/Inf loss,
4 a multi-worker peer was lost, 143 stopped by SIGTERM after saving a checkpoint (rerun the
same command to resume).

TensorFlow is imported only once the flags and the config are read (`--help`,
`--print_config` and configuration errors answer at once, `tests/test_cli.py`), through
`tl_keras._cli.import_tensorflow`, which hides its known start-up lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time

from tl_keras import _cli, configs  # standard library only


def build_parser(description, extra_flags=None, prog=None):
    parser = _cli.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tpu", default=None, help="TPU name, 'local' or grpc://host:port")
    parser.add_argument("--strategy", default="auto",
                        choices=["auto", "tpu", "mirrored", "multi_worker", "one_device"])
    parser.add_argument("--data_dir", default=None, help="dataset folder (data.data_dir)")
    parser.add_argument("--workdir", default=None, help="run directory")
    parser.add_argument("--mode", default=None,
                        choices=["train", "evaluate", "train_and_evaluate", "export"])
    parser.add_argument("--set", dest="overrides", action="append", nargs="+", default=[],
                        metavar="KEY=VALUE", help="typed config override (repeatable)")
    parser.add_argument("--runlocal", action="store_true",
                        help="tiny model on the built-in dataset, on this machine, in minutes")
    parser.add_argument("--print_config", action="store_true",
                        help="print the resolved config and the valid --set keys, then exit")
    parser.add_argument("--collective_timeout", type=float, default=600.0,
                        help="multi-worker collective timeout in seconds")
    if extra_flags:
        extra_flags(parser)
    return parser


def make_config(get_config, args, experiment_kwargs):
    cfg = get_config(runlocal=args.runlocal, **experiment_kwargs)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    overrides = [item for group in args.overrides for item in group]
    configs.apply_overrides(cfg, overrides)
    configs.validate(cfg)
    return cfg


def _fresh_workdir(experiment):
    base = os.environ.get("TL_KERAS_DATA_DIR")
    base = os.path.join(base, "runs") if base else None
    if base:
        os.makedirs(base, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return tempfile.mkdtemp(prefix=f"tl_keras-{experiment}-{stamp}-", dir=base)


def _write_token_maps(model, task, workdir):
    """`workdir/token_maps.png`: the TokenLearner maps on a validation example (Fig. 10),
    drawn with matplotlib (a line saying how to install it when it is missing)."""
    tf = _cli.import_tensorflow()
    from tl_keras import plotting, visualize

    try:
        plotting.require_matplotlib()
    except ImportError:
        if visualize.tokenlearner_layers(model):
            print(f"tl_keras: token maps not drawn: matplotlib is not installed "
                  f"({plotting.INSTALL_HINT})", flush=True)
        return

    path = os.path.join(workdir, "token_maps.png")
    if task.eval_model_fn is not None:  # the evaluation inputs need the evaluation model
        model = task.eval_model_fn(model)  # (e.g. rebuilt at data.eval_crop_size)
    ds = task.eval_dataset_fn(tf.distribute.InputContext(), 2)
    ds = ds.map(lambda x, *rest: (task.model_inputs(x), *rest))  # uint8 pixels: normalised
    if visualize.write_token_maps(model, ds, path):
        print(f"tl_keras: token maps: {path}", flush=True)


def main(get_config, *, description, argv=None, extra_flags=None, experiment_kwargs=None,
         runlocal_task=None):
    """Runs an experiment; returns the process exit code.

    Args:
        get_config: `get_config(runlocal=bool, **experiment_kwargs) -> configs.Config`.
        description: `--help` text (the experiment's docstring).
        extra_flags: `fn(parser)` adding experiment flags (e.g. `--dataset`).
        experiment_kwargs: `fn(args) -> dict` passed to `get_config`.
        runlocal_task: `fn(cfg) -> tl_keras.train.Task` used with `--runlocal` instead of
            the dataset named in the config (e.g. in-memory images).
    """
    name = get_config.__module__.rsplit(".", 1)[-1]  # experiments.kinetics -> kinetics.py
    prog = f"{name}.py" if name != "__main__" else os.path.basename(sys.argv[0])
    args = build_parser(description, extra_flags, prog=prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = make_config(get_config, args, (experiment_kwargs or (lambda a: {}))(args))
    except configs.ConfigError as e:
        return _cli.report(prog, e)

    if args.print_config:
        print(configs.to_json(cfg))
        print("\n".join(["", "Valid --set keys:"] + ["  " + k for k in configs.valid_keys(cfg)]))
        return 0

    modes = [args.mode] if args.mode else (
        ["train_and_evaluate", "export"] if args.runlocal else ["train_and_evaluate"]
    )
    workdir = args.workdir
    if not workdir and not args.runlocal:
        return _cli.report(prog, "--workdir is required (except with --runlocal).")
    return _run(cfg, args, modes, workdir, prog, runlocal_task)


def _run(cfg, args, modes, workdir, prog, runlocal_task):
    """Everything after the config: imports TensorFlow (quietly) and the trainer."""
    tf = _cli.import_tensorflow()
    from tl_keras import train as train_lib
    from tl_keras.train import tasks

    start = time.time()
    try:
        if runlocal_task is None or not args.runlocal:
            tasks.resolve_data(cfg)
        tasks.validate(cfg, num_replicas=1, modes=modes)  # before connecting to anything
        si = train_lib.make_strategy(args.strategy, args.tpu,
                                     collective_timeout_s=args.collective_timeout)
        tasks.validate(cfg, num_replicas=si.num_replicas, modes=modes)
        task = runlocal_task(cfg) if (runlocal_task and args.runlocal) else tasks.make_task(cfg, modes)
    except _cli.USER_ERRORS as e:  # ConfigError, or a bad path / value found while setting up
        return _cli.report(prog, e)
    if not workdir:
        workdir = _fresh_workdir(cfg.experiment)

    print(f"tl_keras: {cfg.experiment}: mode {' + '.join(modes)}; workdir {workdir}", flush=True)
    result = None
    try:
        for mode in modes:
            result = train_lib.run(cfg, mode, workdir, si, task)
            if args.runlocal and si.is_chief and isinstance(result, train_lib.TrainResult):
                _write_token_maps(result.model, task, workdir)
    except (configs.ConfigError, train_lib.WorkdirError) as e:  # bad workdir: one line
        return _cli.report(prog, e)
    except tf.errors.InvalidArgumentError as e:
        # The input pipeline's own errors (e.g. a full pass without one good example,
        # `tl_keras.data.pipeline`) come through tf.data wrapped in an assertion message.
        found = re.search(r"tl_keras\.data: .*", e.message or "")
        if not found:
            raise
        print(f"tl_keras: ERROR: {found.group(0).rstrip(' ]')}", file=sys.stderr)
        return 1
    except train_lib.NonFiniteLossError as e:
        print(f"tl_keras: ERROR: {e}", file=sys.stderr)
        return 3
    except train_lib.WorkerLostError as e:
        print(f"tl_keras: ERROR: {e}", file=sys.stderr)
        return 4
    except train_lib.Preempted as e:
        print(f"tl_keras: {e}", file=sys.stderr)
        return train_lib.Preempted.exit_code
    del result

    metrics_path = os.path.join(workdir, "metrics.json")
    if si.is_chief:
        print(f"tl_keras: done in {time.time() - start:.0f}s. Results in {workdir}:")
        if os.path.exists(metrics_path):
            with open(metrics_path) as f:
                metrics = json.load(f)
            shown = {k: metrics[k] for k in ("top1", "top5", "mAP", "mean_class_accuracy", "step")
                     if k in metrics}
            print(f"  metrics.json: {json.dumps(shown)}")
        export_dir = os.path.join(workdir, "export")
        if os.path.isdir(export_dir):
            print(f"  export/: {', '.join(sorted(os.listdir(export_dir)))}")
    return 0
