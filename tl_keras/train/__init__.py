"""tl_keras.train: one `tf.distribute` training loop (TensorFlow backend).

>>> from tl_keras import configs, train
>>> si = train.make_strategy("auto")
>>> train.run(cfg, "train_and_evaluate", workdir, si, task)

Modules: `strategy` (flags -> strategy), `loop` (the loop, evaluation, export), `optim`
(optimizers, schedules), `metrics` (top-k, mAP, mean class accuracy, multi-view merging),
`checkpoint` (CheckpointManager with the input position), `tasks` (a `Task` from a config:
tl_keras.models + tl_keras.data), `export` (SavedModel + .keras).
"""

from tl_keras.train.loop import (
    MODES,
    NonFiniteLossError,
    Preempted,
    Task,
    TrainResult,
    WorkerLostError,
    continuous_evaluate,
    evaluate_model,
    export,
    resolve_schedule,
    run,
    train,
)
from tl_keras.train.strategy import StrategyInfo, choose_strategy_kind, make_strategy, split_cpu

__all__ = [
    "MODES",
    "NonFiniteLossError",
    "Preempted",
    "StrategyInfo",
    "Task",
    "TrainResult",
    "WorkerLostError",
    "choose_strategy_kind",
    "continuous_evaluate",
    "evaluate_model",
    "export",
    "make_strategy",
    "resolve_schedule",
    "run",
    "split_cpu",
    "train",
]
