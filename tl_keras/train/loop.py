"""One training loop for every strategy: TPU, Mirrored, MultiWorkerMirrored, one device.

    run(config, mode="train_and_evaluate", workdir=..., strategy_info=..., task=...)

Modes (everything lives in one `workdir`: `checkpoints/`, `train/` and `eval/` TensorBoard
events, `config.json`, `metrics.json`, `export/<step>/`):

* `train`: trains to `train.num_steps`, checkpointing every `train.checkpoint_every` steps;
  a restarted run resumes from the newest checkpoint that reads (weights, optimizer, step,
  input position), found from the files and falling back past damaged ones
  (`checkpoint.py`). The workdir must be writable and is locked against a second training
  run (`workdir/train.lock`); both are checked before anything is built.
* `evaluate`: a continuous evaluator: waits for each new checkpoint in `workdir`, evaluates it
  once (multi-view, or per segment with `data.eval_split=segments`), writes its summaries,
  and stops after the final step (or after `eval.wait_timeout_s` without a new checkpoint).
  Runs beside a `train` job ("train on the TPU, evaluate on a CPU/GPU job"), or after it.
* `train_and_evaluate`: trains, evaluates every `train.eval_every` steps and at the end.
* `export` (`export_run`): restores the newest checkpoint into a one-device model and writes
  `export/<step>/saved_model` (for TF Serving) and `export/<step>/model.keras` with
  `tl_keras.export.export_model`.

The loop reads, in order (sections below): set-up, model + optimizer under
`strategy.scope()`, input, checkpoint, the step functions, the loop itself.

Design points:
* Per-example losses (`reduction="none"`) averaged over the *global* batch with
  `tf.nn.compute_average_loss`; gradients all-reduced once, explicitly, then clipped by
  their global norm, then applied (the optimizer's own all-reduce is off, see `optim.py`).
* `jit_compile` wraps only the forward/backward function, never the distributed step.
* `train.steps_per_loop` optimizer steps run inside one `tf.function` call.
* Input position in the checkpoint (`train.checkpoint_input`, default): each worker reads a
  plain `tf.data` iterator (checkpointable) of its share of the global batch and splits it over
  its local replicas with `experimental_distribute_values_from_function`. With
  `checkpoint_input=False` the input comes from `distribute_datasets_from_function` (device
  prefetch, e.g. for TPU) and a restarted run starts a fresh pass over the data.
* A NaN/Inf loss stops the run (`NonFiniteLossError`, naming the step and the last good
  checkpoint) before anything is saved, so that checkpoint stays.
* SIGTERM (preemption on TPU/GPU VMs, Kubernetes, Slurm) makes the run finish its current
  `tf.function` call, agree across workers, save a checkpoint and exit (`Preempted`). A run
  whose steps do not complete (stuck waiting for input) is ended from a watchdog thread
  `TL_KERAS_SIGTERM_TIMEOUT_S` seconds after SIGTERM, keeping the checkpoints it has
  (`_StopSignal`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tl_keras import configs as configs_lib
from tl_keras import plotting, visualize
from tl_keras.convert import load_pretrained
from tl_keras.export import export_model
from tl_keras.train import checkpoint as ckpt_lib
from tl_keras.train import metrics as metrics_lib
from tl_keras.train import optim as optim_lib
from tl_keras.train.strategy import StrategyInfo
from tl_keras.train.task import Task

__all__ = [
    "run",
    "train",
    "continuous_evaluate",
    "export_run",
    "evaluate_model",
    "resolve_schedule",
    "NonFiniteLossError",
    "Preempted",
    "WorkerLostError",
    "MODES",
    "TrainResult",
]

MODES = ("train", "evaluate", "train_and_evaluate", "export")
log = logging.getLogger("tl_keras.train")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """The run was asked to stop (SIGTERM) and saved a checkpoint; rerun to resume."""

    exit_code = 143


class WorkerLostError(RuntimeError):
    """A peer of a multi-worker job died or became unreachable."""


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: final metrics (`metrics.json` content when evaluating), the
    trained model, and the loss of every step this process ran (in order)."""

    metrics: dict
    model: keras.Model
    losses: list


# --------------------------------------------------------------------------------------
# Helpers: schedule resolution, files, progress.
# --------------------------------------------------------------------------------------


def resolve_schedule(cfg, num_train_examples=None):
    """`(total_steps, warmup_steps, peak_lr)` from `train` and `optim`."""
    t, o = cfg.train, cfg.optim
    steps_per_epoch = None
    if num_train_examples:
        steps_per_epoch = num_train_examples / t.batch_size
    if t.num_steps is not None:
        total = int(t.num_steps)
    elif t.num_epochs is not None:
        if not steps_per_epoch:
            raise configs_lib.ConfigError(
                "train.num_epochs is set but the number of training examples is unknown: "
                "set train.num_steps, or data.num_train_examples."
            )
        total = int(math.ceil(t.num_epochs * steps_per_epoch))
    else:
        raise configs_lib.ConfigError("Set train.num_steps (or train.num_epochs).")
    if o.warmup_steps is not None and o.warmup_epochs is not None:
        raise configs_lib.ConfigError(
            "optim.warmup_steps and optim.warmup_epochs are both set; set one to none."
        )
    if o.warmup_epochs is not None:
        if not steps_per_epoch:
            raise configs_lib.ConfigError(
                "optim.warmup_epochs needs the number of training examples; set "
                "optim.warmup_steps instead (or data.num_train_examples)."
            )
        warmup = int(round(o.warmup_epochs * steps_per_epoch))
    else:
        warmup = int(o.warmup_steps or 0)
    warmup = min(warmup, total)
    peak = optim_lib.peak_learning_rate(o.base_lr, t.batch_size, o.lr_reference_batch)
    return total, warmup, peak


def _write_json(path, obj):
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serializable: {x!r}")


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """A one-line progress bar: step, %, loss, learning rate, steps/s, ETA."""

    def __init__(self, total, start, enabled=True, stream=None, width=24):
        self.total, self.start_step = total, start
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = width

    def update(self, step, loss, lr, steps_per_sec, extra=""):
        if not self.enabled:
            return
        frac = step / max(self.total, 1)
        filled = int(self.width * frac)
        bar = "=" * filled + (">" if filled < self.width else "") + "." * max(self.width - filled - 1, 0)
        eta = (self.total - step) / steps_per_sec if steps_per_sec > 0 else float("nan")
        line = (
            f"step {step}/{self.total} [{bar}] {100 * frac:5.1f}% loss {loss:.4f} "
            f"lr {lr:.3g} {steps_per_sec:.2f} steps/s ETA {_fmt_time(eta) if eta == eta else '?'}"
            f"{extra}"
        )
        if self.tty:
            self.stream.write("\r" + line.ljust(110))
            if step >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def break_line(self):
        """Ends a `\r` progress line before other output (a no-op when not a terminal)."""
        if self.enabled and self.tty:
            self.stream.write("\n")

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _stuck_timeout_s():
    """Seconds without a completed step after SIGTERM before the run is ended from the
    watchdog thread (`TL_KERAS_SIGTERM_TIMEOUT_S`, default 20: under the 30 s that
    Kubernetes and Slurm give before SIGKILL)."""
    value = os.environ.get("TL_KERAS_SIGTERM_TIMEOUT_S", "20")
    try:
        return float(value)
    except ValueError:
        raise configs_lib.ConfigError(
            f"TL_KERAS_SIGTERM_TIMEOUT_S={value!r} is not a number of seconds") from None


class _StopSignal:
    """SIGTERM -> `requested`, a flag the loop checks after each `tf.function` call.

    A Python signal handler only runs when the main thread is back in Python, which it
    never is while a `tf.function` waits for input that does not come (every record
    skipped, a hung file system). So the signal also reaches a watchdog thread, through
    `signal.set_wakeup_fd`: when the progress counters (`progress()`: training steps,
    evaluation batches) have not moved for `stuck_timeout_s` after SIGTERM (inside a
    training call, `in_train_call`; `OUTSIDE_TRAINING_FACTOR` times as long between calls,
    where one slow evaluation batch or checkpoint write is not a hang) and the loop has not
    started its final save (`handling`), the watchdog calls `on_stuck(progress, waited_s,
    training)` (which reports and releases what it can) and ends the process with
    `Preempted.exit_code`. The checkpoints already written stay; the steps since the last
    one are lost, as after a SIGKILL. An evaluation that still makes progress is cut short
    after its current batch instead (the loop checks `requested` between batches), then
    the loop saves and stops.
    """

    OUTSIDE_TRAINING_FACTOR = 6

    _CLOSE = b"\x00"

    def __init__(self, progress=None, on_stuck=None, stuck_timeout_s=None):
        self.requested = False
        self.handling = False
        self.in_train_call = False
        self.progress, self.on_stuck = progress, on_stuck
        self.stuck_timeout_s = _stuck_timeout_s() if stuck_timeout_s is None else stuck_timeout_s
        self._previous = None
        self._previous_fd = None
        self._sockets = None
        self._thread = None

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        receive, send = socket.socketpair()
        send.setblocking(False)
        self._sockets = (receive, send)
        self._previous_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="tl_keras-sigterm", daemon=True)
        self._thread.start()
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def _watch(self):
        receive = self._sockets[0]
        while True:
            data = receive.recv(64)
            if not data or self._CLOSE in data:
                return
            if bytes([signal.SIGTERM]) in data:
                break
        self.requested = True
        print("tl_keras: SIGTERM received; saving a checkpoint after the current steps.",
              file=sys.stderr, flush=True)
        last, since = self._state(), time.time()
        receive.settimeout(0.5)
        while True:
            try:
                data = receive.recv(64)
                if not data or self._CLOSE in data:
                    return
            except (TimeoutError, socket.timeout):
                pass
            except OSError:
                return
            if self.handling:
                continue
            now = self._state()
            limit = self.stuck_timeout_s * (1 if now[0] else self.OUTSIDE_TRAINING_FACTOR)
            if now != last:
                last, since = now, time.time()
            elif time.time() - since > limit:
                if self.on_stuck is not None:
                    try:
                        self.on_stuck(last[1], limit, now[0])
                    except Exception as e:  # ending the process matters more
                        print(f"tl_keras: while stopping: {_error_summary(e)}", file=sys.stderr)
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(Preempted.exit_code)

    def _state(self):
        """(in a training call, step): the watchdog's measure of progress."""
        return self.in_train_call, self._step()

    def _step(self):
        try:
            return self.progress() if self.progress else None
        except Exception:  # noqa: BLE001  (a read that fails counts as no progress)
            return None

    def __exit__(self, *exc):
        if self._sockets is None:
            return False
        signal.set_wakeup_fd(self._previous_fd)
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        receive, send = self._sockets
        try:
            send.send(self._CLOSE)
        except OSError:
            pass
        self._thread.join(timeout=5)
        receive.close()
        send.close()
        self._sockets = None
        return False


def _setup(cfg, si, workdir):
    """Seeds, determinism, precision; returns the precision policy name."""
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.train.seed)
    policy = cfg.train.precision
    if policy == "auto":
        policy = {"TPU": "mixed_bfloat16", "GPU": "mixed_float16"}.get(si.device_type, "float32")
    keras.config.set_dtype_policy(policy)
    return policy


def load_init_checkpoint(model, model_cfg):
    """Starts `model` from `model_cfg.init_checkpoint` (`model.*` of the config): any source
    of `weights=` (a ViT checkpoint, a keras-hub ViT, a `.keras` of another model of the
    family, a `.weights.h5` of this one), a 2-D patch kernel inflated into a ViViT by
    `model_cfg.init_checkpoint_kernel_init`. Returns the `WeightsReport`."""
    return load_pretrained(model, model_cfg.init_checkpoint,
                           kernel_init=model_cfg.init_checkpoint_kernel_init)


def _jit(cfg, si):
    if cfg.train.jit_compile is None:
        return si.device_type in ("GPU",)  # TPU compiles anyway; on CPU XLA is slower here
    return bool(cfg.train.jit_compile)


# The metadata of `tf.summary.scalar`'s events: the `scalars` plugin of TensorBoard.
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
).SerializeToString()


def _scalar(name, value):
    """`tf.summary.scalar` without the `tensorboard` package: the same event (a float32
    tensor tagged with the `scalars` plugin), written with core `tf.summary.write`."""
    tf.summary.write(name, tf.cast(value, tf.float32), metadata=_SCALAR_METADATA)


# The metadata of `tf.summary.image`'s events: the `images` plugin of TensorBoard.
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")
).SerializeToString()


def _image(name, image):
    """`tf.summary.image` of one uint8 `[H, W, 3]` image without the `tensorboard` package:
    the same event (a string tensor `[width, height, PNG]` tagged with the `images`
    plugin), written with core `tf.summary.write`."""
    image = tf.convert_to_tensor(image, tf.uint8)
    height, width = int(image.shape[0]), int(image.shape[1])
    tensor = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(image)])
    tf.summary.write(name, tensor, metadata=_IMAGE_METADATA)


class _TokenMapSummary:
    """The token maps (paper Fig. 10, `visualize.token_maps_image`) of one evaluation
    example, written as the TensorBoard image `eval/token_maps` at each evaluation: by the
    chief, for a model with TokenLearner layers, when matplotlib is installed (otherwise a
    warning, once). The example is the first of the evaluation data, the same every time,
    so the images show how the maps change with training. Drawing never stops a run: a
    failure is logged and the images stop."""

    def __init__(self, task, si):
        self.task = task
        self.enabled = si.is_chief
        self.inputs = None

    def __call__(self, writer, step, model):
        if not self.enabled or writer is None or model is None:
            return
        try:
            if not visualize.tokenlearner_layers(model):
                self.enabled = False
                return
            try:
                plotting.require_matplotlib()
            except ImportError:
                log.warning("token maps are not written to TensorBoard: matplotlib is not "
                            "installed (%s)", plotting.INSTALL_HINT)
                self.enabled = False
                return
            if self.inputs is None:
                batch = next(iter(self.task.eval_dataset_fn(tf.distribute.InputContext(), 1)))
                self.inputs = np.asarray(self.task.model_inputs(batch[0]))
            image = visualize.token_maps_image(model, self.inputs)
            with writer.as_default(step=step):
                _image("eval/token_maps", image)
            writer.flush()
        except Exception as e:  # a figure must not end a training run
            log.warning("token maps not written to TensorBoard at step %s (%s: %s); no more "
                        "token-map images in this run", step, type(e).__name__,
                        _error_summary(e))
            self.enabled = False


def _summary_writer(workdir, name, si):
    if si.is_chief:
        return tf.summary.create_file_writer(os.path.join(workdir, name))
    return tf.summary.create_noop_writer()


def _error_summary(error, limit=300):
    """The informative lines of a (long) TF runtime error: the task and what happened."""
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    keep = [l for l in lines if "task" in l.lower() or "crash" in l.lower() or "timeout" in l.lower()
            or "deadline" in l.lower() or "unavailable" in l.lower()]
    text = " ".join(dict.fromkeys(keep or lines[:1]))
    return text[:limit] + ("..." if len(text) > limit else "")


_PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
)


# --------------------------------------------------------------------------------------
# Evaluation.
# --------------------------------------------------------------------------------------


class _Evaluator:
    """Evaluation of `model` over one pass of the eval data, under `si.strategy`.

    Batches are `(x, y)` (`x` `[B, ...]`, or `[B, V, ...]`: V views of each video, merged on
    device by `eval.average`) or, for the segment test (`data.eval_split=segments`),
    `(x, y, video_ids)`: one segment view per row; the logits, labels and ids of every
    replica are gathered and merged per video on the host (`metrics.merge_segments`, by
    `eval.segment_merge`), whichever batches and replicas a video's segments fell into.

    With `task.eval_model_fn` (e.g. the network at `data.eval_crop_size`) the model that
    runs is `task.eval_model_fn(model)`, asked for again before every evaluation so it holds
    the current weights.
    """

    def __init__(self, cfg, si, model, task):
        self.cfg, self.si, self.model, self.task = cfg, si, model, task
        strategy = si.strategy
        batch = cfg.eval.batch_size

        def dataset_fn(ctx):
            return task.eval_dataset_fn(ctx, batch)

        self.dataset = strategy.distribute_datasets_from_function(dataset_fn)
        self._traced_for = None  # the model `eval_step` was made for
        self.last_model = None  # the model the last evaluation ran
        self.eval_step = None
        self.batches_done = 0  # over all evaluations: the SIGTERM watchdog's sign of progress

    def _make_eval_step(self, model):
        strategy = self.si.strategy
        model_rank = len(model.inputs[0].shape)
        multilabel = self.task.multilabel
        average = self.cfg.eval.average

        def replica_fn(x, y, *ids):
            x = self.task.model_inputs(x)  # uint8 pixels: normalised here, on the device
            views = None
            if x.shape.rank == model_rank + 1:  # [B, V, ...]: merge the view axis
                views = tf.shape(x)[1]
                x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
            logits = tf.cast(model(x, training=False), tf.float32)
            if views is not None:
                logits = tf.reshape(logits, [-1, views, logits.shape[-1]])
                if average == "probabilities":
                    probs = tf.sigmoid(logits) if multilabel else tf.nn.softmax(logits, -1)
                    logits = tf.reduce_mean(probs, axis=1)
                else:
                    logits = tf.reduce_mean(logits, axis=1)
            return (logits, tf.cast(y, tf.float32), *ids)

        @tf.function
        def eval_step(batch):
            outputs = strategy.run(replica_fn, args=tuple(batch))
            return tuple(strategy.gather(t, axis=0) for t in outputs)

        return eval_step

    def _eval_model(self):
        if self.task.eval_model_fn is None:
            return self.model
        with self.si.strategy.scope():
            return self.task.eval_model_fn(self.model)

    def __call__(self, stop=None):
        """The metrics; None when `stop()` (checked between batches) became true first."""
        model = self._eval_model()
        if model is not self._traced_for:
            self.eval_step, self._traced_for = self._make_eval_step(model), model
        scores, labels, ids = [], [], []
        start = time.time()
        for i, batch in enumerate(self.dataset):
            if self.cfg.eval.num_steps is not None and i >= self.cfg.eval.num_steps:
                break
            if stop is not None and stop():
                return None
            s, y, *video_ids = self.eval_step(batch)
            scores.append(s.numpy())
            labels.append(y.numpy())
            ids.extend(v.numpy() for v in video_ids)
            self.batches_done += 1
        if not scores:
            raise RuntimeError("The evaluation data is empty (check data.eval_pattern).")
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        multilabel = self.task.multilabel
        segments = None
        if ids:  # segment test: one row per segment view -> one per video
            segments = len(scores)
            scores, labels, _ = metrics_lib.merge_segments(
                scores, labels, np.concatenate(ids), merge=self.cfg.eval.segment_merge,
                average=self.cfg.eval.average, multilabel=multilabel,
            )
        out = metrics_lib.compute_metrics(scores, labels, multilabel=multilabel)
        if segments is not None:
            out["num_segments"] = segments
        out["eval_time_s"] = time.time() - start
        self.last_model = model  # for the summaries (the model at the eval crop size)
        return out


def evaluate_model(cfg, si, model, task):
    """Metrics of `model` on the eval split (see `metrics.compute_metrics`)."""
    return _Evaluator(cfg, si, model, task)()


def _write_eval(writer, step, metrics, token_maps=None, model=None):
    """The eval scalars and, with `token_maps` (a `_TokenMapSummary`), the token maps of
    `model`."""
    with writer.as_default(step=step):
        for k, v in metrics.items():
            if k in ("num_examples", "num_segments") or not isinstance(v, (int, float)):
                continue
            _scalar(f"eval/{k}", v)
    writer.flush()
    if token_maps is not None:
        token_maps(writer, step, model)


def _metric_line(metrics):
    keys = [k for k in ("top1", "top5", "mAP", "mean_class_accuracy") if k in metrics]
    count = f"{metrics['num_examples']} examples"
    if "num_segments" in metrics:
        count += f", {metrics['num_segments']} segments"
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys) + f" ({count})"


def _append_history(workdir, record):
    path = os.path.join(workdir, "eval", "history.jsonl")
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")


def _history_steps(workdir):
    path = os.path.join(workdir, "eval", "history.jsonl")
    if not tf.io.gfile.exists(path):
        return set()
    with tf.io.gfile.GFile(path) as f:
        return {json.loads(line)["step"] for line in f if line.strip()}


# --------------------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------------------


def train(cfg, workdir, si: StrategyInfo, task: Task, evaluate=False, out=None):
    """Trains to the final step (resuming from `workdir`); evaluates if `evaluate`.

    Returns a `TrainResult`; its metrics are also written to `workdir/metrics.json` when
    evaluating. Before anything else the workdir must be writable and (on the chief) not in
    use by another run (`checkpoint.WorkdirLock`); otherwise `checkpoint.WorkdirError`.
    """
    ckpt_lib.check_writable(workdir)
    lock = ckpt_lib.WorkdirLock(workdir) if si.is_chief else None
    if lock is not None:
        lock.acquire()
    try:
        return _train(cfg, workdir, si, task, evaluate, out or sys.stdout, lock)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, workdir, si, task, evaluate, out, lock):
    run_start = time.time()
    strategy = si.strategy
    policy = _setup(cfg, si, workdir)
    total_steps, warmup_steps, peak_lr = resolve_schedule(cfg, task.num_train_examples)
    global_batch = cfg.train.batch_size
    if global_batch % si.num_replicas:
        raise configs_lib.ConfigError(
            f"train.batch_size={global_batch} is not divisible by the {si.num_replicas} replicas."
        )
    multilabel = task.multilabel
    loss_kind = cfg.train.loss if cfg.train.loss != "auto" else ("sigmoid" if multilabel else "softmax")
    loss_scaling = policy == "mixed_float16"
    jit = _jit(cfg, si)
    if si.is_chief:  # the resolved config: the step count is explicit (num_steps wins)
        resolved = configs_lib.to_dict(cfg)
        resolved["train"]["num_steps"] = total_steps
        _write_json(os.path.join(workdir, "config.json"), resolved)
    if lock is not None and lock.took_over:
        out.write(f"tl_keras: took over the stale lock of pid {lock.took_over.get('pid')} "
                  f"(no longer running): {lock.path}\n")

    # ---- Model and optimizer, under the strategy's scope. -----------------------------
    with strategy.scope():
        model = task.model_fn()
        if cfg.model.init_checkpoint:
            # A resumed run then restores its own checkpoint over it.
            report = load_init_checkpoint(model, cfg.model)
            if si.is_chief:
                out.write(f"tl_keras: init_checkpoint {report.summary()}\n")
        schedule = optim_lib.WarmupDecay(
            peak_lr, total_steps, warmup_steps, cfg.optim.schedule, cfg.optim.end_lr
        )
        optimizer = optim_lib.build_optimizer(
            cfg.optim, schedule, model.trainable_variables, loss_scale=loss_scaling
        )
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")

    # ---- Input. ------------------------------------------------------------------------
    local = si.local_replicas
    # A tf.data service iterator has no position to save: such runs restart the input.
    checkpoint_input = cfg.train.checkpoint_input and cfg.data.service_address is None
    if checkpoint_input:
        # One checkpointable tf.data iterator per worker, of the worker's share of the batch.
        ctx = tf.distribute.InputContext(
            num_input_pipelines=si.num_workers,
            input_pipeline_id=si.worker_index,
            num_replicas_in_sync=si.num_workers,
        )
        ds = task.train_dataset_fn(ctx, global_batch)
        options = tf.data.Options()
        # Counters and other side state of the pipeline are not part of its position.
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
        ds = ds.with_options(options)
        with tf.device("/cpu:0"):
            iterator = iter(ds)

        def next_batch(it):
            batch = next(it)
            if si.num_replicas == 1:
                return batch

            def value_fn(vctx):
                i = vctx.replica_id_in_sync_group % local
                return tf.nest.map_structure(lambda t: tf.split(t, local, axis=0)[i], batch)

            return strategy.experimental_distribute_values_from_function(value_fn)
    else:
        dist_ds = strategy.distribute_datasets_from_function(
            lambda ictx: task.train_dataset_fn(ictx, global_batch)
        )
        iterator = iter(dist_ds)

        def next_batch(it):
            return next(it)

    # ---- Checkpoint: model, optimizer, step, input position. -----------------------------
    state = ckpt_lib.CheckpointState(
        workdir, model, optimizer, step,
        iterator=iterator if checkpoint_input else None,
        worker_index=si.worker_index, num_workers=si.num_workers,
        keep=cfg.train.keep_checkpoints,
    )
    start_step = state.restore()

    # ---- The step functions. -----------------------------------------------------------
    label_smoothing = cfg.train.label_smoothing

    def per_example_loss(labels, logits):
        if loss_kind == "sigmoid":
            return keras.losses.binary_crossentropy(
                labels, logits, from_logits=True, label_smoothing=label_smoothing
            )
        return keras.losses.categorical_crossentropy(
            labels, logits, from_logits=True, label_smoothing=label_smoothing
        )

    def forward_backward(x, y):
        y = tf.cast(y, tf.float32)
        with tf.GradientTape() as tape:
            logits = tf.cast(model(task.model_inputs(x), training=True), tf.float32)
            loss = tf.nn.compute_average_loss(per_example_loss(y, logits), global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(y, -1)), tf.float32)
        )
        return loss, grads, correct

    if jit:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(x, y):
        loss, grads, correct = forward_backward(x, y)
        if si.num_replicas > 1:  # one explicit all-reduce of the gradients
            present = [i for i, g in enumerate(grads) if g is not None]
            reduced = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, [grads[i] for i in present]
            )
            grads = list(grads)
            for i, g in zip(present, reduced):
                grads[i] = g
        if loss_scaling:
            scale = optimizer.dynamic_scale
            grads = [None if g is None else g / scale for g in grads]
        grads, norm = optim_lib.clip_by_global_norm(grads, cfg.optim.grad_clip_norm)
        if loss_scaling:
            grads = [None if g is None else g * scale for g in grads]
        optimizer.apply(grads, model.trainable_variables)
        return loss, correct, norm

    SUM = tf.distribute.ReduceOp.SUM
    MEAN = tf.distribute.ReduceOp.MEAN

    @tf.function
    def train_steps(it, num_steps, stop_requested):
        loss_sum = tf.constant(0.0)
        last_loss = tf.constant(0.0)
        last_norm = tf.constant(0.0)
        correct_sum = tf.constant(0.0)
        norm_sum = tf.constant(0.0)
        done = tf.constant(0)
        finite = tf.constant(True)
        losses = tf.TensorArray(tf.float32, size=num_steps)
        for i in tf.range(num_steps):
            x, y = next_batch(it)
            loss, correct, norm = strategy.run(replica_step, args=(x, y))
            loss = strategy.reduce(SUM, loss, axis=None)
            correct_sum += strategy.reduce(SUM, correct, axis=None)
            norm = strategy.reduce(MEAN, norm, axis=None)
            norm_sum += norm
            step.assign_add(1)
            done += 1
            last_loss = loss
            last_norm = norm
            loss_sum += loss
            losses = losses.write(i, loss)
            # A NaN/Inf gradient (with a finite loss, e.g. after a ReLU swallowed a NaN) ruins
            # the weights as surely as a NaN loss; with loss scaling it only skips a step.
            ok = tf.math.is_finite(loss)
            if not loss_scaling:
                ok = tf.logical_and(ok, tf.math.is_finite(norm))
            if not ok:
                finite = tf.constant(False)
                break
        stop = stop_requested
        if si.num_workers > 1:  # every worker must agree to stop at the same step
            flag = strategy.run(lambda: tf.cast(stop_requested, tf.int32))
            stop = strategy.reduce(SUM, flag, axis=None) > 0
        return dict(
            loss=loss_sum / tf.cast(tf.maximum(done, 1), tf.float32),
            last_loss=last_loss,
            last_grad_norm=last_norm,
            accuracy=correct_sum / tf.cast(tf.maximum(done, 1) * global_batch, tf.float32),
            grad_norm=norm_sum / tf.cast(tf.maximum(done, 1), tf.float32),
            steps=done,
            losses=losses.stack(),
            finite=finite,
            stop=stop,
        )

    # ---- The loop. -----------------------------------------------------------------------
    evaluator = _Evaluator(cfg, si, model, task) if evaluate else None
    train_writer = _summary_writer(workdir, "train", si)
    eval_writer = _summary_writer(workdir, "eval", si) if evaluate else None
    token_maps = _TokenMapSummary(task, si) if evaluate else None
    show = si.is_chief
    if show:
        out.write(
            f"tl_keras: {si.kind} strategy, {si.num_replicas} replica(s) on {si.num_workers} "
            f"worker(s), {si.device_type}; global batch {global_batch}; {total_steps} steps "
            f"(warmup {warmup_steps}), peak lr {peak_lr:.4g}; precision {policy}; "
            f"jit_compile {jit}; workdir {workdir}\n"
        )
        for path, reason in state.skipped:
            out.write(f"tl_keras: WARNING: checkpoint {path} cannot be read ({reason}); "
                      f"falling back to an older one\n")
        if state.moved_to:
            out.write(f"tl_keras: moved the unreadable checkpoint files to {state.moved_to}\n")
        if start_step:
            out.write(f"tl_keras: resumed from step {start_step} ({state.restored_path})\n")
        out.flush()
    progress = Progress(total_steps, start_step, enabled=show, stream=out)
    cur = start_step
    train_time = 0.0
    boundaries = [b for b in (cfg.train.log_every, cfg.train.checkpoint_every, cfg.train.eval_every if evaluate else None) if b]
    window_start, window_steps = time.time(), 0
    stats = None
    first_call = True
    loss_history = []
    def on_stuck(_, waited_s, training):  # SIGTERM while nothing progresses (_StopSignal)
        what = ("no training step completed" if training
                else "the work between training steps (evaluation, checkpoint) did not end")
        print(f"tl_keras: {what} for {waited_s:.0f}s after SIGTERM (waiting for input?): "
              f"stopping at step {cur} without a new checkpoint; the last checkpoint is "
              f"{state.last_good or 'none'}. Rerun the same command to resume from it.",
              file=sys.stderr, flush=True)
        train_writer.flush()
        if lock is not None:
            lock.release()

    try:
        def steps_and_eval_batches():  # what the SIGTERM watchdog counts as progress
            return int(step.numpy()), evaluator.batches_done if evaluator else 0

        with _StopSignal(progress=steps_and_eval_batches, on_stuck=on_stuck) as stop_signal:
            while cur < total_steps:
                n = min(cfg.train.steps_per_loop, total_steps - cur)
                for b in boundaries:
                    n = min(n, b - cur % b)
                if stop_signal.requested and si.num_workers == 1:
                    n = 0  # SIGTERM came between calls: save now (workers must agree on n)
                t0 = time.time()
                stop_signal.in_train_call = True
                try:
                    stats = train_steps(
                        iterator, tf.constant(n, tf.int32), tf.constant(stop_signal.requested)
                    )
                    stats = {k: v.numpy() for k, v in stats.items()}
                finally:
                    stop_signal.in_train_call = False
                cur = int(step.numpy())
                dt = time.time() - t0
                train_time += dt
                window_steps += int(stats["steps"])
                if first_call:  # tracing time would distort steps/s and the ETA
                    first_call = False
                    if cur % cfg.train.log_every and cur < total_steps:
                        window_start, window_steps = time.time(), 0
                loss_history.extend(stats["losses"][: int(stats["steps"])].tolist())
                if not stats["finite"]:
                    last_good = state.last_good
                    raise NonFiniteLossError(
                        f"Non-finite training loss or gradient at step {cur} (loss "
                        f"{stats['last_loss']}, gradient norm {stats['last_grad_norm']}): stopping. "
                        f"Nothing was saved after the last good checkpoint "
                        f"({last_good or 'none yet'}). Lower optim.base_lr, set "
                        f"optim.grad_clip_norm, or check the input data."
                    )
                if cur % cfg.train.log_every == 0 or cur >= total_steps:
                    sps = window_steps / max(time.time() - window_start, 1e-9)
                    lr = float(schedule(cur))
                    progress.update(cur, float(stats["loss"]), lr, sps)
                    with train_writer.as_default(step=cur):
                        _scalar("train/loss", stats["loss"])
                        _scalar("train/learning_rate", lr)
                        _scalar("train/steps_per_sec", sps)
                        _scalar("train/grad_norm", stats["grad_norm"])
                        if not multilabel:
                            _scalar("train/accuracy", stats["accuracy"])
                        if loss_scaling:
                            _scalar("train/loss_scale", float(optimizer.dynamic_scale.numpy()))
                    window_start, window_steps = time.time(), 0
                if stats["stop"]:
                    stop_signal.handling = True  # the final save may take a while
                if cur % cfg.train.checkpoint_every == 0 or cur >= total_steps or stats["stop"]:
                    state.save()
                if stats["stop"]:
                    train_writer.flush()
                    raise Preempted(
                        f"Stopped by SIGTERM at step {cur}/{total_steps}; checkpoint saved in "
                        f"{ckpt_lib.checkpoint_dir(workdir)}. Rerun the same command to resume."
                    )
                if evaluator and cfg.train.eval_every and cur % cfg.train.eval_every == 0 and cur < total_steps:
                    # SIGTERM during the evaluation (single worker: workers must agree on
                    # the batches) ends it after the current batch, then saves and stops.
                    m = evaluator(stop=(lambda: stop_signal.requested) if si.num_workers == 1 else None)
                    if m is None:
                        stop_signal.handling = True
                        state.save()
                        train_writer.flush()
                        raise Preempted(
                            f"Stopped by SIGTERM at step {cur}/{total_steps} (its evaluation "
                            f"cut short); checkpoint saved in {ckpt_lib.checkpoint_dir(workdir)}. "
                            f"Rerun the same command to resume.")
                    if show:
                        progress.break_line()
                        out.write(f"tl_keras: eval at step {cur}: {_metric_line(m)}\n")
                    _write_eval(eval_writer, cur, m, token_maps, evaluator.last_model)
                    if si.is_chief:
                        _append_history(workdir, {"step": cur, **m})
    except _PEER_ERRORS as e:
        if si.num_workers > 1:
            raise WorkerLostError(
                f"A worker of the {si.num_workers}-worker job failed or became unreachable "
                f"({type(e).__name__}: {_error_summary(e)}). "
                f"Restart all workers with the same command to resume from the last checkpoint "
                f"(step {state.latest_step()})."
            ) from e
        raise
    finally:
        progress.close()
        train_writer.flush()
    state.save()

    result = {"step": cur, "train_time_s": train_time}
    if stats is not None:
        result["train_loss"] = float(stats["loss"])
    if evaluator:
        m = evaluator()
        if show:
            out.write(f"tl_keras: eval at step {cur}: {_metric_line(m)}\n")
        _write_eval(eval_writer, cur, m, token_maps, evaluator.last_model)
        result.update(m)
        result["split"] = cfg.data.eval_split
    result["wall_time_s"] = time.time() - run_start
    if evaluator and si.is_chief:
        _append_history(workdir, {"step": cur, **m})
        _write_json(os.path.join(workdir, "metrics.json"), result)
    return TrainResult(result, model, loss_history)


# --------------------------------------------------------------------------------------
# Continuous evaluation and export.
# --------------------------------------------------------------------------------------


def continuous_evaluate(cfg, workdir, si, task, out=None):
    """Evaluates each new checkpoint of `workdir` once; stops after the final step.

    Returns the metrics of the last checkpoint evaluated (written to `metrics.json` when it
    is the final step).
    """
    out = out or sys.stdout
    run_start = time.time()
    ckpt_lib.check_writable(workdir)
    _setup(cfg, si, workdir)
    keras.config.set_dtype_policy("float32")
    total_steps, _, _ = resolve_schedule(cfg, task.num_train_examples)
    saved = _read_json(os.path.join(workdir, "config.json"))
    if saved:  # the training job's resolved config decides where training ends
        trained_steps = saved.get("train", {}).get("num_steps")
        if trained_steps and trained_steps != total_steps:
            log.warning("evaluator: the training job runs %s steps (workdir/config.json), "
                        "not %s; following the training job", trained_steps, total_steps)
            total_steps = trained_steps
    with si.strategy.scope():
        model = task.model_fn()
    evaluator = _Evaluator(cfg, si, model, task)
    writer = _summary_writer(workdir, "eval", si)
    token_maps = _TokenMapSummary(task, si)
    done = _history_steps(workdir)
    ckdir = ckpt_lib.checkpoint_dir(workdir)
    tf.io.gfile.makedirs(ckdir)
    result = None
    out.write(f"tl_keras: evaluator waiting for checkpoints in {ckdir} (final step {total_steps})\n")
    out.flush()
    for path in ckpt_lib.new_checkpoints(workdir, timeout=cfg.eval.wait_timeout_s):
        ckpt_step = ckpt_lib.checkpoint_step(path)
        if ckpt_step in done:
            if ckpt_step >= total_steps:
                out.write(f"tl_keras: the final step {ckpt_step} is already evaluated "
                          f"({os.path.join(workdir, 'eval', 'history.jsonl')})\n")
                break
            continue
        problem = _restore_for_eval(model, path)
        if problem:
            out.write(f"tl_keras: WARNING: evaluator: skipping {path}: it cannot be read "
                      f"({problem}); waiting for the next checkpoint\n")
            out.flush()
            continue
        m = evaluator()
        done.add(ckpt_step)
        out.write(f"tl_keras: eval of {os.path.basename(path)}: {_metric_line(m)}\n")
        out.flush()
        _write_eval(writer, ckpt_step, m, token_maps, evaluator.last_model)
        if si.is_chief:
            _append_history(workdir, {"step": ckpt_step, **m})
        result = {"step": ckpt_step, **m, "split": cfg.data.eval_split}
        if ckpt_step >= total_steps:
            result["wall_time_s"] = time.time() - run_start
            if si.is_chief:
                _write_json(os.path.join(workdir, "metrics.json"), result)
            break
    else:
        out.write(f"tl_keras: evaluator: no new checkpoint for {cfg.eval.wait_timeout_s:.0f}s; stopping\n")
    return result


def _restore_for_eval(model, path, retry_s=2.0):
    """Restores `path` into `model`; None, or why it cannot be read. One retry after
    `retry_s`: a checkpoint the trainer is finishing (or rotating away) reads a moment later
    (or is gone)."""
    for attempt in range(2):
        try:
            ckpt_lib.restore_model(model, path)
            return None
        except ckpt_lib.READ_ERRORS as e:
            problem = ckpt_lib.error_reason(e)
        if attempt == 0:
            time.sleep(retry_s)
    return problem


def export_run(cfg, workdir, task, out=None):
    """The `export` mode: restores the newest checkpoint of `workdir` that reads (falling
    back to older ones) into a one-device float32 model and writes `workdir/export/<step>/`
    (`tl_keras.export.export_model`)."""
    out = out or sys.stdout
    ckpt_lib.check_writable(workdir)
    keras.config.set_dtype_policy("float32")
    model = task.model_fn()
    try:
        path, ckpt_step, skipped = ckpt_lib.restore_latest_model(model, workdir)
    except FileNotFoundError:
        raise FileNotFoundError(f"No checkpoint in {ckpt_lib.checkpoint_dir(workdir)} to export.") from None
    for bad, reason in skipped:
        out.write(f"tl_keras: WARNING: checkpoint {bad} cannot be read ({reason}); "
                  f"exporting an older one\n")
    out.write(f"tl_keras: exporting {path} (step {ckpt_step})\n")
    directory = os.path.join(workdir, "export", str(ckpt_step))
    paths = export_model(
        model,
        directory,
        saved_model=cfg.export.saved_model,
        keras_archive=cfg.export.keras,
        config=configs_lib.to_dict(cfg),
    )
    for kind, p in paths.items():
        out.write(f"tl_keras: exported {kind}: {p}\n")
    out.flush()
    return paths


def run(cfg, mode, workdir, si: StrategyInfo, task: Task, out=None):
    """Runs one of `MODES` in `workdir`. Returns the mode's result (metrics or paths)."""
    if mode not in MODES:
        raise ValueError(f"--mode={mode!r} is not one of {MODES}")
    if mode == "train":
        return train(cfg, workdir, si, task, evaluate=False, out=out)
    if mode == "train_and_evaluate":
        return train(cfg, workdir, si, task, evaluate=True, out=out)
    if mode == "evaluate":
        return continuous_evaluate(cfg, workdir, si, task, out=out)
    return export_run(cfg, workdir, task, out=out)
