"""What the tokens attend to: TokenLearner attention maps and heat-map grids (paper Fig. 10).

```python
from tl_keras import visualize
maps = visualize.token_maps(model, videos)        # {layer path: [B, T, S, h, w]}
fig = visualize.token_maps_figure(model, videos)  # a matplotlib Figure (paper Fig. 10)
visualize.write_token_maps(model, videos, "maps.png")
```

`token_maps` works for any Keras model that contains `TokenLearner` (v1.1, softmax maps)
or `TokenLearnerV1` (sigmoid maps) layers, at any depth (ViT, ViViT, the X(2+1)D bottleneck
module, your own models): it runs the model once, records the input each TokenLearner layer
receives, and returns that layer's own `attention_maps` of it, reshaped per frame and per
token onto the layer's spatial grid. It needs no plotting library and does not depend on
the Keras backend.

The figures are drawn with matplotlib (the optional extra: `pip install 'tl_keras[plot]'`;
imported only when a figure is drawn, on the `Agg` canvas, `tl_keras.plotting`), as in the
paper's Fig. 10: the input frames on top, then each shown token's map over its frame as a
heat map, every panel titled with the token and the clip frames it stands for
(`token 3, frames 4-5`: a ViViT tubelet of input frames 4 and 5, or the source video's
frame numbers given as `frame_indices`), and a colour bar that says what the colours mean.
`plot_token_maps` draws one layer's maps of one example, `token_maps_figure` every layer of
a model, `write_token_maps` saves that as a PNG with the same labels and scale as JSON text
in the file (`tl_keras:token_maps`), and `token_maps_image` renders it to an array (the
trainer's TensorBoard image at each evaluation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Optional, Sequence

import numpy as np
from keras import ops

from tl_keras import plotting
from tl_keras.layers import TokenLearner, TokenLearnerV1

__all__ = [
    "tokenlearner_layers",
    "token_maps",
    "describe_token_maps",
    "plot_token_maps",
    "token_maps_figure",
    "token_maps_image",
    "write_token_maps",
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
# Drawing (matplotlib, imported when a figure is drawn: `tl_keras.plotting`).
# --------------------------------------------------------------------------------------


def _display_frames(frames):
    """Any-range frames `[T, H, W, 3]` -> float32 in [0, 1] (min-max over the clip)."""
    frames = np.asarray(frames, np.float32)
    lo, hi = float(frames.min()), float(frames.max())
    if hi - lo < 1e-8:
        return np.zeros(frames.shape, np.float32)
    return (frames - lo) / (hi - lo)


def _pick(n, limit):
    if limit is None or n <= limit:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, limit)})


def _number(value):
    """A short label of a map value (`0`, `1`, `0.034`, `2.1e-05`)."""
    if value == 0 or value == 1:
        return str(int(value))
    return f"{value:.2g}" if abs(value) < 1e-3 else f"{value:.3g}"


def _column_frames(k, num_token_frames, num_frames, frame_indices):
    """The clip frames (numbers of `frame_indices`) that token frame `k` stands for."""
    first = k * num_frames // num_token_frames
    last = max(first, (k + 1) * num_frames // num_token_frames - 1)
    return [int(frame_indices[i]) for i in range(first, min(last, num_frames - 1) + 1)]


def _column_label(frames, is_image):
    if is_image:
        return "image"
    if len(frames) == 1:
        return f"frame {frames[0]}"
    return f"frames {frames[0]}-{frames[-1]}"


def _check(frames, maps, normalize, frame_indices):
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 3:
        maps = maps[None]
    if frames.ndim != 4 or maps.ndim != 4:
        raise ValueError(
            f"plot_token_maps: expected frames [T, H, W, 3] and maps [T', S, h, w]; got "
            f"{frames.shape} and {maps.shape}."
        )
    if normalize not in ("per_map", "none"):
        raise ValueError(f"plot_token_maps: normalize={normalize!r}, expected 'per_map' or 'none'.")
    if frame_indices is None:
        frame_indices = list(range(frames.shape[0]))
    frame_indices = [int(i) for i in np.asarray(frame_indices).reshape(-1)]
    if len(frame_indices) != frames.shape[0]:
        raise ValueError(
            f"plot_token_maps: frame_indices has {len(frame_indices)} entries for "
            f"{frames.shape[0]} input frames."
        )
    return frames, maps, frame_indices


def describe_token_maps(frames, maps, *, max_tokens: Optional[int] = 8,
                        max_frames: Optional[int] = 8, normalize: str = "per_map",
                        frame_indices: Optional[Sequence[int]] = None):
    """What `plot_token_maps` shows, as a JSON-able dict: `columns` (`label`, the clip
    `frames` the column stands for, `token_frame`), `rows` (the token labels, `token 3`),
    `tokens` (their indices), `image` (one picture, no frames), and `colorbar`
    (`normalize`, `range` = the values at the bar's two ends, `label` = what the colours
    mean, `peaks` = the lowest and highest maximum of the maps drawn)."""
    frames, maps, frame_indices = _check(frames, maps, normalize, frame_indices)
    num_input = frames.shape[0]
    is_image = num_input == 1 and maps.shape[0] == 1
    columns = _pick(maps.shape[0], max_frames)
    rows = _pick(maps.shape[1], max_tokens)
    drawn = maps[columns][:, rows]
    peaks = drawn.reshape(len(columns) * len(rows), -1).max(-1)
    peak_range = [float(peaks.min()), float(peaks.max())]
    if normalize == "per_map":
        label = (f"value / peak of its map\n(peaks {_number(peak_range[0])} to "
                 f"{_number(peak_range[1])})")
    else:
        label = (f"map value, clipped to [0, 1]\n(values {_number(float(drawn.min()))} to "
                 f"{_number(peak_range[1])})")
    out_columns = []
    for k in columns:
        clip_frames = _column_frames(k, maps.shape[0], num_input, frame_indices)
        out_columns.append({"label": _column_label(clip_frames, is_image), "frames": clip_frames,
                            "token_frame": int(k)})
    return {
        "columns": out_columns,
        "rows": [f"token {s}" for s in rows],
        "tokens": [int(s) for s in rows],
        "image": bool(is_image),
        "colorbar": {"normalize": normalize, "range": [0.0, 1.0], "label": label,
                     "peaks": peak_range},
    }


def _grid_shape(info, image_columns):
    """(rows, columns) of panels: a video is the frames row then one row per token, one
    column per (token) frame; an image is its panels (image, token 0, ...) wrapped."""
    if info["image"]:
        n = 1 + len(info["rows"])
        cols = min(n, image_columns)
        return -(-n // cols), cols
    return 1 + len(info["rows"]), len(info["columns"])


def _figure_size(info, panel_size, image_columns, title):
    rows, cols = _grid_shape(info, image_columns)
    return (panel_size * cols + 1.3, panel_size * 1.1 * rows + (0.35 if title else 0.0) + 0.1)


def plot_token_maps(
    frames,
    maps,
    *,
    max_tokens: Optional[int] = 8,
    max_frames: Optional[int] = 8,
    alpha: float = 0.6,
    normalize: str = "per_map",
    title: Optional[str] = None,
    frame_indices: Optional[Sequence[int]] = None,
    cmap: str = "inferno",
    interpolation: str = "nearest",
    panel_size: float = 1.5,
    image_columns: int = 5,
    figure=None,
):
    """The token attention maps of one example as in the paper's Fig. 10: a matplotlib
    `Figure` (matplotlib is imported here; `tl_keras.plotting.require_matplotlib`).

    Video: the top row shows the input frames, then one row per shown token, one column per
    (token) frame; each token panel is that token's map over its frame (in grey) as a heat
    map, titled with the token and the clip frames (`token 3, frames 4-5`: a ViViT tubelet
    of input frames 4 and 5, or the source video's frame numbers given as `frame_indices`).
    Image: the image, then each token's map over it, wrapped at `image_columns` panels a
    row. One colour bar beside the token panels says what the colours mean.

    Args:
        frames: the example's input, `[T, H, W, 3]` (video) or `[H, W, 3]` (image), any
            value range (shown min-max scaled).
        maps: its maps `[T', S, h, w]` (one example of `token_maps`); token frame k stands
            for input frames `k * T // T'` to `(k + 1) * T // T' - 1` and is drawn over the
            first of them.
        max_tokens, max_frames: tokens / frames shown (evenly spaced when there are more).
        alpha: opacity of the heat map over the (grey) frame.
        normalize: `"per_map"` (each map divided by its own peak, default) or `"none"`
            (values as they are, clipped to [0, 1]; for sigmoid maps).
        title: the figure's title (e.g. the layer's path).
        frame_indices: the number of each of the T input frames in its source video (e.g.
            the sampled clip's indices), for the titles (default 0 .. T-1).
        cmap, interpolation: of the heat maps (`"nearest"`: the layer's grid cells).
        panel_size: side of a panel in inches.
        figure: draw into this Figure / SubFigure instead of a new one.

    Returns:
        The Figure (or `figure`); its axes are the panels, then the colour bar
        (`(1 + tokens) * columns + 1` axes for a video, `1 + tokens + 1` for an image).
        `describe_token_maps` gives the same labels and scale as data.
    """
    info = describe_token_maps(frames, maps, max_tokens=max_tokens, max_frames=max_frames,
                               normalize=normalize, frame_indices=frame_indices)
    frames, maps, _ = _check(frames, maps, normalize, frame_indices)
    plotting.require_matplotlib()
    from matplotlib import cm, colors

    fig = figure
    if fig is None:
        fig = plotting.new_figure(
            figsize=_figure_size(info, panel_size, image_columns, title), layout="constrained"
        )
    display = _display_frames(frames)
    height, width = display.shape[1:3]
    extent = (0, width, height, 0)
    num_input, num_token_frames = frames.shape[0], maps.shape[0]
    nrows, ncols = _grid_shape(info, image_columns)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    font = 8

    def heat(ax, k, s, text):
        frame = display[min(k * num_input // num_token_frames, num_input - 1)]
        m = maps[k, s]
        if normalize == "per_map":
            peak = float(m.max())
            m = m / peak if peak > 0 else m
        ax.imshow(frame.mean(-1), cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
        ax.imshow(np.clip(m, 0.0, 1.0), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha,
                  extent=extent, interpolation=interpolation)
        ax.set_title(text, fontsize=font, pad=3)

    token_axes = []
    if info["image"]:
        flat = list(axes.flat)
        flat[0].imshow(display[0], extent=extent)
        flat[0].set_title("image", fontsize=font, pad=3)
        for i, s in enumerate(info["tokens"]):
            heat(flat[i + 1], 0, s, f"token {s}")
            token_axes.append(flat[i + 1])
        for ax in flat[1 + len(info["tokens"]):]:
            ax.remove()
    else:
        for j, column in enumerate(info["columns"]):
            k = column["token_frame"]
            first = min(k * num_input // num_token_frames, num_input - 1)
            axes[0, j].imshow(display[first], extent=extent)
            axes[0, j].set_title(f"input, {column['label']}", fontsize=font, pad=3)
            for i, s in enumerate(info["tokens"]):
                heat(axes[i + 1, j], k, s, f"token {s}, {column['label']}")
                token_axes.append(axes[i + 1, j])
    bar = fig.colorbar(
        cm.ScalarMappable(norm=colors.Normalize(0.0, 1.0), cmap=cmap), ax=token_axes,
        shrink=min(1.0, 0.9 if len(info["tokens"]) > 1 else 1.0), aspect=30, pad=0.02,
    )
    bar.set_label(info["colorbar"]["label"], fontsize=font)
    bar.ax.tick_params(labelsize=font)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _first_batch(inputs):
    """An array batch from an array/tensor, or the first element of a dataset / iterable
    (`x` or `(x, y)`)."""
    if hasattr(inputs, "shape"):
        return inputs
    for batch in inputs:
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, dict):
            raise ValueError("token_maps_figure: dict batches are not supported; pass the inputs.")
        return batch
    raise ValueError("token_maps_figure: the input dataset is empty.")


def _example(model, inputs, example):
    """One example `[1, ...]` of `inputs` (a batch, or a dataset's first batch; the middle
    view of a multi-view batch `[B, V, ...]`)."""
    batch = np.asarray(_first_batch(inputs))
    model_inputs = getattr(model, "inputs", None)
    if model_inputs and batch.ndim == len(model_inputs[0].shape) + 1:
        # Multi-view evaluation batches `[B, V, ...]`: the middle view (the centre crop of
        # the middle clip for the 3-crop test views).
        batch = batch[:, batch.shape[1] // 2]
    if not 0 <= example < batch.shape[0]:
        raise ValueError(
            f"token_maps_figure: example={example} is not in a batch of {batch.shape[0]}."
        )
    return batch[example : example + 1]


def _token_maps_figure(model, inputs, *, example=0, layers=None, frame_indices=None,
                       **plot_kwargs):
    """`(figure, info)`: see `token_maps_figure`; info: one `describe_token_maps` dict per
    layer, with its `layer`."""
    x = _example(model, inputs, example)
    maps = token_maps(model, x, layers=layers)
    kw = {k: v for k, v in plot_kwargs.items()
          if k in ("max_tokens", "max_frames", "normalize")}
    infos = []
    for name, m in maps.items():
        info = describe_token_maps(x[0], m[0], frame_indices=frame_indices, **kw)
        infos.append({"layer": name, **info})
    panel = plot_kwargs.get("panel_size", 1.5)
    cols = plot_kwargs.get("image_columns", 5)
    sizes = [_figure_size(info, panel, cols, True) for info in infos]
    fig = plotting.new_figure(
        figsize=(max(w for w, _ in sizes), sum(h for _, h in sizes)), layout="constrained"
    )
    subfigs = [fig] if len(maps) == 1 else list(
        fig.subfigures(len(maps), 1, height_ratios=[h for _, h in sizes])
    )
    for sub, (name, m) in zip(subfigs, maps.items()):
        plot_token_maps(x[0], m[0], title=name, frame_indices=frame_indices, figure=sub,
                        **plot_kwargs)
    return fig, infos


def token_maps_figure(model, inputs, *, example: int = 0,
                      layers: Optional[Sequence[str]] = None,
                      frame_indices: Optional[Sequence[int]] = None, **plot_kwargs):
    """The token maps of one example, one `plot_token_maps` block per TokenLearner layer
    (stacked, titled with the layer's path): a matplotlib Figure.

    Args:
        model: a Keras model with TokenLearner layers (ValueError otherwise).
        inputs: a batch of model input (array or tensor), or a dataset / iterable of batches
            (`x` or `(x, y)`; the first batch is used), pre-processed as the model expects.
            A multi-view evaluation batch `[B, V, ...]` gives its middle view.
        example: which example of the batch.
        layers: TokenLearner layer paths to draw (default all).
        frame_indices: each input frame's number in its source video, for the titles
            (default 0 .. T-1).
        **plot_kwargs: `plot_token_maps` options (`max_tokens`, `max_frames`, ...).
    """
    return _token_maps_figure(model, inputs, example=example, layers=layers,
                              frame_indices=frame_indices, **plot_kwargs)[0]


def token_maps_image(model, inputs, *, dpi: int = 80, **kwargs):
    """`token_maps_figure` rendered as uint8 RGB `[H, W, 3]` (the trainer's TensorBoard
    image)."""
    return plotting.figure_to_array(token_maps_figure(model, inputs, **kwargs), dpi=dpi)


def write_token_maps(
    model,
    inputs,
    path,
    *,
    example: int = 0,
    layers: Optional[Sequence[str]] = None,
    frame_indices: Optional[Sequence[int]] = None,
    dpi: int = 100,
    **plot_kwargs,
):
    """Draws `token_maps_figure` and writes it to `path` (PNG).

    The PNG also holds, as the text chunk `tl_keras:token_maps`, a JSON list with one entry
    per layer: `layer` and `describe_token_maps`'s columns (labels and clip frames), rows
    and colour scale.

    Returns:
        `path`, or None (with a warning in the log) when the model has no TokenLearner.
    """
    if not tokenlearner_layers(model):
        log.warning("write_token_maps: %s has no TokenLearner layer; no token maps written.",
                    getattr(model, "name", model))
        return None
    fig, infos = _token_maps_figure(model, inputs, example=example, layers=layers,
                                    frame_indices=frame_indices, **plot_kwargs)
    info = [{k: v for k, v in i.items() if k in ("layer", "columns", "rows", "colorbar")}
            for i in infos]
    return plotting.save_figure(fig, path, dpi=dpi,
                                metadata={"tl_keras:token_maps": json.dumps(info)})
