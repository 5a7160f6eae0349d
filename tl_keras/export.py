"""Serving export: a TF Serving SavedModel with pre-processing inside, a `.keras` archive,
and the trainer's export of a run (`export_model`).

```python
from tl_keras import export
export.export_saved_model(model, "out/saved_model", class_names=names, min_resize=256)
export.save_keras(model, "out/model.keras")
export.export_model(model, "run/export/600", config=config)  # both, options from the config
```

The SavedModel is written with `keras.export.ExportArchive`: a plain `tf.saved_model.save`
of a Keras 3 model does not load in the TF1 session-based loader that TF Serving (and
`saved_model_cli run`) uses, an `ExportArchive` with explicit endpoints does.
It has three signatures, for an image model (input `[B, H, W, 3]`) or a video model (input
`[B, T, H, W, 3]`; the kind is read from the model's input):

| signature | input (name: dtype, shape) |
| --- | --- |
| `serving_default` | `images`: float32 `[B, H, W, 3]` / `videos`: float32 `[B, T, H, W, 3]`, pixels in [0, 255] |
| `serve_uint8` | the same, uint8 |
| `serve_encoded` | `encoded_images`: string `[B]` (JPEG or PNG) / `encoded_videos`: string `[B, T]` (JPEG frames) |

Any height and width are accepted; T must be the model's frame count. Inside the graph the
input is checked (rank, channels, frame count, a non-empty batch, image format, complete
JPEG / PNG data, each image's size and the request's total pixels, the last three read
from the bytes and headers before anything is decoded; `max_request_pixels`), then resized and
cropped exactly as in evaluation (`tl_keras.data.preprocessing`: short side resized to
`min_resize`, centre crop to the model's size, then `normalization`), and classified. Every
signature returns `logits` float32 `[B, K]`, `probabilities` float32 `[B, K]` (softmax, or
sigmoid for a multi-label model), `top_k_indices` int32 `[B, k]` and `top_k_labels` string
`[B, k]` (the class names when given, else the indices as strings), `k = min(top_k, K)`.

The input placeholders have an unknown rank on purpose: TF Serving's C++ session does not
check fed shapes against the placeholder, so every check is made in the graph, with a
message that says what was expected (e.g. `serving_default: expected videos of shape
[batch, 8, height, width, 3] ...; got shape [2 4 32 32 3]`). The expected shapes are also in
`assets.extra/tl_keras_serving.json` beside the model, with the pre-processing and the
class names.

`rest_predict(signature, body)` maps a TF Serving REST body (`{"instances": ...}` or
`{"inputs": ...}`, `{"b64": ...}` for bytes) onto a loaded signature and returns the
response TF Serving would send; `grpc_predict(loaded, request)` does the same for a gRPC
`tensorflow.serving.PredictRequest` (from `tensorflow-serving-api`, the `deploy` extra):
local stand-ins to test clients against (docs/export.md shows both requests).

`export_runtime(model, path, format)` writes the model's forward pass for another runtime
(`RUNTIME_FORMATS`), through Keras' own `model.export(path, format=...)`:

| format | file | runtime |
| --- | --- | --- |
| `litert` | `model.tflite` (TFLite flatbuffer, TF's `TFLiteConverter`) | `ai_edge_litert.interpreter.Interpreter` |
| `onnx` | `model.onnx` (`tf2onnx`) | `onnxruntime.InferenceSession` |
| `openvino` | `model.xml` + `model.bin` (OpenVINO IR, `openvino.convert_model`) | `openvino.Core().compile_model` |

Input: the model's own input, float32 `[B, H, W, 3]` / `[B, T, H, W, 3]` (batch dynamic,
the rest fixed), already pre-processed (resized, cropped and normalised: the caller's job
for these formats, as written in the JSON beside the file, `<file>.json`; OpenVINO can take
it inside, `pixels=True`); output: the logits float32 `[B, K]`. The converters need `pip install tl_keras[deploy]`. OpenVINO's CPU
plugin runs float32 models in bfloat16 on CPUs that have it (relative error ~1e-2); compile
with `{"INFERENCE_PRECISION_HINT": "f32"}` for the model's float32 outputs.

LiteRT int8 (`quantization=`, `QUANTIZATIONS`): `"dynamic_range"` (int8 weights) or
`"full_integer"` (int8 weights and activations, calibrated on `representative_data`;
float32 in and out); the JSON beside the file records the mode and, for full integer, the
ops left in float32 (`litert_op_report`). docs/export.md, "int8".

`Preprocessing`, `preprocessing_for`, `preprocess` and `preprocess_encoded` live in
`tl_keras.data.preprocessing`; they are re-exported here because `export_saved_model`
takes a `Preprocessing`.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.util
import json
import os
from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tl_keras.data import synthetic
from tl_keras.data.parsers import DEFAULT_MAX_FRAME_PIXELS
from tl_keras.data.preprocessing import (
    Preprocessing,
    model_input_shape,
    normalize_inputs,
    preprocess,
    preprocess_encoded,
    preprocessing_for,
)

__all__ = [
    "export_saved_model",
    "save_keras",
    "export_model",
    "serving_options_from_config",
    "rest_predict",
    "grpc_predict",
    "export_runtime",
    "litert_op_report",
    "RUNTIME_FORMATS",
    "RUNTIME_FILES",
    "QUANTIZATIONS",
    "SIGNATURES",
    "SERVING_INFO_FILE",
    # Re-exported from tl_keras.data.preprocessing:
    "Preprocessing",
    "preprocessing_for",
    "preprocess",
    "preprocess_encoded",
]

SIGNATURES = ("serving_default", "serve_uint8", "serve_encoded")
SERVING_INFO_FILE = os.path.join("assets.extra", "tl_keras_serving.json")
# The evaluation pipeline's guard against hostile image headers (per frame / image).
MAX_FRAME_PIXELS = DEFAULT_MAX_FRAME_PIXELS
# Default bound on the pixels of one request (all frames of all examples together): 2**27,
# e.g. 64 frames of 1920 x 1080 or two frames at the per-frame bound. One `serve_encoded`
# request of 8 frames of 8192 x 8192 (5.4e8 pixels) took 10.5 GB without it.
MAX_REQUEST_PIXELS = 1 << 27

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"  # EOI marker: libjpeg refuses a JPEG cut anywhere before it
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND"  # the last chunk of every PNG


# --------------------------------------------------------------------------------------
# Input checks inside the graph.
# --------------------------------------------------------------------------------------


def _require(x, ok, fallback, *message):
    """`x` if the scalar bool tensor `ok` holds, else an error with `message`.

    A `tf.cond` rather than a control dependency: the runtime specialises a function to the
    shapes it is fed and would otherwise report a shape error of a later op (e.g. "input
    must be 4-dimensional") before the assertion. The failing branch yields `fallback`
    (of a valid shape) only after its assertion, i.e. never.
    """

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(ok, list(message), summarize=32)]):
            return tf.identity(fallback)

    return tf.cond(ok, lambda: tf.identity(x), fail)


def _expected_shape(prep, encoded):
    if prep.kind == "image":
        return "[batch]" if encoded else "[batch, height, width, 3]"
    t = prep.num_frames
    return f"[batch, {t}]" if encoded else f"[batch, {t}, height, width, 3]"


def _contains(strings, marker):
    """Per string of `strings` (string `[N]`): whether the bytes `marker` occur in it."""
    return tf.strings.split(strings, marker).row_lengths() > 1


def _require_examples(x, signature, name, fallback):
    """`x` if its batch (first dimension) is not empty."""
    return _require(
        x, tf.shape(x)[0] > 0, fallback,
        f"{signature}: the batch of {name} is empty; send at least one example; got shape",
        tf.shape(x),
    )


def _check_request_pixels(x, pixels, signature, max_request_pixels, fallback):
    """`x` if the request's total pixel count (int64 scalar) is within the bound."""
    return _require(
        x, pixels <= max_request_pixels, fallback,
        f"{signature}: the request holds more than max_request_pixels={max_request_pixels} "
        "pixels (all frames of all examples; set at export); send fewer or smaller "
        "frames per request. Pixels in this request:", pixels,
    )


def _check_pixels(x, prep, signature, name, max_request_pixels=MAX_REQUEST_PIXELS):
    """Rank, channels, frame count, non-empty frames and the request's pixel count of
    decoded input."""
    rank = 4 if prep.kind == "image" else 5
    expected = _expected_shape(prep, encoded=False)
    what = f"{signature}: expected {name} of shape {expected} (pixels in [0, 255])"
    fallback = tf.zeros([1] + list(prep.input_shape), x.dtype)
    x = _require(x, tf.equal(tf.rank(x), rank), fallback, what + "; got shape", tf.shape(x))
    x.set_shape([None] * rank)
    x = _require_examples(x, signature, name, fallback)
    x.set_shape([None] * rank)
    shape = tf.shape(x)
    ok = tf.logical_and(tf.equal(shape[-1], 3), tf.reduce_all(shape[-3:-1] > 0))
    if prep.kind == "video":
        ok = tf.logical_and(ok, tf.equal(shape[1], prep.num_frames))
    x = _require(x, ok, fallback, what + "; got shape", shape)
    x.set_shape([None] * (rank - 1) + [3])
    pixels = tf.reduce_prod(tf.cast(tf.shape(x)[:-1], tf.int64))
    x = _check_request_pixels(x, pixels, signature, max_request_pixels, fallback)
    x.set_shape([None] * (rank - 1) + [3])
    return x


def _header_pixels(data):
    """Height * width from the header of one JPEG or PNG string (int64), without decoding."""

    def png():
        size = tf.io.decode_raw(tf.strings.substr(data, 16, 8), tf.uint8)  # IHDR width, height
        size = tf.reshape(tf.cast(size, tf.int64), [2, 4])
        w_h = tf.reduce_sum(size * tf.constant([1 << 24, 1 << 16, 1 << 8, 1], tf.int64), 1)
        return w_h[0] * w_h[1]

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
        return shape[0] * shape[1]

    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG_MAGIC)
    return tf.cond(is_png, png, jpeg)


def _tiny_jpeg():
    with tf.init_scope():  # eager, also while a signature is traced
        return tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()


def _check_encoded(x, prep, signature, name, max_request_pixels=MAX_REQUEST_PIXELS):
    """Rank, frame count, image format, completeness, header size and the request's pixel
    count of encoded input; all before any pixel is decoded.

    Completeness: a JPEG must hold its end-of-image marker (libjpeg refuses a JPEG cut
    before it, and a windowed decode of a cut JPEG would succeed on partial data), a PNG its
    `IEND` chunk. Sizes come from the headers (`tf.image.extract_jpeg_shape`, the PNG
    IHDR): each image at most `MAX_FRAME_PIXELS`, all of them together at most
    `max_request_pixels`.
    """
    rank = 1 if prep.kind == "image" else 2
    expected = _expected_shape(prep, encoded=True)
    fmt = "JPEG or PNG bytes" if prep.kind == "image" else "JPEG bytes, one per frame"
    what = f"{signature}: expected {name} of shape {expected}: {fmt}"
    fallback_shape = [1] if prep.kind == "image" else [1, prep.num_frames]
    fallback = tf.fill(fallback_shape, tf.constant(_tiny_jpeg()))
    final_shape = [None] * rank if prep.kind == "image" else [None, prep.num_frames]

    def require(x, ok, *message):
        x = _require(x, ok, fallback, *message)
        x.set_shape(final_shape)
        return x

    x = _require(x, tf.equal(tf.rank(x), rank), fallback, what + "; got shape", tf.shape(x))
    x.set_shape([None] * rank)
    x = _require_examples(x, signature, name, fallback)
    x.set_shape([None] * rank)
    if prep.kind == "video":
        shape = tf.shape(x)
        x = require(x, tf.equal(shape[1], prep.num_frames), what + "; got shape", shape)
    flat = tf.reshape(x, [-1])
    is_jpeg = tf.equal(tf.strings.substr(flat, 0, 3), _JPEG_MAGIC)
    valid = is_jpeg
    if prep.kind == "image":
        is_png = tf.logical_and(
            tf.equal(tf.strings.substr(flat, 0, 8), _PNG_MAGIC), tf.strings.length(flat) >= 24
        )
        valid = tf.logical_or(is_jpeg, is_png)
    bad = tf.where(tf.logical_not(valid))[:, 0]  # flat indices (video: b * T + t)
    where = "element(s) (flat index b * T + t)" if prep.kind == "video" else "element(s)"
    hint = "; in a REST request send each as {b64: base64 string}"
    x = require(
        x, tf.reduce_all(valid),
        f"{what}. Not a {'JPEG or PNG' if prep.kind == 'image' else 'JPEG'}: {where}", bad, hint,
    )
    flat = tf.reshape(x, [-1])
    complete = _contains(flat, _JPEG_END)
    if prep.kind == "image":
        is_png = tf.equal(tf.strings.substr(flat, 0, 8), _PNG_MAGIC)
        complete = tf.where(is_png, _contains(flat, _PNG_END), complete)
    cut = tf.where(tf.logical_not(complete))[:, 0]
    x = require(
        x, tf.reduce_all(complete),
        f"{signature}: truncated {'image' if prep.kind == 'image' else 'JPEG frame'}(s): no "
        f"{'end-of-image marker (JPEG) or IEND chunk (PNG)' if prep.kind == 'image' else 'end-of-image marker'}"
        f" at {where}", cut,
    )
    flat = tf.reshape(x, [-1])
    pixels = tf.map_fn(_header_pixels, flat, fn_output_signature=tf.TensorSpec([], tf.int64))
    too_big = tf.where(pixels > MAX_FRAME_PIXELS)[:, 0]
    x = require(
        x, tf.equal(tf.size(too_big), 0),
        f"{signature}: image header(s) claim more than {MAX_FRAME_PIXELS} pixels at flat "
        "index", too_big,
    )
    x = _check_request_pixels(x, tf.reduce_sum(pixels), signature, max_request_pixels, fallback)
    x.set_shape(final_shape)
    return x


# --------------------------------------------------------------------------------------
# The SavedModel.
# --------------------------------------------------------------------------------------


def _num_classes(model):
    out = model.outputs[0].shape if getattr(model, "outputs", None) else None
    try:
        include_top = model.get_config().get("include_top", True)
    except (NotImplementedError, AttributeError, TypeError):
        include_top = True
    if out is None or len(out) != 2 or out[-1] is None or include_top is False:
        raise ValueError(
            f"export: the model must output logits [B, num_classes]; got {out} "
            "(a model built with include_top=False has no classifier to serve)."
        )
    return int(out[-1])


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return None
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"export: {len(names)} class names for a model with {num_classes} classes."
        )
    return names


def _classify(model, x, *, multilabel, k, labels):
    logits = tf.cast(model(x, training=False), tf.float32)
    probabilities = tf.sigmoid(logits) if multilabel else tf.nn.softmax(logits, axis=-1)
    _, indices = tf.math.top_k(probabilities, k=k)
    if labels is not None:
        top_labels = tf.gather(tf.constant(labels, tf.string), indices)
    else:
        top_labels = tf.strings.as_string(indices)
    return {
        "logits": logits,
        "probabilities": probabilities,
        "top_k_indices": indices,
        "top_k_labels": top_labels,
    }


def _signature_info(prep, num_classes, k):
    name = "images" if prep.kind == "image" else "videos"
    decoded = "[-1, -1, -1, 3]" if prep.kind == "image" else f"[-1, {prep.num_frames}, -1, -1, 3]"
    encoded = "[-1]" if prep.kind == "image" else f"[-1, {prep.num_frames}]"
    outputs = {
        "logits": {"dtype": "float32", "shape": f"[-1, {num_classes}]"},
        "probabilities": {"dtype": "float32", "shape": f"[-1, {num_classes}]"},
        "top_k_indices": {"dtype": "int32", "shape": f"[-1, {k}]"},
        "top_k_labels": {"dtype": "string", "shape": f"[-1, {k}]"},
    }
    return {
        "serving_default": {
            "inputs": {name: {"dtype": "float32", "shape": decoded, "range": "[0, 255]"}},
            "outputs": outputs,
        },
        "serve_uint8": {"inputs": {name: {"dtype": "uint8", "shape": decoded}}, "outputs": outputs},
        "serve_encoded": {
            "inputs": {
                f"encoded_{name}": {
                    "dtype": "string",
                    "shape": encoded,
                    "format": "JPEG or PNG" if prep.kind == "image" else "JPEG per frame",
                }
            },
            "outputs": outputs,
        },
    }


def export_saved_model(
    model,
    path,
    *,
    input_kind=None,
    min_resize=None,
    crop_size=None,
    normalization="[-1,1]",
    eval_split="test",
    class_names: Optional[Sequence[str]] = None,
    multilabel=False,
    top_k=5,
    preprocessing: Optional[Preprocessing] = None,
    max_request_pixels=MAX_REQUEST_PIXELS,
    verbose=False,
):
    """Writes `model` as a TF Serving SavedModel at `path` (see the module docstring).

    Args:
        model: a Keras model with one input (images `[B, H, W, 3]` or videos
            `[B, T, H, W, 3]`, fixed square size) and logits `[B, K]` as output.
        path: output directory (local or `gs://`).
        input_kind: `"image"` or `"video"`; checked against the model input (default: read
            from it).
        min_resize, crop_size, normalization, eval_split: the evaluation pre-processing
            (`Preprocessing`; `crop_size` must be the model's input size). From a training
            run: `**serving_options_from_config(config)`.
        class_names: K names embedded in the graph for `top_k_labels` (default: the index).
        multilabel: `probabilities` are sigmoids (multi-label training) instead of a softmax.
        top_k: k of the `top_k_*` outputs (at most K).
        preprocessing: a ready `Preprocessing` (overrides the four arguments above).
        max_request_pixels: the most pixels one request may hold, all frames of all
            examples together (for `serve_encoded` read from the image headers before
            anything is decoded); a larger request is refused with an `InvalidArgumentError`
            naming the bound. Default `MAX_REQUEST_PIXELS` (2**27; each image or frame is
            also bounded by `MAX_FRAME_PIXELS`, 2**26). Decoding and pre-processing take
            about 20 bytes per pixel: size it to the serving worker's memory.
        verbose: print Keras' summary of the endpoints.

    Returns:
        `path`.
    """
    prep = preprocessing or preprocessing_for(
        model,
        input_kind=input_kind,
        min_resize=min_resize,
        crop_size=crop_size,
        normalization=normalization,
        eval_split=eval_split,
    )
    model_shape = model_input_shape(model)[1:]
    if prep.input_shape != model_shape:
        raise ValueError(
            f"export: preprocessing gives {prep.input_shape}, the model takes {model_shape}."
        )
    num_classes = _num_classes(model)
    labels = _check_class_names(class_names, num_classes)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"export: top_k={top_k!r} must be a positive int.")
    k = min(top_k, num_classes)
    if (
        isinstance(max_request_pixels, bool)
        or not isinstance(max_request_pixels, (int, np.integer))
        or max_request_pixels < 1
    ):
        raise ValueError(
            f"export: max_request_pixels={max_request_pixels!r} must be a positive int."
        )
    max_request_pixels = int(max_request_pixels)
    multilabel = bool(multilabel)
    name = "images" if prep.kind == "image" else "videos"

    def classify(x):
        return _classify(model, x, multilabel=multilabel, k=k, labels=labels)

    def from_pixels(signature):
        def fn(pixels):
            pixels = _check_pixels(pixels, prep, signature, name, max_request_pixels)
            return classify(preprocess(pixels, prep))

        return fn

    def from_encoded(encoded):
        encoded = _check_encoded(
            encoded, prep, "serve_encoded", f"encoded_{name}", max_request_pixels
        )
        return classify(preprocess_encoded(encoded, prep))

    # The TensorSpec's name is the signature's input key.
    specs = {
        "serving_default": tf.TensorSpec(None, tf.float32, name=name),
        "serve_uint8": tf.TensorSpec(None, tf.uint8, name=name),
        "serve_encoded": tf.TensorSpec(None, tf.string, name=f"encoded_{name}"),
    }
    functions = {
        "serving_default": from_pixels("serving_default"),
        "serve_uint8": from_pixels("serve_uint8"),
        "serve_encoded": from_encoded,
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    for signature in SIGNATURES:
        archive.add_endpoint(
            name=signature,
            fn=tf.function(
                functions[signature], input_signature=[specs[signature]], autograph=False
            ),
        )
    archive.write_out(path, verbose=verbose)

    info = {
        "format": "tl_keras serving export 1",
        "model": {"class": type(model).__name__, "name": model.name},
        "input_kind": prep.kind,
        "preprocessing": prep.to_dict(),
        "multilabel": multilabel,
        "top_k": k,
        "max_request_pixels": max_request_pixels,
        "max_frame_pixels": MAX_FRAME_PIXELS,
        "class_names": labels,
        "signatures": _signature_info(prep, num_classes, k),
    }
    info_path = os.path.join(path, SERVING_INFO_FILE)
    tf.io.gfile.makedirs(os.path.dirname(info_path))
    with tf.io.gfile.GFile(info_path, "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return path


def save_keras(model, path):
    """Writes the `.keras` archive (loads back with `keras.saving.load_model(path)`, no
    custom objects: tl_keras models and layers are registered). Returns `path`."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"save_keras: the path must end in .keras, got {path!r}.")
    parent = os.path.dirname(str(path))
    if parent:
        tf.io.gfile.makedirs(parent)
    model.save(path)
    return path


def _is_pixel_model(model):
    """An image `[B, H, W, 3]` or video `[B, T, H, W, 3]` model of known frame size."""
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1:
        return False
    shape = tuple(inputs[0].shape)
    return len(shape) in (4, 5) and shape[-1] == 3 and None not in shape[1:]


def export_model(model, directory, saved_model=True, keras_archive=True, config=None):
    """The trainer's export of a run: writes `model` under `directory`; returns
    `{"saved_model": path, "keras": path}` (the formats written).

    * `directory/saved_model/`: for image and video models `export_saved_model`, with the
      evaluation pre-processing of the run's config inside the graph; for any other model
      Keras' own `model.export` (a `serve` endpoint);
    * `directory/model.keras`: `save_keras`.

    `config`: the run's resolved config (`tl_keras.configs.Config` or its dict), from which
    the serving pre-processing, multi-label flag and class names are taken
    (`serving_options_from_config`).
    """
    tf.io.gfile.makedirs(directory)
    paths = {}
    if saved_model:
        path = os.path.join(directory, "saved_model")
        if _is_pixel_model(model):
            options = serving_options_from_config(config, model) if config else {}
            export_saved_model(model, path, **options)
        else:  # any other Keras model: Keras' own `serve` endpoint
            model.export(path, format="tf_saved_model", verbose=False)
        paths["saved_model"] = path
    if keras_archive:
        path = os.path.join(directory, "model.keras")
        save_keras(model, path)
        paths["keras"] = path
    return paths


# --------------------------------------------------------------------------------------
# LiteRT, ONNX and OpenVINO: the forward pass through Keras' own `model.export`.
# --------------------------------------------------------------------------------------

RUNTIME_FORMATS = ("litert", "onnx", "openvino")
# The file name each format is written to by `tools/export_model.py` (and its suffix, which
# `export_runtime` checks).
RUNTIME_FILES = {"litert": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
# The packages the conversion itself needs in the exporting process (the `deploy` extra).
_CONVERTERS = {"litert": (), "onnx": ("tf2onnx", "onnx"), "openvino": ("openvino",)}


def _missing_modules(names):
    return [n for n in names if importlib.util.find_spec(n) is None]


def export_runtime(
    model, path, format, *, class_names=None, preprocessing=None, pixels=False,
    quantization=None, representative_data=None, representative_examples=None, verbose=False,
):
    """Writes `model` (input -> logits) as a LiteRT, ONNX or OpenVINO file; returns `path`.

    Args:
        model: a Keras model with one float32 input of fixed size but for the batch.
        path: the output file: `.tflite` (litert), `.onnx` (onnx) or `.xml` (openvino; the
            weights go to the `.bin` beside it).
        format: one of `RUNTIME_FORMATS`.
        class_names: K names, written to the JSON beside the file (not into the model).
        preprocessing: the `Preprocessing` the caller must apply first (default:
            `preprocessing_for(model)`), written to the JSON beside the file.
        pixels: OpenVINO only: the pre-processing inside the model, whose input is then
            uint8 pixels `[B, H, W, 3]` / `[B, T, H, W, 3]` of any size (as the SavedModel's
            `serve_uint8`, without its input checks). LiteRT and ONNX Runtime cannot run it
            (docs/export.md says why).
        quantization: LiteRT only (`QUANTIZATIONS`): None (float32), `"dynamic_range"`
            (int8 weights, float32 activations: the kernels quantized per channel, the
            matmuls quantize their inputs on the fly; no data needed) or `"full_integer"`
            (int8 weights and activations, the activation ranges calibrated on
            `representative_data`; float32 in and out, quantized inside; an op without
            an int8 kernel stays float32: `<path>.json` lists them, see `litert_op_report`).
        representative_data: `full_integer` only: model inputs to calibrate on, e.g. a
            batch of the training pipeline at a time: an iterable (or a function returning
            one; a `tf.data.Dataset` is one) of arrays `[B, ...]` of the model's input, or
            of `(inputs, labels, ...)` tuples. uint8 pixels (a pipeline with
            `output_dtype="uint8"`) are normalised with the pre-processing's
            normalization; a multi-view batch `[B, V, ...]` is flattened into `B * V`
            examples.
        representative_examples: at most this many examples are drawn from
            `representative_data` (default: all of it; TFLite suggests a few hundred).
        verbose: Keras' export messages.

    The batch dimension stays dynamic in all three formats (LiteRT: `shape_signature` -1;
    resize the input with `Interpreter.resize_tensor_input` before `allocate_tensors`).
    `<path>.json` describes the input, the output and the pre-processing.
    """
    if format not in RUNTIME_FORMATS:
        raise ValueError(
            f"export_runtime: format={format!r}; expected one of {list(RUNTIME_FORMATS)}."
        )
    suffix = os.path.splitext(RUNTIME_FILES[format])[1]
    path = str(path)
    if not path.endswith(suffix):
        raise ValueError(f"export_runtime: a {format} file must end in {suffix}; got {path!r}.")
    missing = _missing_modules(_CONVERTERS[format])
    if missing:
        raise ImportError(
            f"export_runtime: format={format!r} needs {', '.join(missing)} (not installed); "
            "pip install 'tl_keras[deploy]'."
        )
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or None in tuple(inputs[0].shape)[1:]:
        raise ValueError(
            f"export_runtime: the model needs one input of fixed size but for the batch; got "
            f"{[tuple(i.shape) for i in inputs]}."
        )
    num_classes = _num_classes(model)
    labels = _check_class_names(class_names, num_classes)
    if preprocessing is None and _is_pixel_model(model):
        preprocessing = preprocessing_for(model)
    if pixels and format != "openvino":
        raise ValueError(
            f"export_runtime: pixels=True (pre-processing in the model) is for openvino only; "
            f"the {format} runtime cannot run the resize and crop (docs/export.md)."
        )
    if pixels and preprocessing is None:
        raise ValueError("export_runtime: pixels=True needs an image or video model.")
    converter_options, calibrated = _quantization_options(
        format, quantization, representative_data, representative_examples, pixels,
        [None] + list(inputs[0].shape)[1:], preprocessing,
    )
    shape = [None] + list(inputs[0].shape)[1:]
    name = inputs[0].name or "inputs"
    parent = os.path.dirname(path)
    if parent:
        tf.io.gfile.makedirs(parent)
    if pixels:
        shape = [None] * (len(shape) - 1) + [3]
        if preprocessing.kind == "video":
            shape[1] = preprocessing.num_frames
        _export_openvino_pixels(model, path, preprocessing, shape, name)
        dtype = "uint8"
    else:
        # One float32 input, batch dynamic: the name becomes the input's name in ONNX.
        signature = [tf.TensorSpec(shape, tf.float32, name=name)]
        model.export(path, format=format, verbose=verbose, input_signature=signature,
                     **converter_options)
        dtype = "float32"
    info = {
        "format": f"tl_keras {format} export 1",
        "model": {"class": type(model).__name__, "name": model.name},
        "input": {"name": name, "dtype": dtype, "shape": [-1 if d is None else d for d in shape]},
        "output": {"name": "logits", "dtype": "float32", "shape": [-1, num_classes]},
        "preprocessing": preprocessing.to_dict() if preprocessing is not None else None,
        "preprocessing_in_graph": bool(pixels),
        "class_names": labels,
    }
    if format == "openvino":
        info["compile_config"] = {"INFERENCE_PRECISION_HINT": "f32"}
    if format == "litert":
        info["quantization"] = _quantization_info(path, quantization, calibrated)
    with tf.io.gfile.GFile(path + ".json", "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return path


QUANTIZATIONS = ("dynamic_range", "full_integer")


def _quantization_options(format, quantization, data, max_examples, pixels, shape, prep):
    """`(options, counter)`: the TFLite converter settings of `quantization` (passed
    through `model.export`) and `{"examples": n}`, the calibration examples drawn."""
    counter = {"examples": 0}
    if quantization is None:
        if data is not None or max_examples is not None:
            raise ValueError(
                "export_runtime: representative_data is for quantization='full_integer'."
            )
        return {}, counter
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"export_runtime: quantization={quantization!r}; expected None or one of "
            f"{list(QUANTIZATIONS)}."
        )
    if format != "litert":
        raise ValueError(
            f"export_runtime: quantization={quantization!r} is for format='litert' only "
            f"(got {format!r}; Keras' own int8 is `model.quantize('int8')`)."
        )
    if pixels:
        raise ValueError("export_runtime: quantization and pixels=True do not go together.")
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantization == "dynamic_range":
        if data is not None or max_examples is not None:
            raise ValueError(
                "export_runtime: dynamic_range needs no representative_data (weights only); "
                "pass it with quantization='full_integer'."
            )
        return options, counter
    if data is None:
        raise ValueError(
            "export_runtime: quantization='full_integer' needs representative_data (model "
            "inputs to calibrate the activations on, e.g. batches of the training pipeline)."
        )
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"export_runtime: representative_examples={max_examples} must be >= 1.")
    normalization = prep.normalization if prep is not None else "[-1,1]"

    def examples():
        source = data() if callable(data) else data
        for batch in source:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if isinstance(x, dict):
                (x,) = x.values()
            x = np.asarray(normalize_inputs(x, normalization), np.float32)
            if x.ndim == len(shape) + 1:  # multi-view [B, V, ...] -> [B * V, ...]
                x = x.reshape((-1,) + x.shape[2:])
            if x.ndim != len(shape) or list(x.shape[1:]) != list(shape[1:]):
                raise ValueError(
                    f"export_runtime: representative_data yields {list(x.shape)}; the "
                    f"model takes {[-1] + list(shape[1:])}."
                )
            for i in range(len(x)):  # one example at a time: the calibrator's batch is 1
                if max_examples is not None and counter["examples"] >= max_examples:
                    return
                counter["examples"] += 1
                yield [x[i:i + 1]]

    options["representative_dataset"] = examples
    return options, counter


def _quantization_info(path, quantization, calibrated):
    info = {"mode": quantization or "none"}
    if quantization is None:
        return info
    info["weights"] = "int8"
    info["activations"] = "int8" if quantization == "full_integer" else "float32"
    info["input_output"] = "float32"
    if quantization == "full_integer":
        info["representative_examples"] = calibrated["examples"]
        info["float_ops"] = litert_op_report(path)["float_ops"]
    return info


def litert_op_report(path):
    """`{"ops": {name: count}, "float_ops": {name: count}}` of a `.tflite` file: every op,
    and those that compute in float32 (a float32 input or output tensor; `QUANTIZE` /
    `DEQUANTIZE`, which convert between the two, are not counted)."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops, float_ops = {}, {}
    for op in interpreter._get_ops_details():  # no public API lists the ops
        name = op["op_name"]
        ops[name] = ops.get(name, 0) + 1
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        dtypes = [tensors[i]["dtype"] for i in list(op["inputs"]) + list(op["outputs"])
                  if i >= 0 and i in tensors]
        if any(d == np.float32 for d in dtypes):
            float_ops[name] = float_ops.get(name, 0) + 1
    return {"ops": dict(sorted(ops.items())), "float_ops": dict(sorted(float_ops.items()))}


def _export_openvino_pixels(model, path, prep, shape, name):
    """OpenVINO IR of uint8 pixels -> `preprocess` -> `model` -> logits at `path`."""
    import openvino

    def forward(pixels):
        # Resized pixels stay float32: OpenVINO's resize differs from TensorFlow's in the
        # last bit, so a uint8 rounding step would flip single pixel levels at random.
        x = preprocess(pixels, prep, round_to_uint8=False)
        return tf.cast(model(x, training=False), tf.float32)

    fn = tf.function(forward, input_signature=[tf.TensorSpec(shape, tf.uint8, name=name)],
                     autograph=False)
    ov_model = openvino.convert_model(fn.get_concrete_function())
    ov_model.inputs[0].get_tensor().set_names({name})
    openvino.save_model(ov_model, path, compress_to_fp16=False)  # float32 weights as they are


# --------------------------------------------------------------------------------------
# Options from a training run.
# --------------------------------------------------------------------------------------


def serving_options_from_config(config, model=None):
    """`export_saved_model` keyword arguments from a training run's resolved config.

    `config` is the dict of `workdir/config.json` (or `tl_keras.configs.to_dict(cfg)`):
    `data.min_resize` (image default: crop / 0.875), `data.eval_split` (video), the
    multi-label flag (`data.multilabel`, or `train.loss="sigmoid"`) and, for the built-in
    synthetic datasets, their class names. Normalisation is the pipeline's `[-1, 1]` (the
    trainer has no other). With `model`, the config's crop / frame count are checked
    against its input.
    """
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    data = dict(config.get("data") or {})
    train = dict(config.get("train") or {})
    options = {"normalization": "[-1,1]"}
    if data.get("min_resize"):
        options["min_resize"] = int(data["min_resize"])
    if data.get("eval_split") in ("test", "validation"):
        options["eval_split"] = data["eval_split"]
    loss = train.get("loss", "auto")
    multilabel = bool(data.get("multilabel"))
    options["multilabel"] = loss == "sigmoid" or (loss in (None, "auto") and multilabel)
    dataset = data.get("dataset")
    if dataset in ("synthetic_single", "synthetic_multi"):
        options["class_names"] = list(synthetic.class_names(dataset.split("_", 1)[1]))
    if model is not None:
        shape = model_input_shape(model)
        crop = data.get("crop_size")
        if crop and crop != shape[-2]:
            raise ValueError(
                f"export: the config's data.crop_size={crop} differs from the model input "
                f"{shape[1:]}."
            )
        frames = data.get("num_frames")
        if len(shape) == 5 and frames and frames != shape[1]:
            raise ValueError(
                f"export: the config's data.num_frames={frames} differs from the model input "
                f"{shape[1:]}."
            )
        if "min_resize" not in options:
            options["min_resize"] = int(round(shape[-2] / 0.875))
    return options


# --------------------------------------------------------------------------------------
# TF Serving's REST API, locally.
# --------------------------------------------------------------------------------------


def _decode_b64(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise ValueError(
                f"rest_predict: an object in a request must be {{'b64': ...}}, got keys "
                f"{sorted(value)}"
            )
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value.encode() if isinstance(value, str) else value


def _to_array(value, spec):
    if spec.dtype == tf.string:
        return np.array(_decode_b64(value), dtype=object)
    return np.asarray(value, dtype=spec.dtype.as_numpy_dtype)


def _jsonable(array, name):
    array = np.asarray(array)
    if array.dtype == object or array.dtype.kind == "S":
        flat = []
        for v in array.reshape(-1):
            v = v if isinstance(v, bytes) else bytes(v)
            if name.endswith("_bytes"):
                flat.append({"b64": base64.b64encode(v).decode()})
            else:
                flat.append(v.decode("utf-8"))
        return np.array(flat, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def rest_predict(signature, body):
    """A TF Serving REST `:predict` call, run on a loaded signature function.

    Args:
        signature: e.g. `tf.saved_model.load(path).signatures["serving_default"]`.
        body: the request (a JSON string or dict): row format `{"instances": [...]}` (each
            instance a value, or a dict of named inputs) or columnar `{"inputs": ...}`;
            binary strings as `{"b64": "..."}`. `signature_name` is ignored (pick the
            signature yourself).

    Returns:
        The response dict: `{"predictions": [...]}` for row format (one dict of outputs
        per instance), `{"outputs": {...}}` for columnar format, as TF Serving sends it.
    """
    if isinstance(body, (str, bytes)):
        body = json.loads(body)
    _, kwargs_spec = signature.structured_input_signature
    names = sorted(kwargs_spec)
    if ("instances" in body) == ("inputs" in body):
        raise ValueError("rest_predict: the body needs exactly one of 'instances' or 'inputs'.")
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise ValueError("rest_predict: 'instances' must be a non-empty list.")
        named = all(isinstance(i, dict) and not set(i) <= {"b64"} for i in instances)
        if named:
            columns = {n: [i[n] for i in instances] for n in names}
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise ValueError(f"rest_predict: the signature has inputs {names}; name them.")
    else:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and not set(inputs) <= {"b64"}:
            columns = inputs
        elif len(names) == 1:
            columns = {names[0]: inputs}
        else:
            raise ValueError(f"rest_predict: the signature has inputs {names}; name them.")
    unknown = sorted(set(columns) - set(names))
    if unknown:
        raise ValueError(f"rest_predict: unknown input(s) {unknown}; the signature takes {names}.")
    tensors = {n: tf.constant(_to_array(columns[n], kwargs_spec[n])) for n in names}
    outputs = {k: v.numpy() for k, v in signature(**tensors).items()}
    if "inputs" in body:
        if len(outputs) == 1:
            (name, value), = outputs.items()
            return {"outputs": _jsonable(value, name)}
        return {"outputs": {k: _jsonable(v, k) for k, v in outputs.items()}}
    batch = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"predictions": _jsonable(value, name)}
    rows = [{k: _jsonable(v[i], k) for k, v in outputs.items()} for i in range(batch)]
    return {"predictions": rows}


def grpc_predict(loaded, request):
    """A TF Serving gRPC `Predict` call, run on a loaded SavedModel.

    Args:
        loaded: `tf.saved_model.load(path)` (its `signatures` are used).
        request: a `tensorflow_serving.apis.predict_pb2.PredictRequest`, or its serialized
            bytes (what goes over the wire): `model_spec.signature_name` picks the signature
            (empty: `serving_default`), `inputs` holds one `TensorProto` per input of it
            (`tf.make_tensor_proto`), `output_filter` optionally names the outputs wanted.

    Returns:
        The `PredictResponse` TF Serving would send: `model_spec` echoed, one `TensorProto`
        per output (read with `tf.make_ndarray`).
    """
    from tensorflow_serving.apis import predict_pb2

    if isinstance(request, bytes):
        request = predict_pb2.PredictRequest.FromString(request)
    name = request.model_spec.signature_name or "serving_default"
    if name not in loaded.signatures:
        raise ValueError(
            f"grpc_predict: no signature {name!r}; the SavedModel has {sorted(loaded.signatures)}."
        )
    signature = loaded.signatures[name]
    _, kwargs_spec = signature.structured_input_signature
    given, wanted = sorted(request.inputs), sorted(kwargs_spec)
    if given != wanted:
        raise ValueError(f"grpc_predict: {name} takes inputs {wanted}; the request has {given}.")
    tensors = {}
    for key in wanted:
        proto = request.inputs[key]
        if tf.dtypes.as_dtype(proto.dtype) != kwargs_spec[key].dtype:
            raise ValueError(
                f"grpc_predict: input {key!r} of {name} must be "
                f"{kwargs_spec[key].dtype.name}; got {tf.dtypes.as_dtype(proto.dtype).name}."
            )
        tensors[key] = tf.constant(tf.make_ndarray(proto))
    outputs = signature(**tensors)
    keys = list(request.output_filter) or sorted(outputs)
    unknown = sorted(set(keys) - set(outputs))
    if unknown:
        raise ValueError(f"grpc_predict: unknown output(s) {unknown}; {name} has {sorted(outputs)}.")
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.signature_name = name
    for key in keys:
        response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
    return response
