"""Test images shared by the pre-processing and serving tests: smooth random pixels and
JPEGs whose windowed decode equals the window of the full decode."""

import numpy as np
import tensorflow as tf


def pixels(shape, seed):
    """Smooth random uint8 pixels (JPEG-friendly, yet every position differs)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, shape[:-3] + (4, 4, 3))
    h, w = shape[-3], shape[-2]
    rows = np.linspace(0, 3, h)[:, None]
    cols = np.linspace(0, 3, w)[None, :]
    r0, c0 = np.floor(rows).astype(int).clip(0, 2), np.floor(cols).astype(int).clip(0, 2)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    top = low[..., r0, c0, :] * (1 - fc) + low[..., r0, c0 + 1, :] * fc
    bottom = low[..., r0 + 1, c0, :] * (1 - fc) + low[..., r0 + 1, c0 + 1, :] * fc
    smooth = top * (1 - fr) + bottom * fr
    return np.clip(smooth + rng.normal(0, 6, smooth.shape), 0, 255).astype(np.uint8)


def jpeg(frame):
    """JPEG without chroma subsampling: decoding a window of it gives exactly the pixels of
    that window of the full decode (as the evaluation pipeline's fused crop assumes)."""
    return tf.io.encode_jpeg(frame, quality=95, chroma_downsampling=False).numpy()


def decode(jpeg):
    return tf.io.decode_jpeg(jpeg, channels=3).numpy()
