"""The benchmark scripts' --quick modes run (so they cannot rot); no timing is asserted."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "benchmarks")


def run(script, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *args],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_throughput_and_plot_quick(tmp_path):
    out = run("throughput.py", "--quick", "--json", str(tmp_path / "t.json"))
    assert "| base |" in out and "speed-up / GFLOPs ratio" in out
    assert "timm" in out  # either the peer's row or the line saying why it was skipped
    results = json.loads((tmp_path / "t.json").read_text())
    timed = [t for g in results["groups"] for t in g["timed"] if t["framework"] == "tl_keras"]
    assert {(t["mode"], t["xla"]) for t in timed} == {
        ("inference", False), ("inference", True), ("train", False), ("train", True)}
    assert all(t["median"] > 0 and len(t["rates"]) == results["repeats"] for t in timed)
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib not installed: plot.py not run")
    run("plot.py", "--json", str(tmp_path / "t.json"), "--out", str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_memory_quick(tmp_path):
    # One tiny group, XLA off: each measurement is a fresh process, and the throughput
    # test above runs the XLA path and the ViViT group.
    out = run("memory.py", "--quick", "--xla=off", "--groups=vit_tiny",
              "--json", str(tmp_path / "m.json"))
    assert "peak, first step (MB)" in out
    rows = json.loads((tmp_path / "m.json").read_text())["results"]
    assert rows and all(r["peak_first_mb"] >= r["rss_build_mb"] > 0 for r in rows)


@pytest.mark.slow
def test_limits_quick(tmp_path):
    out = run("limits.py", "--quick", "--json", str(tmp_path / "l.json"))
    assert "GMAC/s" in out and "Full-resolution work of one fuser block" in out
    results = json.loads((tmp_path / "l.json").read_text())
    assert results["matmul"] and all(r["gmac_per_s"] > 0 for r in results["matmul"])
    parts = {r["part"]: r["ms"] for r in results["fuser_block"]["parts"]}
    assert len(parts) == 5 and all(ms > 0 for ms in parts.values())
    ops = {r["op"] for r in results["profile"]["ops"]}
    # The profiler saw the model's matmuls; executor bookkeeping is not an op type.
    assert any("MatMul" in op for op in ops) and "Process" not in ops
    assert abs(sum(r["share"] for r in results["profile"]["ops"]) - 1.0) < 0.01


@pytest.mark.slow
def test_runtimes_quick(tmp_path):
    """benchmarks/runtimes.py --quick: every runtime (TF SavedModel, LiteRT float32 / dynamic
    range / full integer, ONNX Runtime, OpenVINO) of a tiny ViT + TokenLearner, each in its
    own child process, one repetition."""
    for module in ("ai_edge_litert", "onnxruntime", "openvino", "tf2onnx"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed (pip install 'tl_keras[deploy]')")
    out = run("runtimes.py", "--quick", "--json", str(tmp_path / "r.json"))
    assert "| model | runtime | file (MB) | batch 1 (ms) |" in out
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    runtimes = {"saved_model", "litert", "litert_dynamic_range", "litert_full_integer", "onnx",
                "openvino"}
    assert {(r["model"], r["runtime"]) for r in results} == {
        ("vit_tiny_tl", rt) for rt in runtimes}
    for r in results:
        assert r["ms_b1"] > 0 and r["ms_b8"] > 0 and r["peak_b8_mb"] >= r["rss_load_mb"] * 0.5
        if r["runtime"] in ("litert", "onnx", "openvino"):  # float32: the SavedModel's logits
            assert r["max_err"] < 1e-4, r


@pytest.mark.slow
def test_pipeline_stages_quick():
    """benchmarks/pipeline_stages.py --quick: every stage timed, both pipelines summed."""
    out = run("pipeline_stages.py", "--quick")
    stages = ("read", "parse", "headers", "decode full", "decode window", "resize full",
              "resize window", "to float", "deliver uint8", "deliver float32",
              "**reference (sum)**", "**tl_keras uint8 (sum)**")
    for stage in stages:
        row = [line for line in out.splitlines() if line.startswith(f"| {stage} |")]
        assert len(row) == 1, out
        assert float(row[0].split("|")[2]) > 0, row


@pytest.mark.slow
def test_small_clips_quick():
    """benchmarks/small_clips.py --quick: both parses of the built-in data timed."""
    out = run("small_clips.py", "--quick")
    for name in ("grouped (16 per call)", "one by one"):
        row = [line for line in out.splitlines() if line.startswith(f"| {name} |")]
        assert len(row) == 1, out
        assert all(float(v) > 0 for v in row[0].split("|")[2:4]), row
    assert "one by one / grouped: wall" in out
