"""Experiment configuration: nested dataclasses with typed `key=value` overrides.

A config is a tree of dataclasses (`Config` -> `model`, `data`, `train`, `optim`, `eval`,
`export`). Every leaf has a type annotation, and overrides are parsed against it:

    cfg = get_default_config()
    apply_overrides(cfg, ["train.num_steps=30", "optim.base_lr=0.1",
                          "model.tokenlearner.at=6", "model.tubelet_size=2,8,8"])

Value syntax: ints (`30`, `100_000`), floats (`0.1`, `1e-3`), bools (`true`/`false`, `1`/`0`,
`yes`/`no`), strings (bare, or quoted), `none`/`null` for optional fields, tuples as
`2,8,8` / `(2,8,8)` / `[2,8,8]`. An unknown key (with the closest valid keys), a value of the
wrong type, outside a field's choices or outside its numeric range (`Range`, declared next to
the field: e.g. `train.batch_size` >= 1, `optim.base_lr` > 0; every float must be finite) raises
`ConfigError` naming the key. `valid_keys(cfg)` (the experiments' `--print_config`) lists
every key.

No `ml_collections`: plain `dataclasses`, `to_dict` / `from_dict` / JSON round trip.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Literal, Optional, Tuple, Union

__all__ = [
    "ConfigError",
    "Range",
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
    "validate",
    "to_dict",
    "from_dict",
    "to_json",
    "diff",
]


class ConfigError(ValueError):
    """A bad configuration key or value. The message names the key."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers a field accepts: `low <= value <= high` (`<` where `*_open`), bounds
    `None` = unbounded. Float values must also be finite. Declared next to a field with
    `_num(default, RANGE)`; `None` stays allowed for `Optional` fields."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self):  # "> 0", ">= 0", "in [0, 1)", "finite"
        if self.low is not None and self.high is not None:
            left, right = "([" [not self.low_open], ")]" [not self.high_open]
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return (">" if self.low_open else ">=") + f" {self.low:g}"
        if self.high is not None:
            return ("<" if self.high_open else "<=") + f" {self.high:g}"
        return "finite"

    def contains(self, value):
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)  # rates, smoothing, momenta: [0, 1)
FINITE = Range()  # the check every float field gets


def _num(default, allowed):
    """A numeric field whose values must lie in `allowed` (a `Range`)."""
    return dataclasses.field(default=default, metadata={"range": allowed})


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

    num_tokens: int = _num(8, POSITIVE)
    # Before block `at` (0-based); None = no TokenLearner.
    at: Optional[int] = _num(None, NON_NEGATIVE)
    # ViT / ViViT model "b": false = none; true = "tokenfuser" (Eq. 2); "unpool" /
    # "reprojection" = the Fig. 7 alternatives (a FUSERS name, pinned by a test).
    fuser: Union[bool, Literal["tokenfuser", "unpool", "reprojection"]] = False
    version: Optional[Literal["1.1", "1", "grid", "pool", "fc", "pool_mlp"]] = None


@dataclasses.dataclass
class ModelConfig:
    """`tl_keras.models.create_model(name, **fields)`. `None` = the model's default.

    `image_size`, `num_frames` and `num_classes` are taken from `data` (crop size, frames,
    classes) unless set here.
    """

    name: str = "vit_b16"
    patch_size: Optional[int] = _num(None, POSITIVE)
    tubelet_size: Optional[int] = _num(None, POSITIVE)  # frames per tubelet (ViViT)
    hidden_dim: Optional[int] = _num(None, POSITIVE)
    num_layers: Optional[int] = _num(None, POSITIVE)
    num_heads: Optional[int] = _num(None, POSITIVE)
    mlp_dim: Optional[int] = _num(None, POSITIVE)
    extra_layers: Optional[int] = _num(None, NON_NEGATIVE)
    pooling: Optional[str] = None
    dropout_rate: Optional[float] = _num(None, FRACTION)
    drop_path_rate: Optional[float] = _num(None, FRACTION)
    image_size: Optional[int] = _num(None, POSITIVE)
    num_frames: Optional[int] = _num(None, POSITIVE)
    num_classes: Optional[int] = _num(None, POSITIVE)
    # X(2+1)D: the res5 module (default "conv2d_tokenlearner"): a name of
    # `tl_keras.models.x2plus1d.MODULES`, the model's registry (this file imports no
    # Keras; tests/models/x2plus1d/test_layers.py pins the two lists equal).
    module: Optional[Literal[
        "conv2d_conv1d", "joint_mhsa", "conv2d_joint_mhsa", "conv2d_mlp_mixer",
        "conv2d_temporal_transformer", "spatial_temporal_transformer",
        "conv2d_spatial_temporal_transformer", "tokenlearner", "conv2d_tokenlearner",
        "tokenlearner_mhsa", "conv2d_tokenlearner_mhsa", "spatial_tokenlearner",
        "conv2d_vector_transformer", "conv2d_prior_broadcast",
        "conv2d_vector_transformer_broadcast",
    ]] = None
    fuser: Optional[Literal["tokenfuser", "unpool", "reprojection"]] = None  # X(2+1)D fuser
    # ViViT's TokenFuser mixes all T*S tokens of the clip (paper §2.2; true, the model's
    # default) or the S tokens of each frame (false: Scenic's ViViT and its checkpoints).
    fuser_mix_tokens_over_time: Optional[bool] = None
    tokenlearner: TokenLearnerConfig = dataclasses.field(default_factory=TokenLearnerConfig)
    # Weights to start from: any source of `tl_keras.convert.load_pretrained` (a public ViT
    # checkpoint, a keras-hub ViT, a `.keras` / `.weights.h5` file; docs/weights.md).
    init_checkpoint: Optional[str] = None
    # How a 2-D (image) patch kernel of `init_checkpoint` is inflated into a ViViT's tubelet
    # kernel (ViViT §3.4): on the central frame (zeros elsewhere) or averaged over the frames.
    # `models.vivit.inflate.KERNEL_INITS` (tests/train/test_init_checkpoint.py pins them equal).
    init_checkpoint_kernel_init: Literal["central_frame", "average"] = "central_frame"


@dataclasses.dataclass
class DataConfig:
    """Input pipeline. Unset (`None`) sampling fields take the dataset's registered defaults."""

    dataset: str = "kinetics400"  # registered name, or synthetic_single / synthetic_multi
    data_dir: Optional[str] = None  # folder of the TFRecord shards (or a TFDS data_dir)
    train_pattern: Optional[str] = "train*"  # relative to data_dir or absolute; images: none = TFDS
    eval_pattern: Optional[str] = "validation*"
    # The split trained on: the TFDS split for TFDS images (slices allowed: "train[:99%]");
    # for TFRecords the shards "<train_split>*" while train_pattern is left at "train*".
    train_split: str = "train"
    # Eval sampling: "validation" = one centre clip, "test" = eval.num_clips x eval.num_crops
    # views, "segments" = the whole video in num_frames clips, merged by eval.segment_merge.
    eval_split: Literal["validation", "test", "segments"] = "validation"
    num_classes: Optional[int] = _num(None, POSITIVE)
    multilabel: Optional[bool] = None
    num_frames: Optional[int] = _num(None, POSITIVE)
    stride: Optional[int] = _num(None, POSITIVE)
    crop_size: Optional[int] = _num(None, POSITIVE)
    # Eval/test crop (the eval model is built at this size); None = crop_size.
    eval_crop_size: Optional[int] = _num(None, POSITIVE)
    min_resize: Optional[int] = _num(None, POSITIVE)
    label_offset: Optional[int] = None
    num_train_examples: Optional[int] = _num(None, POSITIVE)  # for train.num_epochs -> steps
    on_error: Literal["skip", "raise"] = "skip"
    shuffle: bool = True
    # Videos leave the pipeline as uint8 pixels and are normalised on the device by the
    # loop (a quarter of the host memory traffic; BENCHMARKS.md, "Input pipeline").
    output_dtype: Literal["float32", "uint8"] = "float32"
    # tf.data service (tools/data_service.py): the training input is read, decoded and
    # augmented on the workers of the dispatcher at this "host:port"; None = in process.
    # The input position is then not checkpointed (train.checkpoint_input is ignored).
    service_address: Optional[str] = None
    service_processing_mode: Literal["distributed_epoch", "parallel_epochs"] = "distributed_epoch"
    service_job_name: Optional[str] = None  # share one job between clients; None: private


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = _num(64, POSITIVE)  # global batch, over all replicas and workers
    num_steps: Optional[int] = _num(None, POSITIVE)  # wins over num_epochs when set
    num_epochs: Optional[float] = _num(None, POSITIVE)
    steps_per_loop: int = _num(10, POSITIVE)  # optimizer steps per tf.function call
    log_every: int = _num(50, POSITIVE)
    checkpoint_every: int = _num(1000, POSITIVE)
    keep_checkpoints: int = _num(3, POSITIVE)
    # train_and_evaluate: also evaluate every N steps.
    eval_every: Optional[int] = _num(None, POSITIVE)
    label_smoothing: float = _num(0.0, FRACTION)
    loss: Literal["auto", "softmax", "sigmoid"] = "auto"  # auto: sigmoid iff multi-label
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"
    jit_compile: Optional[bool] = None  # None = auto (on for TPU and GPU, off on CPU)
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
    checkpoint_input: bool = True  # the input position goes into every checkpoint
    seed: int = _num(0, NON_NEGATIVE)


@dataclasses.dataclass
class OptimConfig:
    name: Literal["momentum", "sgd", "adamw", "adam"] = "momentum"
    base_lr: float = _num(0.1, POSITIVE)
    # lr = base_lr * batch_size / this (None: no scaling).
    lr_reference_batch: Optional[int] = _num(None, POSITIVE)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: Optional[int] = _num(None, NON_NEGATIVE)
    warmup_epochs: Optional[float] = _num(None, NON_NEGATIVE)
    end_lr: float = _num(0.0, NON_NEGATIVE)
    momentum: float = _num(0.9, FRACTION)
    nesterov: bool = False
    beta1: float = _num(0.9, FRACTION)
    beta2: float = _num(0.999, FRACTION)
    epsilon: float = _num(1e-8, POSITIVE)
    # Decoupled (AdamW); only tensors with >= 2 dims are decayed.
    weight_decay: float = _num(0.0, NON_NEGATIVE)
    grad_clip_norm: Optional[float] = _num(None, POSITIVE)  # global-norm clipping; none = off


@dataclasses.dataclass
class EvalConfig:
    # Global batch of videos (each with num_clips x num_crops views); of segment views
    # for data.eval_split=segments.
    batch_size: int = _num(8, POSITIVE)
    num_clips: Optional[int] = _num(None, POSITIVE)  # None: the dataset's test protocol (e.g. 4)
    num_crops: Optional[int] = _num(None, POSITIVE)  # None: the dataset's test protocol (e.g. 3)
    average: Literal["logits", "probabilities"] = "logits"  # how views of a video are merged
    # data.eval_split=segments: how a video's segments are merged ("max": an action anywhere
    # in the video counts, as multi-label video labels mean; "mean" dilutes it).
    segment_merge: Literal["max", "mean"] = "max"
    # Limit the number of eval batches (None: whole split).
    num_steps: Optional[int] = _num(None, POSITIVE)
    # Continuous evaluator: give up after this long idle.
    wait_timeout_s: float = _num(3600.0, POSITIVE)


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


KEYS_HINT = "Every key: --print_config, or tl_keras.configs.valid_keys(cfg)."


def _closest_keys(cfg, key, n=3):
    """Up to `n` leaf keys resembling `key`: by the whole dotted key, by the last part, then
    by the last part as a substring (`optim.lr` -> `optim.base_lr`)."""
    types_ = _leaf_types(cfg)
    leaves = list(types_)
    last = key.rsplit(".", 1)[-1].lower()
    by_last = {}
    for leaf in leaves:
        by_last.setdefault(leaf.rsplit(".", 1)[-1], []).append(leaf)
    found = difflib.get_close_matches(key, leaves, n=n)
    for name in difflib.get_close_matches(last, list(by_last), n=n):
        found += by_last[name]
    if last:
        found += [leaf for leaf in leaves if last in leaf.rsplit(".", 1)[-1]]
    section = key.split(".", 1)[0] + "."
    found.sort(key=lambda leaf: not leaf.startswith(section))  # stable: same section first
    unique = list(dict.fromkeys(found))[:n]
    return [f"{k!r} ({_type_name(types_[k])})" for k in unique]


def _unknown_key(cfg, key):
    close = _closest_keys(cfg, key)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"Unknown config key {key!r}.{hint} {KEYS_HINT}")


def _range_of(node, name):
    field = next(f for f in dataclasses.fields(node) if f.name == name)
    return field.metadata.get("range")


def _check_range(node, name, value, key):
    """ConfigError unless the parsed `value` of field `name` of `node` is allowed."""
    allowed = _range_of(node, name)
    if allowed is None:
        allowed = FINITE
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if not allowed.contains(item):
            finite = "" if allowed == FINITE or math.isfinite(item) else " and finite"
            raise ConfigError(f"Config key {key!r} must be {allowed}{finite}, got {item!r}.")


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
    raise _unknown_key(cfg, key)


def get_value(cfg, key):
    node, name, _ = _resolve(cfg, key)
    return getattr(node, name)


def set_value(cfg, key, value):
    """Sets leaf `key` to `value` (a string to parse, or a Python value to check)."""
    node, name, tp = _resolve(cfg, key)
    try:
        parsed = _parse(value, tp, key)
    except ValueError as e:
        raise ConfigError(f"Config key {key!r} {e}.") from None
    _check_range(node, name, parsed, key)
    setattr(node, name, parsed)
    return parsed


def apply_overrides(cfg, overrides):
    """Applies `["a.b=value", ...]` in order. Returns `cfg` (changed in place)."""
    for item in overrides or ():
        if "=" not in item:
            raise ConfigError(
                f"Override {item!r} is not of the form key=value (e.g. train.num_steps=30)."
            )
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value)
    return cfg


def validate(cfg, prefix=""):
    """Checks every leaf of `cfg` (e.g. one set in Python, not through `set_value`) against
    its type's numeric `Range`; raises `ConfigError` naming the first bad key."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        key = prefix + field.name
        if _is_config(value):
            validate(value, key + ".")
        else:
            _check_range(cfg, field.name, value, key)
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
                raise _unknown_key(root, key)
            current = getattr(node, k)
            if _is_config(current):
                if not isinstance(v, dict):
                    raise ConfigError(f"Config key {key!r} is a section; expected a dict, got {v!r}")
                visit(current, v, key + ".")
            else:
                try:
                    parsed = _parse(v, _hints(type(node))[k], key)
                except ValueError as e:
                    raise ConfigError(f"Config key {key!r} {e}.") from None
                _check_range(node, k, parsed, key)
                setattr(node, k, parsed)

    visit(cfg, data, prefix)
    return cfg


def to_json(cfg, indent=2):
    return json.dumps(to_dict(cfg), indent=indent, sort_keys=False)


def diff(a, b):
    """`{key: (a_value, b_value)}` for the leaves that differ."""
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
