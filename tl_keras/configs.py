"""Experiment configuration: nested dataclasses with typed `key=value` overrides.

A config is a tree of dataclasses (`Config` -> `model`, `data`, `train`, `optim`, `eval`,
`export`). Every leaf has a type annotation, and overrides are parsed against it:

    cfg = get_default_config()
    apply_overrides(cfg, ["train.num_steps=30", "optim.base_lr=0.1",
                          "model.tokenlearner.at=6", "model.tubelet_size=2,8,8"])

Value syntax: ints (`30`, `100_000`), floats (`0.1`, `1e-3`), bools (`true`/`false`, `1`/`0`,
`yes`/`no`), strings (bare, or quoted), `none`/`null` for optional fields, tuples as
`2,8,8` / `(2,8,8)` / `[2,8,8]`. An unknown key, a value of the wrong type or a value outside
a field's choices raises `ConfigError` with the list of valid keys.

No `ml_collections`: plain `dataclasses`, `to_dict` / `from_dict` / JSON round trip.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from typing import Literal, Optional, Tuple, Union

__all__ = [
    "ConfigError",
    "Config",
    "ModelConfig",
    "TokenLearnerConfig",
    "DataConfig",
    "TrainConfig",
    "OptimConfig",
    "EvalConfig",
    "ExportConfig",
    "apply_overrides",
    "set_value",
    "get_value",
    "flatten",
    "valid_keys",
    "to_dict",
    "from_dict",
    "to_json",
    "diff",
]


class ConfigError(ValueError):
    """A bad configuration key or value. The message names the key."""


# --------------------------------------------------------------------------------------
# The schema.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class TokenLearnerConfig:
    """The TokenLearner of the model.

    ViT / ViViT: `tl_keras.TL(num_tokens, at, fuser, version)`; `at=None` means no
    TokenLearner. X(2+1)D: `num_tokens` (and `version`) of the TokenLearner in res5's
    modules; `at`/`fuser` do not apply (the placement is `model.module`).
    `version=None`: the model's default ("1.1" for ViT/ViViT, the single-conv "1" of
    paper §6.1 for X(2+1)D).
    """

    num_tokens: int = 8
    at: Optional[int] = None  # before block `at` (0-based); None = no TokenLearner
    fuser: bool = False
    version: Optional[Literal["1.1", "1", "grid", "pool", "fc", "pool_mlp"]] = None


@dataclasses.dataclass
class ModelConfig:
    """`tl_keras.models.create_model(name, **fields)`. `None` = the model's default.

    `image_size`, `num_frames` and `num_classes` are taken from `data` (crop size, frames,
    classes) unless set here.
    """

    name: str = "vit_b16"
    patch_size: Optional[int] = None
    tubelet_size: Optional[int] = None  # frames per tubelet (ViViT)
    hidden_dim: Optional[int] = None
    num_layers: Optional[int] = None
    num_heads: Optional[int] = None
    mlp_dim: Optional[int] = None
    extra_layers: Optional[int] = None
    pooling: Optional[str] = None
    dropout_rate: Optional[float] = None
    drop_path_rate: Optional[float] = None
    image_size: Optional[int] = None
    num_frames: Optional[int] = None
    num_classes: Optional[int] = None
    module: Optional[str] = None  # X(2+1)D: the res5 module (default "conv2d_tokenlearner")
    fuser: Optional[Literal["tokenfuser", "unpool", "reprojection"]] = None  # X(2+1)D fuser
    tokenlearner: TokenLearnerConfig = dataclasses.field(default_factory=TokenLearnerConfig)
    init_checkpoint: Optional[str] = None  # weights to start from (a .keras / .weights.h5 file)


@dataclasses.dataclass
class DataConfig:
    """Input pipeline. Unset (`None`) sampling fields take the dataset's registered defaults."""

    dataset: str = "kinetics400"  # registered name, or synthetic_single / synthetic_multi
    data_dir: Optional[str] = None  # folder of the TFRecord shards (or a TFDS data_dir)
    train_pattern: Optional[str] = "train*"  # relative to data_dir or absolute; images: none = TFDS
    eval_pattern: Optional[str] = "validation*"
    train_split: str = "train"
    # Eval sampling: "validation" = one centre clip, "test" = eval.num_clips x eval.num_crops views.
    eval_split: Literal["validation", "test"] = "validation"
    num_classes: Optional[int] = None
    multilabel: Optional[bool] = None
    num_frames: Optional[int] = None
    stride: Optional[int] = None
    crop_size: Optional[int] = None
    min_resize: Optional[int] = None
    label_offset: Optional[int] = None
    num_train_examples: Optional[int] = None  # for train.num_epochs -> steps
    on_error: Literal["skip", "raise"] = "skip"
    shuffle: bool = True


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 64  # global batch, over all replicas and workers
    num_steps: Optional[int] = None  # wins over num_epochs when set
    num_epochs: Optional[float] = None
    steps_per_loop: int = 10  # optimizer steps per tf.function call
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: Optional[int] = None  # train_and_evaluate: also evaluate every N steps
    label_smoothing: float = 0.0
    loss: Literal["auto", "softmax", "sigmoid"] = "auto"  # auto: sigmoid iff multi-label
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    jit_compile: Optional[bool] = None  # None = auto (on for TPU and GPU, off on CPU)
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
    checkpoint_input: bool = True  # the input position goes into every checkpoint
    seed: int = 0


@dataclasses.dataclass
class OptimConfig:
    name: Literal["momentum", "sgd", "adamw", "adam"] = "momentum"
    base_lr: float = 0.1
    lr_reference_batch: Optional[int] = None  # lr = base_lr * batch_size / this (None: no scaling)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Optional[int] = None
    warmup_epochs: Optional[float] = None
    end_lr: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    weight_decay: float = 0.0  # decoupled (AdamW); only tensors with >= 2 dims are decayed
    grad_clip_norm: Optional[float] = None  # global-norm clipping


@dataclasses.dataclass
class EvalConfig:
    batch_size: int = 8  # global batch of videos (each with num_clips x num_crops views)
    num_clips: Optional[int] = None  # None: the dataset's test protocol (e.g. 4)
    num_crops: Optional[int] = None  # None: the dataset's test protocol (e.g. 3)
    average: Literal["logits", "probabilities"] = "logits"  # how views of a video are merged
    num_steps: Optional[int] = None  # limit the number of eval batches (None: whole split)
    wait_timeout_s: float = 3600.0  # continuous evaluator: give up after this long idle


@dataclasses.dataclass
class ExportConfig:
    saved_model: bool = True
    keras: bool = True


@dataclasses.dataclass
class Config:
    experiment: str = "experiment"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


# --------------------------------------------------------------------------------------
# Typed access.
# --------------------------------------------------------------------------------------


def _hints(cls):
    return typing.get_type_hints(cls)


def _is_config(obj):
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def flatten(cfg, prefix=""):
    """`{dotted.key: value}` of every leaf."""
    out = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        key = prefix + field.name
        if _is_config(value):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _leaf_types(cfg, prefix=""):
    out = {}
    hints = _hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        key = prefix + field.name
        if _is_config(value):
            out.update(_leaf_types(value, key + "."))
        else:
            out[key] = hints[field.name]
    return out


def _type_name(tp):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        names = " | ".join(_type_name(a) for a in inner)
        return f"{names} or none" if len(inner) < len(args) else names
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple, Tuple):
        return f"tuple of {_type_name(args[0])}"
    return getattr(tp, "__name__", str(tp))


def valid_keys(cfg):
    """`["key (type) = value", ...]` for error messages and `--help`."""
    return [f"{k} ({_type_name(t)}) = {flatten(cfg)[k]!r}" for k, t in _leaf_types(cfg).items()]


def _keys_message(cfg):
    return "Valid keys:\n  " + "\n  ".join(valid_keys(cfg))


def _parse(text, tp, key):
    """Parses `text` (a str, or an already-typed value) as type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    is_str = isinstance(text, str)
    if origin in (Union, types.UnionType):
        if type(None) in args and (text is None or (is_str and text.strip().lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(text, arg, key)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError(f"expects {_type_name(tp)}, got {text!r}")
    if origin is Literal:
        for choice in args:
            if (is_str and text.strip().strip("'\"") == str(choice)) or text == choice:
                return choice
        raise ValueError(f"expects {_type_name(tp)}, got {text!r}")
    if origin in (tuple, Tuple):
        if is_str:
            body = text.strip().strip("()[]")
            items = [s for s in (p.strip() for p in body.split(",")) if s]
        elif isinstance(text, (list, tuple)):
            items = list(text)
        else:
            raise ValueError(f"expects {_type_name(tp)}, got {text!r}")
        return tuple(_parse(item, args[0], key) for item in items)
    if tp is bool:
        if isinstance(text, bool):
            return text
        if is_str and text.strip().lower() in ("true", "1", "yes", "on"):
            return True
        if is_str and text.strip().lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"expects bool (true/false), got {text!r}")
    if tp is int:
        if isinstance(text, bool):
            raise ValueError(f"expects int, got {text!r}")
        if isinstance(text, int):
            return text
        if is_str:
            try:
                return int(text.strip().replace("_", ""))
            except ValueError:
                pass
            try:  # "1e5" is an int when it is integral
                as_float = float(text)
                if as_float.is_integer():
                    return int(as_float)
            except ValueError:
                pass
        if isinstance(text, float) and text.is_integer():
            return int(text)
        raise ValueError(f"expects int, got {text!r}")
    if tp is float:
        if isinstance(text, bool):
            raise ValueError(f"expects float, got {text!r}")
        if isinstance(text, (int, float)):
            return float(text)
        if is_str:
            try:
                return float(text.strip().replace("_", ""))
            except ValueError:
                pass
        raise ValueError(f"expects float, got {text!r}")
    if tp is str:
        if is_str:
            t = text.strip()
            if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
                t = t[1:-1]
            return t
        raise ValueError(f"expects str, got {text!r}")
    raise TypeError(f"config key {key!r}: unsupported annotation {tp!r}")


def _resolve(cfg, key):
    """(parent dataclass, field name, annotation) of the leaf `key`; ConfigError if none."""
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        names = {f.name for f in dataclasses.fields(node)}
        if part not in names:
            break
        if i == len(parts) - 1:
            value = getattr(node, part)
            if _is_config(value):
                break  # a section, not a leaf
            return node, part, _hints(type(node))[part]
        node = getattr(node, part)
        if not _is_config(node):
            break
    leaves = list(_leaf_types(cfg))
    close = difflib.get_close_matches(key, leaves, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"Unknown config key {key!r}.{hint}\n{_keys_message(cfg)}")


def get_value(cfg, key):
    node, name, _ = _resolve(cfg, key)
    return getattr(node, name)


def set_value(cfg, key, value):
    """Sets leaf `key` to `value` (a string to parse, or a Python value to check)."""
    node, name, tp = _resolve(cfg, key)
    try:
        parsed = _parse(value, tp, key)
    except ValueError as e:
        raise ConfigError(f"Config key {key!r} {e}.\n{_keys_message(cfg)}") from None
    setattr(node, name, parsed)
    return parsed


def apply_overrides(cfg, overrides):
    """Applies `["a.b=value", ...]` in order. Returns `cfg` (changed in place)."""
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(
                f"Override {item!r} is not of the form key=value (e.g. train.num_steps=30).\n"
                f"{_keys_message(cfg)}"
            )
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value)
    return cfg


def to_dict(cfg):
    return dataclasses.asdict(cfg)


def from_dict(cls_or_cfg, data, prefix=""):
    """Builds (or updates) a config from a nested dict; unknown keys are an error."""
    cfg = cls_or_cfg() if isinstance(cls_or_cfg, type) else cls_or_cfg
    root = cfg

    def visit(node, d, prefix):
        names = {f.name for f in dataclasses.fields(node)}
        for k, v in d.items():
            key = prefix + k
            if k not in names:
                raise ConfigError(f"Unknown config key {key!r}.\n{_keys_message(root)}")
            current = getattr(node, k)
            if _is_config(current):
                if not isinstance(v, dict):
                    raise ConfigError(f"Config key {key!r} is a section; expected a dict, got {v!r}")
                visit(current, v, key + ".")
            else:
                try:
                    setattr(node, k, _parse(v, _hints(type(node))[k], key))
                except ValueError as e:
                    raise ConfigError(f"Config key {key!r} {e}.\n{_keys_message(root)}") from None

    visit(cfg, data, prefix)
    return cfg


def to_json(cfg, indent=2):
    return json.dumps(to_dict(cfg), indent=indent, sort_keys=False)


def diff(a, b):
    """`{key: (a_value, b_value)}` for the leaves that differ."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
