"""The training loop when things go wrong (issue 20): damaged or missing checkpoint files,
an interrupted checkpoint write, two runs in one workdir, an unwritable workdir, a NaN
loss, SIGTERM while the input never yields.

In-process runs use the small MLP of `train_script.py`; runs that must be signalled go
through it in a subprocess.
"""

import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import train as train_lib
from tl_keras.train import checkpoint as ckpt_lib

pytestmark = pytest.mark.tf_only


def _helpers():  # the subprocess helpers of test_train_loop.py (tests/train is not a package)
    spec = importlib.util.spec_from_file_location(
        "_train_loop_helpers", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_train_loop.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _helpers()
SCRIPT, _env, _script_module = _h.SCRIPT, _h._env, _h._script_module
run_script, start_script, wait_for_checkpoint = _h.run_script, _h.start_script, _h.wait_for_checkpoint
_cfg = _h._in_process_cfg  # (script module, its MLP config with `train` overrides)


def _train(workdir, num_steps, mode="train", **train):
    """Runs `mode` in-process; returns (result, what it printed)."""
    script, cfg = _cfg(num_steps=num_steps, **train)
    out = io.StringIO()
    si = train_lib.make_strategy("one_device")
    result = train_lib.run(cfg, mode, str(workdir), si, script.mlp_task(cfg), out=out)
    return result, out.getvalue()


def _files(workdir):
    d = os.path.join(workdir, "checkpoints")
    return {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d)
            if os.path.isfile(os.path.join(d, n))}


def _data_file(workdir, step):
    d = os.path.join(workdir, "checkpoints")
    return os.path.join(d, next(n for n in os.listdir(d) if n.startswith(f"ckpt-{step}.data")))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _garbage(path):
    with open(path, "wb") as f:
        f.write(os.urandom(200))


@pytest.fixture
def trained(tmp_path):
    """A run that stopped at step 20 with ckpt-10 and ckpt-20."""
    _train(tmp_path, 20)
    assert [ckpt_lib.checkpoint_step(p) for p in ckpt_lib.list_checkpoints(str(tmp_path))] == [20, 10]
    return tmp_path


# ---- 1. Resume from the files; fall back past damaged checkpoints; never start over them.


def test_resume_without_the_state_file(trained):
    os.remove(trained / "checkpoints" / "checkpoint")
    result, out = _train(trained, 30)
    assert "resumed from step 20 (" in out and "ckpt-20" in out
    assert len(result.losses) == 10
    # The state file was rebuilt from the files, and the manager keeps rotating them.
    assert tf.train.latest_checkpoint(str(trained / "checkpoints")).endswith("ckpt-30")
    assert len(tf.train.get_checkpoint_state(str(trained / "checkpoints")).all_model_checkpoint_paths) == 3


@pytest.mark.parametrize("damage, reason", [
    ("truncate_data", "Read less bytes than requested"),
    ("garbage_index", "not an sstable"),
    ("delete_index", None),
])
def test_damaged_newest_checkpoint_falls_back_and_is_kept_aside(trained, damage, reason):
    data = _data_file(trained, 20)
    index = str(trained / "checkpoints" / "ckpt-20.index")
    {"truncate_data": lambda: _truncate(data), "garbage_index": lambda: _garbage(index),
     "delete_index": lambda: os.remove(index)}[damage]()
    damaged = {n: s for n, s in _files(trained).items() if n.startswith("ckpt-20.")}
    result, out = _train(trained, 30)
    assert "resumed from step 10 (" in out and "ckpt-10" in out
    if reason:
        assert f"checkpoint {trained}/checkpoints/ckpt-20 cannot be read" in out and reason in out
    assert len(result.losses) == 20
    # The damaged files were not overwritten by the new ckpt-20: they are aside, unchanged.
    aside = trained / "checkpoints" / "damaged"
    assert f"moved the unreadable checkpoint files to {aside}" in out
    assert {n: os.path.getsize(aside / n) for n in os.listdir(aside)} == damaged
    assert ckpt_lib.checkpoint_problem(str(trained / "checkpoints" / "ckpt-20")) is None


def test_no_readable_checkpoint_refuses_to_start_over(trained):
    os.remove(trained / "checkpoints" / "checkpoint")
    _garbage(str(trained / "checkpoints" / "ckpt-20.index"))
    _truncate(_data_file(trained, 10))
    before = _files(trained)
    with pytest.raises(ckpt_lib.CheckpointError) as e:
        _train(trained, 30)
    msg = str(e.value)
    assert "ckpt-20, ckpt-10" in msg and "none can be restored" in msg and "Refusing" in msg
    assert "Read less bytes" in msg and "not an sstable" in msg
    assert _files(trained) == before  # nothing written, nothing moved
    assert not (trained / "train.lock").exists()


def test_a_checkpoint_of_another_model_is_an_error_not_damage(trained):
    script, cfg = _cfg(num_steps=30)
    task = script.mlp_task(cfg)
    import keras

    def other_model():
        inp = keras.Input((12,))
        return keras.Model(inp, keras.layers.Dense(4)(keras.layers.Dense(16)(inp)))

    task.model_fn = other_model
    before = _files(trained)
    with pytest.raises(ckpt_lib.CheckpointError, match="reads but does not restore into this run"):
        train_lib.run(cfg, "train", str(trained), train_lib.make_strategy("one_device"), task,
                      out=io.StringIO())
    assert _files(trained) == before and not (trained / "checkpoints" / "damaged").exists()


def test_interrupted_checkpoint_write_resumes_from_the_last_complete_one(trained):
    """What a SIGKILL in the middle of saving ckpt-30 can leave: TF's temporary folder and
    a partial data file without its index."""
    d = trained / "checkpoints"
    partial = open(_data_file(trained, 20), "rb").read()[:100]
    (d / "ckpt-30_temp").mkdir()
    (d / "ckpt-30_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(partial)
    (d / "ckpt-30.data-00000-of-00001").write_bytes(partial)
    result, out = _train(trained, 40)
    assert "resumed from step 20 (" in out and len(result.losses) == 20
    assert (d / "damaged" / "ckpt-30.data-00000-of-00001").read_bytes() == partial
    assert ckpt_lib.checkpoint_step(ckpt_lib.latest_complete_checkpoint(str(trained))) == 40


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    """A real SIGKILL while TensorFlow writes a checkpoint (`ckpt-N_temp/` exists): big
    weights make each write take a while."""
    args = ["--hidden=40000", "--set", "train.num_steps=400", "train.checkpoint_every=10",
            "train.steps_per_loop=10", "train.log_every=100", "train.keep_checkpoints=2"]
    d = tmp_path / "checkpoints"
    proc = start_script(tmp_path, *args)
    try:
        wait_for_checkpoint(tmp_path, 10, proc, timeout=180)
        deadline = time.time() + 120
        while time.time() < deadline and not any(n.endswith("_temp") for n in os.listdir(d)):
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if not any(n.endswith("_temp") for n in os.listdir(d)):
        pytest.skip("the kill did not land inside a checkpoint write")
    complete = ckpt_lib.checkpoint_step(ckpt_lib.latest_complete_checkpoint(str(tmp_path)))
    rerun = run_script(tmp_path, *args[:-1], "train.num_steps=" + str(complete + 20),
                       "train.keep_checkpoints=2", timeout=300)
    assert f"resumed from step {complete} (" in rerun.stdout
    assert ckpt_lib.checkpoint_step(ckpt_lib.latest_complete_checkpoint(str(tmp_path))) == complete + 20


def test_export_and_tools_api_fall_back_past_a_damaged_checkpoint(trained):
    _truncate(_data_file(trained, 20))
    path = str(trained / "checkpoints" / "ckpt-20")
    assert "Read less bytes than requested" in ckpt_lib.checkpoint_problem(path)
    assert ckpt_lib.latest_checkpoint(str(trained)) == path  # files present, not read
    assert ckpt_lib.latest_complete_checkpoint(str(trained)).endswith("ckpt-10")
    script, cfg = _cfg(num_steps=20)
    out = io.StringIO()
    paths = train_lib.export_run(cfg, str(trained), script.mlp_task(cfg), out=out)
    assert "ckpt-20 cannot be read" in out.getvalue() and "exporting" in out.getvalue()
    assert paths["keras"].startswith(str(trained / "export" / "10"))
    # Without any checkpoint file: FileNotFoundError; with only damaged ones: CheckpointError.
    _garbage(str(trained / "checkpoints" / "ckpt-10.index"))
    with pytest.raises(ckpt_lib.CheckpointError, match="none can be restored"):
        ckpt_lib.restore_latest_model(script.mlp_task(cfg).model_fn(), str(trained))
    with pytest.raises(FileNotFoundError):
        ckpt_lib.restore_latest_model(script.mlp_task(cfg).model_fn(), str(trained / "nothing"))


def test_evaluator_reads_the_files_and_skips_a_damaged_checkpoint(trained):
    os.remove(trained / "checkpoints" / "checkpoint")
    _truncate(_data_file(trained, 20))
    script, cfg = _cfg(num_steps=20)
    cfg.eval.wait_timeout_s = 1
    si = train_lib.make_strategy("one_device")
    out = io.StringIO()
    assert train_lib.run(cfg, "evaluate", str(trained), si, script.mlp_task(cfg), out=out) is None
    assert "skipping" in out.getvalue() and "ckpt-20" in out.getvalue()
    assert "Read less bytes than requested" in out.getvalue()
    # A restarted trainer falls back to ckpt-10 and writes ckpt-20 again: it is evaluated.
    _train(trained, 20)
    result = train_lib.run(cfg, "evaluate", str(trained), si, script.mlp_task(cfg), out=io.StringIO())
    assert result["step"] == 20 and json.loads((trained / "metrics.json").read_text())["step"] == 20


# ---- 3. One training run per workdir.


def _lock(workdir, pid, host=None):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "train.lock"), "w") as f:
        json.dump({"pid": pid, "host": host or socket.gethostname(), "started": "then"}, f)


def test_a_live_lock_refuses_before_anything_is_written(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path, other.pid)
        with pytest.raises(ckpt_lib.WorkdirLockedError) as e:
            _train(tmp_path, 10)
    finally:
        other.kill()
        other.wait()
    msg = str(e.value)
    assert f"pid {other.pid} on {socket.gethostname()}" in msg and "in use by another" in msg
    assert sorted(os.listdir(tmp_path)) == ["train.lock"]  # no config.json, no checkpoints
    # A lock of another host cannot be checked: refused too.
    _lock(tmp_path, 1, host="elsewhere")
    with pytest.raises(ckpt_lib.WorkdirLockedError, match="on elsewhere"):
        _train(tmp_path, 10)


def test_a_stale_lock_is_taken_over_and_released_at_the_end(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path, dead.pid)
    result, out = _train(tmp_path, 10)
    assert f"took over the stale lock of pid {dead.pid}" in out
    assert len(result.losses) == 10 and not (tmp_path / "train.lock").exists()


def test_the_lock_is_released_when_training_fails(tmp_path):
    script, cfg = _cfg(num_steps=10)
    task = script.mlp_task(cfg)
    task.train_dataset_fn = lambda ctx, b: 1 / 0
    with pytest.raises(ZeroDivisionError):
        train_lib.run(cfg, "train", str(tmp_path), train_lib.make_strategy("one_device"), task)
    assert not (tmp_path / "train.lock").exists()


@pytest.mark.slow
def test_two_trainings_into_one_workdir(tmp_path):
    args = ["--set", "train.num_steps=1000000", "train.checkpoint_every=500",
            "train.log_every=5000", "train.eval_every=1000"]
    first = start_script(tmp_path, "--mode=train_and_evaluate", *args)
    try:
        wait_for_checkpoint(tmp_path, 1000, first)
        second = run_script(tmp_path, "--mode=train_and_evaluate", *args, check=False)
        assert first.poll() is None  # the first run was training all along
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"in use by another training run (pid {first.pid}" in second.stderr
    assert first.returncode == train_lib.Preempted.exit_code, err[-2000:]
    steps = [json.loads(line)["step"] for line in open(tmp_path / "eval" / "history.jsonl")]
    assert steps and steps == sorted(set(steps))  # one writer: no duplicate rows
    assert not (tmp_path / "train.lock").exists()


# ---- 4. An unwritable workdir.


def test_unwritable_workdir_is_one_line_naming_the_path(tmp_path):
    (tmp_path / "a_file").write_text("")
    workdir = str(tmp_path / "a_file" / "run")
    for mode in ("train", "evaluate", "export"):
        with pytest.raises(ckpt_lib.WorkdirError) as e:
            _train(workdir, 10, mode=mode)
        msg = str(e.value)
        assert msg.startswith(f"workdir {workdir} is not writable: ") and "\n" not in msg


# ---- 5. NaN loss: the named checkpoint loads and evaluates.


def test_nan_loss_names_the_step_and_a_checkpoint_that_evaluates(tmp_path):
    script, cfg = _cfg(num_steps=40, checkpoint_every=10)
    task = script.mlp_task(cfg)
    good_fn = task.train_dataset_fn
    task.train_dataset_fn = lambda ctx, b: good_fn(ctx, b).enumerate().map(
        lambda i, xy: (tf.where(i >= 13, np.nan, xy[0]), xy[1]))
    si = train_lib.make_strategy("one_device")
    with pytest.raises(train_lib.NonFiniteLossError) as e:
        train_lib.run(cfg, "train", str(tmp_path), si, task)
    named = str(tmp_path / "checkpoints" / "ckpt-10")
    assert "at step 14" in str(e.value) and f"({named})" in str(e.value)
    model = task.model_fn()
    path, step, skipped = ckpt_lib.restore_latest_model(model, str(tmp_path))
    assert (path, step, skipped) == (named, 10, [])
    metrics = train_lib.evaluate_model(cfg, si, model, task)
    assert metrics["num_examples"] == 64 and 0.0 <= metrics["top1"] <= 1.0
    assert not (tmp_path / "train.lock").exists()


# ---- 6. SIGTERM while the input never yields.


def _stuck_env(timeout_s):
    env = _env()
    env["TL_KERAS_SIGTERM_TIMEOUT_S"] = str(timeout_s)
    return env


def _wait_for_line(proc, path, text, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with open(path) as f:
            if text in f.read():
                return
        assert proc.poll() is None, f"the run ended before printing {text!r}"
        time.sleep(0.05)
    with open(path) as f:
        raise AssertionError(f"no {text!r} in the output: {f.read()[-3000:]}")


def _sigterm_when_stuck(workdir, args, wait):
    """Starts the training script (input stuck per `args`), waits with `wait(proc,
    stdout_path)`, sends SIGTERM; returns `(proc, stderr)` once it has ended. The output
    goes to files, so no pipe fills up (and blocks the run) while the test waits."""
    cmd = [sys.executable, SCRIPT, str(workdir), *args]
    out_path, err_path = f"{workdir}.stdout", f"{workdir}.stderr"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=_stuck_env(2))
    try:
        wait(proc, out_path)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open(err_path) as f:
        return proc, f.read()


def test_sigterm_ends_a_run_whose_input_never_yields(tmp_path):
    def in_first_call(proc, stdout):
        _wait_for_line(proc, stdout, "strategy, 1 replica")
        time.sleep(1.0)  # in the first tf.function call, waiting for a batch

    proc, err = _sigterm_when_stuck(tmp_path, ["--stuck_after=0"], in_first_call)
    assert proc.returncode == train_lib.Preempted.exit_code, err[-3000:]
    assert "SIGTERM received" in err
    assert "no training step completed for 2s after SIGTERM" in err
    assert "stopping at step 0" in err and "the last checkpoint is none" in err
    assert not (tmp_path / "train.lock").exists()


def test_sigterm_during_a_slow_evaluation_saves_the_steps_since_the_last_checkpoint(tmp_path):
    """SIGTERM during an evaluation whose batches each take about the stuck timeout (2 s
    here) is not "stuck": the evaluation ends after its current batch, then the loop saves
    the steps made since the last checkpoint and stops."""
    args = ["--mode=train_and_evaluate", "--slow_eval=1.5", "--set", "train.eval_every=5",
            "train.checkpoint_every=10"]

    def in_eval_at_step_5(proc, _):
        deadline = time.time() + 120
        while not (tmp_path / "eval_started").exists():
            assert proc.poll() is None and time.time() < deadline, "no evaluation started"
            time.sleep(0.05)

    proc, err = _sigterm_when_stuck(tmp_path, args, in_eval_at_step_5)
    assert proc.returncode == train_lib.Preempted.exit_code, err[-3000:]
    assert "Stopped by SIGTERM at step 5/40 (its evaluation cut short); checkpoint saved" in err, err[-3000:]
    assert "without a new checkpoint" not in err
    assert not (tmp_path / "eval" / "history.jsonl").exists()  # no metrics of a partial pass
    assert (tmp_path / "checkpoints" / "ckpt-5.index").exists()
    assert not (tmp_path / "train.lock").exists()


@pytest.mark.slow
def test_sigterm_while_stuck_keeps_the_checkpoints_and_the_rerun_resumes(tmp_path):
    args = ["--set", "train.num_steps=40", "train.checkpoint_every=10", "train.steps_per_loop=5"]
    def after_ckpt_20(proc, _):
        wait_for_checkpoint(tmp_path, 20, proc)
        time.sleep(1.0)

    proc, err = _sigterm_when_stuck(tmp_path, ["--stuck_after=25", *args], after_ckpt_20)
    assert proc.returncode == train_lib.Preempted.exit_code, err[-3000:]
    assert f"the last checkpoint is {tmp_path}/checkpoints/ckpt-20" in err
    rerun = run_script(tmp_path, "--stuck_after=1000", *args)  # the same input pipeline
    assert "resumed from step 20" in rerun.stdout and "step 40/40" in rerun.stdout
