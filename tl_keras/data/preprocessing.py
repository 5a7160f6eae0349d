"""Evaluation pre-processing of raw pixels, outside `tf.data`: what serving, few-shot
features and token maps feed a model.

```python
from tl_keras import data
prep = data.preprocessing_for(model)                # kind, crop, frames from model.inputs
x = data.preprocess(pixels, prep)                   # [B, H, W, 3] in [0, 255] -> [B, c, c, 3]
x = data.preprocess_encoded(jpegs, prep)            # string [B] / [B, T] -> the same
```

The ops are the evaluation splits' own (`video_ops`, `parsers.py`), applied to a batch:

* images and `VideoParser(split="test")` with one view: the shorter side resized to
  `min_resize` (`video_ops.resize_smallest`), then the centre crop (`video_ops.center_crop`);
* `VideoParser(split="validation")`: the centre window of that crop cut first
  (`video_ops.center_crop_window`), then resized to the crop (`video_ops.resize_to_square`);
* then `video_ops.normalize` with the pipeline's `normalization`.

Videos are resized to uint8, as `video_dataset` does (its parser always delivers uint8
clips and normalises whole batches, `pipeline.py`), so serving sees the training
pipeline's values exactly, rounding included.

Encoded videos go through `VideoParser.decode_video` itself.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

from tl_keras.data import video_ops
from tl_keras.data.parsers import VideoParser, resolve_normalization

__all__ = [
    "normalize_inputs",
    "Preprocessing",
    "preprocessing_for",
    "model_input_shape",
    "preprocess",
    "preprocess_encoded",
]


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
        if isinstance(norm, list):  # from JSON: lists -> the hashable tuples of the pipeline
            norm = tuple(tuple(v) if isinstance(v, list) else v for v in norm)
            object.__setattr__(self, "normalization", norm)
        resolve_normalization(norm)  # raises ValueError for a bad value

    @property
    def mean_std(self):
        """`(mean, std)` for `video_ops.normalize` (`(None, None)`: `[-1, 1]`)."""
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


def model_input_shape(model):
    """The shape of the one input of `model` (anything with `inputs`, e.g. a Keras model),
    batch included: `(None, H, W, 3)` or `(None, T, H, W, 3)`."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            "the model must have exactly one input (images [B, H, W, 3] or videos "
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
    shape = model_input_shape(model)
    kind = {4: "image", 5: "video"}.get(len(shape))
    if kind is None:
        raise ValueError(
            f"preprocessing: the model input {shape} is neither images [B, H, W, 3] nor "
            "videos [B, T, H, W, 3]."
        )
    if input_kind is not None and input_kind != kind:
        raise ValueError(
            f"preprocessing: input_kind={input_kind!r}, but the model input {shape} is {kind}."
        )
    h, w, channels = shape[-3:]
    if channels != 3 or h is None or w is None:
        raise ValueError(
            f"preprocessing: the model input must be RGB with a fixed size; got {shape}."
        )
    if h != w:
        raise ValueError(
            f"preprocessing: the model input is {h}x{w}; the evaluation pipeline takes square "
            "centre crops."
        )
    if crop_size is not None and crop_size != h:
        raise ValueError(
            f"preprocessing: crop_size={crop_size} differs from the model's input size {h}; "
            "the pre-processing crops to the model's input size."
        )
    num_frames = None
    if kind == "video":
        num_frames = shape[1]
        if num_frames is None:
            raise ValueError(
                f"preprocessing: the video model's frame count must be fixed; got {shape}."
            )
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


def normalize_inputs(x, normalization="[-1,1]"):
    """Model input from a pipeline batch: uint8 pixels (`output_dtype="uint8"`) are
    normalised as the pipeline would have (`video_ops.normalize`, same constants, so the
    result equals the float32 pipeline's up to the uint8 rounding of resized pixels);
    float inputs are returned unchanged (already normalised)."""
    if not hasattr(x, "dtype"):
        x = tf.convert_to_tensor(x)
    if tf.as_dtype(x.dtype) != tf.uint8:
        return x
    mean, std = resolve_normalization(normalization)
    # On the device: the plain multiply-add, which XLA fuses (and compiles: it has no
    # `Dequantize` with an axis, the fused host kernel).
    return video_ops.normalize(x, mean, std, fused=False)


def _normalize(frames, prep):
    # Serving batches are small and their graphs are converted to other runtimes
    # (OpenVINO has no Dequantize): the plain cast and multiply-add.
    mean, std = prep.mean_std
    return video_ops.normalize(frames, mean, std, fused=False)


def _resize_and_crop(frames, prep, round_to_uint8=True):
    """`[N, H, W, 3]` (N frames of one size) -> `[N, c, c, 3]`, not normalised: float32
    for images, uint8 for videos (as `video_dataset` delivers them before normalising)
    unless `round_to_uint8=False`."""
    c = prep.crop_size
    dtype = tf.uint8 if prep.kind == "video" and round_to_uint8 else tf.float32
    if prep.kind == "video" and prep.eval_split == "validation":
        # VideoParser(split="validation"): the same centre window, cut from decoded pixels
        # instead of decoded from the JPEG, then resized to c x c.
        shape = tf.shape(frames)
        window = video_ops.center_crop_window(shape[1], shape[2], prep.min_resize, c)
        return video_ops.resize_to_square(video_ops.crop_to_window(frames, window), c, dtype)
    # ImageParser evaluation and VideoParser(split="test"): resize the shorter side, then
    # the centre crop.
    frames = video_ops.resize_smallest(frames, prep.min_resize, dtype=dtype)
    return video_ops.center_crop(frames, c)


def preprocess(pixels, prep, *, round_to_uint8=True):
    """Decoded pixels in [0, 255] (uint8 or float) -> the model input, as in evaluation.

    Images `[B, H, W, 3]` -> float32 `[B, c, c, 3]`; videos `[B, T, H, W, 3]` ->
    `[B, T, c, c, 3]`. All examples of a batch share one size (that of the tensor).
    Resized video pixels are rounded to uint8 as `video_dataset` delivers them;
    `round_to_uint8=False` keeps them in float32 (for graphs run by another runtime, whose
    resize differs from TensorFlow's in the last bit: rounding would then flip single
    pixel levels at random).
    """
    pixels = tf.convert_to_tensor(pixels)
    if prep.kind == "image":
        return _normalize(_resize_and_crop(pixels, prep), prep)
    shape = tf.shape(pixels)
    c, t = prep.crop_size, prep.num_frames
    frames = tf.reshape(pixels, tf.concat([[-1], shape[2:]], 0))  # [B*T, H, W, 3]
    frames = _resize_and_crop(frames, prep, round_to_uint8)  # [B*T, c, c, 3]
    frames = _normalize(frames, prep)
    return tf.reshape(frames, [-1, t, c, c, 3])


def _video_parser(prep):
    """The evaluation parser of `prep` (one clip, one view; labels unused), delivering
    uint8 as in `video_dataset`."""
    return VideoParser(
        split=prep.eval_split,
        num_frames=prep.num_frames,
        stride=1,
        crop_size=prep.crop_size,
        min_resize=prep.min_resize,
        num_classes=1,
        normalization=prep.normalization,
        output_dtype="uint8",
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

    clips = tf.map_fn(
        one_video,
        encoded,
        fn_output_signature=tf.TensorSpec([prep.num_frames, c, c, 3], tf.uint8),
    )
    return _normalize(clips, prep)
