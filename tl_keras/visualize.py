"""What the tokens attend to: TokenLearner attention maps and heat-map grids (paper Fig. 10).

```python
from tl_keras import visualize
maps = visualize.token_maps(model, videos)        # {layer path: [B, T, S, h, w]}
visualize.write_token_maps(model, videos, "maps.png")
```

`token_maps` works for any Keras model that contains `TokenLearner` (v1.1, softmax maps)
or `TokenLearnerV1` (sigmoid maps) layers, at any depth (ViT, ViViT, the X(2+1)D bottleneck
module, your own models): it runs the model once, records the input each TokenLearner layer
receives, and returns that layer's own `attention_maps` of it, reshaped per frame and per
token onto the layer's spatial grid.

The drawing needs no plotting library: numpy paints the grid (rows = tokens, columns =
frames, the input frames on top, each map over its frame) and a small built-in PNG writer
saves it. It does not depend on the Keras backend.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import zlib
from typing import Optional, Sequence

import numpy as np
from keras import ops

from tl_keras.layers import TokenLearner, TokenLearnerV1

__all__ = [
    "tokenlearner_layers",
    "token_maps",
    "draw_token_maps",
    "write_token_maps",
    "write_png",
]

log = logging.getLogger("tl_keras.visualize")


# --------------------------------------------------------------------------------------
# Maps.
# --------------------------------------------------------------------------------------


# The layers whose `attention_maps` are drawn.
_MAP_LAYERS = (TokenLearner, TokenLearnerV1)


def tokenlearner_layers(model):
    """`[(path, layer)]` of every TokenLearner / TokenLearnerV1 inside `model`, in model
    order, at any nesting depth (path: e.g. `tokenlearner_0`,
    `res5_unit0/module_b/tokenlearner/token_learner`)."""
    if isinstance(model, _MAP_LAYERS):
        return [(model.name, model)]
    found = []
    for layer in _all_layers(model):
        if isinstance(layer, _MAP_LAYERS):
            found.append((getattr(layer, "path", None) or layer.name, layer))
    return found


def _all_layers(model):
    """Every layer inside `model`, depth first, each once."""
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=True))
    seen, out = set(), []

    def visit(layer):
        for child in getattr(layer, "_layers", None) or getattr(layer, "layers", []):
            if id(child) not in seen:
                seen.add(id(child))
                out.append(child)
                visit(child)

    visit(model)
    return out


@contextlib.contextmanager
def _recording(layers):
    """Records the first positional input of every call of each layer."""
    records = {id(layer): [] for layer in layers}
    for layer in layers:
        original = layer.call

        def call(inputs, *args, _original=original, _store=records[id(layer)], **kwargs):
            _store.append(inputs)
            return _original(inputs, *args, **kwargs)

        object.__setattr__(layer, "call", call)  # an instance attribute; Keras calls self.call
    try:
        yield records
    finally:
        for layer in layers:
            if "call" in layer.__dict__:
                object.__delattr__(layer, "call")


def _flat_grid(n, layer, model):
    """(h, w) of `n` flattened positions."""
    spatial = getattr(layer, "spatial_shape", None)
    if spatial is not None and spatial[0] * spatial[1] == n:
        return tuple(spatial)
    grid = getattr(getattr(model, "resolved", None), "grid", None)
    if grid is not None and grid[0] * grid[1] == n:
        return tuple(grid)
    side = int(round(math.sqrt(n)))
    if side * side == n:
        return (side, side)
    return (1, n)


def _layout(shape, layer, model):
    """(frames, (h, w)) of a TokenLearner input shape."""
    rank = len(shape)
    if rank == 5:  # [B, T, H, W, C]
        return shape[1], (shape[2], shape[3])
    if rank == 4 and getattr(layer, "temporal", False):  # [B, T, N, C]
        return shape[1], _flat_grid(shape[2], layer, model)
    if rank == 4:  # [B, H, W, C]
        return 1, (shape[1], shape[2])
    if rank == 3:  # [B, N, C]
        return 1, _flat_grid(shape[1], layer, model)
    raise ValueError(f"token_maps: unexpected TokenLearner input shape {shape}.")


def token_maps(model, inputs, *, layers: Optional[Sequence[str]] = None):
    """The TokenLearner attention maps of `model` on `inputs`.

    Args:
        model: a Keras model containing TokenLearner / TokenLearnerV1 layers.
        inputs: one batch of model input (images `[B, H, W, 3]` or videos
            `[B, T, H, W, 3]`, already pre-processed as the model expects).
        layers: keep only these layer paths (default: all, see `tokenlearner_layers`).

    Returns:
        `{path: maps}` with `maps` float32 `[B, T', S, h, w]`: for each example, token
        frame (T' = 1 for images; for ViViT the T/t tubelet frames), token and position of
        the layer's grid. These are the layer's own `attention_maps` of the input it
        received: softmax maps (sum to 1 over the h x w positions) for `TokenLearner`,
        sigmoid maps for `TokenLearnerV1`. A layer called twice gives `path`, `path:1`.
        Raises ValueError when the model has no TokenLearner.
    """
    found = tokenlearner_layers(model)
    if layers is not None:
        wanted = set(layers)
        unknown = wanted - {p for p, _ in found}
        if unknown:
            raise ValueError(
                f"token_maps: no TokenLearner layer {sorted(unknown)} in the model; it has "
                f"{[p for p, _ in found]}."
            )
        found = [(p, l) for p, l in found if p in wanted]
    if not found:
        raise ValueError(
            f"token_maps: the model {getattr(model, 'name', model)!r} has no TokenLearner "
            "or TokenLearnerV1 layer."
        )
    unique = list({id(l): l for _, l in found}.values())
    with _recording(unique) as records:
        model(inputs, training=False)
    out = {}
    for path, layer in found:
        for i, x in enumerate(records[id(layer)]):
            shape = tuple(int(d) for d in ops.shape(x))
            frames, (h, w) = _layout(shape, layer, model)
            maps = layer.attention_maps(x, training=False)  # [B*T', S, N]
            maps = ops.convert_to_numpy(ops.cast(maps, "float32"))
            s = maps.shape[1]
            maps = maps.reshape(shape[0], frames, s, h, w)
            out[path if i == 0 else f"{path}:{i}"] = maps
    return out


# --------------------------------------------------------------------------------------
# Drawing.
# --------------------------------------------------------------------------------------

# A 3x5 pixel font for the labels (upper case, digits and a little punctuation).
_GLYPHS = {
    "A": "###|#.#|###|#.#|#.#", "B": "##.|#.#|##.|#.#|##.", "C": "###|#..|#..|#..|###",
    "D": "##.|#.#|#.#|#.#|##.", "E": "###|#..|##.|#..|###", "F": "###|#..|##.|#..|#..",
    "G": "###|#..|#.#|#.#|###", "H": "#.#|#.#|###|#.#|#.#", "I": "###|.#.|.#.|.#.|###",
    "J": "..#|..#|..#|#.#|###", "K": "#.#|#.#|##.|#.#|#.#", "L": "#..|#..|#..|#..|###",
    "M": "#.#|###|###|#.#|#.#", "N": "##.|#.#|#.#|#.#|#.#", "O": "###|#.#|#.#|#.#|###",
    "P": "###|#.#|###|#..|#..", "Q": "###|#.#|#.#|###|..#", "R": "##.|#.#|##.|#.#|#.#",
    "S": "###|#..|###|..#|###", "T": "###|.#.|.#.|.#.|.#.", "U": "#.#|#.#|#.#|#.#|###",
    "V": "#.#|#.#|#.#|#.#|.#.", "W": "#.#|#.#|###|###|#.#", "X": "#.#|#.#|.#.|#.#|#.#",
    "Y": "#.#|#.#|.#.|.#.|.#.", "Z": "###|..#|.#.|#..|###",
    "0": "###|#.#|#.#|#.#|###", "1": ".#.|##.|.#.|.#.|###", "2": "###|..#|###|#..|###",
    "3": "###|..#|.##|..#|###", "4": "#.#|#.#|###|..#|..#", "5": "###|#..|###|..#|###",
    "6": "###|#..|###|#.#|###", "7": "###|..#|..#|.#.|.#.", "8": "###|#.#|###|#.#|###",
    "9": "###|#.#|###|..#|###", "_": "...|...|...|...|###", "-": "...|...|###|...|...",
    ".": "...|...|...|...|.#.", ":": "...|.#.|...|.#.|...", "/": "..#|..#|.#.|#..|#..",
    "(": ".#.|#..|#..|#..|.#.", ")": ".#.|..#|..#|..#|.#.", " ": "...|...|...|...|...",
}
_GLYPH_CACHE = {}


def _glyph(ch):
    ch = ch.upper() if ch.upper() in _GLYPHS else " "
    if ch not in _GLYPH_CACHE:
        rows = _GLYPHS[ch].split("|")
        _GLYPH_CACHE[ch] = np.array([[c == "#" for c in r] for r in rows], bool)
    return _GLYPH_CACHE[ch]


def _text_size(text, scale):
    return 5 * scale, max(len(text) * 4 * scale - scale, 0)


def _draw_text(canvas, text, y, x, scale=2, color=(20, 20, 20)):
    """Paints `text` with its top-left corner at (y, x); clipped at the canvas edge."""
    for i, ch in enumerate(text):
        mask = np.kron(_glyph(ch), np.ones((scale, scale), bool))
        x0 = x + i * 4 * scale
        h = min(mask.shape[0], canvas.shape[0] - y)
        w = min(mask.shape[1], canvas.shape[1] - x0)
        if h <= 0 or w <= 0:
            break
        region = canvas[y : y + h, x0 : x0 + w]
        region[mask[:h, :w]] = color


# "inferno"-like colour map: dark purple -> red -> yellow.
_CMAP_POS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_CMAP_RGB = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32
)


def _colormap(values):
    """`[...]` in [0, 1] -> uint8 `[..., 3]`."""
    v = np.clip(values, 0.0, 1.0)
    rgb = [np.interp(v, _CMAP_POS, _CMAP_RGB[:, c]) for c in range(3)]
    return np.stack(rgb, -1)


def _display_frames(frames):
    """Any-range frames `[T, H, W, 3]` -> uint8 (min-max over the clip)."""
    frames = np.asarray(frames, np.float32)
    lo, hi = float(frames.min()), float(frames.max())
    if hi - lo < 1e-8:
        return np.zeros(frames.shape, np.uint8)
    return np.round((frames - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _resize_nearest(image, height, width):
    rows = (np.arange(height) * image.shape[0]) // height
    cols = (np.arange(width) * image.shape[1]) // width
    return image[rows][:, cols]


def _pick(n, limit):
    if limit is None or n <= limit:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, limit)})


def draw_token_maps(
    frames,
    maps,
    *,
    max_tokens: Optional[int] = 8,
    max_frames: Optional[int] = 8,
    cell: Optional[int] = None,
    alpha: float = 0.6,
    normalize: str = "per_map",
    title: Optional[str] = None,
):
    """One grid of heat maps over the frames: uint8 RGB `[H, W, 3]`.

    Args:
        frames: the example's input, `[T, H, W, 3]` (video) or `[H, W, 3]` (image), any
            value range (shown min-max scaled).
        maps: its maps `[T', S, h, w]` (one example of `token_maps`); token frame k is
            drawn over input frame `k * T // T'`.
        max_tokens, max_frames: rows / columns shown (evenly spaced when there are more).
        cell: side of a drawn frame in pixels (default: the frame scaled to >= 96 px).
        alpha: weight of the heat map over the (grey) frame.
        normalize: `"per_map"` (each map scaled to its maximum, default) or `"none"`
            (values drawn as they are, clipped to [0, 1]; for sigmoid maps).
        title: a line of text above the grid.

    Layout: row 0 the input frames, then one row per token; one column per token frame.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 3:
        maps = maps[None]
    if frames.ndim != 4 or maps.ndim != 4:
        raise ValueError(
            f"draw_token_maps: expected frames [T, H, W, 3] and maps [T', S, h, w]; got "
            f"{frames.shape} and {maps.shape}."
        )
    if normalize not in ("per_map", "none"):
        raise ValueError(f"draw_token_maps: normalize={normalize!r}, expected 'per_map' or 'none'.")
    num_frames, num_tokens = maps.shape[0], maps.shape[1]
    display = _display_frames(frames)
    fh, fw = display.shape[1:3]
    if cell is None:
        scale = max(1, int(math.ceil(96 / max(fh, fw))))
        ch, cw = fh * scale, fw * scale
    else:
        ch = cw = int(cell)
    columns = _pick(num_frames, max_frames)
    rows = _pick(num_tokens, max_tokens)
    text = 2
    gap = 4
    label_w = _text_size("TOKEN 000", text)[1] + 2 * gap
    head_h = _text_size("X", text)[0] + 2 * gap
    title_h = head_h if title else 0
    height = title_h + head_h + (len(rows) + 1) * (ch + gap) + gap
    width = label_w + len(columns) * (cw + gap) + gap
    width = max(width, _text_size(title or "", text)[1] + 2 * gap)
    canvas = np.full((height, width, 3), 255, np.uint8)
    if title:
        _draw_text(canvas, title, gap, gap, text)
    top = title_h + head_h
    for j, k in enumerate(columns):
        x = label_w + j * (cw + gap)
        _draw_text(canvas, f"F{k}", title_h + gap, x, text)
        index = min(k * frames.shape[0] // num_frames, frames.shape[0] - 1)
        frame = _resize_nearest(display[index], ch, cw)
        canvas[top : top + ch, x : x + cw] = frame
        grey = frame.astype(np.float32).mean(-1, keepdims=True)
        for i, s in enumerate(rows):
            y = top + (i + 1) * (ch + gap)
            m = maps[k, s]
            if normalize == "per_map":
                peak = float(m.max())
                m = m / peak if peak > 0 else m
            heat = _colormap(_resize_nearest(m, ch, cw))
            canvas[y : y + ch, x : x + cw] = np.round(
                (1.0 - alpha) * grey + alpha * heat
            ).astype(np.uint8)
    _draw_text(canvas, "INPUT", top + ch // 2 - 5, gap, text)
    for i, s in enumerate(rows):
        y = top + (i + 1) * (ch + gap)
        _draw_text(canvas, f"TOKEN {s}", y + ch // 2 - 5, gap, text)
    return canvas


def write_png(path, image):
    """Writes uint8 `[H, W, 3]` (or `[H, W]`) as a PNG file (zlib; no extra dependency)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"write_png: expected uint8 [H, W, 3], got {image.dtype} {image.shape}.")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.shape[-1] != 3:
        raise ValueError(f"write_png: expected 3 channels, got {image.shape}.")
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        crc = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + body + crc

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
    parent = os.path.dirname(str(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as f:
        f.write(png)
    return path


def _first_batch(inputs):
    """An array batch from an array/tensor, or the first element of a dataset / iterable
    (`x` or `(x, y)`)."""
    if hasattr(inputs, "shape"):
        return inputs
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            raise ValueError("write_token_maps: dict batches are not supported; pass the inputs.")
        return batch
    raise ValueError("write_token_maps: the input dataset is empty.")


def write_token_maps(
    model,
    inputs,
    path,
    *,
    example: int = 0,
    layers: Optional[Sequence[str]] = None,
    **draw_kwargs,
):
    """Draws the token maps of one example (`draw_token_maps`, one block per TokenLearner
    layer, stacked) and writes them to the PNG `path`.

    Args:
        model: a Keras model.
        inputs: a batch of model input (array or tensor), or a dataset / iterable of batches
            (`x` or `(x, y)`; the first batch is used), pre-processed as the model expects.
            A multi-view evaluation batch `[B, V, ...]` gives its middle view.
        path: output `.png`.
        example: which example of the batch.
        layers: TokenLearner layer paths to draw (default all).
        **draw_kwargs: `draw_token_maps` options (`max_tokens`, `max_frames`, `cell`, ...).

    Returns:
        `path`, or None (with a warning in the log) when the model has no TokenLearner.
    """
    if not tokenlearner_layers(model):
        log.warning("write_token_maps: %s has no TokenLearner layer; no token maps written.",
                    getattr(model, "name", model))
        return None
    batch = np.asarray(_first_batch(inputs))
    model_inputs = getattr(model, "inputs", None)
    if model_inputs and batch.ndim == len(model_inputs[0].shape) + 1:
        # Multi-view evaluation batches `[B, V, ...]`: the middle view (the centre crop of
        # the middle clip for the 3-crop test views).
        batch = batch[:, batch.shape[1] // 2]
    if not 0 <= example < batch.shape[0]:
        raise ValueError(
            f"write_token_maps: example={example} is not in a batch of {batch.shape[0]}."
        )
    x = batch[example : example + 1]
    maps = token_maps(model, x, layers=layers)
    blocks = []
    for name, m in maps.items():
        blocks.append(draw_token_maps(x[0], m[0], title=name, **draw_kwargs))
    width = max(b.shape[1] for b in blocks)
    padded = [
        np.pad(b, ((0, 8), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks
    ]
    return write_png(path, np.concatenate(padded, 0))
