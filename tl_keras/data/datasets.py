"""Per-dataset facts: classes, multi-label, split sizes, metric and default sampling.

`video_dataset(..., dataset="charades")` / `image_dataset(..., dataset="imagenet2012")` fill
their unset arguments from these entries. Add your own with `register_dataset`.

Split sizes are the numbers commonly used with the DMVR / Scenic TFRecords (Kinetics loses
videos over time as they are removed from YouTube, so your copy may be smaller; the pipeline
never relies on them). Default frames/stride follow the paper's setups: ViViT on Kinetics
(32 frames, stride 2, 224 crops of 256 short side, 4 x 3 test views), X(2+1)D on Charades and
AViD (64 frames; Charades records extracted at 12 fps, paper §6.1.1).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from types import MappingProxyType
from typing import Mapping

__all__ = ["DatasetInfo", "get_dataset_info", "list_datasets", "register_dataset"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about one dataset. Sampling fields are `None` for image datasets."""

    name: str
    modality: str  # "video" or "image"
    num_classes: int
    multilabel: bool
    splits: Mapping[str, int]  # split name -> number of examples
    metric: str  # "top1", "mAP" or "mean_class_accuracy"
    num_frames: int | None = None
    stride: int | None = None
    fps: float | None = None  # frame rate the records are expected to be written at
    crop_size: int = 224
    min_resize: int = 256
    num_test_clips: int = 1
    num_test_crops: int = 1
    label_offset: int = 0  # subtracted from stored label indices
    notes: str = ""

    def __post_init__(self):
        if self.modality not in ("video", "image"):
            raise ValueError(
                f"DatasetInfo {self.name!r}: modality={self.modality!r}, "
                "expected 'video' or 'image'"
            )
        if self.num_classes < 1:
            raise ValueError(
                f"DatasetInfo {self.name!r}: num_classes={self.num_classes} must be >= 1"
            )
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))

    def num_examples(self, split: str) -> int:
        """Number of examples of `split`; KeyError naming the known splits."""
        try:
            return self.splits[split]
        except KeyError:
            raise KeyError(
                f"dataset {self.name!r} has no split {split!r}; known: {sorted(self.splits)}"
            ) from None


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo, *, overwrite: bool = False) -> DatasetInfo:
    """Add `info` under `info.name`. Re-registering a name needs `overwrite=True`."""
    if info.name in _REGISTRY and not overwrite:
        raise ValueError(
            f"dataset {info.name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[info.name] = info
    return info


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_dataset_info(name: str) -> DatasetInfo:
    """The registered `DatasetInfo` for `name` (ignoring case, '-' and '_')."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    for key, info in _REGISTRY.items():
        if _normal(key) == _normal(name):
            return info
    raise ValueError(f"unknown dataset {name!r}; registered datasets: {list_datasets()}")


def list_datasets(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style `pattern`."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


register_dataset(
    DatasetInfo(
        name="kinetics400",
        modality="video",
        num_classes=400,
        multilabel=False,
        splits={"train": 214_834, "validation": 17_637, "test": 34_579},
        metric="top1",
        num_frames=32,
        stride=2,
        num_test_clips=4,
        num_test_crops=3,
        notes="Kay et al. 2017; sizes as in the Scenic ViViT configs "
        "(the paper quotes ~240k train).",
    )
)
register_dataset(
    DatasetInfo(
        name="kinetics600",
        modality="video",
        num_classes=600,
        multilabel=False,
        splits={"train": 363_213, "validation": 27_676, "test": 55_377},
        metric="top1",
        num_frames=32,
        stride=2,
        num_test_clips=4,
        num_test_crops=3,
        notes="Carreira et al. 2018; sizes as in the Scenic ViViT configs "
        "(the paper quotes ~390k train).",
    )
)
register_dataset(
    DatasetInfo(
        name="charades",
        modality="video",
        num_classes=157,
        multilabel=True,
        splits={"train": 7_985, "validation": 1_863},
        metric="mAP",
        num_frames=64,
        stride=1,
        fps=12.0,
        num_test_clips=4,
        num_test_crops=3,
        notes="Sigurdsson et al. 2016, v1 classification; official CSV counts (the paper quotes "
        "~8000 train / 1686 validation). Multi-label: evaluate with mAP.",
    )
)
register_dataset(
    DatasetInfo(
        name="avid",
        modality="video",
        num_classes=887,
        multilabel=False,
        splits={"train": 410_000, "test": 40_000},
        metric="mean_class_accuracy",
        num_frames=64,
        stride=1,
        num_test_clips=4,
        num_test_crops=3,
        notes="Piergiovanni & Ryoo 2020; approximate sizes from the paper (§6.1.1). Reported "
        "metric: accuracy averaged over the 887 classes.",
    )
)
register_dataset(
    DatasetInfo(
        name="imagenet2012",
        modality="image",
        num_classes=1000,
        multilabel=False,
        splits={"train": 1_281_167, "validation": 50_000},
        metric="top1",
        crop_size=224,
        min_resize=256,
        label_offset=0,
        notes="TFDS labels are 0-based; classic ImageNet TFRecords (image/class/label) "
        "are 1-based, "
        "image_dataset subtracts 1 for them by default.",
    )
)
