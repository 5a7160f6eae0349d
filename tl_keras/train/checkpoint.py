"""Checkpoints: model, optimizer, step and input position, with `tf.train.CheckpointManager`.

Layout under `workdir/checkpoints/`: `ckpt-<step>.index/.data-*` and the `checkpoint` state
file, written by the chief. Under `MultiWorkerMirroredStrategy` every worker must take part
in a save; the other workers write theirs to `checkpoints/worker<i>/` and keep it, because it
holds *their own* input position (each worker reads its own shard). On restart a worker
restores its own copy when it is at the chief's latest step, else the chief's.

Keras 3 models and optimizers are trackable by `tf.train.Checkpoint` under the TensorFlow
backend, except the seed-generator state of random layers; `CheckpointState` therefore also
tracks the flat lists `model.variables` / `optimizer.variables`.

Restoring for evaluation or export (`restore_model`) reads only the model's variables, so a
checkpoint written under one strategy (say 2-replica Mirrored, or 8 TPU cores) restores into a
model built on one CPU.
"""

from __future__ import annotations

import logging
import os
import re

import tensorflow as tf

__all__ = ["CheckpointState", "checkpoint_dir", "latest_checkpoint", "checkpoint_step", "restore_model"]

log = logging.getLogger("tl_keras.train")


def checkpoint_dir(workdir):
    return os.path.join(workdir, "checkpoints")


def checkpoint_step(path):
    """The step of a checkpoint path `.../ckpt-<step>`."""
    match = re.search(r"-(\d+)$", path or "")
    if not match:
        raise ValueError(f"not a tl_keras checkpoint path: {path!r}")
    return int(match.group(1))


def latest_checkpoint(workdir):
    """Path of the newest checkpoint in `workdir` (or None)."""
    return tf.train.latest_checkpoint(checkpoint_dir(workdir))


class CheckpointState:
    """The training state and its `CheckpointManager`.

    Args:
        workdir: run directory.
        model, optimizer: Keras 3 model / optimizer (TF backend: trackable as they are).
        step: an int64 `tf.Variable` holding the number of optimizer steps taken.
        iterator: a `tf.data` iterator (or None) whose position is saved with the weights.
        worker_index, num_workers: this process in a multi-worker job.
        keep: checkpoints kept.
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
        own_dir = self.chief_dir if self.is_chief else os.path.join(self.chief_dir, f"worker{worker_index}")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, own_dir, max_to_keep=keep, checkpoint_name="ckpt"
        )

    def latest_step(self):
        path = tf.train.latest_checkpoint(self.chief_dir)
        return checkpoint_step(path) if path else 0

    def restore(self):
        """Restores the newest checkpoint (if any). Returns the restored step (0 if none)."""
        chief_path = tf.train.latest_checkpoint(self.chief_dir)
        if not chief_path:
            return 0
        path = chief_path
        own = self.manager.latest_checkpoint
        if not self.is_chief:
            if own and checkpoint_step(own) == checkpoint_step(chief_path):
                path = own
            else:
                log.warning("worker restores the chief's checkpoint %s (its own input position "
                            "is not at the same step)", chief_path)
        status = self.checkpoint.restore(path)
        status.assert_existing_objects_matched()
        step = int(self.step.numpy())
        log.info("restored %s (step %d)", path, step)
        return step

    def save(self):
        """Saves at the current step (every worker must call this). Returns the path."""
        step = int(self.step.numpy())
        if self.manager.latest_checkpoint and checkpoint_step(self.manager.latest_checkpoint) == step:
            return self.manager.latest_checkpoint
        return self.manager.save(checkpoint_number=step)


def restore_model(model, path):
    """Loads only the model's variables from a training checkpoint (any strategy)."""
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
    return checkpoint_step(path)
