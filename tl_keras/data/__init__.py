"""tl_keras.data: video and image input pipelines, the evaluation pre-processing of raw
pixels (`preprocessing`: what serving and the tools feed a model), the TFRecord writer, a
built-in dataset.

TensorFlow only (`tf.data`, `tf.io`, `tf.image`); knows nothing of models or the trainer
(`preprocessing_for(model)` reads only the shape of `model.inputs`).

>>> from tl_keras import data
>>> info = data.synthetic.make_dataset("single")
>>> ds = data.video_dataset(info.train_pattern, **info.dataset_kwargs("train"), batch_size=8)
>>> ds = data.video_dataset("gs://b/k400/train@1024", dataset="kinetics400", batch_size=64)
>>> x = data.preprocess(pixels, data.preprocessing_for(model))  # [B, H, W, 3] -> model input
"""

from tl_keras.data import preprocessing, synthetic, video_ops, writer
from tl_keras.data.datasets import DatasetInfo, get_dataset_info, list_datasets, register_dataset
from tl_keras.data.decoders import ImageDecoder, VideoDecoder
from tl_keras.data.errors import ErrorCounter, Status
from tl_keras.data.parsers import DEFAULT_MAX_FRAME_PIXELS, ImageParser, VideoParser
from tl_keras.data.pipeline import (
    expand_file_pattern,
    image_dataset,
    shard_filenames,
    video_dataset,
)
from tl_keras.data.preprocessing import (
    Preprocessing,
    normalize_inputs,
    preprocess,
    preprocess_encoded,
    preprocessing_for,
)
from tl_keras.data.synthetic import SyntheticInfo

__all__ = [
    "video_dataset",
    "image_dataset",
    "expand_file_pattern",
    "shard_filenames",
    "DatasetInfo",
    "get_dataset_info",
    "list_datasets",
    "register_dataset",
    "VideoDecoder",
    "ImageDecoder",
    "VideoParser",
    "ImageParser",
    "DEFAULT_MAX_FRAME_PIXELS",
    "ErrorCounter",
    "Status",
    "Preprocessing",
    "normalize_inputs",
    "preprocessing_for",
    "preprocess",
    "preprocess_encoded",
    "preprocessing",
    "synthetic",
    "SyntheticInfo",
    "video_ops",
    "writer",
]
