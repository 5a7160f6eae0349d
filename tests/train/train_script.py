"""A small training run for the subprocess tests of tests/train (not a test module).

    python train_script.py WORKDIR [--replicas=N] [--strategy=KIND] [--model=mlp|vivit]
        [--mode=train|...] [--stuck_after=N] [--slow_eval=S] [--hidden=N] [--set key=value ...]

`--model=mlp`: a 2-layer MLP with dropout on in-memory data (shuffled, repeated);
`--model=vivit`: a tiny ViViT + TokenLearner on the built-in synthetic videos (the real
input pipeline). `--replicas=N` splits the CPU into N logical devices first (Mirrored).
`--stuck_after=N` (mlp): the training input yields N batches, then never yields again (as
when every further record is skipped). `--slow_eval=S` (mlp): each evaluation batch takes S
seconds more; the first one touches `WORKDIR/eval_started`. `--hidden=N` (mlp): the hidden width (default 32;
large makes checkpoint writes slow enough to be killed in the middle of one).
At the end writes `WORKDIR/final_weights.npz` (worker i: `final_weights_worker<i>.npz`) and
`WORKDIR/losses.json` (this process's per-step losses).
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def mlp_task(cfg, stuck_after=None, hidden=32, slow_eval=None, workdir=None):
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from tl_keras.train import Task

    rng = np.random.RandomState(0)
    x = rng.randn(256, 12).astype("float32")
    w = rng.randn(12, 4).astype("float32")
    y = np.eye(4, dtype="float32")[np.argmax(x @ w, 1)]

    def model_fn():
        inp = keras.Input((12,))
        h = keras.layers.Dense(hidden, activation="relu")(inp)
        h = keras.layers.Dropout(cfg.model.dropout_rate or 0.0)(h)
        out = keras.layers.Dense(4)(h)
        return keras.Model(inp, out)

    def train_ds(ctx, batch):
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        ds = ds.repeat().shuffle(64, seed=cfg.train.seed)
        ds = ds.batch(ctx.get_per_replica_batch_size(batch), drop_remainder=True)
        if stuck_after is not None:  # an endless pass in which every element is dropped
            ds = ds.take(stuck_after).concatenate(ds.filter(lambda x, y: tf.constant(False)))
        return ds

    def eval_ds(ctx, batch):
        ds = tf.data.Dataset.from_tensor_slices((x[:64], y[:64]))
        ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        ds = ds.batch(ctx.get_per_replica_batch_size(batch))
        if slow_eval:
            def wait(x, y):
                def sleep():
                    open(os.path.join(workdir, "eval_started"), "a").close()
                    time.sleep(slow_eval)
                    return 0

                done = tf.py_function(sleep, [], tf.int32)
                with tf.control_dependencies([done]):
                    return tf.identity(x), y

            ds = ds.map(wait)
        return ds

    return Task(model_fn, train_ds, eval_ds, multilabel=False, num_train_examples=256)


def mlp_config():
    from tl_keras import configs

    cfg = configs.Config(experiment="test-mlp")
    cfg.model.dropout_rate = 0.2
    cfg.train.batch_size = 8
    cfg.train.num_steps = 40
    cfg.train.steps_per_loop = 5
    cfg.train.log_every = 10
    cfg.train.checkpoint_every = 10
    cfg.train.deterministic = True
    cfg.eval.batch_size = 8
    cfg.optim = configs.OptimConfig(name="momentum", base_lr=0.05, warmup_steps=5,
                                    grad_clip_norm=1.0)
    return cfg


def vivit_config():
    from tl_keras import configs

    cfg = configs.Config(experiment="test-vivit")
    cfg.model = configs.ModelConfig(
        name="vivit_b16", patch_size=8, tubelet_size=2, hidden_dim=32, num_layers=2,
        num_heads=2, mlp_dim=64, dropout_rate=0.1, drop_path_rate=0.1,
        tokenlearner=configs.TokenLearnerConfig(num_tokens=4, at=1),
    )
    cfg.data = configs.DataConfig(dataset="synthetic_single", eval_split="validation",
                                  num_frames=4)
    cfg.train.batch_size = 8
    cfg.train.num_steps = 60
    cfg.train.steps_per_loop = 5
    cfg.train.log_every = 10
    cfg.train.checkpoint_every = 10
    cfg.train.deterministic = True
    cfg.eval.batch_size = 8
    cfg.eval.num_steps = 2
    cfg.optim = configs.OptimConfig(name="adamw", base_lr=1e-3, weight_decay=0.05,
                                    warmup_steps=5, grad_clip_norm=1.0)
    return cfg


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--model", default="mlp", choices=["mlp", "vivit"])
    parser.add_argument("--mode", default="train")
    parser.add_argument("--collective_timeout", type=float, default=None)
    parser.add_argument("--stuck_after", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--slow_eval", type=float, default=None)
    parser.add_argument("--set", dest="overrides", nargs="*", default=[])
    args = parser.parse_args()

    from tl_keras import configs

    cfg = mlp_config() if args.model == "mlp" else vivit_config()
    configs.apply_overrides(cfg, args.overrides)

    import numpy as np

    from tl_keras import train as train_lib
    from tl_keras.train import tasks
    from tl_keras.train.checkpoint import WorkdirError

    if args.replicas > 1:
        train_lib.split_cpu(args.replicas)
    si = train_lib.make_strategy(args.strategy, collective_timeout_s=args.collective_timeout)
    if args.model == "mlp":
        task = mlp_task(cfg, args.stuck_after, args.hidden, args.slow_eval, args.workdir)
    else:
        tasks.resolve_data(cfg)
        tasks.validate(cfg, si.num_replicas)
        task = tasks.make_task(cfg)
    try:
        result = train_lib.run(cfg, args.mode, args.workdir, si, task)
    except train_lib.WorkerLostError as e:
        print(f"WORKER LOST: {e}", file=sys.stderr, flush=True)
        return 4
    except train_lib.Preempted as e:
        print(f"PREEMPTED: {e}", file=sys.stderr, flush=True)
        return train_lib.Preempted.exit_code
    except WorkdirError as e:
        print(f"WORKDIR ERROR: {e}", file=sys.stderr, flush=True)
        return 2
    if isinstance(result, train_lib.TrainResult):
        suffix = "" if si.num_workers == 1 else f"_worker{si.worker_index}"
        weights = {f"w{i}": np.asarray(w) for i, w in enumerate(result.model.get_weights())}
        np.savez(os.path.join(args.workdir, f"final_weights{suffix}.npz"), **weights)
        with open(os.path.join(args.workdir, f"losses{suffix}.json"), "w") as f:
            json.dump(result.losses, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
