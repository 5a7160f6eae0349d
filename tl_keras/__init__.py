"""tl_keras: TokenLearner (adaptive space-time tokenization) for TensorFlow / Keras 3."""

import importlib

__version__ = "0.1.0"

from tl_keras import layers  # noqa: E402,F401

# Heavier or TensorFlow-only parts are imported on first use.
_LAZY = ("convert",)


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"tl_keras.{name}")
    raise AttributeError(f"module 'tl_keras' has no attribute {name!r}")
