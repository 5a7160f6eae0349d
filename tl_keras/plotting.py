"""Figures with matplotlib (an optional dependency), and a training run's own records.

```python
from tl_keras import plotting
fig = plotting.plot_run("runs/run1")           # loss, learning rate, eval metrics vs step
plotting.save_figure(fig, "runs/run1/training_curves.png")
records = plotting.read_run("runs/run1")       # the same numbers, as lists
```

matplotlib is imported when a figure is drawn, never at import time: `new_figure()` makes a
`Figure` on the non-interactive `Agg` canvas (not through `pyplot`, so no global backend
changes), and without matplotlib the ImportError says which extra to install
(`pip install 'tl_keras[plot]'`). The token-map figures (paper Fig. 10) are in
`tl_keras.visualize`, the throughput plots in `benchmarks/plot.py`; all draw on
`new_figure()` and are written with `save_figure`.

A run's records (what `tl_keras.train` writes into its workdir): the TensorBoard scalars of
`train/` (`train/loss`, `train/learning_rate`, ...) and `eval/` (`eval/top1`, ...), and
`eval/history.jsonl` (one JSON line of metrics per evaluation). The event files are read
here with the standard library (TFRecord framing, the few protobuf fields of a scalar), so
reading a run needs neither TensorFlow nor TensorBoard. This module imports only the
standard library and numpy.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    "INSTALL_HINT",
    "require_matplotlib",
    "new_figure",
    "save_figure",
    "figure_to_array",
    "read_scalars",
    "read_run",
    "plot_run",
]

INSTALL_HINT = "pip install 'tl_keras[plot]'"


def require_matplotlib():
    """Imports matplotlib (ImportError naming the extra to install when it is missing);
    returns the module."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError(
            f"tl_keras draws its figures with matplotlib, which is not installed: {INSTALL_HINT} "
            "(or pip install matplotlib)."
        ) from e
    return matplotlib


def new_figure(**kwargs):
    """A matplotlib `Figure(**kwargs)` on the `Agg` canvas (files and arrays, no display).
    It is not registered with `pyplot`: nothing global changes (the caller's backend stays),
    it may be drawn from any thread, and it is freed with its last reference."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, *, dpi=100, metadata: Optional[Dict[str, str]] = None):
    """Writes `fig` to `path` (PNG unless the extension says otherwise; folders created);
    `metadata`: `{key: text}` stored in the PNG (tEXt chunks). Returns `path`."""
    parent = os.path.dirname(str(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata=metadata)
    return path


def figure_to_array(fig, *, dpi=100):
    """The figure rendered with Agg as uint8 RGB `[H, W, 3]` (e.g. a TensorBoard image)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------------------------------------------
# TensorBoard event files, read with the standard library.
# --------------------------------------------------------------------------------------


def _varint(data, at):
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _fields(data):
    """`(field number, wire type, value)` of a serialized protobuf message (values: int for
    varints, bytes for length-delimited and fixed-width fields)."""
    at, end = 0, len(data)
    while at < end:
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at : at + size], at + size
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:  # groups (3, 4): not in event files
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


# TensorProto dtypes of a scalar summary: DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64.
_TENSOR_CONTENT = {1: "<f4", 2: "<f8", 3: "<i4", 9: "<i8"}


def _tensor_scalar(data):
    """The first value of a numeric `TensorProto`, or None."""
    dtype, content, value = None, None, None
    for number, wire, v in _fields(data):
        if number == 1:
            dtype = v
        elif number == 4:
            content = v
        elif number == 5 and value is None:  # float_val (packed or not)
            value = struct.unpack("<f", v[:4])[0]
        elif number == 6 and value is None:  # double_val
            value = struct.unpack("<d", v[:8])[0]
        elif number in (7, 10) and value is None and wire == 0:  # int_val, int64_val
            value = float(v)
    if content and dtype in _TENSOR_CONTENT:
        return float(np.frombuffer(content, _TENSOR_CONTENT[dtype], count=1)[0])
    return value


def _event_scalars(event):
    """`(step, [(tag, value)])` of the scalar values in one serialized `Event`."""
    step, values = 0, []
    for number, _, value in _fields(event):
        if number == 2:
            step = value
        elif number == 5:  # summary
            for n, _, item in _fields(value):
                if n != 1:
                    continue
                tag, scalar = None, None
                for f, _, v in _fields(item):
                    if f == 1:
                        tag = v.decode("utf-8", "replace")
                    elif f == 2:  # simple_value
                        scalar = struct.unpack("<f", v)[0]
                    elif f == 8:  # tensor
                        scalar = _tensor_scalar(v)
                if tag is not None and scalar is not None:
                    values.append((tag, scalar))
    return step, values


def _records(path):
    """The records of a TFRecord file (a truncated last record, as of a running job, ends
    the file)."""
    with open(path, "rb") as f:
        data = f.read()
    at = 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        start = at + 12
        if start + length + 4 > len(data):
            return
        yield data[start : start + length]
        at = start + length + 4


def read_scalars(logdir) -> Dict[str, List[Tuple[int, float]]]:
    """`{tag: [(step, value), ...]}` of the scalar summaries in the TensorBoard event files
    of `logdir` (one folder, e.g. `workdir/train`), sorted by step; a step written again (a
    resumed run) keeps its last value. Images and other non-scalar summaries are skipped."""
    found: Dict[str, Dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(str(logdir), "events.out.tfevents.*"))):
        for record in _records(path):
            try:
                step, values = _event_scalars(record)
            except (ValueError, IndexError, struct.error):
                continue  # not an event we can read: skipped
            for tag, value in values:
                found.setdefault(tag, {})[int(step)] = float(value)
    return {tag: sorted(by_step.items()) for tag, by_step in sorted(found.items())}


def read_run(workdir):
    """A training run's records: `{"train": read_scalars(workdir/train), "eval":
    read_scalars(workdir/eval), "history": [eval/history.jsonl records], "config": the
    run's config.json (or {}), "metrics": metrics.json (or {})}`. FileNotFoundError when
    `workdir` does not exist."""
    workdir = str(workdir)
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"{workdir}: no such directory.")

    def load(name, default):
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            return default
        with open(path) as f:
            return json.load(f)

    history = []
    path = os.path.join(workdir, "eval", "history.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    try:
                        history.append(json.loads(line))
                    except json.JSONDecodeError:
                        continue  # a line being written
    return {
        "train": read_scalars(os.path.join(workdir, "train")),
        "eval": read_scalars(os.path.join(workdir, "eval")),
        "history": history,
        "config": load("config.json", {}),
        "metrics": load("metrics.json", {}),
    }


# The eval metrics shown, in this order, when the run has them.
EVAL_METRICS = ("top1", "top5", "mAP", "mean_class_accuracy")


def _eval_series(run):
    """`{metric: ([steps], [values])}`: from eval/history.jsonl, else the eval events."""
    series = {}
    by_step = {}
    for record in run["history"]:
        if "step" in record:
            by_step[int(record["step"])] = record  # a re-evaluated step: the last
    for metric in EVAL_METRICS:
        points = [(s, r[metric]) for s, r in sorted(by_step.items())
                  if isinstance(r.get(metric), (int, float))]
        if not points:
            points = run["eval"].get(f"eval/{metric}", [])
        if points:
            series[metric] = ([p[0] for p in points], [p[1] for p in points])
    return series


def plot_run(workdir, *, run=None, title=None):
    """The training curves of a run: three panels against the training step: training
    loss, learning rate, evaluation metrics (`EVAL_METRICS` that the run has). A panel
    without records says so. Returns the matplotlib Figure (`save_figure` writes it).
    ValueError when the workdir holds no training or evaluation records."""
    run = run or read_run(workdir)
    train = run["train"]
    evals = _eval_series(run)
    if not train and not evals:
        raise ValueError(
            f"{workdir} has no training records (TensorBoard events in train/ or eval/, "
            "eval/history.jsonl); is it a tl_keras run directory?"
        )
    fig = new_figure(figsize=(14, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    ax_loss, ax_lr, ax_eval = axes

    def empty(ax, text):
        ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
                color="0.4", fontsize=10)

    loss = train.get("train/loss", [])
    if loss:
        steps, values = zip(*loss)
        ax_loss.plot(steps, values, color="tab:blue", marker="." if len(steps) < 50 else None)
    else:
        empty(ax_loss, "no train/loss records")
    ax_loss.set_title("training loss")
    ax_loss.set_ylabel("loss (mean over the logged steps)")

    lr = train.get("train/learning_rate", [])
    if lr:
        steps, values = zip(*lr)
        ax_lr.plot(steps, values, color="tab:green", marker="." if len(steps) < 50 else None)
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax_lr.set_ylim(bottom=0)
    else:
        empty(ax_lr, "no train/learning_rate records")
    ax_lr.set_title("learning rate")
    ax_lr.set_ylabel("learning rate")

    if evals:
        for metric, (steps, values) in evals.items():
            ax_eval.plot(steps, values, marker="o", markersize=4, label=metric)
        ax_eval.legend(loc="best", fontsize=8)
        top = max(max(v) for _, v in evals.values())
        if top <= 1.0:
            ax_eval.set_ylim(-0.02, 1.02)
    else:
        empty(ax_eval, "no evaluation records\n(eval/history.jsonl)")
    split = (run["config"].get("data") or {}).get("eval_split")
    ax_eval.set_title("evaluation" + (f" ({split} split)" if split else ""))
    ax_eval.set_ylabel("metric")

    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    if title is None:
        experiment = run["config"].get("experiment")
        name = os.path.basename(os.path.normpath(str(workdir)))
        title = f"{experiment}: {name}" if experiment else name
        final = {k: run["metrics"][k] for k in EVAL_METRICS if k in run["metrics"]}
        if final:
            step = run["metrics"].get("step")
            title += (f"  (final{f' at step {step}' if step is not None else ''}: "
                      + ", ".join(f"{k} {v:.4f}" for k, v in final.items()) + ")")
    fig.suptitle(title, fontsize=11)
    return fig
