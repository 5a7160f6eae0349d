"""Shared by the tools: load a model from a `.keras` file or a training run, and the
pre-processing / class-name flags.

A training run (`--workdir`, or `--model=RUN_DIR`) is read with the trainer's own pieces:
`workdir/config.json` -> `tl_keras.configs.from_dict` -> `tl_keras.train.tasks.build_model`,
and `tl_keras.train.checkpoint.latest_checkpoint` / `restore_model` for the weights.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported

import keras  # noqa: E402

import tl_keras.models  # noqa: E402,F401  (registers the model classes for load_model)
from tl_keras import configs, export  # noqa: E402
from tl_keras import data as data_lib  # noqa: E402
from tl_keras.train import checkpoint as ckpt_lib  # noqa: E402
from tl_keras.train import tasks  # noqa: E402


class ToolError(Exception):
    """A user error: printed without a traceback, exit code 2."""


def is_workdir(path):
    return os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json"))


def read_config(workdir):
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
    path = checkpoint or ckpt_lib.latest_checkpoint(workdir)
    if not path:
        raise ToolError(
            f"No checkpoint in {ckpt_lib.checkpoint_dir(workdir)}: train first (or pass "
            "--checkpoint=PATH)."
        )
    keras.config.set_dtype_policy("float32")  # serve / inspect in float32, as trainer export
    model = tasks.build_model(cfg)
    step = ckpt_lib.restore_model(model, path)
    return model, config, path, step


def load_model(spec, checkpoint=None):
    """`(model, config dict or None, description)` from a `.keras` file or a run directory."""
    if is_workdir(spec):
        model, config, path, step = model_from_workdir(spec, checkpoint)
        return model, config, f"{path} (step {step})"
    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "saved_model.pb")):
        raise ToolError(
            f"{spec} is a SavedModel (for serving); pass the .keras archive or the training "
            "run directory instead."
        )
    if not spec.endswith(".keras"):
        raise ToolError(f"--model={spec}: expected a .keras file or a training run directory.")
    if not os.path.exists(spec):
        raise ToolError(f"--model={spec}: no such file.")
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


def read_class_names(value):
    """`--class_names`: a text file with one name per line, or a comma-separated list."""
    if not value:
        return None
    if os.path.exists(value):
        with open(value) as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in value.split(",")]
