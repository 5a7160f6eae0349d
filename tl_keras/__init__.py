"""tl_keras: TokenLearner (adaptive space-time tokenization) for TensorFlow / Keras 3.

`import tl_keras` loads the layers and models, which registers them for
`keras.saving.load_model` (whatever is imported first, Keras or tl_keras). The command
lines (`experiments/`, `tools/`) set `TL_KERAS_LAZY_IMPORT=1` before importing it: then
the parts are imported on first use (`tl_keras.layers.TokenLearner`, `tl_keras.TL`,
`tl_keras.models.vit_b16`, ...), so `tl_keras.configs` and every `--help` load without
TensorFlow.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

_LAZY = ("configs", "convert", "data", "export", "fewshot", "flops", "layers", "models",
         "plotting", "train", "visualize")


def __getattr__(name):
    if name == "TL":
        return importlib.import_module("tl_keras.models.specs").TL
    if name in _LAZY:
        return importlib.import_module(f"tl_keras.{name}")
    raise AttributeError(f"module 'tl_keras' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + ["TL"])


if os.environ.get("TL_KERAS_LAZY_IMPORT") != "1" or "keras" in sys.modules:
    importlib.import_module("tl_keras.models")  # registers the classes for load_model
