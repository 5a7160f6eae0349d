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
frames, the input frames on top, each map over its frame), labels each column with the clip
frames it stands for (`F4-5`: a ViViT tubelet of input frames 4 and 5, or the source
video's frame numbers given as `frame_indices`), adds a colour scale (a bar with its value
range and what it means), and a small built-in PNG writer saves it, with the same
information as text in the PNG (`tl_keras:token_maps`, JSON). It does not depend on the
Keras backend.
"""

from __future__ import annotations

import contextlib
import json
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
    "=": "...|###|...|###|...", ",": "...|...|...|.#.|#..",
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


def _number(value):
    """A short label of a map value (`0`, `1`, `0.034`, `2.1E-05`)."""
    if value == 0 or value == 1:
        return str(int(value))
    return f"{value:.2g}".upper() if abs(value) < 1e-3 else f"{value:.3g}"


def _column_frames(k, num_token_frames, num_frames, frame_indices):
    """The clip frames (numbers of `frame_indices`) that token frame `k` stands for."""
    first = k * num_frames // num_token_frames
    last = max(first, (k + 1) * num_frames // num_token_frames - 1)
    return [int(frame_indices[i]) for i in range(first, min(last, num_frames - 1) + 1)]


def _column_label(frames, is_image):
    if is_image:
        return "IMAGE"
    if len(frames) == 1:
        return f"F{frames[0]}"
    return f"F{frames[0]}-{frames[-1]}"


class _Canvas:
    """A white canvas that remembers every text it paints (for the layout)."""

    def __init__(self, height, width):
        self.image = np.full((height, width, 3), 255, np.uint8)
        self.texts = []

    def text(self, text, y, x, scale=2):
        _draw_text(self.image, text, y, x, scale)
        self.texts.append({"text": text, "y": int(y), "x": int(x), "scale": int(scale)})


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
    frame_indices: Optional[Sequence[int]] = None,
    return_layout: bool = False,
):
    """One grid of heat maps over the frames, with frame labels and a colour scale: uint8
    RGB `[H, W, 3]`.

    Args:
        frames: the example's input, `[T, H, W, 3]` (video) or `[H, W, 3]` (image), any
            value range (shown min-max scaled).
        maps: its maps `[T', S, h, w]` (one example of `token_maps`); token frame k stands
            for input frames `k * T // T'` to `(k + 1) * T // T' - 1` (a ViViT tubelet)
            and is drawn over the first of them.
        max_tokens, max_frames: rows / columns shown (evenly spaced when there are more).
        cell: side of a drawn frame in pixels (default: the frame scaled to >= 96 px).
        alpha: weight of the heat map over the (grey) frame.
        normalize: `"per_map"` (each map scaled to its maximum, default) or `"none"`
            (values drawn as they are, clipped to [0, 1]; for sigmoid maps).
        title: a line of text above the grid.
        frame_indices: the number of each of the T input frames in its source video (e.g.
            the sampled clip's indices), used in the column labels (default 0 .. T-1).
        return_layout: also return the layout (see below).

    Layout: a header row of column labels (`F4-5`: the clip frames of the column; `IMAGE`
    for an image), row 0 the input frames, then one row per token, then the colour scale:
    a bar from the lowest to the highest colour with the value at each end and a caption
    (`per_map`: `1` is each map's own peak, and the range of the peaks is given).

    Returns:
        The image; with `return_layout`, `(image, layout)` where `layout` is a JSON-able dict:
        `columns` / `rows` (`label`, `frames` or `token`, `box` = `[y0, x0, y1, x1]` of the
        cells), `colorbar` (`box`, `range` = the values at its two ends, `labels`,
        `caption`, `normalize`, `peaks` = the lowest and highest map maxima drawn) and
        `texts` (every text painted: `text`, `y`, `x`, `scale`).
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
    num_input = frames.shape[0]
    if frame_indices is None:
        frame_indices = list(range(num_input))
    frame_indices = [int(i) for i in np.asarray(frame_indices).reshape(-1)]
    if len(frame_indices) != num_input:
        raise ValueError(
            f"draw_token_maps: frame_indices has {len(frame_indices)} entries for "
            f"{num_input} input frames."
        )
    is_image = num_input == 1 and maps.shape[0] == 1
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
    column_frames = [_column_frames(k, num_frames, num_input, frame_indices) for k in columns]
    column_labels = [_column_label(f, is_image) for f in column_frames]

    # What the colours mean.
    drawn = maps[columns][:, rows]
    peaks = drawn.reshape(len(columns) * len(rows), -1).max(-1)
    peak_range = [float(peaks.min()), float(peaks.max())]
    if normalize == "per_map":
        bar_range = [0.0, 1.0]
        caption = (f"COLOUR = VALUE / PEAK OF ITS MAP, PEAKS {_number(peak_range[0])} TO "
                   f"{_number(peak_range[1])}")
    else:
        bar_range = [0.0, 1.0]
        low = float(drawn.min())
        caption = (f"COLOUR = MAP VALUE, CLIPPED TO 0 TO 1, VALUES {_number(low)} TO "
                   f"{_number(peak_range[1])}")
    bar_labels = [_number(bar_range[0]), _number(bar_range[1])]

    text = 2
    gap = 4
    label_w = _text_size("TOKEN 000", text)[1] + 2 * gap
    head_h = _text_size("X", text)[0] + 2 * gap
    title_h = head_h if title else 0
    bar_h = 10
    scale_h = gap + bar_h + gap + _text_size("0", text)[0] + gap + _text_size("0", 1)[0] + gap
    height = title_h + head_h + (len(rows) + 1) * (ch + gap) + gap + scale_h
    width = label_w + len(columns) * (cw + gap) + gap
    width = max(width, _text_size(title or "", text)[1] + 2 * gap,
                label_w + _text_size(caption, 1)[1] + gap, label_w + 96 + gap)
    canvas = _Canvas(height, width)
    image = canvas.image
    if title:
        canvas.text(title, gap, gap, text)
    top = title_h + head_h
    canvas.text("FRAME" if not is_image else "", title_h + gap, gap, text)
    layout_columns = []
    for j, k in enumerate(columns):
        x = label_w + j * (cw + gap)
        label = column_labels[j]
        label_scale = text if _text_size(label, text)[1] <= cw + gap else 1
        canvas.text(label, title_h + gap, x, label_scale)
        index = min(k * num_input // num_frames, num_input - 1)
        frame = _resize_nearest(display[index], ch, cw)
        image[top : top + ch, x : x + cw] = frame
        grey = frame.astype(np.float32).mean(-1, keepdims=True)
        for i, s in enumerate(rows):
            y = top + (i + 1) * (ch + gap)
            m = maps[k, s]
            if normalize == "per_map":
                peak = float(m.max())
                m = m / peak if peak > 0 else m
            heat = _colormap(_resize_nearest(m, ch, cw))
            image[y : y + ch, x : x + cw] = np.round(
                (1.0 - alpha) * grey + alpha * heat
            ).astype(np.uint8)
        layout_columns.append({
            "label": label, "token_frame": int(k), "frames": column_frames[j],
            "box": [top, x, top + (len(rows) + 1) * (ch + gap) - gap, x + cw],
        })
    canvas.text("INPUT", top + ch // 2 - 5, gap, text)
    layout_rows = []
    for i, s in enumerate(rows):
        y = top + (i + 1) * (ch + gap)
        canvas.text(f"TOKEN {s}", y + ch // 2 - 5, gap, text)
        layout_rows.append({"label": f"TOKEN {s}", "token": int(s),
                            "box": [y, label_w, y + ch, label_w + len(columns) * (cw + gap) - gap]})

    # The colour scale: each bar pixel shows the colour of its centre's value.
    y0 = top + (len(rows) + 1) * (ch + gap) + gap
    x0 = label_w
    bar_w = max(96, len(columns) * (cw + gap) - gap)
    values = (np.arange(bar_w) + 0.5) / bar_w
    image[y0 : y0 + bar_h, x0 : x0 + bar_w] = np.round(_colormap(values))[None].astype(np.uint8)
    canvas.text("SCALE", y0, gap, text)
    ty = y0 + bar_h + gap
    canvas.text(bar_labels[0], ty, x0, text)
    right = bar_labels[1]
    canvas.text(right, ty, x0 + bar_w - _text_size(right, text)[1], text)
    canvas.text(caption, ty + _text_size("0", text)[0] + gap, x0, 1)
    if not return_layout:
        return image
    layout = {
        "columns": layout_columns,
        "rows": layout_rows,
        "colorbar": {
            "box": [y0, x0, y0 + bar_h, x0 + bar_w], "range": bar_range, "labels": bar_labels,
            "caption": caption, "normalize": normalize, "peaks": peak_range,
        },
        "texts": [t for t in canvas.texts if t["text"]],
    }
    return image, layout


def write_png(path, image, text=None):
    """Writes uint8 `[H, W, 3]` (or `[H, W]`) as a PNG file (zlib; no extra dependency);
    `text`: `{keyword: str}` stored as PNG `tEXt` chunks (Latin-1)."""
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

    texts = b""
    for key, value in (text or {}).items():
        key = str(key).encode("latin-1")
        if not 1 <= len(key) <= 79 or b"\0" in key:
            raise ValueError(f"write_png: text keyword {key!r} must be 1 to 79 bytes, no NUL.")
        texts += chunk(b"tEXt", key + b"\0" + str(value).encode("latin-1", "replace"))
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + texts
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
    frame_indices: Optional[Sequence[int]] = None,
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
        frame_indices: each input frame's number in its source video, for the column labels
            (default 0 .. T-1).
        **draw_kwargs: `draw_token_maps` options (`max_tokens`, `max_frames`, `cell`, ...).

    The PNG also holds, as the `tEXt` chunk `tl_keras:token_maps`, a JSON list with one
    entry per block: `layer`, and the column labels and clip frames, row labels and colour
    scale of `draw_token_maps`'s layout.

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
    blocks, info = [], []
    for name, m in maps.items():
        block, layout = draw_token_maps(
            x[0], m[0], title=name, frame_indices=frame_indices, return_layout=True,
            **draw_kwargs,
        )
        blocks.append(block)
        info.append({
            "layer": name,
            "columns": [{k: c[k] for k in ("label", "frames")} for c in layout["columns"]],
            "rows": [r["label"] for r in layout["rows"]],
            "colorbar": {k: v for k, v in layout["colorbar"].items() if k != "box"},
        })
    width = max(b.shape[1] for b in blocks)
    padded = [
        np.pad(b, ((0, 8), (0, width - b.shape[1]), (0, 0)), constant_values=255) for b in blocks
    ]
    return write_png(path, np.concatenate(padded, 0),
                     text={"tl_keras:token_maps": json.dumps(info)})
