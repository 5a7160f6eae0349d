"""`Task`: what the training loop trains and evaluates, independent of the strategy.

The loop (`loop.py`) consumes a `Task`; `tasks.make_task(cfg)` builds one from a config
(tl_keras models + tl_keras.data pipelines), and a test or an experiment may build its own
(e.g. `experiments/imagenet.py --runlocal`: in-memory images).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import keras

from tl_keras.data import normalize_inputs

__all__ = ["Task"]


@dataclasses.dataclass
class Task:
    """What the loop trains and evaluates, independent of the strategy.

    `*_dataset_fn(input_context, global_batch_size)` returns a `tf.data.Dataset` of
    `(inputs, labels)` batches of `input_context.get_per_replica_batch_size(global_batch_size)`
    examples, reading the share `input_context.input_pipeline_id` of
    `input_context.num_input_pipelines`. Train data repeats and drops the remainder; eval data
    is one pass. Eval inputs may carry a view axis: `[B, V, ...]` (multi-view test).
    Labels are `[B, K]` (one-hot or multi-hot). Segment-test eval batches are
    `(inputs, labels, video_ids)`, one segment per row (merged per id by the loop).
    With `input_normalization` set the datasets yield uint8 pixels, and every consumer of
    a batch feeds the model `model_inputs(x)`. `eval_model_fn(model)`, if set, returns the model to evaluate in place of `model`
    (e.g. the same network at `data.eval_crop_size`) holding `model`'s current weights; the
    loop calls it under the strategy scope before every evaluation.
    """

    model_fn: Callable[[], keras.Model]
    train_dataset_fn: Optional[Callable] = None
    eval_dataset_fn: Optional[Callable] = None
    multilabel: bool = False
    num_train_examples: Optional[int] = None
    eval_model_fn: Optional[Callable[[keras.Model], keras.Model]] = None
    # Set when the datasets yield uint8 pixels (`data.output_dtype=uint8`): the
    # normalization (`tl_keras.data.normalize_inputs`) the loop applies on the device.
    input_normalization: Optional[object] = None

    def model_inputs(self, x):
        """The model's input for a batch's inputs: uint8 pixels normalised with
        `input_normalization`; anything else as it is."""
        if self.input_normalization is None:
            return x
        return normalize_inputs(x, self.input_normalization)
