"""benchmarks/input_pipeline.py --quick runs and our pipeline beats the naive one."""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_input_pipeline_benchmark_quick():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "input_pipeline.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ratio = float(re.search(r"CPU per clip naive / tl_keras: ([0-9.]+)x", proc.stdout).group(1))
    assert ratio > 1.2, proc.stdout  # decoding 32 of 300 frames must cost less CPU
    assert "| tl_keras |" in proc.stdout and "| naive |" in proc.stdout
