"""tl_keras: TokenLearner (adaptive space-time tokenization) for TensorFlow / Keras 3."""

import importlib

__version__ = "0.1.0"

from tl_keras import layers  # noqa: E402,F401
from tl_keras import models  # noqa: E402,F401  (registers the models for keras.saving)
from tl_keras.models.specs import TL  # noqa: E402,F401

# Heavier or TensorFlow-only parts are imported on first use.
_LAZY = ("configs", "convert", "data", "export", "fewshot", "flops", "train", "visualize")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"tl_keras.{name}")
    raise AttributeError(f"module 'tl_keras' has no attribute {name!r}")
