"""MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 (TF_CONFIG).

Slow (each run starts two TensorFlow processes): CI runs them in its bounded slow step.
"""

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

from tl_keras.train import checkpoint as ckpt_lib

pytestmark = [pytest.mark.slow, pytest.mark.tf_only]

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_script.py")
COMMON = ["--strategy=multi_worker", "--collective_timeout=30", "--set", "model.dropout_rate=0.0"]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_workers(workdir, extra, mode="train"):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        cmd = [sys.executable, SCRIPT, str(workdir), f"--mode={mode}", *COMMON, *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    return procs


def _finish(procs, timeout=240):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k[1:]))]


def test_two_workers_train_evaluate_and_end_with_identical_weights(tmp_path):
    # eval batch 6 over 64 examples: the last batches are partial and uneven across workers.
    procs = _start_workers(tmp_path, ["train.num_steps=40", "train.eval_every=20",
                                      "eval.batch_size=6"], mode="train_and_evaluate")
    outs = _finish(procs)
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "multi_worker strategy, 2 replica(s) on 2 worker(s)" in outs[0][0]
    assert "eval at step 20" in outs[0][0]
    with open(tmp_path / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["step"] == 40 and metrics["num_examples"] == 64  # every example once
    w0 = _weights(tmp_path / "final_weights_worker0.npz")
    w1 = _weights(tmp_path / "final_weights_worker1.npz")
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)
    with open(tmp_path / "losses_worker0.json") as f:
        losses = json.load(f)
    assert len(losses) == 40 and losses[-1] < losses[0]
    # The chief writes the shared checkpoints; the other worker keeps its own copy.
    assert ckpt_lib.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))) == 40
    assert ckpt_lib.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints" / "worker1"))) == 40


def test_dead_worker_stops_the_other_with_a_clear_error_and_both_resume(tmp_path):
    extra = ["train.num_steps=1500", "train.checkpoint_every=50", "train.log_every=500"]
    procs = _start_workers(tmp_path, extra)
    try:
        deadline = time.time() + 180
        while True:
            path = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
            if path and ckpt_lib.checkpoint_step(path) >= 100:
                break
            assert time.time() < deadline and all(p.poll() is None for p in procs), (
                [p.communicate()[1][-2000:] for p in procs if p.poll() is not None])
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGKILL)
        killed = time.time()
        out, err = procs[0].communicate(timeout=120)  # bounded: the collective timeout is 30 s
        waited = time.time() - killed
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[0].returncode == 4, err[-3000:]
    assert "failed or became unreachable" in err and "Restart all workers" in err
    assert waited < 100
    stopped_at = ckpt_lib.checkpoint_step(tf.train.latest_checkpoint(str(tmp_path / "checkpoints")))
    assert 100 <= stopped_at < 1500

    procs = _start_workers(tmp_path, extra)
    outs = _finish(procs)
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert f"resumed from step {stopped_at}" in outs[0][0]
    with open(tmp_path / "losses_worker0.json") as f:
        assert len(json.load(f)) == 1500 - stopped_at
    for a, b in zip(_weights(tmp_path / "final_weights_worker0.npz"),
                    _weights(tmp_path / "final_weights_worker1.npz")):
        np.testing.assert_array_equal(a, b)
