"""benchmarks/input_pipeline.py runs end to end (a small cut of `--quick`) and its table
shows what the pipeline is built for: decoding only the clip's frames costs less CPU per
clip than decoding the whole video."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _row(stdout, mode, pipeline):
    """(median, CPU ms per video) of one table row."""
    m = re.search(rf"^\| {mode} \| {pipeline} \| [^|]+\| ([0-9.]+) \| ([0-9.]+) \|", stdout, re.M)
    assert m, f"no row for {mode} {pipeline} in:\n{stdout}"
    return float(m.group(1)), float(m.group(2))


@pytest.mark.slow
def test_input_pipeline_benchmark_quick():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--quick",
         "--modes=train", "--pipelines=tl_keras,tl_keras_uint8,naive", "--memory=none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, ours_ms = _row(proc.stdout, "train", "tl_keras")
    _, uint8_ms = _row(proc.stdout, "train", "tl_keras_uint8")
    _, naive_ms = _row(proc.stdout, "train", "naive")
    # Decoding 32 of 250 frames must cost less CPU per clip than decoding all 250.
    assert naive_ms / ours_ms > 1.2, proc.stdout
    assert naive_ms / uint8_ms > 1.2, proc.stdout
    assert "input_pipeline.py --quick" in proc.stdout  # the command is recorded
