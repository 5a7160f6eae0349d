"""Parsers: a decoded record (see `decoders.py`) -> model inputs, per split (Model Garden style).

A parser never raises on bad data that it can detect without decoding pixels: it returns a
status code instead (`errors.Status`), and the pipeline decides whether to skip or raise. It
decodes only the frames it keeps, and checks each kept JPEG's header against
`max_frame_pixels` (and that all kept frames have one size) before decoding it.

`VideoParser` splits (clip offsets are the reference's, DMVR, see `video_ops`; for `L`
stored frames `M = max(0, L - T * stride)`, and a video shorter than a clip loops):

- `train`: a random clip (`num_frames` frames every `stride`, offset uniform in
  `[0, max(0, L - (T - 1) * stride - 1)]`), scale jitter + random crop, random horizontal
  flip -> `[T, c, c, 3]`;
- `validation`: the middle clip (offset `M // 2`), short side resized to `min_resize`,
  centre crop -> `[T, c, c, 3]`;
- `test`: `num_clips` linearly spaced clips (offsets `linspace(0, M, num_clips)` truncated;
  one clip is the middle clip) x `num_crops` (1 = centre, 3 = along the longer
  side) -> `[V, T, c, c, 3]` with `V = num_crops * num_clips` in **crop-major** order
  (`view = crop * num_clips + clip`), or `[T, c, c, 3]` when `V == 1`;
- `segments`: the whole video as `S` clips that evenly cover it (`video_ops.segment_indices`,
  `S = ceil(frames / (num_frames * stride))`, at least 1), each with the `test` crops ->
  `[S * num_crops, T, c, c, 3]` (crop-major: `view = crop * S + segment`), `S` dynamic
  (paper A.3: Charades is evaluated on 64-frame segments whose outputs are merged).

Resized pixels are rounded to uint8; frames are then normalised to float32, `[-1, 1]` by
default (`normalization`), or with `output_dtype="uint8"` delivered as those uint8 pixels in
`[0, 255]`: a quarter of the
bytes through `tf.data`'s buffers and the host-to-device copy, normalised by the consumer
(the trainer applies `normalization` on the device, `tl_keras.data.normalize_inputs`).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tl_keras.data import video_ops
from tl_keras.data.errors import Status

__all__ = ["VideoParser", "ImageParser", "DEFAULT_MAX_FRAME_PIXELS", "resolve_normalization"]

# 8192 x 8192: far above any real video / ImageNet frame, far below a hostile header (65535^2).
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192

SPLITS = ("train", "validation", "test", "segments")
OUTPUT_DTYPES = ("float32", "uint8")


def resolve_normalization(normalization):
    """`"[-1,1]"`, `"[0,1]"`, `"imagenet"` or `(mean, std)` -> `(mean, std)` for `normalize`."""
    if normalization in ("[-1,1]", "[-1, 1]", None):
        return None, None
    if normalization in ("[0,1]", "[0, 1]"):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if normalization == "imagenet":
        return video_ops.IMAGENET_MEAN, video_ops.IMAGENET_STD
    if isinstance(normalization, (tuple, list)) and len(normalization) == 2:
        mean, std = normalization
        return tuple(float(m) for m in mean), tuple(float(s) for s in std)
    raise ValueError(
        f"normalization={normalization!r}: expected '[-1,1]', '[0,1]', 'imagenet' or a "
        "(mean, std) pair of 3-tuples"
    )


def _labels_to_target(labels, num_classes: int, multilabel: bool):
    """int64 `[L]` -> float32 `[K]`: multi-hot, or one-hot of the first label."""
    if not multilabel:
        labels = labels[:1]
    hot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)  # [L, K]
    return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)  # [K]; all-zero if L == 0


def _check_labels(labels, num_classes: int):
    """Status for label indices (already offset): missing, out of range, or OK."""
    out_of_range = tf.reduce_any(tf.logical_or(labels < 0, labels >= num_classes))
    return tf.where(
        tf.equal(tf.size(labels), 0),
        Status.MISSING_LABEL,
        tf.where(out_of_range, Status.LABEL_OUT_OF_RANGE, Status.OK),
    )


def _crop_window(height, width, window, y, x):
    return tf.stack([y, x, tf.minimum(window, height), tf.minimum(window, width)])


class VideoParser:
    """Turns `VideoDecoder` output into `(video, label, status)` for one split."""

    def __init__(
        self,
        *,
        split: str,
        num_frames: int,
        stride: int,
        crop_size: int,
        min_resize: int,
        num_classes: int,
        multilabel: bool = False,
        num_clips: int = 1,
        num_crops: int = 1,
        label_offset: int = 0,
        scale_jitter: Sequence[float] | None = (0.9, 1.33),
        flip: bool = True,
        normalization="[-1,1]",
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        output_dtype: str = "float32",
    ):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {SPLITS}")
        if output_dtype not in OUTPUT_DTYPES:
            raise ValueError(
                f"output_dtype={output_dtype!r}: expected one of {OUTPUT_DTYPES} ('uint8': "
                "pixels in [0, 255], normalised by the consumer, see `normalization`)"
            )
        for name, value in (
            ("num_frames", num_frames),
            ("stride", stride),
            ("crop_size", crop_size),
            ("min_resize", min_resize),
            ("num_classes", num_classes),
            ("num_clips", num_clips),
            ("max_frame_pixels", max_frame_pixels),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: expected a positive integer")
        if crop_size > min_resize:
            raise ValueError(
                f"crop_size={crop_size} is larger than the resized frame: min_resize={min_resize} "
                "(the shorter side after resizing); use crop_size <= min_resize"
            )
        if num_crops not in (1, 3):
            raise ValueError(
                f"num_crops={num_crops!r}: expected 1 (centre) or 3 (along the longer side)"
            )
        if split in ("train", "validation") and (num_clips != 1 or num_crops != 1):
            raise ValueError(
                f"num_clips={num_clips}, num_crops={num_crops}: multi-view sampling is only for "
                f"split='test' or 'segments' (got split={split!r})"
            )
        if split == "segments" and num_clips != 1:
            raise ValueError(
                f"num_clips={num_clips}: split='segments' takes as many clips as cover each "
                "video; use num_clips=1"
            )
        if scale_jitter is not None:
            lo, hi = scale_jitter
            if not 0 < lo <= hi:
                raise ValueError(
                    f"scale_jitter={scale_jitter!r}: expected (low, high) with 0 < low <= high"
                )
        self.split = split
        self.num_frames = num_frames
        self.stride = stride
        self.crop_size = crop_size
        self.min_resize = min_resize
        self.num_classes = num_classes
        self.multilabel = multilabel
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.label_offset = int(label_offset)
        self.scale_jitter = tuple(scale_jitter) if scale_jitter is not None else None
        self.flip = flip
        self.normalization = normalization
        self.mean, self.std = resolve_normalization(normalization)
        self.max_frame_pixels = int(max_frame_pixels)
        self.output_dtype = output_dtype
        self._dtype = tf.as_dtype(output_dtype)
        # Resized pixels are rounded to uint8 in both output dtypes, so the float32 output
        # is exactly `normalize` of the uint8 one (and of what serving computes,
        # `preprocessing.py`): the two settings train on the same values.
        self._resize_dtype = tf.uint8

    @property
    def num_views(self) -> int | None:
        """Views per video; None for `segments` (it depends on the video's length)."""
        if self.split == "segments":
            return None
        return self.num_clips * self.num_crops

    @property
    def video_shape(self) -> list:
        """Static shape of one parsed video (`segments`: `[None, T, c, c, 3]`)."""
        shape = [self.num_frames, self.crop_size, self.crop_size, 3]
        if self.split == "segments":
            return [None] + shape
        return [self.num_views] + shape if self.num_views > 1 else shape

    # -- pieces ------------------------------------------------------------------------------

    def labels(self, decoded):
        """Label indices after subtracting `label_offset`: int64 `[L]`."""
        return decoded["labels"] - self.label_offset

    def validate(self, decoded):
        """int32 status from checks that need no pixel decoding."""
        return tf.where(
            tf.equal(tf.size(decoded["frames"]), 0),
            Status.NO_FRAMES,
            _check_labels(self.labels(decoded), self.num_classes),
        )

    def target(self, decoded):
        """float32 `[K]` one-hot (first label) or multi-hot (`multilabel=True`)."""
        return _labels_to_target(self.labels(decoded), self.num_classes, self.multilabel)

    def sample_indices(self, num_total, seed):
        """Frame indices to decode: `[T]`, or `[C * T]` (clip-major) for `test` (C =
        `num_clips`) and `segments` (C = the video's segment count)."""
        if self.split == "train":
            return video_ops.random_clip_indices(num_total, self.num_frames, self.stride, seed)
        if self.split == "validation":
            return video_ops.middle_clip_indices(num_total, self.num_frames, self.stride)
        if self.split == "segments":
            idx = video_ops.segment_indices(num_total, self.num_frames, self.stride)
            return tf.reshape(idx, [-1])  # [S * T]
        idx = video_ops.linspace_clip_indices(
            num_total, self.num_frames, self.stride, self.num_clips
        )
        return tf.reshape(idx, [-1])  # [C * T]

    def _train_video(self, encoded, shape, seed):
        """Scale jitter + random crop fused into `decode_and_crop_jpeg`: `[T, c, c, 3]`."""
        seed_scale, seed_y, seed_x, seed_flip = tf.unstack(
            tf.random.experimental.stateless_split(seed, 4)
        )
        h, w = shape[0], shape[1]
        c = float(self.crop_size)
        target = tf.constant(float(self.min_resize))
        if self.scale_jitter is not None:
            lo, hi = self.scale_jitter
            target = target * tf.random.stateless_uniform([], seed=seed_scale, minval=lo, maxval=hi)
        target = tf.maximum(tf.round(target), c)  # shorter side after the (virtual) resize
        # A c x c crop of the resized frame is a (c / scale)^2 window of the original frame.
        win_h, win_w = video_ops.resized_crop_window_size(h, w, target, self.crop_size)
        y = tf.random.stateless_uniform(
            [], seed=seed_y, minval=0, maxval=h - win_h + 1, dtype=tf.int32
        )
        x = tf.random.stateless_uniform(
            [], seed=seed_x, minval=0, maxval=w - win_w + 1, dtype=tf.int32
        )
        frames = video_ops.decode_and_crop_jpeg_frames(encoded, tf.stack([y, x, win_h, win_w]))
        if self.flip:  # on uint8, before the resize: 4x less memory to move than float32
            frames = video_ops.random_flip_left_right(frames, seed_flip)
        return video_ops.resize_to_square(frames, self.crop_size, self._resize_dtype)  # [T, c, c, 3]

    def _validation_video(self, encoded, shape):
        """Resize short side to `min_resize` + centre crop, fused: `[T, c, c, 3]`.

        Only the centre window (`video_ops.center_crop_window`) is decoded, then resized to
        the crop; the serving pre-processing (`preprocessing.py`) crops decoded pixels with
        the same window.
        """
        window = video_ops.center_crop_window(shape[0], shape[1], self.min_resize, self.crop_size)
        frames = video_ops.decode_and_crop_jpeg_frames(encoded, window)
        return video_ops.resize_to_square(frames, self.crop_size, self._resize_dtype)

    def _test_video(self, encoded, shape):
        """All views: `[V, T, c, c, 3]` crop-major, or `[T, c, c, 3]` for one view
        (`segments`: always `[S * num_crops, T, c, c, 3]`).

        Each kept frame is decoded once for all its crops. One crop: the whole frame is
        resized and centre-cropped (the reference's test view, and the serving
        pre-processing's `eval_split="test"`). Three crops: only the band they cover
        together (`three_crop_band`: the whole longer side) is decoded and resized, then
        cropped three times; the rows (columns) no crop uses are never decoded.
        """
        c, t = self.crop_size, self.num_frames
        if self.num_crops == 1:
            frames = video_ops.decode_jpeg_frames(encoded)  # [C*T, H, W, 3]
            frames = video_ops.resize_smallest(frames, self.min_resize, dtype=self._resize_dtype)
            views = video_ops.center_crop(frames, c)[None]  # [1, C*T, c, c, 3]
        else:
            window, size = video_ops.three_crop_band(shape[0], shape[1], self.min_resize, c)
            frames = video_ops.decode_and_crop_jpeg_frames(encoded, window)  # [C*T, h, w, 3]
            frames = video_ops.resize_to(frames, size, self._resize_dtype)  # [C*T, c, W', 3] or [.., H', c, 3]
            views = video_ops.three_crops(frames, c)  # [3, C*T, c, c, 3]
        views = tf.reshape(views, [-1, t, c, c, 3])  # crop-major: [crop, clip] -> view
        if self.split == "segments":
            return views
        return views if self.num_views > 1 else views[0]

    def decode_video(self, encoded, shape, seed):
        """Encoded kept frames -> video of `video_shape`: normalised float32, or uint8
        pixels (`output_dtype="uint8"`)."""
        if self.split == "train":
            video = self._train_video(encoded, shape, seed)
        elif self.split == "validation":
            video = self._validation_video(encoded, shape)
        else:
            video = self._test_video(encoded, shape)
        if self._dtype == tf.float32:
            video = video_ops.normalize(video, self.mean, self.std)
        return tf.ensure_shape(video, self.video_shape)

    # -- whole example -----------------------------------------------------------------------

    def parse(self, decoded, seed, status=Status.OK):
        """Decoded dict + seed `[2]` -> `{"video", "label", "status"}`.

        Decodes pixels only if `status` and the cheap checks are OK and the kept frames'
        headers are within `max_frame_pixels` and all give the same height and width (else
        `MIXED_FRAME_SIZES`: one crop window is computed for the whole clip; a video whose
        size changes only outside the sampled frames is not affected). May raise
        `InvalidArgumentError` for a JPEG that cannot be decoded (the pipeline catches that
        per example).
        """
        status = tf.where(tf.equal(status, Status.OK), self.validate(decoded), status)
        seed_sample, seed_video = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        blank = self._blank_video

        def decode():
            frames = decoded["frames"]
            encoded = tf.gather(frames, self.sample_indices(tf.size(frames), seed_sample))
            shapes = tf.cast(video_ops.jpeg_frame_shapes(encoded), tf.int64)  # [T, 3]
            too_big = tf.reduce_any(shapes[:, 0] * shapes[:, 1] > self.max_frame_pixels)
            # One crop window serves every frame, so the kept frames must share one size
            # (from the headers already read: no extra per-frame work).
            mixed = tf.reduce_any(tf.not_equal(shapes[:, :2], shapes[:1, :2]))
            status = tf.where(mixed, Status.MIXED_FRAME_SIZES, Status.OK)
            status = tf.where(too_big, Status.TOO_MANY_PIXELS, status)
            video = tf.cond(
                tf.equal(status, Status.OK),
                lambda: self.decode_video(encoded, tf.cast(shapes[0], tf.int32), seed_video),
                blank,
            )
            return video, status

        video, status = tf.cond(tf.equal(status, Status.OK), decode, lambda: (blank(), status))
        return {
            "video": tf.ensure_shape(video, self.video_shape),
            "label": self.target(decoded),
            "status": status,
        }

    def _blank_video(self):
        """Zeros of `video_shape` (one view for `segments`); bad examples are dropped later."""
        return tf.zeros([d or 1 for d in self.video_shape], self._dtype)

    def blank(self, status):
        """Output of `parse` for an example that failed before parsing."""
        return {
            "video": self._blank_video(),
            "label": tf.zeros([self.num_classes], tf.float32),
            "status": tf.cast(status, tf.int32),
        }


class ImageParser:
    """Turns `ImageDecoder` output into `(image, label, status)`.

    `train`: Inception crop (area 8-100 %, aspect 3/4-4/3) decoded with
    `decode_and_crop_jpeg`, resized to `image_size`, random flip. Eval (`validation`/`test`):
    resize the shorter side to `resize_size` (default `image_size / 0.875`), centre crop.
    """

    def __init__(
        self,
        *,
        split: str,
        image_size: int,
        num_classes: int,
        resize_size: int | None = None,
        label_offset: int = 0,
        normalization="[-1,1]",
        max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        flip: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"split={split!r}: expected one of {SPLITS}")
        if resize_size is None:
            resize_size = int(round(image_size / 0.875))
        if image_size > resize_size:
            raise ValueError(
                f"image_size={image_size} is larger than resize_size={resize_size} "
                "(the shorter side after resizing)"
            )
        self.split = split
        self.image_size = int(image_size)
        self.resize_size = int(resize_size)
        self.num_classes = int(num_classes)
        self.label_offset = int(label_offset)
        self.mean, self.std = resolve_normalization(normalization)
        self.max_frame_pixels = int(max_frame_pixels)
        self.area_range = tuple(area_range)
        self.aspect_ratio_range = tuple(aspect_ratio_range)
        self.flip = flip

    @property
    def image_shape(self) -> list[int]:
        return [self.image_size, self.image_size, 3]

    def labels(self, decoded):
        return decoded["labels"] - self.label_offset

    def validate(self, decoded):
        return tf.where(
            tf.equal(tf.strings.length(decoded["image"]), 0),
            Status.NO_FRAMES,
            _check_labels(self.labels(decoded), self.num_classes),
        )

    def _train_image(self, encoded, shape, seed):
        seed_box, seed_flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape,
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed_box,
            min_object_covered=0.1,
            aspect_ratio_range=self.aspect_ratio_range,
            area_range=self.area_range,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        window = tf.stack([begin[0], begin[1], size[0], size[1]])
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)  # [h, w, 3]
        image = tf.image.resize(tf.cast(image, tf.float32), [self.image_size] * 2)
        if self.flip:
            image = video_ops.random_flip_left_right(image[None], seed_flip)[0]
        return image

    def _eval_image(self, encoded):
        image = tf.io.decode_jpeg(encoded, channels=3)[None]  # [1, H, W, 3]
        image = video_ops.resize_smallest(image, self.resize_size)
        return video_ops.center_crop(image, self.image_size)[0]  # [S, S, 3]

    def parse(self, decoded, seed, status=Status.OK):
        """Decoded dict + seed `[2]` -> `{"image", "label", "status"}` (see `VideoParser.parse`)."""
        status = tf.where(tf.equal(status, Status.OK), self.validate(decoded), status)
        blank = lambda: tf.zeros(self.image_shape, tf.float32)  # noqa: E731

        def decode():
            encoded = decoded["image"]
            shape = tf.image.extract_jpeg_shape(encoded)  # [3], header only
            too_big = (
                tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64) > self.max_frame_pixels
            )

            def pixels():
                if self.split == "train":
                    image = self._train_image(encoded, shape, seed)
                else:
                    image = self._eval_image(encoded)
                return video_ops.normalize(image, self.mean, self.std)

            image = tf.cond(too_big, blank, pixels)
            return image, tf.where(too_big, Status.TOO_MANY_PIXELS, Status.OK)

        image, status = tf.cond(tf.equal(status, Status.OK), decode, lambda: (blank(), status))
        labels = self.labels(decoded)
        return {
            "image": tf.ensure_shape(image, self.image_shape),
            "label": _labels_to_target(labels, self.num_classes, multilabel=False),
            "status": status,
        }

    def blank(self, status):
        return {
            "image": tf.zeros(self.image_shape, tf.float32),
            "label": tf.zeros([self.num_classes], tf.float32),
            "status": tf.cast(status, tf.int32),
        }
