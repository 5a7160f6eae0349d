"""tl_keras.train: one `tf.distribute` training loop (TensorFlow backend).

>>> from tl_keras import configs, train
>>> si = train.make_strategy("auto")
>>> train.run(cfg, "train_and_evaluate", workdir, si, task)

Modules: `strategy` (flags -> strategy), `task` (`Task`: what the loop consumes), `loop`
(the loop, evaluation, the export mode `export_run`), `optim` (optimizers, schedules),
`metrics` (top-k, mAP, mean class accuracy, multi-view merging), `checkpoint`
(CheckpointManager with the input position), `tasks` (a `Task` from a config:
tl_keras.models + tl_keras.data). The SavedModel / `.keras` writing itself is
`tl_keras.export` (`export_model`).
"""

from tl_keras.train.loop import (
    MODES,
    NonFiniteLossError,
    Preempted,
    TrainResult,
    WorkerLostError,
    continuous_evaluate,
    evaluate_model,
    export_run,
    resolve_schedule,
    run,
    train,
)
from tl_keras.train.checkpoint import CheckpointError, WorkdirError, WorkdirLockedError
from tl_keras.train.strategy import StrategyInfo, choose_strategy_kind, make_strategy, split_cpu
from tl_keras.train.task import Task

__all__ = [
    "CheckpointError",
    "MODES",
    "NonFiniteLossError",
    "Preempted",
    "StrategyInfo",
    "Task",
    "TrainResult",
    "WorkdirError",
    "WorkdirLockedError",
    "WorkerLostError",
    "choose_strategy_kind",
    "continuous_evaluate",
    "evaluate_model",
    "export_run",
    "make_strategy",
    "resolve_schedule",
    "run",
    "split_cpu",
    "train",
]
