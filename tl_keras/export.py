"""Serving export: a TF Serving SavedModel with pre-processing inside, and a `.keras` archive.

```python
from tl_keras import export
export.export_saved_model(model, "out/saved_model", class_names=names, min_resize=256)
export.save_keras(model, "out/model.keras")
```

The SavedModel is written with `keras.export.ExportArchive` (a plain `tf.saved_model.save`
of a Keras 3 model does not load in the session-based loader TF Serving uses; DESIGN §10).
It has three signatures, for an image model (input `[B, H, W, 3]`) or a video model (input
`[B, T, H, W, 3]`; the kind is read from the model's input):

| signature | input (name: dtype, shape) |
| --- | --- |
| `serving_default` | `images`: float32 `[B, H, W, 3]` / `videos`: float32 `[B, T, H, W, 3]`, pixels in [0, 255] |
| `serve_uint8` | the same, uint8 |
| `serve_encoded` | `encoded_images`: string `[B]` (JPEG or PNG) / `encoded_videos`: string `[B, T]` (JPEG frames) |

Any height and width are accepted; T must be the model's frame count. Inside the graph the
input is checked (rank, channels, frame count, image format, header size), then resized and
cropped exactly as in evaluation (`tl_keras.data`: short side resized to `min_resize`,
centre crop to the model's size, then `normalization`), and classified. Every signature
returns `logits` float32 `[B, K]`, `probabilities` float32 `[B, K]` (softmax, or sigmoid for
a multi-label model), `top_k_indices` int32 `[B, k]` and `top_k_labels` string `[B, k]`
(the class names when given, else the indices as strings), `k = min(top_k, K)`.

The input placeholders have an unknown rank on purpose: TF Serving's C++ session does not
check fed shapes against the placeholder, so every check is made in the graph, with a
message that says what was expected (e.g. `serving_default: expected videos of shape
[batch, 8, height, width, 3] ...; got shape [2 4 32 32 3]`). The expected shapes are also in
`assets.extra/tl_keras_serving.json` beside the model, with the pre-processing and the
class names.

`rest_predict(signature, body)` maps a TF Serving REST body (`{"instances": ...}` or
`{"inputs": ...}`, `{"b64": ...}` for bytes) onto a loaded signature and returns the
response TF Serving would send: a local stand-in to test clients against.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tl_keras.data.parsers import DEFAULT_MAX_FRAME_PIXELS

__all__ = [
    "Preprocessing",
    "preprocessing_for",
    "preprocess",
    "preprocess_encoded",
    "export_saved_model",
    "save_keras",
    "serving_options_from_config",
    "rest_predict",
    "SIGNATURES",
    "SERVING_INFO_FILE",
]

SIGNATURES = ("serving_default", "serve_uint8", "serve_encoded")
SERVING_INFO_FILE = os.path.join("assets.extra", "tl_keras_serving.json")
# The evaluation pipeline's guard against hostile image headers.
MAX_FRAME_PIXELS = DEFAULT_MAX_FRAME_PIXELS

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------
# Pre-processing: the evaluation ops of tl_keras.data, on a batch.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How raw pixels become model input: exactly the evaluation pipeline of `tl_keras.data`.

    Attributes:
        kind: `"image"` (input `[B, H, W, 3]`) or `"video"` (`[B, T, H, W, 3]`).
        crop_size: side of the model input (the centre crop).
        num_frames: T of a video model (None for images).
        min_resize: the shorter side is resized to this before the centre crop (image
            evaluation: `ImageParser`'s `resize_size`; video: `VideoParser`'s `min_resize`).
        normalization: `"[-1,1]"`, `"[0,1]"`, `"imagenet"` or `(mean, std)`, as in the data
            pipeline.
        eval_split: video only: `"test"` (default; `VideoParser(split="test")` with one view:
            resize the whole frame, then centre crop; the same as image evaluation) or
            `"validation"` (`VideoParser(split="validation")`: crop the centre window of
            `crop_size * shorter / min_resize` pixels, then resize it to `crop_size`).
    """

    kind: str
    crop_size: int
    min_resize: int
    num_frames: Optional[int] = None
    normalization: object = "[-1,1]"
    eval_split: str = "test"

    def __post_init__(self):
        from tl_keras.data.parsers import resolve_normalization

        if self.kind not in ("image", "video"):
            raise ValueError(f"Preprocessing: kind={self.kind!r}, expected 'image' or 'video'.")
        for name in ("crop_size", "min_resize"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Preprocessing: {name}={value!r} must be a positive int.")
        if self.crop_size > self.min_resize:
            raise ValueError(
                f"Preprocessing: crop_size={self.crop_size} is larger than min_resize="
                f"{self.min_resize} (the shorter side after resizing); use min_resize >= "
                f"crop_size, as the evaluation pipeline requires."
            )
        if self.kind == "video":
            if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int) or (
                self.num_frames < 1
            ):
                raise ValueError(
                    f"Preprocessing: a video needs num_frames >= 1, got {self.num_frames!r}."
                )
        elif self.num_frames is not None:
            raise ValueError("Preprocessing: num_frames is for video; set it to None for images.")
        if self.eval_split not in ("test", "validation"):
            raise ValueError(
                f"Preprocessing: eval_split={self.eval_split!r}, expected 'test' or 'validation'."
            )
        norm = self.normalization
        if isinstance(norm, list):
            norm = tuple(tuple(v) if isinstance(v, list) else v for v in norm)
            object.__setattr__(self, "normalization", norm)
        resolve_normalization(norm)  # raises ValueError for a bad value

    @property
    def mean_std(self):
        from tl_keras.data.parsers import resolve_normalization

        return resolve_normalization(self.normalization)

    @property
    def input_shape(self):
        """Shape of the model input (without the batch)."""
        c = self.crop_size
        if self.kind == "image":
            return (c, c, 3)
        return (self.num_frames, c, c, 3)

    def to_dict(self):
        return dataclasses.asdict(self)


def _model_input_shape(model):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "export: the model must have exactly one input (images [B, H, W, 3] or videos "
            f"[B, T, H, W, 3]); got {len(inputs or [])} inputs."
        )
    return tuple(inputs[0].shape)


def preprocessing_for(
    model,
    *,
    input_kind=None,
    min_resize=None,
    crop_size=None,
    normalization="[-1,1]",
    eval_split="test",
):
    """The `Preprocessing` of `model`: kind, crop and frame count from its input shape.

    `min_resize` defaults to `round(crop / 0.875)` (the evaluation default: 256 for 224,
    37 for 32); `crop_size`, when given, must equal the model's input side.
    """
    shape = _model_input_shape(model)
    rank = len(shape)
    kind = {4: "image", 5: "video"}.get(rank)
    if kind is None:
        raise ValueError(
            f"export: the model input {shape} is neither images [B, H, W, 3] nor videos "
            "[B, T, H, W, 3]."
        )
    if input_kind is not None and input_kind != kind:
        raise ValueError(
            f"export: input_kind={input_kind!r}, but the model input {shape} is {kind}."
        )
    h, w, channels = shape[-3:]
    if channels != 3 or h is None or w is None:
        raise ValueError(f"export: the model input must be RGB with a fixed size; got {shape}.")
    if h != w:
        raise ValueError(
            f"export: the model input is {h}x{w}; the evaluation pipeline (and this export) "
            "takes square centre crops."
        )
    if crop_size is not None and crop_size != h:
        raise ValueError(
            f"export: crop_size={crop_size} differs from the model's input size {h}; the "
            "serving graph crops to the model's input size."
        )
    num_frames = None
    if kind == "video":
        num_frames = shape[1]
        if num_frames is None:
            raise ValueError(f"export: the video model's frame count must be fixed; got {shape}.")
    if min_resize is None:
        min_resize = int(round(h / 0.875))
    return Preprocessing(
        kind=kind,
        crop_size=int(h),
        min_resize=int(min_resize),
        num_frames=num_frames,
        normalization=normalization,
        eval_split=eval_split,
    )


def _normalize(frames, prep):
    from tl_keras.data import video_ops

    mean, std = prep.mean_std
    return video_ops.normalize(frames, mean, std)


def _resize_and_crop(frames, prep):
    """`[N, H, W, 3]` (N frames of one size) -> float32 `[N, c, c, 3]`, not normalised."""
    from tl_keras.data import video_ops

    c = prep.crop_size
    if prep.kind == "video" and prep.eval_split == "validation":
        # VideoParser(split="validation"): the centre window that becomes the crop after the
        # short-side resize, cut first, then resized to c x c (`_validation_video`,
        # `_resize_to_crop`).
        shape = tf.shape(frames)
        h, w = shape[1], shape[2]
        scale = float(prep.min_resize) / tf.cast(tf.minimum(h, w), tf.float32)
        window = tf.maximum(tf.cast(tf.round(c / scale), tf.int32), 1)
        win_h, win_w = tf.minimum(window, h), tf.minimum(window, w)
        y, x = (h - win_h) // 2, (w - win_w) // 2
        frames = frames[:, y : y + win_h, x : x + win_w, :]
        shape = tf.shape(frames)
        frames = tf.cond(
            tf.logical_and(tf.equal(shape[1], c), tf.equal(shape[2], c)),
            lambda: tf.cast(frames, tf.float32),
            lambda: tf.image.resize(frames, [c, c]),
        )
        return tf.ensure_shape(frames, [None, c, c, 3])
    # ImageParser evaluation and VideoParser(split="test"): resize the shorter side, then
    # the centre crop.
    frames = video_ops.resize_smallest(frames, prep.min_resize)
    return video_ops.center_crop(frames, c)


def preprocess(pixels, prep):
    """Decoded pixels in [0, 255] (uint8 or float) -> the model input, as in evaluation.

    Images `[B, H, W, 3]` -> float32 `[B, c, c, 3]`; videos `[B, T, H, W, 3]` ->
    `[B, T, c, c, 3]`. All examples of a batch share one size (that of the tensor).
    """
    pixels = tf.convert_to_tensor(pixels)
    if prep.kind == "image":
        return _normalize(_resize_and_crop(pixels, prep), prep)
    shape = tf.shape(pixels)
    c, t = prep.crop_size, prep.num_frames
    frames = tf.reshape(pixels, tf.concat([[-1], shape[2:]], 0))  # [B*T, H, W, 3]
    frames = _normalize(_resize_and_crop(frames, prep), prep)
    return tf.reshape(frames, [-1, t, c, c, 3])


def _video_parser(prep):
    from tl_keras.data.parsers import VideoParser

    return VideoParser(
        split=prep.eval_split,
        num_frames=prep.num_frames,
        stride=1,
        crop_size=prep.crop_size,
        min_resize=prep.min_resize,
        num_classes=1,
        normalization=prep.normalization,
    )


def preprocess_encoded(encoded, prep):
    """Encoded input -> the model input, as in evaluation.

    Images: string `[B]` of JPEG/PNG -> `[B, c, c, 3]` (decoded, then `preprocess`).
    Videos: string `[B, T]` of JPEG frames -> `[B, T, c, c, 3]` through the evaluation
    parser itself (`VideoParser.decode_video`, which for `eval_split="validation"` decodes
    only the centre window of each frame).
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    c = prep.crop_size
    if prep.kind == "image":

        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)  # [H, W, 3]
            return preprocess(image[None], prep)[0]

        return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([c, c, 3], tf.float32))
    parser = _video_parser(prep)
    seed = tf.zeros([2], tf.int64)  # evaluation splits draw no random numbers

    def one_video(frames):  # [T] JPEG strings
        shape = tf.image.extract_jpeg_shape(frames[0])
        return parser.decode_video(frames, shape, seed)

    return tf.map_fn(
        one_video,
        encoded,
        fn_output_signature=tf.TensorSpec([prep.num_frames, c, c, 3], tf.float32),
    )


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


def _check_pixels(x, prep, signature, name):
    """Rank, channels, frame count and non-empty frames of decoded input."""
    rank = 4 if prep.kind == "image" else 5
    expected = _expected_shape(prep, encoded=False)
    what = f"{signature}: expected {name} of shape {expected} (pixels in [0, 255])"
    fallback = tf.zeros([1] + list(prep.input_shape), x.dtype)
    x = _require(x, tf.equal(tf.rank(x), rank), fallback, what + "; got shape", tf.shape(x))
    x.set_shape([None] * rank)
    shape = tf.shape(x)
    ok = tf.logical_and(tf.equal(shape[-1], 3), tf.reduce_all(shape[-3:-1] > 0))
    if prep.kind == "video":
        ok = tf.logical_and(ok, tf.equal(shape[1], prep.num_frames))
    x = _require(x, ok, fallback, what + "; got shape", shape)
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


def _check_encoded(x, prep, signature, name):
    """Rank, frame count, image format and header size of encoded input."""
    rank = 1 if prep.kind == "image" else 2
    expected = _expected_shape(prep, encoded=True)
    fmt = "JPEG or PNG bytes" if prep.kind == "image" else "JPEG bytes, one per frame"
    what = f"{signature}: expected {name} of shape {expected}: {fmt}"
    fallback_shape = [1] if prep.kind == "image" else [1, prep.num_frames]
    fallback = tf.fill(fallback_shape, tf.constant(_tiny_jpeg()))
    x = _require(x, tf.equal(tf.rank(x), rank), fallback, what + "; got shape", tf.shape(x))
    x.set_shape([None] * rank)
    if prep.kind == "video":
        shape = tf.shape(x)
        x = _require(
            x, tf.equal(shape[1], prep.num_frames), fallback, what + "; got shape", shape
        )
        x.set_shape([None, prep.num_frames])
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
    x = _require(
        x, tf.reduce_all(valid), fallback,
        f"{what}. Not a {'JPEG or PNG' if prep.kind == 'image' else 'JPEG'}: {where}", bad, hint,
    )
    flat = tf.reshape(x, [-1])
    pixels = tf.map_fn(_header_pixels, flat, fn_output_signature=tf.TensorSpec([], tf.int64))
    too_big = tf.where(pixels > MAX_FRAME_PIXELS)[:, 0]
    x = _require(
        x, tf.equal(tf.size(too_big), 0), fallback,
        f"{signature}: image header(s) claim more than {MAX_FRAME_PIXELS} pixels at flat "
        "index", too_big,
    )
    x.set_shape([None] * rank if prep.kind == "image" else [None, prep.num_frames])
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
        verbose: print Keras' summary of the endpoints.

    Returns:
        `path`.
    """
    import keras

    prep = preprocessing or preprocessing_for(
        model,
        input_kind=input_kind,
        min_resize=min_resize,
        crop_size=crop_size,
        normalization=normalization,
        eval_split=eval_split,
    )
    if prep.input_shape != _model_input_shape(model)[1:]:
        raise ValueError(
            f"export: preprocessing gives {prep.input_shape}, the model takes "
            f"{_model_input_shape(model)[1:]}."
        )
    num_classes = _num_classes(model)
    labels = _check_class_names(class_names, num_classes)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"export: top_k={top_k!r} must be a positive int.")
    k = min(top_k, num_classes)
    multilabel = bool(multilabel)
    name = "images" if prep.kind == "image" else "videos"

    def classify(x):
        return _classify(model, x, multilabel=multilabel, k=k, labels=labels)

    def from_pixels(signature):
        def fn(pixels):
            pixels = _check_pixels(pixels, prep, signature, name)
            return classify(preprocess(pixels, prep))

        return fn

    def from_encoded(encoded):
        encoded = _check_encoded(encoded, prep, "serve_encoded", f"encoded_{name}")
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
        from tl_keras.data import synthetic

        options["class_names"] = list(synthetic.class_names(dataset.split("_", 1)[1]))
    if model is not None:
        shape = _model_input_shape(model)
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
