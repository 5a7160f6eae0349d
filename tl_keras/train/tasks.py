"""From a `Config` to a `Task`: the trainer joins `tl_keras.models` and `tl_keras.data`.

* `resolve_data(cfg)`: fills the unset data fields from the dataset's registered facts
  (`tl_keras.data.get_dataset_info`) or from the built-in synthetic dataset (generated on
  first use), in place.
* `validate(cfg, num_replicas)`: checks the configuration before anything is built or
  trained; a `ConfigError` names the key (batch not divisible by the replicas, TokenLearner
  position out of range, crop larger than the resized frame, missing data directory, ...).
* `model_kwargs(cfg)` / `build_model(cfg)`: `tl_keras.models.create_model(name, **kwargs)`.
* `make_task(cfg)`: the `Task` (model_fn, dataset fns, multilabel, train size) for the loop;
  with `data.eval_crop_size` different from the training size also `eval_model_fn`: the
  same network built at the evaluation size, given the trained weights before every
  evaluation (`copy_weights`: equal shapes copied, a ViT / ViViT position embedding resized).

Splits: `data.train_split` is the split trained on (the TFDS split of TFDS images; the shards
`<train_split>*` of TFRecords while `data.train_pattern` keeps its default `train*`).
`data.eval_split` is the evaluation protocol: `validation` (centre clip), `test`
(`eval.num_clips` x `eval.num_crops` views averaged) or `segments` (video: the whole video
as `data.num_frames`-frame segments, their outputs merged by `eval.segment_merge`, paper A.3).

Datasets (`data.dataset`): a registered name (`kinetics400`, `kinetics600`, `charades`, `avid`,
`imagenet2012`, see `tl_keras.data.list_datasets()`), or the built-in `synthetic_single`
(4 motion classes, single-label) / `synthetic_multi` (12 classes, multi-label) videos.
"""

from __future__ import annotations

import os
import weakref

import numpy as np
import tensorflow as tf

from tl_keras import data as data_lib
from tl_keras.configs import ConfigError
from tl_keras.models import TL, create_model, get_model_spec
from tl_keras.models.vit.model import adapt_position_embedding
from tl_keras.train.task import Task

__all__ = [
    "resolve_data",
    "validate",
    "model_kwargs",
    "build_model",
    "copy_weights",
    "make_task",
    "SYNTHETIC",
]

SYNTHETIC = {"synthetic_single": "single", "synthetic_multi": "multi"}
# Generated in memory by the caller (experiments/imagenet.py --runlocal passes its own Task).
IN_MEMORY = ("synthetic_images",)

_ARCH_FIELDS = (
    "patch_size",
    "tubelet_size",
    "hidden_dim",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "extra_layers",
    "pooling",
    "dropout_rate",
    "drop_path_rate",
    "module",
    "fuser",
    "fuser_mix_tokens_over_time",
)


_DEFAULT_TRAIN_PATTERN = "train*"  # DataConfig.train_pattern's default


def _is_synthetic(cfg):
    return cfg.data.dataset in SYNTHETIC or cfg.data.dataset in IN_MEMORY


def _synthetic_info(cfg):
    return data_lib.synthetic.make_dataset(SYNTHETIC[cfg.data.dataset], root=cfg.data.data_dir)


def _dataset_info(cfg):
    try:
        return data_lib.get_dataset_info(cfg.data.dataset)
    except ValueError as e:
        raise ConfigError(
            f"data.dataset={cfg.data.dataset!r}: {e}; or one of {sorted(SYNTHETIC)}"
        ) from None


def _set_default(section, name, value):
    if getattr(section, name) is None and value is not None:
        setattr(section, name, value)


def resolve_data(cfg):
    """Fills unset `data` / `eval` fields in place from the dataset's facts. Returns cfg."""
    d = cfg.data
    if d.dataset in IN_MEMORY:
        return cfg
    if _is_synthetic(cfg):
        info = _synthetic_info(cfg)
        d.train_pattern = info.train_pattern
        d.eval_pattern = info.validation_pattern
        for name, value in (
            ("num_classes", info.num_classes),
            ("multilabel", info.multilabel),
            ("num_frames", info.num_frames),
            ("stride", info.stride),
            ("crop_size", info.crop_size),
            ("min_resize", info.min_resize),
            ("label_offset", 0),
            ("num_train_examples", info.num_train),
        ):
            _set_default(d, name, value)
        return cfg
    info = _dataset_info(cfg)
    if (d.train_pattern == _DEFAULT_TRAIN_PATTERN and d.train_split != "train"
            and "[" not in d.train_split):
        d.train_pattern = f"{d.train_split}*"  # the shards of the split trained on
    _set_default(d, "num_classes", info.num_classes)
    _set_default(d, "multilabel", info.multilabel)
    _set_default(d, "crop_size", info.crop_size)
    _set_default(d, "label_offset", info.label_offset if info.modality == "video" else None)
    _set_default(d, "num_train_examples", info.splits.get(d.train_split))
    if info.modality == "video":
        _set_default(d, "num_frames", info.num_frames)
        _set_default(d, "stride", info.stride)
        _set_default(d, "min_resize", info.min_resize)
        if d.eval_split == "test":  # `segments` takes no views from the test protocol
            _set_default(cfg.eval, "num_clips", info.num_test_clips)
            _set_default(cfg.eval, "num_crops", info.num_test_crops)
    return cfg


def _modality(cfg):
    if cfg.data.dataset in IN_MEMORY:
        return "image"
    if _is_synthetic(cfg):
        return "video"
    return _dataset_info(cfg).modality


def model_kwargs(cfg):
    """Keyword arguments for `create_model(cfg.model.name, ...)`."""
    m = cfg.model
    try:
        spec = get_model_spec(m.name)
    except ValueError as e:
        raise ConfigError(f"model.name={m.name!r}: {e}") from None
    kwargs = {f: getattr(m, f) for f in _ARCH_FIELDS if getattr(m, f) is not None}
    kwargs["num_classes"] = m.num_classes or cfg.data.num_classes
    kwargs["image_size"] = m.image_size or cfg.data.crop_size or spec.get("image_size")
    if "num_frames" in spec:
        kwargs["num_frames"] = m.num_frames or cfg.data.num_frames or spec["num_frames"]
    tl = m.tokenlearner
    if spec["family"] == "x2plus1d":
        # The TokenLearner sits in res5's modules; an int means the paper's §6.1 version.
        kwargs["tokenlearner"] = (
            tl.num_tokens if tl.version is None else {"num_tokens": tl.num_tokens, "version": tl.version}
        )
    elif tl.at is not None:
        try:
            kwargs["tokenlearner"] = TL(
                tl.num_tokens, at=tl.at, fuser=tl.fuser, version=tl.version or "1.1"
            )
        except ValueError as e:
            raise ConfigError(f"model.tokenlearner: {e}") from None
    return kwargs


def build_model(cfg, image_size=None):
    """The model of `cfg` (call inside `strategy.scope()`); errors name the config key.

    `image_size`: build it at this input size instead (the evaluation model)."""
    kwargs = model_kwargs(cfg)
    if image_size is not None:
        kwargs["image_size"] = image_size
    try:
        return create_model(cfg.model.name, **kwargs)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        where = f" at data.eval_crop_size={image_size}" if image_size is not None else ""
        raise ConfigError(f"model ({cfg.model.name}){where}: {e} (config keys model.*)") from None


def _eval_image_size(cfg):
    """The evaluation input size when it differs from the trained model's, else None."""
    d = cfg.data
    if d.eval_crop_size is None:
        return None
    train_size = cfg.model.image_size or d.crop_size
    return None if d.eval_crop_size == train_size else d.eval_crop_size


def copy_weights(source, target):
    """Copies the weights of `source` into `target`, the same network built at another
    input size (`data.eval_crop_size`): weights are paired in order (the same names);
    equal shapes are copied, a ViT / ViViT position embedding (`posembed_input`) is
    resized to the target's token grid (`adapt_position_embedding`: bilinear per frame).
    Any other weight whose shape depends on the input size is a `ConfigError`: that model
    cannot be evaluated at another size."""
    pairs = list(zip(source.weights, target.weights))
    if len(source.weights) != len(target.weights) or any(a.path != b.path for a, b in pairs):
        raise ConfigError(
            f"data.eval_crop_size: the evaluation model {target.name} does not have the "
            f"weights of the trained {source.name} (names differ); leave data.eval_crop_size "
            "unset for this model."
        )
    for a, b in pairs:
        if tuple(a.shape) == tuple(b.shape):
            b.assign(a.value)
            continue
        resolved = (getattr(source, "resolved", None), getattr(target, "resolved", None))
        if a.path.split("/")[0] == "posembed_input" and None not in resolved:
            prefix = resolved[0].num_prefix_tokens
            adapted = adapt_position_embedding(np.asarray(a.value), prefix, resolved[1])
            if adapted is not None and tuple(adapted.shape) == tuple(b.shape):
                b.assign(adapted.astype(b.dtype))
                continue
        raise ConfigError(
            f"data.eval_crop_size: weight {a.path!r} of {source.name} has shape "
            f"{tuple(a.shape)} at the training size but {tuple(b.shape)} at the evaluation "
            "size, and only a ViT / ViViT position embedding can be resized; leave "
            "data.eval_crop_size unset (or equal to data.crop_size) for this model."
        )


def _eval_model_fn(cfg, image_size):
    """`Task.eval_model_fn`: builds the network at `image_size` once per trained model and
    copies the trained weights into it on every call."""
    built = weakref.WeakKeyDictionary()

    def eval_model_fn(model):
        if model not in built:
            built[model] = build_model(cfg, image_size=image_size)
        copy_weights(model, built[model])
        return built[model]

    return eval_model_fn


def _exists(path):
    try:
        return tf.io.gfile.exists(path)
    except tf.errors.OpError:
        return False


def _pattern_path(cfg, pattern):
    if pattern is None:
        return None
    if os.path.isabs(pattern) or "://" in pattern or not cfg.data.data_dir:
        return pattern
    return os.path.join(cfg.data.data_dir, pattern)


def validate(cfg, num_replicas=1, modes=("train",)):
    """Checks `cfg` (already `resolve_data`-ed) before anything is built; raises ConfigError."""
    t, d, m = cfg.train, cfg.data, cfg.model
    # Batch sizes and step counts.
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size={t.batch_size} must be >= 1")
    if t.batch_size % num_replicas:
        raise ConfigError(
            f"train.batch_size={t.batch_size} (the global batch) is not divisible by the "
            f"{num_replicas} replicas of this strategy; use a multiple of {num_replicas}."
        )
    if cfg.eval.batch_size % num_replicas:
        raise ConfigError(
            f"eval.batch_size={cfg.eval.batch_size} is not divisible by the {num_replicas} "
            f"replicas of this strategy; use a multiple of {num_replicas}."
        )
    for key, value in (
        ("train.num_steps", t.num_steps),
        ("train.steps_per_loop", t.steps_per_loop),
        ("train.log_every", t.log_every),
        ("train.checkpoint_every", t.checkpoint_every),
        ("train.keep_checkpoints", t.keep_checkpoints),
        ("train.eval_every", t.eval_every),
    ):
        if value is not None and value < 1:
            raise ConfigError(f"{key}={value} must be >= 1")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")
    if cfg.optim.base_lr <= 0:
        raise ConfigError(f"optim.base_lr={cfg.optim.base_lr} must be > 0")
    # Model: TokenLearner placement against the depth.
    try:
        spec = get_model_spec(m.name)
    except ValueError as e:
        raise ConfigError(f"model.name={m.name!r}: {e}") from None
    tl = m.tokenlearner
    if tl.num_tokens < 1:
        raise ConfigError(f"model.tokenlearner.num_tokens={tl.num_tokens} must be >= 1")
    num_layers = m.num_layers or spec.get("num_layers")
    extra = m.extra_layers or 0
    if num_layers is None:  # not a transformer (X(2+1)D): the TokenLearner is in res5
        if tl.at is not None or tl.fuser:
            raise ConfigError(
                f"model.tokenlearner.at={tl.at} / fuser={tl.fuser}: {m.name} places its "
                "TokenLearner in res5's modules (model.module), not before a block; set "
                "model.tokenlearner.at=none and fuser=false."
            )
    elif tl.at is not None:
        hi = min(num_layers, num_layers + extra - 1)
        if not 0 <= tl.at <= hi:
            raise ConfigError(
                f"model.tokenlearner.at={tl.at} is out of range: the TokenLearner goes before "
                f"block `at` (0-based) of the {num_layers} blocks of {m.name}"
                f"{f' (+{extra} extra)' if extra else ''}, so it must be in [0, {hi}]."
            )
    elif extra:
        raise ConfigError(
            f"model.extra_layers={extra} adds blocks after a TokenLearner, but "
            "model.tokenlearner.at is none."
        )
    if m.fuser_mix_tokens_over_time is not None and spec["family"] != "vivit":
        raise ConfigError(
            f"model.fuser_mix_tokens_over_time={m.fuser_mix_tokens_over_time}: only ViViT "
            f"mixes the tokens of several frames; {m.name} is a {spec['family']} model, "
            "leave it none."
        )
    # Data: sizes.
    if d.crop_size is not None and d.min_resize is not None and d.crop_size > d.min_resize:
        raise ConfigError(
            f"data.crop_size={d.crop_size} is larger than the resized frame "
            f"(data.min_resize={d.min_resize}, the shorter side after resizing); use "
            f"data.crop_size <= data.min_resize."
        )
    patch = m.patch_size or spec.get("patch_size")
    image = m.image_size or d.crop_size
    if image and patch and image % patch:
        raise ConfigError(
            f"data.crop_size={image} (the model's image size) is not divisible by "
            f"model.patch_size={patch}."
        )
    if d.eval_crop_size is not None:
        if d.min_resize is not None and d.eval_crop_size > d.min_resize:
            raise ConfigError(
                f"data.eval_crop_size={d.eval_crop_size} is larger than the resized frame "
                f"(data.min_resize={d.min_resize}); use data.eval_crop_size <= data.min_resize."
            )
        if patch and d.eval_crop_size % patch:
            raise ConfigError(
                f"data.eval_crop_size={d.eval_crop_size} is not divisible by "
                f"model.patch_size={patch}."
            )
    # Data: splits and the evaluation protocol.
    if d.eval_split == "segments":
        if _modality(cfg) != "video":
            raise ConfigError(
                "data.eval_split='segments' cuts videos into clips; "
                f"data.dataset={d.dataset!r} is an image dataset (use 'validation')."
            )
        if cfg.eval.num_clips not in (None, 1):
            raise ConfigError(
                f"eval.num_clips={cfg.eval.num_clips} applies to data.eval_split='test'; "
                "'segments' takes as many clips as cover each video: set eval.num_clips=none."
            )
    if _is_synthetic(cfg) and d.train_split != "train":
        raise ConfigError(
            f"data.train_split={d.train_split!r}: the built-in dataset {d.dataset!r} has one "
            "training split, 'train'."
        )
    from_tfds = _modality(cfg) == "image" and d.train_pattern is None
    if "[" in d.train_split and not from_tfds:
        raise ConfigError(
            f"data.train_split={d.train_split!r} slices a TFDS split, but the training data "
            f"are TFRecords (data.train_pattern={d.train_pattern!r}); name the shards in "
            "data.train_pattern instead."
        )
    frames = m.num_frames or d.num_frames
    tubelet = m.tubelet_size or spec.get("tubelet_size")
    if "num_frames" in spec and frames and tubelet and frames % tubelet:
        raise ConfigError(
            f"data.num_frames={frames} is not divisible by model.tubelet_size={tubelet}."
        )
    # Data: where it is.
    if _is_synthetic(cfg):
        return
    needs_train = any(mode in ("train", "train_and_evaluate") for mode in modes)
    needs_eval = any(mode in ("evaluate", "train_and_evaluate") for mode in modes)
    if not (needs_train or needs_eval):
        return
    if not d.data_dir:
        if _modality(cfg) == "image" and d.train_pattern is None:
            return  # TFDS's default data_dir
        raise ConfigError(
            "data.data_dir is not set: pass --data_dir=PATH (the folder with the TFRecord "
            "shards), or use --runlocal for the built-in dataset."
        )
    if not _exists(d.data_dir):
        raise ConfigError(f"data.data_dir={d.data_dir!r} does not exist.")
    for key, pattern, needed in (
        ("data.train_pattern", d.train_pattern, needs_train),
        ("data.eval_pattern", d.eval_pattern, needs_eval),
    ):
        if not needed or pattern is None:
            continue
        path = _pattern_path(cfg, pattern)
        try:
            data_lib.expand_file_pattern(path)
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(f"{key}={pattern!r} (in data.data_dir={d.data_dir!r}): {e}") from None


def make_task(cfg, modes=("train",)):
    """The `Task` of `cfg`: model and dataset functions for the loop."""
    d, e = cfg.data, cfg.eval
    if d.dataset in IN_MEMORY:
        raise ConfigError(
            f"data.dataset={d.dataset!r} is generated in memory by its experiment "
            "(experiments/imagenet.py --runlocal); use a registered dataset here."
        )
    modality = _modality(cfg)
    seed = cfg.train.seed
    eval_crop = d.eval_crop_size or d.crop_size
    # Training input through the tf.data service when set; evaluation stays in process.
    service = dict(
        service_address=d.service_address,
        service_processing_mode=d.service_processing_mode,
        service_job_name=d.service_job_name,
    )

    def model_fn():
        return build_model(cfg)

    eval_size = _eval_image_size(cfg)

    if modality == "video":
        extra = {}
        if _is_synthetic(cfg):
            info = _synthetic_info(cfg)
            extra = {"scale_jitter": info.dataset_kwargs()["scale_jitter"], "flip": False}
        common = dict(
            dataset=None if _is_synthetic(cfg) else d.dataset,
            num_classes=d.num_classes,
            num_frames=d.num_frames,
            stride=d.stride,
            min_resize=d.min_resize,
            multilabel=d.multilabel,
            label_offset=d.label_offset,
            on_error=d.on_error,
            output_dtype=d.output_dtype,
            **extra,
        )

        def train_dataset_fn(ctx, batch_size):
            return data_lib.video_dataset(
                _pattern_path(cfg, d.train_pattern), split="train", batch_size=batch_size,
                shuffle=d.shuffle, seed=seed, input_context=ctx, crop_size=d.crop_size,
                **common, **service,
            )

        def eval_dataset_fn(ctx, batch_size):
            views = {}
            if d.eval_split == "test":
                views = dict(num_clips=e.num_clips or 1, num_crops=e.num_crops or 1)
            elif d.eval_split == "segments":
                views = dict(num_clips=1, num_crops=e.num_crops or 1)
            return data_lib.video_dataset(
                _pattern_path(cfg, d.eval_pattern), split=d.eval_split, batch_size=batch_size,
                input_context=ctx, crop_size=eval_crop, **views, **common,
            )
    else:
        common = dict(
            dataset=d.dataset,
            data_dir=d.data_dir if d.train_pattern is None else None,
            resize_size=d.min_resize,
            num_classes=d.num_classes,
            label_offset=d.label_offset,
            on_error=d.on_error,
        )

        def train_dataset_fn(ctx, batch_size):
            return data_lib.image_dataset(
                _pattern_path(cfg, d.train_pattern), split="train", tfds_split=d.train_split,
                batch_size=batch_size, shuffle=d.shuffle, seed=seed, input_context=ctx,
                image_size=d.crop_size, **common, **service,
            )

        def eval_dataset_fn(ctx, batch_size):
            return data_lib.image_dataset(
                _pattern_path(cfg, d.eval_pattern), split=d.eval_split, batch_size=batch_size,
                input_context=ctx, image_size=eval_crop, **common,
            )

    return Task(
        model_fn=model_fn,
        train_dataset_fn=train_dataset_fn,
        eval_dataset_fn=eval_dataset_fn,
        multilabel=bool(d.multilabel),
        num_train_examples=d.num_train_examples,
        eval_model_fn=_eval_model_fn(cfg, eval_size) if eval_size is not None else None,
        # uint8 videos are normalised by the loop as the pipeline would ([-1, 1]).
        input_normalization="[-1,1]" if modality == "video" and d.output_dtype == "uint8" else None,
    )
