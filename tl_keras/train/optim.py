"""Optimizers, learning-rate schedules, gradient clipping and loss scaling.

* `WarmupDecay`: linear warmup from 0 to the peak rate, then cosine or linear decay to
  `end_lr` at `total_steps` (or constant); a Keras `LearningRateSchedule`.
* `peak_learning_rate`: `base_lr`, or `base_lr * global_batch / lr_reference_batch` (the
  paper's "0.8 per TPU core with 4 examples per core" -> `base_lr=0.8, lr_reference_batch=4`).
* `build_optimizer`: SGD + momentum or AdamW (Keras 3 core), decoupled weight decay on
  tensors with >= 2 dimensions only (no decay on biases, norms, position embeddings' ...
  1-D parameters), wrapped in `LossScaleOptimizer` for `mixed_float16`.

Gradients are all-reduced by the training step itself (so that global-norm clipping sees the
gradient of the global batch); `build_optimizer` turns off the Keras optimizer's own
all-reduce (`prereduced_gradients`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

__all__ = [
    "WarmupDecay",
    "peak_learning_rate",
    "build_optimizer",
    "clip_by_global_norm",
    "inner_optimizer",
]


@keras.saving.register_keras_serializable(package="tl_keras")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`lr(step)`: `peak * step / warmup` for `step < warmup`, then `decay` to `end_lr`.

    decay: `"cosine"` (`end + (peak - end) * (1 + cos(pi * p)) / 2`), `"linear"`
    (`peak + (end - peak) * p`) or `"constant"`, with `p = (step - warmup) / (total - warmup)`
    clipped to [0, 1].
    """

    def __init__(self, peak_lr, total_steps, warmup_steps=0, decay="cosine", end_lr=0.0):
        if decay not in ("cosine", "linear", "constant"):
            raise ValueError(f"optim.schedule={decay!r}: expected cosine, linear or constant")
        self.peak_lr = float(peak_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(warmup_steps, total_steps))
        self.decay = decay
        self.end_lr = float(end_lr)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak, end = self.peak_lr, self.end_lr
        warmup = float(self.warmup_steps)
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - warmup) / decay_steps, 0.0, 1.0)
        if self.decay == "cosine":
            decayed = end + (peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        elif self.decay == "linear":
            decayed = peak + (end - peak) * progress
        else:
            decayed = peak + 0.0 * progress
        if self.warmup_steps > 0:
            warm = peak * step / warmup
            return ops.where(step < warmup, warm, decayed)
        return decayed

    def get_config(self):
        return dict(
            peak_lr=self.peak_lr,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            decay=self.decay,
            end_lr=self.end_lr,
        )


def peak_learning_rate(base_lr, global_batch_size, lr_reference_batch=None):
    """The learning rate at the end of warmup."""
    if lr_reference_batch:
        return base_lr * global_batch_size / lr_reference_batch
    return base_lr


def inner_optimizer(optimizer):
    """The optimizer under a `LossScaleOptimizer` (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _prereduced(optimizer):
    """Makes the Keras (TF backend) optimizer apply gradients as given, without its own
    cross-replica sum: our step all-reduces the gradients once, before clipping."""
    opt = inner_optimizer(optimizer)
    if not hasattr(opt, "_all_reduce_sum_gradients"):
        raise RuntimeError(
            "This Keras version's optimizer has no `_all_reduce_sum_gradients`; "
            "tl_keras.train.optim needs updating (gradients would be summed twice)."
        )
    opt._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    return optimizer


def build_optimizer(optim_cfg, learning_rate, variables, loss_scale=False):
    """A built Keras optimizer for `variables` (call inside `strategy.scope()`).

    Args:
        optim_cfg: `tl_keras.configs.OptimConfig`.
        learning_rate: float or schedule.
        variables: the model's trainable variables (the optimizer is built on them).
        loss_scale: wrap in `keras.optimizers.LossScaleOptimizer` (for `mixed_float16`).
    """
    name = optim_cfg.name
    wd = optim_cfg.weight_decay or None
    if name in ("momentum", "sgd"):
        opt = keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=optim_cfg.momentum if name == "momentum" else 0.0,
            nesterov=optim_cfg.nesterov if name == "momentum" else False,
            weight_decay=wd,
        )
    elif name == "adamw":
        opt = keras.optimizers.AdamW(
            learning_rate=learning_rate,
            weight_decay=optim_cfg.weight_decay,
            beta_1=optim_cfg.beta1,
            beta_2=optim_cfg.beta2,
            epsilon=optim_cfg.epsilon,
        )
    elif name == "adam":
        opt = keras.optimizers.Adam(
            learning_rate=learning_rate,
            beta_1=optim_cfg.beta1,
            beta_2=optim_cfg.beta2,
            epsilon=optim_cfg.epsilon,
            weight_decay=wd,
        )
    else:
        raise ValueError(f"optim.name={name!r}: expected momentum, sgd, adamw or adam")
    if wd:
        no_decay = [v for v in variables if len(v.shape) < 2]
        if no_decay:
            opt.exclude_from_weight_decay(var_list=no_decay)
    if loss_scale:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(variables)
    return _prereduced(opt)


def clip_by_global_norm(grads, clip_norm):
    """`(clipped_grads, global_norm)`; no clipping when `clip_norm` is None/0."""
    norm = tf.linalg.global_norm([g for g in grads if g is not None])
    if not clip_norm:
        return grads, norm
    clipped, _ = tf.clip_by_global_norm(grads, clip_norm, use_norm=norm)
    return clipped, norm
