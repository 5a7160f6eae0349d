"""Shared by the tools: load a model from a `.keras` file or a training run, the
pre-processing / class-name flags, and the one-line user errors.

A training run (`--workdir`, or `--model=RUN_DIR`) is read with the trainer's own pieces:
`workdir/config.json` -> `tl_keras.configs.from_dict` -> `tl_keras.train.tasks.build_model`,
and `tl_keras.train.checkpoint.restore_latest_model` for the weights (the newest checkpoint
that reads, found from the files; damaged ones skipped with a warning).

Importing this module loads no TensorFlow, so every tool answers `--help` at once (checked
by `tests/test_cli.py`): the functions that need TensorFlow or Keras import it when called,
through `tl_keras._cli.import_tensorflow` (which hides TensorFlow's start-up lines).
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
os.environ.setdefault("TL_KERAS_LAZY_IMPORT", "1")  # tl_keras parts on first use (tl_keras/__init__.py)

from tl_keras import _cli  # noqa: E402  (standard library only)
from tl_keras import configs  # noqa: E402  (standard library only)

import_tensorflow = _cli.import_tensorflow
ArgumentParser = _cli.ArgumentParser  # one-line argument errors


class ToolError(_cli.UserError):
    """A user error: printed as one line without a traceback, exit code 2."""


def run_or_report(prog, fn, *args, **kwargs):
    """`fn(*args, **kwargs)`; a user error (`ToolError`, `ConfigError`, `ValueError`,
    `OSError`) becomes `prog: error: ...` on stderr and exit code 2."""
    return _cli.run_or_report(prog, fn, *args, **kwargs)


def is_workdir(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def check_exists(path, flag):
    """ToolError `--flag=path: no such file or directory` unless `path` exists (local or a
    `gs://`-style URL TensorFlow can read)."""
    if "://" in path:
        tf = import_tensorflow()
        found = tf.io.gfile.exists(path)
    else:
        found = os.path.exists(path)
    if not found:
        raise ToolError(f"{flag}={path}: no such file or directory.")


def read_config(workdir):
    check_exists(workdir, "--workdir")
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ToolError(f"{workdir} is not a training run directory (no config.json).")
    with open(path) as f:
        return json.load(f)


def model_from_workdir(workdir, checkpoint=None):
    """`(model, config dict, checkpoint path, step)`: the run's model (float32, one device)
    with the weights of `checkpoint` (default: the newest in `workdir/checkpoints`)."""
    config = read_config(workdir)
    try:
        cfg = configs.from_dict(configs.Config, config)
    except configs.ConfigError as e:
        raise ToolError(f"{workdir}/config.json: {e}") from None
    import_tensorflow()
    import keras

    from tl_keras.train import checkpoint as ckpt_lib
    from tl_keras.train import tasks

    keras.config.set_dtype_policy("float32")  # serve / inspect in float32, as trainer export
    model = tasks.build_model(cfg)
    if checkpoint:
        return model, config, checkpoint, ckpt_lib.restore_model(model, checkpoint)
    try:  # the newest checkpoint that reads, found from the files; damaged ones skipped
        path, step, skipped = ckpt_lib.restore_latest_model(model, workdir)
    except FileNotFoundError:
        raise ToolError(
            f"No checkpoint in {ckpt_lib.checkpoint_dir(workdir)}: train first (or pass "
            "--checkpoint=PATH)."
        ) from None
    for damaged, reason in skipped:
        print(f"WARNING: skipped damaged checkpoint {damaged} ({reason})", file=sys.stderr)
    return model, config, path, step


def load_model(spec, checkpoint=None, flag="--model"):
    """`(model, config dict or None, description)` from a `.keras` file or a run directory."""
    check_exists(spec, flag)
    if is_workdir(spec):
        model, config, path, step = model_from_workdir(spec, checkpoint)
        return model, config, f"{path} (step {step})"
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "saved_model.pb")):
        raise ToolError(
            f"{spec} is a SavedModel (for serving); pass the .keras archive or the training "
            "run directory instead."
        )
    if os.path.isdir(spec):
        raise ToolError(f"{flag}={spec}: a directory without config.json; expected a .keras "
                        "file or a training run directory.")
    if not spec.endswith(".keras"):
        raise ToolError(f"{flag}={spec}: expected a .keras file or a training run directory.")
    import_tensorflow()
    import keras

    import tl_keras.models  # noqa: F401  (registers the model classes for load_model)

    return keras.saving.load_model(spec), None, spec


def add_preprocessing_flags(parser):
    group = parser.add_argument_group("pre-processing (default: the training run's config)")
    group.add_argument("--min_resize", type=int, default=None,
                       help="shorter side before the centre crop (default crop / 0.875)")
    group.add_argument("--normalization", default=None,
                       help="[-1,1] (default), [0,1] or imagenet")
    group.add_argument("--eval_split", choices=["test", "validation"], default=None,
                       help="video: resize then crop (test, default) or crop then resize "
                            "(validation)")


def preprocessing(model, config, args):
    """The model's `tl_keras.data.Preprocessing`: the run's config, overridden by flags."""
    import_tensorflow()
    from tl_keras import data as data_lib
    from tl_keras import export

    options = export.serving_options_from_config(config, model) if config else {}
    kwargs = {
        "min_resize": args.min_resize or options.get("min_resize"),
        "normalization": args.normalization or options.get("normalization", "[-1,1]"),
        "eval_split": args.eval_split or options.get("eval_split", "test"),
    }
    try:
        return data_lib.preprocessing_for(model, **kwargs)
    except ValueError as e:
        raise ToolError(str(e)) from None


def require_matplotlib():
    """ToolError (one line, naming the extra to install) unless matplotlib imports."""
    from tl_keras import plotting  # standard library and numpy only

    try:
        plotting.require_matplotlib()
    except ImportError as e:
        raise ToolError(str(e)) from None


def read_class_names(value):
    """`--class_names`: a text file with one name per line, or a comma-separated list."""
    if not value:
        return None
    if os.path.exists(value):
        with open(value) as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in value.split(",")]
