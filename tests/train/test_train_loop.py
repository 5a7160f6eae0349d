"""The training loop end to end on a small Keras model: distribution, exact resume after
SIGKILL, SIGTERM preemption, NaN guard, summaries, metrics.json, evaluator, export.

Runs that need their own TensorFlow process (logical CPU devices, being killed) go through
`train_script.py` in a subprocess.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import configs
from tl_keras import train as train_lib
from tl_keras.train import checkpoint as ckpt_lib

pytestmark = pytest.mark.tf_only

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "train_script.py")


def _script_module():
    spec = importlib.util.spec_from_file_location("_train_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("TF_CONFIG", None)
    return env


def run_script(workdir, *args, timeout=180, check=True):
    cmd = [sys.executable, SCRIPT, str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def start_script(workdir, *args):
    cmd = [sys.executable, SCRIPT, str(workdir), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def wait_for_checkpoint(workdir, min_step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints"))
        if path and ckpt_lib.checkpoint_step(path) >= min_step:
            return path
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended before checkpoint {min_step}:\n{out}\n{(err or '')[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint >= {min_step} after {timeout}s")


def load_weights(path):
    with np.load(path) as f:
        return [f[f"w{i}"] for i in range(len(f.files))]


# A long enough run that a kill lands in the middle: 2000 steps, checkpoint every 50.
RESUME_ARGS = ["--set", "train.num_steps=2000", "train.checkpoint_every=50", "train.log_every=500"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The uninterrupted run that resumed runs must reproduce exactly."""
    workdir = tmp_path_factory.mktemp("reference")
    run_script(workdir, *RESUME_ARGS)
    return load_weights(workdir / "final_weights.npz")


@pytest.mark.xdist_group("reference_run")  # one worker builds the module fixture
def test_sigkill_and_restart_ends_with_identical_weights(tmp_path, reference_run):
    proc = start_script(tmp_path, *RESUME_ARGS)
    try:
        wait_for_checkpoint(tmp_path, 100, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = ckpt_lib.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    assert 100 <= killed_at < 2000
    assert not (tmp_path / "final_weights.npz").exists()

    proc = run_script(tmp_path, *RESUME_ARGS)
    assert f"resumed from step {killed_at}" in proc.stdout
    resumed = load_weights(tmp_path / "final_weights.npz")
    assert len(resumed) == len(reference_run)
    for a, b in zip(resumed, reference_run):
        np.testing.assert_array_equal(a, b)
    # The resumed process ran only the remaining steps.
    with open(tmp_path / "losses.json") as f:
        assert len(json.load(f)) == 2000 - killed_at


@pytest.mark.xdist_group("reference_run")  # one worker builds the module fixture
def test_sigterm_saves_a_checkpoint_and_resumes_exactly(tmp_path, reference_run):
    proc = start_script(tmp_path, *RESUME_ARGS)
    try:
        wait_for_checkpoint(tmp_path, 100, proc)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == train_lib.Preempted.exit_code, err[-3000:]
    assert "SIGTERM received" in err and "Rerun the same command to resume" in err
    step = ckpt_lib.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    assert f"Stopped by SIGTERM at step {step}/2000" in err  # saved at the step it stopped
    proc = run_script(tmp_path, *RESUME_ARGS)
    assert f"resumed from step {step}" in proc.stdout
    for a, b in zip(load_weights(tmp_path / "final_weights.npz"), reference_run):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """Same global batch: one device vs MirroredStrategy over 2 logical CPUs."""
    args = ["--set", "model.dropout_rate=0.0", "train.num_steps=30"]
    one = tmp_path_factory.mktemp("one_device")
    two = tmp_path_factory.mktemp("mirrored")
    run_script(one, "--strategy=one_device", *args)
    proc = run_script(two, "--replicas=2", "--strategy=mirrored", *args)
    assert "mirrored strategy, 2 replica(s)" in proc.stdout
    return one, two


@pytest.mark.xdist_group("mirrored_runs")  # one worker builds the module fixture
def test_mirrored_two_replicas_gives_the_one_device_loss_curve(mirrored_runs):
    one, two = mirrored_runs
    with open(one / "losses.json") as f:
        losses_one = json.load(f)
    with open(two / "losses.json") as f:
        losses_two = json.load(f)
    assert len(losses_one) == len(losses_two) == 30
    assert losses_one[-1] < losses_one[0]  # it learns
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5, atol=1e-6)
    for a, b in zip(load_weights(two / "final_weights.npz"), load_weights(one / "final_weights.npz")):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.xdist_group("mirrored_runs")  # one worker builds the module fixture
def test_mirrored_checkpoint_restores_on_one_device_for_export(mirrored_runs):
    _, two = mirrored_runs
    script = _script_module()
    cfg = script.mlp_config()
    cfg.model.dropout_rate = 0.0
    cfg.train.num_steps = 30
    paths = train_lib.export_run(cfg, str(two), script.mlp_task(cfg))
    exported = keras.saving.load_model(paths["keras"])
    for a, b in zip(exported.get_weights(), load_weights(two / "final_weights.npz")):
        np.testing.assert_array_equal(a, b)
    # The SavedModel serves the same function.
    x = np.random.default_rng(0).normal(size=(3, 12)).astype("float32")
    loaded = tf.saved_model.load(paths["saved_model"])
    served = loaded.serve(tf.constant(x))
    np.testing.assert_allclose(np.asarray(served), np.asarray(exported(x)), rtol=1e-5, atol=1e-6)


def _in_process_cfg(**train):
    script = _script_module()
    cfg = script.mlp_config()
    cfg.train.deterministic = False  # op determinism is process-global: keep it to subprocesses
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return script, cfg


def _events(directory):
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.startswith("events"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    return out


def test_train_and_evaluate_writes_summaries_config_metrics_and_progress(tmp_path, capsys):
    script, cfg = _in_process_cfg(num_steps=20, log_every=5, eval_every=10)
    si = train_lib.make_strategy("one_device")
    result = train_lib.run(cfg, "train_and_evaluate", str(tmp_path), si, script.mlp_task(cfg))
    out = capsys.readouterr().out
    assert "step 20/20" in out and "steps/s" in out and "ETA" in out and "loss" in out
    assert "eval at step 10" in out and "eval at step 20" in out

    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    for key in ("top1", "mean_class_accuracy", "step", "wall_time_s", "num_examples"):
        assert key in metrics, key
    assert "top5" not in metrics  # 4 classes: every label is in the top 5
    assert metrics["step"] == 20 and metrics["num_examples"] == 64
    assert metrics == pytest.approx({**result.metrics})
    with open(tmp_path / "config.json") as f:
        saved = configs.from_dict(configs.Config, json.load(f))
    assert configs.diff(saved, cfg) == {}

    train_events = _events(tmp_path / "train")
    assert [s for s, _ in train_events["train/loss"]] == [5, 10, 15, 20]
    for tag in ("train/learning_rate", "train/steps_per_sec", "train/grad_norm", "train/accuracy"):
        assert tag in train_events, tag
    lr = dict(train_events["train/learning_rate"])
    assert lr[20] == pytest.approx(0.0, abs=1e-7) and lr[5] == pytest.approx(0.05, rel=1e-5)
    eval_events = _events(tmp_path / "eval")
    assert [s for s, _ in eval_events["eval/top1"]] == [10, 20]
    assert eval_events["eval/top1"][-1][1] == pytest.approx(metrics["top1"])
    # 20 steps, checkpoint every 10
    assert ckpt_lib.checkpoint_step(ckpt_lib.latest_checkpoint(str(tmp_path))) == 20


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    script, cfg = _in_process_cfg(num_steps=40, steps_per_loop=5, checkpoint_every=10)
    task = script.mlp_task(cfg)
    good_fn = task.train_dataset_fn

    def poisoned(ctx, batch):  # batches 0..22 are fine, then inputs become inf
        ds = good_fn(ctx, batch).enumerate()
        return ds.map(lambda i, xy: (tf.where(i >= 23, np.inf, xy[0]), xy[1]))

    task.train_dataset_fn = poisoned
    si = train_lib.make_strategy("one_device")
    with pytest.raises(train_lib.NonFiniteLossError) as e:
        train_lib.run(cfg, "train", str(tmp_path), si, task)
    msg = str(e.value)
    assert "at step 24" in msg and "ckpt-20" in msg and "optim.base_lr" in msg
    last = ckpt_lib.latest_checkpoint(str(tmp_path))
    assert ckpt_lib.checkpoint_step(last) == 20
    model = task.model_fn()
    ckpt_lib.restore_model(model, last)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains(tmp_path, precision):
    script, cfg = _in_process_cfg(num_steps=10, precision=precision)
    si = train_lib.make_strategy("one_device")
    result = train_lib.run(cfg, "train", str(tmp_path), si, script.mlp_task(cfg))
    assert np.all(np.isfinite(result.losses)) and len(result.losses) == 10
    assert result.model.layers[1].compute_dtype == precision.split("_")[1]
    # float16 needs loss scaling; bfloat16 does not.
    assert ("train/loss_scale" in _events(tmp_path / "train")) == (precision == "mixed_float16")
    # Variables stay float32 and the checkpoint restores into a float32 model.
    keras.config.set_dtype_policy("float32")
    model = script.mlp_task(cfg).model_fn()
    ckpt_lib.restore_model(model, ckpt_lib.latest_checkpoint(str(tmp_path)))
    for a, b in zip(model.get_weights(), result.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_continuous_evaluator_evaluates_each_new_checkpoint_once_and_stops(tmp_path):
    args = ["--set", "train.num_steps=300", "train.checkpoint_every=50", "train.steps_per_loop=1",
            "train.log_every=50", "train.keep_checkpoints=10", "eval.wait_timeout_s=120"]
    evaluator = start_script(tmp_path, "--mode=evaluate", *args)
    try:
        time.sleep(1.0)
        assert evaluator.poll() is None  # waiting for the first checkpoint
        trainer = run_script(tmp_path, "--mode=train", *args)
        assert "step 300/300" in trainer.stdout
        out, err = evaluator.communicate(timeout=120)
    finally:
        if evaluator.poll() is None:
            evaluator.kill()
    assert evaluator.returncode == 0, err[-3000:]
    with open(tmp_path / "eval" / "history.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == sorted(set(steps)), steps  # each once, in order
    assert steps[-1] == 300 and all(s % 50 == 0 for s in steps)
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["step"] == 300 and "top1" in metrics
    assert "waiting for checkpoints" in out

    # A second evaluator on the finished run has nothing new to do and stops at once.
    again = run_script(tmp_path, "--mode=evaluate", *args, timeout=60)
    with open(tmp_path / "eval" / "history.jsonl") as f:
        assert len(f.readlines()) == len(steps)
    assert "eval of" not in again.stdout


@pytest.mark.parametrize("average", ["logits", "probabilities"])
@pytest.mark.parametrize("multilabel", [False, True])
def test_multi_view_evaluation_matches_numpy(average, multilabel):
    """Views `[B, V, ...]` are merged on device exactly like `metrics.merge_views`."""
    from tl_keras.train import metrics as metrics_lib

    rng = np.random.default_rng(0)
    x = rng.normal(size=(13, 3, 12)).astype("float32")  # 13 examples, 3 views
    if multilabel:
        y = (rng.random((13, 4)) < 0.4).astype("float32")
        y[0] = [1, 0, 0, 0]
    else:
        y = np.eye(4, dtype="float32")[rng.integers(0, 4, 13)]
    script, cfg = _in_process_cfg()
    cfg.eval.average = average
    cfg.eval.batch_size = 4  # 13 = 4 + 4 + 4 + 1: a partial last batch
    task = script.mlp_task(cfg)
    task.multilabel = multilabel
    task.eval_dataset_fn = lambda ctx, b: tf.data.Dataset.from_tensor_slices((x, y)).batch(
        ctx.get_per_replica_batch_size(b))
    si = train_lib.make_strategy("one_device")
    with si.strategy.scope():
        model = task.model_fn()
    got = train_lib.evaluate_model(cfg, si, model, task)
    logits = np.asarray(model(x.reshape(-1, 12))).reshape(13, 3, 4)
    scores = metrics_lib.merge_views(logits, average, multilabel)
    expected = metrics_lib.compute_metrics(scores, y, multilabel)
    assert got["num_examples"] == 13
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
