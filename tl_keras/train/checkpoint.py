"""Checkpoints: model, optimizer, step and input position, with `tf.train.CheckpointManager`.

Layout under `workdir/checkpoints/`: `ckpt-<step>.index/.data-*` and the `checkpoint` state
file, written by the chief. Under `MultiWorkerMirroredStrategy` every worker must take part
in a save; the other workers write theirs to `checkpoints/worker<i>/` and keep it, because it
holds *their own* input position (each worker reads its own shard). On restart a worker
restores its own copy when it is at the chief's step, else the chief's.

Which checkpoints exist is read from the files themselves (`ckpt-<step>.index` and all its
`.data-K-of-N` shards), not from the `checkpoint` state file, which is rewritten to match. A
restore tries the newest first and falls back to an older one when a checkpoint cannot be
read (truncated `.data`: `IndexError`; a damaged `.index`: `OpError`); on a training restart
the chief moves the damaged newer files to `checkpoints/damaged/` so that nothing overwrites
them. When files named `ckpt-*` exist but none restores, a restore raises `CheckpointError`
instead of letting the run start from step 0 over them.

Keras 3 models and optimizers are trackable by `tf.train.Checkpoint` under the TensorFlow
backend, except the seed-generator state of random layers; `CheckpointState` therefore also
tracks the flat lists `model.variables` / `optimizer.variables`.

Restoring for evaluation or export (`restore_model`, `restore_latest_model`) reads only the
model's variables, so a checkpoint written under one strategy (say 2-replica Mirrored, or 8
TPU cores) restores into a model built on one CPU.

`WorkdirLock` keeps a second training run out of a workdir in use; `check_writable` turns an
unwritable workdir into one line before any training.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time

import tensorflow as tf

__all__ = [
    "CheckpointState",
    "CheckpointError",
    "WorkdirError",
    "WorkdirLockedError",
    "WorkdirLock",
    "check_writable",
    "checkpoint_dir",
    "checkpoint_step",
    "list_checkpoints",
    "latest_checkpoint",
    "checkpoint_problem",
    "latest_complete_checkpoint",
    "restore_model",
    "restore_latest_model",
    "new_checkpoints",
]

log = logging.getLogger("tl_keras.train")

_FILE_RE = re.compile(r"^ckpt-(\d+)\.(?:index|data-(\d+)-of-(\d+))$")
# What a checkpoint that cannot be read raises: `IndexError` (truncated .data), `OpError`
# (not an sstable, DataLoss, NotFound), `ValueError` (an unparsable file).
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError)


class WorkdirError(OSError):
    """The workdir cannot be used as it is (not writable, in use, damaged checkpoints): a
    user-facing one-line error (an `OSError`, as the command-line tools report those)."""


class WorkdirLockedError(WorkdirError):
    """Another training run holds the workdir's lock."""


class CheckpointError(WorkdirError):
    """Checkpoint files exist but none can be restored."""


def checkpoint_dir(workdir):
    return os.path.join(workdir, "checkpoints")


def checkpoint_step(path):
    """The step of a checkpoint path `.../ckpt-<step>`."""
    match = re.search(r"-(\d+)$", path or "")
    if not match:
        raise ValueError(f"not a tl_keras checkpoint path: {path!r}")
    return int(match.group(1))


def _scan(directory):
    """`{step: [file names]}` of the `ckpt-<step>.*` files in `directory` (temporary
    `ckpt-<step>_temp` folders of an interrupted save are not checkpoint files)."""
    found = {}
    if not tf.io.gfile.isdir(directory):
        return found
    for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        match = _FILE_RE.match(name)
        if match:
            found.setdefault(int(match.group(1)), []).append(name)
    return found


def _files_complete(names, step):
    """True when the names hold `ckpt-<step>.index` and every `.data-K-of-N` shard."""
    if f"ckpt-{step}.index" not in names:
        return False
    shards = [_FILE_RE.match(n) for n in names if ".data-" in n]
    if not shards:
        return False
    total = int(shards[0].group(3))
    return {int(m.group(2)) for m in shards if int(m.group(3)) == total} == set(range(total))


def _list_dir(directory):
    """Prefixes, newest first, of the checkpoints in `directory` whose files are all there."""
    found = _scan(directory)
    return [os.path.join(directory, f"ckpt-{s}") for s in sorted(found, reverse=True)
            if _files_complete(found[s], s)]


def list_checkpoints(workdir):
    """Prefixes, newest first, of the checkpoints of `workdir` whose index and data files
    are all present (the files decide, not the `checkpoint` state file)."""
    return _list_dir(checkpoint_dir(workdir))


def latest_checkpoint(workdir):
    """The newest checkpoint of `workdir` whose files are all present (or None). The files
    are not read: `restore_latest_model` / `latest_complete_checkpoint` also read them."""
    paths = list_checkpoints(workdir)
    return paths[0] if paths else None


def error_reason(error):
    """`Type: message` on one line, without TF's `{{function_node ...}}` / `[Op:...]` noise."""
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", str(error))
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text[:200]}"


def checkpoint_problem(path):
    """None when every tensor of checkpoint `path` can be read, else the reason (one line).
    Reads the whole checkpoint."""
    try:
        # RestoreV2, one tensor at a time: it also reads the variant-typed input position,
        # which `CheckpointReader.get_tensor` cannot turn into NumPy.
        for key, dtype in tf.train.load_checkpoint(path).get_variable_to_dtype_map().items():
            with tf.device("/cpu:0"):
                tf.raw_ops.RestoreV2(prefix=path, tensor_names=[key], shape_and_slices=[""],
                                     dtypes=[dtype])
    except READ_ERRORS as e:
        return error_reason(e)
    return None


def latest_complete_checkpoint(workdir):
    """The newest checkpoint of `workdir` that reads completely (or None); damaged newer
    ones are skipped with a warning."""
    for path in list_checkpoints(workdir):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("skipping damaged checkpoint %s (%s)", path, problem)
    return None


def _restore_or_reason(restore, path):
    """Runs `restore(path)`; None on success, the reason when the files of `path` cannot be
    read (a damaged checkpoint: fall back). When they read but do not restore (another
    model, optimizer or input pipeline) raises `CheckpointError`: an older one would not do
    either."""
    try:
        restore(path)
        return None
    except READ_ERRORS as e:
        problem = checkpoint_problem(path)
        if problem is None:
            raise CheckpointError(
                f"checkpoint {path} reads but does not restore into this run (was the model, "
                f"optimizer or input pipeline changed?): {error_reason(e)}") from e
        return problem


def _nothing_restored(directory, skipped):
    steps = sorted(_scan(directory), reverse=True)
    what = ", ".join(f"ckpt-{s}" for s in steps[:5]) + (" ..." if len(steps) > 5 else "")
    why = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in skipped[:3])
    return CheckpointError(
        f"{directory} holds checkpoint files ({what}) but none can be restored"
        + (f" ({why})" if why else " (their index or data files are missing)")
        + ". Refusing to start from step 0 over them: move them away or use another workdir."
    )


def restore_model(model, path):
    """Loads only the model's variables from a training checkpoint (any strategy).

    TensorFlow's object graph of a Keras 3 model does not reach sublayers kept in a list
    (the TokenLearner / TokenFuser MLPs), so the values come from the flat
    `model_variables` list that `CheckpointState` saves beside it (every variable, in
    `model.variables` order; each shape is checked first); the object graph is matched
    too, which checks the names of the variables it reaches.
    """
    variables = list(model.variables)
    shapes = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    key = "model_variables/{}/.ATTRIBUTES/VARIABLE_VALUE"
    saved = sum(1 for name in shapes if name.startswith("model_variables/"))
    if saved != len(variables):
        raise tf.errors.InvalidArgumentError(
            None, None,
            f"{path} holds {saved} model variables; this model has {len(variables)}")
    for i, v in enumerate(variables):
        if list(shapes.get(key.format(i), [])) != list(v.shape):
            raise tf.errors.InvalidArgumentError(
                None, None,
                f"{path}: model variable {i} ({v.path}) has shape "
                f"{shapes.get(key.format(i))} there, {tuple(v.shape)} here")
    status = tf.train.Checkpoint(model=model, model_variables=variables).restore(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    return checkpoint_step(path)


def restore_latest_model(model, workdir):
    """Restores the model's variables from the newest checkpoint of `workdir` that reads,
    falling back to older ones. Returns `(path, step, skipped)`, `skipped` the
    `(path, reason)` of the newer damaged ones. Raises `FileNotFoundError` when there is no
    checkpoint file, `CheckpointError` when none restores (or one that reads does not
    match the model)."""
    directory = checkpoint_dir(workdir)
    skipped = []
    for path in list_checkpoints(workdir):
        problem = _restore_or_reason(lambda p: restore_model(model, p), path)
        if problem:
            skipped.append((path, problem))
            log.warning("skipping damaged checkpoint %s (%s)", path, problem)
            continue
        return path, checkpoint_step(path), skipped
    if _scan(directory):
        raise _nothing_restored(directory, skipped)
    raise FileNotFoundError(f"No checkpoint in {directory}.")


def new_checkpoints(workdir, timeout=None, interval_s=1.0):
    """Yields the newest checkpoint of `workdir` each time it changes (a newer step, or the
    same step written again, e.g. by a run that fell back past a damaged one); stops after
    `timeout` seconds without a change."""
    last, last_time = None, time.time()
    while True:
        paths = list_checkpoints(workdir)
        if paths:
            try:
                seen = (checkpoint_step(paths[0]), tf.io.gfile.stat(paths[0] + ".index").mtime_nsec)
            except tf.errors.NotFoundError:  # rotated away meanwhile
                seen = last
            if seen != last:
                last = seen
                yield paths[0]
                last_time = time.time()
                continue
        if timeout is not None and time.time() - last_time > timeout:
            return
        time.sleep(interval_s)


def _write_state(directory, paths):
    """The `checkpoint` state file (a text `CheckpointState` proto) listing `paths`, oldest
    first; the last is the latest. Written to a temporary file, then renamed."""
    state = os.path.join(directory, "checkpoint")
    if not paths:
        if tf.io.gfile.exists(state):
            tf.io.gfile.remove(state)
        return
    names = [os.path.basename(p) for p in paths]
    # With their times (the index files' mtimes) after `last_preserved_timestamp`, the
    # manager counts them as its own and deletes the oldest beyond `max_to_keep`.
    times = [tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9 for p in paths]
    lines = ([f'model_checkpoint_path: "{names[-1]}"']
             + [f'all_model_checkpoint_paths: "{n}"' for n in names]
             + [f"all_model_checkpoint_timestamps: {t!r}" for t in times]
             + [f"last_preserved_timestamp: {min(times) - 1.0!r}"])
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(state + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(state + ".tmp", state, overwrite=True)


def _move_aside(directory, steps):
    """Moves the files of checkpoints `steps` to `directory/damaged/`. Returns that folder."""
    found = _scan(directory)
    target = os.path.join(directory, "damaged")
    tf.io.gfile.makedirs(target)
    for s in steps:
        for name in found.get(s, []):
            tf.io.gfile.rename(os.path.join(directory, name), os.path.join(target, name),
                               overwrite=True)
    return target


class CheckpointState:
    """The training state and its `CheckpointManager`.

    Args:
        workdir: run directory.
        model, optimizer: Keras 3 model / optimizer (TF backend: trackable as they are).
        step: an int64 `tf.Variable` holding the number of optimizer steps taken.
        iterator: a `tf.data` iterator (or None) whose position is saved with the weights.
        worker_index, num_workers: this process in a multi-worker job.
        keep: checkpoints kept.

    After `restore`: `restored_path` (or None), `skipped` (`(path, reason)` of the damaged
    newer checkpoints passed over), `moved_to` (where they went, or None), `last_good`
    (the newest checkpoint known to be good: restored or saved by this run).
    """

    def __init__(self, workdir, model, optimizer, step, iterator=None, worker_index=0,
                 num_workers=1, keep=3):
        self.workdir = workdir
        self.step = step
        # Keras 3 does not expose every model variable to TF's object graph (the random
        # state of Dropout / DropPath seed generators is missing), so the lists of all model
        # and optimizer variables go in explicitly: an exact resume needs them.
        items = dict(
            model=model,
            optimizer=optimizer,
            step=step,
            model_variables=list(model.variables),
            optimizer_variables=list(optimizer.variables),
        )
        if iterator is not None:
            items["iterator"] = iterator
        self.checkpoint = tf.train.Checkpoint(**items)
        self.chief_dir = checkpoint_dir(workdir)
        self.is_chief = worker_index == 0
        self.own_dir = self.chief_dir if self.is_chief else os.path.join(self.chief_dir, f"worker{worker_index}")
        self.keep = keep
        self.manager = None
        self.restored_path = None
        self.skipped = []
        self.moved_to = None
        self.last_good = None

    def latest_step(self):
        path = self.last_good or latest_checkpoint(self.workdir)
        return checkpoint_step(path) if path else 0

    def _try_restore(self, path):
        return _restore_or_reason(lambda p: self.checkpoint.restore(p).assert_existing_objects_matched(), path)

    def restore(self):
        """Restores the newest checkpoint that reads (if any), falling back to older ones.
        Returns the restored step (0 if none). Raises `CheckpointError` when checkpoint
        files exist but none restores."""
        own = {checkpoint_step(p): p for p in _list_dir(self.own_dir)}
        for chief_path in _list_dir(self.chief_dir):
            chief_step = checkpoint_step(chief_path)
            path = chief_path
            if not self.is_chief:
                if chief_step in own:
                    path = own[chief_step]
                else:
                    log.warning("worker restores the chief's checkpoint %s (its own input "
                                "position is not at the same step)", chief_path)
            problem = self._try_restore(path)
            if problem and path != chief_path:  # the worker's own copy is damaged
                problem = self._try_restore(path := chief_path)
            if problem:
                self.skipped.append((path, problem))
                log.warning("skipping damaged checkpoint %s (%s)", path, problem)
                continue
            self.restored_path = self.last_good = path
            break
        if self.restored_path is None and _scan(self.own_dir):
            raise _nothing_restored(self.own_dir, self.skipped)
        # Newer files would be overwritten by this run's saves: keep them aside.
        restored = checkpoint_step(self.restored_path) if self.restored_path else -1
        newer = [s for s in _scan(self.own_dir) if s > restored]
        if newer:
            self.moved_to = _move_aside(self.own_dir, newer)
            log.warning("moved the unreadable checkpoint files of step(s) %s to %s",
                        sorted(newer), self.moved_to)
        # The state file lists what the files hold, so the manager rotates those.
        _write_state(self.own_dir, list(reversed(_list_dir(self.own_dir))))
        self._make_manager()
        step = int(self.step.numpy())
        if self.restored_path:
            log.info("restored %s (step %d)", self.restored_path, step)
        return step

    def _make_manager(self):
        if self.manager is None:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint, self.own_dir, max_to_keep=self.keep, checkpoint_name="ckpt"
            )

    def save(self):
        """Saves at the current step (every worker must call this). Returns the path."""
        self._make_manager()
        step = int(self.step.numpy())
        if self.manager.latest_checkpoint and checkpoint_step(self.manager.latest_checkpoint) == step:
            return self.manager.latest_checkpoint
        self.last_good = self.manager.save(checkpoint_number=step)
        return self.last_good


# --------------------------------------------------------------------------------------
# The workdir: writable, and used by one training run at a time.
# --------------------------------------------------------------------------------------


def check_writable(workdir):
    """Creates `workdir` and writes a probe file in it; raises `WorkdirError` (one line,
    naming the path and the reason) when that fails."""
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    try:
        tf.io.gfile.makedirs(workdir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok\n")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        reason = getattr(e, "message", None) or str(e)
        raise WorkdirError(f"workdir {workdir} is not writable: {' '.join(reason.split())[:200]}") from None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class WorkdirLock:
    """`workdir/train.lock`: JSON with the owner's pid, host and start time, created
    atomically (a hard link of a finished file). A lock whose pid is dead on this host is
    stale and taken over; any other lock makes `acquire` raise `WorkdirLockedError`.
    Only for local paths (a `scheme://` workdir is not locked)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.path = os.path.join(workdir, "train.lock")
        self.held = False
        self.took_over = None

    def _owner(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def acquire(self):
        if "://" in self.workdir:
            log.info("workdir %s is not on a local file system: no lock is taken", self.workdir)
            return self
        host = socket.gethostname()
        me = {"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(me) + "\n")
        try:
            for _ in range(3):
                try:
                    os.link(tmp, self.path)
                    self.held = True
                    return self
                except FileExistsError:
                    pass
                owner = self._owner()
                if owner is None:  # vanished (released) meanwhile, or unreadable
                    if os.path.exists(self.path):
                        raise WorkdirLockedError(
                            f"{self.path} exists but cannot be read; if no run uses "
                            f"{self.workdir}, delete it.")
                    continue
                if owner.get("host") == host and not _pid_alive(int(owner.get("pid", -1))):
                    log.warning("taking over the stale lock %s of pid %s (no longer running)",
                                self.path, owner.get("pid"))
                    self.took_over = owner
                    os.remove(self.path)
                    continue
                raise WorkdirLockedError(
                    f"{self.workdir} is in use by another training run (pid {owner.get('pid')} "
                    f"on {owner.get('host')}, since {owner.get('started')}; {self.path}). "
                    f"Stop that run or use another workdir; delete the lock file only if that "
                    f"run is gone.")
            raise WorkdirLockedError(f"could not take the lock {self.path}")
        finally:
            os.remove(tmp)

    def release(self):
        if self.held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid():
                os.remove(self.path)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
