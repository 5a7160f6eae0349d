"""Choosing a `tf.distribute.Strategy` from flags.

`--tpu=NAME` (TPUClusterResolver -> connect -> initialize -> `TPUStrategy`) and
`--strategy=auto|tpu|mirrored|multi_worker|one_device`. `auto` picks, in this order:
TPU when `--tpu` is given, `MultiWorkerMirroredStrategy` when `TF_CONFIG` names more than
one task, `MirroredStrategy` with more than one GPU, else `OneDeviceStrategy` on the GPU or
the CPU.

`choose_strategy_kind` is the pure decision (tested without any device); `make_strategy`
builds the strategy. Connecting to a TPU happens only in `make_strategy` with a TPU kind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf

STRATEGY_KINDS = ("auto", "tpu", "mirrored", "multi_worker", "one_device")

log = logging.getLogger("tl_keras.train")


def tf_config_num_workers(tf_config=None):
    """Number of tasks (chief + workers) named by `TF_CONFIG` (0 when unset or empty)."""
    if tf_config is None:
        tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
        return 0
    try:
        cfg = json.loads(tf_config) if isinstance(tf_config, str) else dict(tf_config)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from None
    cluster = cfg.get("cluster", {}) or {}
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def choose_strategy_kind(strategy="auto", tpu=None, num_gpus=0, tf_config=None):
    """The strategy `make_strategy` builds, as a string (`tpu`, `multi_worker`, `mirrored`,
    `one_device`). Pure: reads nothing but its arguments (and `TF_CONFIG` if `tf_config`
    is None)."""
    if strategy not in STRATEGY_KINDS:
        raise ValueError(f"--strategy={strategy!r} is not one of {STRATEGY_KINDS}")
    if strategy == "tpu" and not tpu:
        raise ValueError("--strategy=tpu needs --tpu=NAME (a TPU name, 'local' or grpc:// address)")
    if tpu and strategy not in ("auto", "tpu"):
        raise ValueError(f"--tpu={tpu!r} was given with --strategy={strategy!r}; use --strategy=auto or tpu")
    if strategy != "auto":
        return strategy
    if tpu:
        return "tpu"
    if tf_config_num_workers(tf_config) > 1:
        return "multi_worker"
    if num_gpus > 1:
        return "mirrored"
    return "one_device"


@dataclasses.dataclass
class StrategyInfo:
    """What the loop needs to know about the strategy it runs under."""

    strategy: tf.distribute.Strategy
    kind: str
    device_type: str  # "TPU", "GPU" or "CPU"
    num_workers: int = 1
    worker_index: int = 0

    @property
    def num_replicas(self):
        return self.strategy.num_replicas_in_sync

    @property
    def is_chief(self):
        return self.worker_index == 0

    @property
    def local_replicas(self):
        return self.num_replicas // self.num_workers


def _connect_tpu(tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if tpu == "local" else tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(strategy="auto", tpu=None, collective_timeout_s=None, devices=None):
    """Builds the strategy the flags ask for; returns a `StrategyInfo`.

    Args:
        strategy: one of `STRATEGY_KINDS`.
        tpu: `--tpu` value (name, `local`, or `grpc://host:port`), or None.
        collective_timeout_s: MultiWorkerMirrored: a collective (all-reduce) that does not
            finish in this time fails instead of hanging (e.g. when a peer died).
        devices: MirroredStrategy devices (default: all GPUs, else all logical CPUs).
    """
    # Physical devices: listing logical ones would initialize the runtime, after which
    # MultiWorkerMirroredStrategy can no longer configure its collectives.
    num_gpus = len(tf.config.list_physical_devices("GPU"))
    kind = choose_strategy_kind(strategy, tpu, num_gpus=num_gpus)
    if kind == "tpu":
        strat = _connect_tpu(tpu)
        return StrategyInfo(strat, kind, "TPU", num_workers=strat.extended.num_hosts)
    if kind == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout_s
        )
        strat = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = strat.cluster_resolver
        num_workers = tf_config_num_workers() or 1
        task_type, task_id = resolver.task_type, resolver.task_id
        # With a "chief" job, the chief is worker 0 and "worker" i is i + 1.
        has_chief = bool(json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {}).get("chief"))
        index = task_id + (1 if (has_chief and task_type == "worker") else 0)
        return StrategyInfo(strat, kind, "GPU" if num_gpus else "CPU", num_workers, index)
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "mirrored":
        if devices is None:
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strat = tf.distribute.MirroredStrategy(devices)
        return StrategyInfo(strat, kind, "GPU" if gpus else "CPU")
    device = gpus[0].name if gpus else "/cpu:0"
    return StrategyInfo(tf.distribute.OneDeviceStrategy(device), "one_device", "GPU" if gpus else "CPU")


def split_cpu(num_devices):
    """Splits the physical CPU into `num_devices` logical devices (before TF initializes),
    so `MirroredStrategy` can run with several replicas on a CPU-only machine."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )
