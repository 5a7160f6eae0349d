"""A small built-in video dataset for `--runlocal`, tests and demos.

Seeded, generated locally in seconds, written through `writer.py` into the same DMVR
TFRecord format as the real datasets, and cached on disk. Its classes are defined by
**motion**, so a single frame is not enough to tell them apart:

- `"single"` (Kinetics-style, one label): a bright square moves left, right, up or down
  (4 classes) on a torus (it wraps around the frame edges), starting at a uniformly random
  position, so its position in any one frame says nothing about the class. Distractors:
  small dim dots drifting in random directions, a random dark background with texture,
  per-frame pixel noise.
- `"multi"` (Charades-style, multi-label): 1-3 squares of different colours (red, green,
  blue), each moving in its own direction; the labels are the (colour, direction) pairs
  present (12 classes, e.g. `red_left`). A single frame shows which colours are there but
  not how they move.

Default size: 16 frames of 32 x 32 per video; `single` 480 train / 120 validation videos,
`multi` 600 / 150; generated in a few seconds on 2 CPU cores.

>>> info = make_dataset("single")           # cached under ~/.cache/tl_keras/synthetic/
>>> train = video_dataset(info.train_pattern, **info.dataset_kwargs("train"), batch_size=16)
>>> val = video_dataset(info.validation_pattern, **info.dataset_kwargs("validation"), batch_size=16)

Do not flip these videos horizontally (it swaps left and right): `dataset_kwargs` passes
`flip=False`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from typing import Mapping

import numpy as np

from tl_keras.data import writer

__all__ = [
    "SyntheticInfo",
    "make_dataset",
    "generate_video",
    "default_root",
    "class_names",
    "VARIANTS",
    "DIRECTIONS",
    "COLOURS",
]

VARIANTS = ("single", "multi")
DIRECTIONS = {"left": (0.0, -1.0), "right": (0.0, 1.0), "up": (-1.0, 0.0), "down": (1.0, 0.0)}
COLOURS = {"red": (235, 45, 45), "green": (45, 220, 45), "blue": (60, 80, 255)}
# Bump when the generator changes so that cached copies are regenerated.
GENERATOR_VERSION = 1

_DEFAULTS = {
    "single": {"num_train": 480, "num_validation": 120},
    "multi": {"num_train": 600, "num_validation": 150},
}


def class_names(variant: str) -> tuple[str, ...]:
    """Class names of a variant, in label-index order."""
    _check_variant(variant)
    if variant == "single":
        return tuple(f"move_{d}" for d in DIRECTIONS)
    return tuple(f"{c}_{d}" for c in COLOURS for d in DIRECTIONS)


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")


@dataclasses.dataclass(frozen=True)
class SyntheticInfo:
    """Where a generated synthetic dataset is and how to read it."""

    variant: str
    directory: str
    train_pattern: str  # e.g. ".../train@2", for video_dataset
    validation_pattern: str
    train_files: tuple[str, ...]
    validation_files: tuple[str, ...]
    class_names: tuple[str, ...]
    num_classes: int
    multilabel: bool
    num_train: int
    num_validation: int
    video_frames: int  # frames stored per video
    num_frames: int  # suggested clip length
    stride: int  # suggested stride
    frame_size: tuple[int, int]  # (height, width) of stored frames
    crop_size: int  # suggested crop (= frame size: nothing is cut off)
    min_resize: int
    seed: int
    params: Mapping  # every generation parameter (hashed into the directory name)
    generation_seconds: float | None  # None when loaded from the cache

    def pattern(self, split: str) -> str:
        if split == "train":
            return self.train_pattern
        if split in ("validation", "test"):
            return self.validation_pattern
        raise ValueError(f"split={split!r}: the synthetic dataset has 'train' and 'validation'")

    def dataset_kwargs(self, split: str = "train") -> dict:
        """Keyword arguments for `video_dataset` (all but `batch_size` and the pattern)."""
        return {
            "num_classes": self.num_classes,
            "multilabel": self.multilabel,
            "split": split,
            "num_frames": self.num_frames,
            "stride": self.stride,
            "crop_size": self.crop_size,
            "min_resize": self.min_resize,
            "scale_jitter": (1.0, 1.25),
            "flip": False,  # flipping swaps left and right
        }


def default_root() -> str:
    """`$TL_KERAS_DATA_DIR/synthetic`, else `~/.cache/tl_keras/synthetic`."""
    base = os.environ.get("TL_KERAS_DATA_DIR")
    if base:
        return os.path.join(os.path.expanduser(base), "synthetic")
    return os.path.join(os.path.expanduser("~"), ".cache", "tl_keras", "synthetic")


# --------------------------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------------------------


def _paint_square(frame: np.ndarray, y: float, x: float, size: int, colour) -> None:
    """Paint a `size` square with top-left corner (y, x) on a torus (wraps at the edges)."""
    h, w, _ = frame.shape
    rows = (int(round(y)) + np.arange(size)) % h
    cols = (int(round(x)) + np.arange(size)) % w
    frame[np.ix_(rows, cols)] = colour


def _background(rng: np.random.Generator, num_frames: int, size: int) -> np.ndarray:
    """Dark random colour + static texture + per-frame noise: float32 `[T, S, S, 3]`."""
    base = rng.uniform(0, 60, size=3)
    texture = rng.normal(0, 10, size=(size, size, 3))
    noise = rng.normal(0, 6, size=(num_frames, size, size, 3))
    return (base + texture + noise).astype(np.float32)


def _add_distractors(rng, video, count: int) -> None:
    """Small dim dots drifting in random directions (not the class signal)."""
    t_len, size = video.shape[0], video.shape[1]
    for _ in range(count):
        pos = rng.uniform(0, size, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        vel = rng.uniform(0.5, 1.5) * np.array([np.sin(angle), np.cos(angle)])
        colour = rng.uniform(70, 150, size=3)
        dot = int(rng.integers(2, 4))
        for t in range(t_len):
            _paint_square(video[t], *(pos + vel * t), dot, colour)


def generate_video(
    rng: np.random.Generator,
    variant: str,
    *,
    num_frames: int = 16,
    size: int = 32,
    label: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """One synthetic video: uint8 `[num_frames, size, size, 3]` and its label indices.

    `label` fixes the class of a `single` video (else drawn uniformly).
    """
    _check_variant(variant)
    video = _background(rng, num_frames, size)
    _add_distractors(rng, video, count=int(rng.integers(1, 4)))
    directions = list(DIRECTIONS.values())
    objects = []  # (direction index, colour, square size, colour index or None)
    if variant == "single":
        d = int(rng.integers(len(directions))) if label is None else int(label)
        objects.append((d, rng.uniform(215, 255, size=3), int(rng.integers(5, 8)), None))
    else:
        count = int(rng.integers(1, len(COLOURS) + 1))
        for c in rng.choice(len(COLOURS), size=count, replace=False):
            jitter = rng.uniform(-20, 20, size=3)
            colour = np.clip(np.array(list(COLOURS.values())[c]) + jitter, 0, 255)
            objects.append((int(rng.integers(len(directions))), colour, 6, int(c)))
    labels = []
    for d, colour, side, c in objects:
        start = rng.uniform(0, size, size=2)  # uniform on the torus: no single-frame cue
        speed = rng.uniform(1.5, 2.5)
        vel = speed * np.array(directions[d])
        for t in range(num_frames):
            _paint_square(video[t], *(start + vel * t), side, colour)
        labels.append(d if c is None else c * len(directions) + d)
    return np.clip(np.round(video), 0, 255).astype(np.uint8), sorted(set(labels))


# --------------------------------------------------------------------------------------------
# Generation + cache.
# --------------------------------------------------------------------------------------------


def _params(
    variant, num_train, num_validation, video_frames, frame_size, seed, jpeg_quality, num_shards
) -> dict:
    return {
        "variant": variant,
        "num_train": num_train,
        "num_validation": num_validation,
        "video_frames": video_frames,
        "frame_size": frame_size,
        "seed": seed,
        "jpeg_quality": jpeg_quality,
        "num_shards": num_shards,
        "generator_version": GENERATOR_VERSION,
    }


def _write_split(directory, name, rng, variant, count, params, num_shards) -> list[str]:
    names = class_names(variant)
    records = []
    for i in range(count):
        label = i % len(names) if variant == "single" else None  # balanced single-label classes
        frames, labels = generate_video(
            rng, variant, num_frames=params["video_frames"], size=params["frame_size"], label=label
        )
        jpegs = [writer.encode_jpeg(f, params["jpeg_quality"]) for f in frames]
        ex = writer.make_sequence_example(
            jpegs,
            labels,
            label_texts=[names[k] for k in labels],
            video_filename=f"synthetic/{variant}/{name}/{i:05d}",
        )
        records.append(ex.SerializeToString())
    order = rng.permutation(count)  # shards should not be sorted by class
    return writer.write_sharded(
        [records[k] for k in order], os.path.join(directory, name), num_shards
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_tmp(root: str, prefix: str) -> None:
    """Remove temp dirs of killed generations (their pid is gone)."""
    for entry in os.listdir(root):
        if entry.startswith(prefix):
            try:
                pid = int(entry[len(prefix) :].split("-")[0])
            except ValueError:
                continue
            if not _pid_alive(pid):
                shutil.rmtree(os.path.join(root, entry), ignore_errors=True)


def _info_from_json(directory: str, meta: dict, seconds: float | None) -> SyntheticInfo:
    p = meta["params"]
    variant = p["variant"]
    names = class_names(variant)
    train_files = tuple(os.path.join(directory, f) for f in meta["train_files"])
    val_files = tuple(os.path.join(directory, f) for f in meta["validation_files"])
    return SyntheticInfo(
        variant=variant,
        directory=directory,
        train_pattern=os.path.join(directory, f"train@{len(train_files)}"),
        validation_pattern=os.path.join(directory, f"validation@{len(val_files)}"),
        train_files=train_files,
        validation_files=val_files,
        class_names=names,
        num_classes=len(names),
        multilabel=variant == "multi",
        num_train=p["num_train"],
        num_validation=p["num_validation"],
        video_frames=p["video_frames"],
        num_frames=min(8, p["video_frames"]),
        stride=1,
        frame_size=(p["frame_size"], p["frame_size"]),
        crop_size=p["frame_size"],
        min_resize=p["frame_size"],
        seed=p["seed"],
        params=dict(p),
        generation_seconds=seconds,
    )


def make_dataset(
    variant: str = "single",
    root: str | None = None,
    *,
    num_train: int | None = None,
    num_validation: int | None = None,
    video_frames: int = 16,
    frame_size: int = 32,
    seed: int = 0,
    jpeg_quality: int = 95,
    num_shards: int = 2,
    overwrite: bool = False,
) -> SyntheticInfo:
    """Generate (or load from the cache) a synthetic dataset and describe it.

    The data lives in `<root>/<variant>-<hash of all parameters>/` with `root` defaulting to
    `default_root()` (`$TL_KERAS_DATA_DIR/synthetic` or `~/.cache/tl_keras/synthetic`). It is
    generated only if missing (or with `overwrite=True`), into a temporary directory that is
    renamed into place when complete, so a killed generation never leaves a partial dataset.
    """
    _check_variant(variant)
    defaults = _DEFAULTS[variant]
    num_train = defaults["num_train"] if num_train is None else int(num_train)
    num_validation = defaults["num_validation"] if num_validation is None else int(num_validation)
    for name, value in (
        ("num_train", num_train),
        ("num_validation", num_validation),
        ("video_frames", video_frames),
        ("frame_size", frame_size),
        ("num_shards", num_shards),
    ):
        if value < 1:
            raise ValueError(f"make_dataset: {name}={value} must be >= 1")
    if frame_size < 8:
        raise ValueError(f"make_dataset: frame_size={frame_size} is too small (>= 8)")
    params = _params(
        variant, num_train, num_validation, video_frames, frame_size, seed, jpeg_quality, num_shards
    )
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    root = os.path.abspath(os.path.expanduser(root or default_root()))
    directory = os.path.join(root, f"{variant}-{digest}")
    meta_path = os.path.join(directory, "info.json")
    if os.path.exists(meta_path) and not overwrite:
        with open(meta_path) as f:
            return _info_from_json(directory, json.load(f), None)

    os.makedirs(root, exist_ok=True)
    prefix = f".tmp-{variant}-{digest}-"
    _clean_stale_tmp(root, prefix)
    tmp = os.path.join(root, f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        t0 = time.perf_counter()
        rng_train = np.random.default_rng([seed, 0])
        rng_val = np.random.default_rng([seed, 1])
        train = _write_split(tmp, "train", rng_train, variant, num_train, params, num_shards)
        val = _write_split(
            tmp, "validation", rng_val, variant, num_validation, params, max(1, num_shards // 2)
        )
        seconds = time.perf_counter() - t0
        meta = {
            "params": params,
            "train_files": [os.path.basename(p) for p in train],
            "validation_files": [os.path.basename(p) for p in val],
            "class_names": list(class_names(variant)),
            "generation_seconds": seconds,
        }
        with open(os.path.join(tmp, "info.json"), "w") as f:  # written last: marks completeness
            json.dump(meta, f, indent=1)
        if overwrite and os.path.exists(directory):
            trash = f"{tmp}-old"
            os.rename(directory, trash)
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not os.path.exists(meta_path):  # not a concurrent generation that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(meta_path) as f:
        return _info_from_json(directory, json.load(f), seconds)


def main(argv=None) -> None:
    """`python -m tl_keras.data.synthetic [single|multi] [root]`: generate and print the info."""
    args = sys.argv[1:] if argv is None else argv
    info = make_dataset(args[0] if args else "single", args[1] if len(args) > 1 else None)
    for field in dataclasses.fields(info):
        print(f"{field.name}: {getattr(info, field.name)}")


if __name__ == "__main__":
    main()
