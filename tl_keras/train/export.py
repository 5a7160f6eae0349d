"""The trainer's export step: the serving SavedModel and the `.keras` archive of a run.

`export_model(model, directory, config=...)` writes
* `directory/saved_model/`: for image and video models `tl_keras.export.export_saved_model`
  (Keras' `ExportArchive`, which TF Serving's session loader reads), with the evaluation
  pre-processing of the run's config inside the graph and the `serving_default` /
  `serve_uint8` / `serve_encoded` signatures; for any other model Keras' `model.export`;
* `directory/model.keras`: the Keras archive (`keras.saving.load_model`, no custom objects).
"""

from __future__ import annotations

import os

import tensorflow as tf

__all__ = ["export_model"]


def _is_pixel_model(model):
    """An image `[B, H, W, 3]` or video `[B, T, H, W, 3]` model of known frame size."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return False
    shape = tuple(inputs[0].shape)
    return len(shape) in (4, 5) and shape[-1] == 3 and None not in shape[1:]


def export_model(model, directory, saved_model=True, keras_archive=True, config=None):
    """Writes `model` under `directory`; returns `{"saved_model": path, "keras": path}`.

    `config`: the run's resolved config (`tl_keras.configs.Config` or its dict), from which
    the serving pre-processing, multi-label flag and class names are taken.
    """
    from tl_keras import export as export_lib

    tf.io.gfile.makedirs(directory)
    paths = {}
    if saved_model:
        path = os.path.join(directory, "saved_model")
        if _is_pixel_model(model):
            options = export_lib.serving_options_from_config(config, model) if config else {}
            export_lib.export_saved_model(model, path, **options)
        else:  # any other Keras model: Keras' own `serve` endpoint
            model.export(path, format="tf_saved_model", verbose=False)
        paths["saved_model"] = path
    if keras_archive:
        path = os.path.join(directory, "model.keras")
        export_lib.save_keras(model, path)
        paths["keras"] = path
    return paths
