"""LiteRT, ONNX and OpenVINO exports (`tl_keras.export.export_runtime`, `tools/export_model.py
--format=litert,onnx,openvino`): each file runs in its own runtime, in a fresh process that
imports only numpy and the runtime (`runtime_runner.py`), and gives the Keras model's logits
to 1e-5 of their scale in float32, at two batch sizes (the batch is dynamic).

Tiny configs of each family with every trainable weight perturbed (so the zero-initialised
head and TokenFusers take part): ViT + TokenLearner + TokenFuser (model "b", in the default
suite), ViT model "a", ViViT + TokenLearner and X(2+1)D-M with the TokenLearner modules
(`slow`: a conversion with its test takes 3-20 s on two cores), and OpenVINO with the
pre-processing inside (`pixels=True`, `slow`). The tests skip, naming the package, when
the `deploy` extra (`pip install 'tl_keras[deploy]'`) is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tl_keras import data, export
from tl_keras.models import TL, create_model

pytestmark = pytest.mark.tf_only

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "runtime_runner.py")
TOOLS = os.path.abspath(os.path.join(HERE, "..", "..", "tools"))
RTOL = 1e-5  # of the logits' scale, max |logit|
# With the pre-processing inside, OpenVINO's own bilinear resize (its float rounding, not
# TensorFlow's) comes before the model: seen 9e-7 to 1.8e-5 of the scale.
RTOL_PIXELS = 5e-5
# The runtime package each format runs in, and the packages its conversion needs.
RUNTIMES = {"litert": "ai_edge_litert", "onnx": "onnxruntime", "openvino": "openvino"}
CONVERTERS = {"litert": (), "onnx": ("tf2onnx", "onnx"), "openvino": ("openvino",)}

VIT = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64)
FAMILIES = {
    "vit_b": lambda: create_model(
        "vit_b16", **VIT, num_classes=5, tokenlearner=TL(4, at=1, fuser=True)
    ),
    "vit_a": lambda: create_model("vit_b16", **VIT, num_classes=5, tokenlearner=TL(4, at=1)),
    "vivit": lambda: create_model(
        "vivit_b16", **VIT, num_frames=4, tubelet_size=2, num_classes=6,
        tokenlearner=TL(3, at=1),
    ),
    "x2plus1d": lambda: create_model(
        "x2plus1d_m", num_classes=5, num_frames=4, image_size=64, stem_width=4,
        widths=(4, 8, 8, 16), depths=(1, 1, 1, 2), expansion=2, head_width=16, fc_width=12,
        num_heads=2, tokenlearner=4,
    ),
}
DEFAULT_CASES = {("vit_b", fmt) for fmt in export.RUNTIME_FORMATS}


def _needs(fmt):
    needed = dict.fromkeys((RUNTIMES[fmt],) + CONVERTERS[fmt])  # in order, once each
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"{fmt}: {', '.join(missing)} not installed (pip install 'tl_keras[deploy]')"
        )


def _perturbed(model, seed):
    """Every trainable weight moved by N(0, 0.2): the zero-initialised head and TokenFuser
    mixing weights included, so the outputs depend on every part of the model."""
    rng = np.random.default_rng(seed)
    for w in model.trainable_weights:
        w.assign(np.asarray(w) + rng.normal(0, 0.2, w.shape).astype("float32"))
    return model


class _Exports:
    """The models (built once) and their exports (converted once), per session."""

    def __init__(self, root):
        self.root = root
        self.models = {}
        self.paths = {}

    def model(self, family):
        if family not in self.models:
            self.models[family] = _perturbed(FAMILIES[family](), seed=len(self.models))
        return self.models[family]

    def path(self, family, fmt):
        if (family, fmt) not in self.paths:
            path = os.path.join(self.root, family, export.RUNTIME_FILES[fmt])
            export.export_runtime(self.model(family), path, fmt)
            self.paths[family, fmt] = path
        return self.paths[family, fmt]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return _Exports(str(tmp_path_factory.mktemp("runtimes")))


def run_in_runtime(fmt, path, arrays, tmp_path, env):
    """`{key: outputs}` of `arrays` run by `runtime_runner.py` in a fresh process, and what
    it reports (the input as the runtime sees it, the tl_keras / Keras / TF modules it
    imported)."""
    inputs, outputs = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
    np.savez(inputs, **arrays)
    proc = subprocess.run(
        [sys.executable, RUNNER, fmt, path, inputs, outputs],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(outputs) as out:
        return {k: out[k] for k in out.files}, info


def _check_parity(exports, family, fmt, tmp_path, env):
    _needs(fmt)
    model = exports.model(family)
    path = exports.path(family, fmt)
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(11)
    # Model input: pre-processed pixels, in the pipeline's [-1, 1].
    arrays = {f"batch{b}": rng.uniform(-1, 1, (b,) + shape).astype("float32") for b in (1, 3)}
    got, info = run_in_runtime(fmt, path, arrays, tmp_path, env)
    assert info["imported"] == [], f"the runner imported {info['imported']}"
    dims = info.get("shape_signature") or info.get("shape")
    assert dims == [-1] + list(shape), f"{fmt}: input {dims}: the batch must stay dynamic"
    for key, x in arrays.items():
        want = np.asarray(model(x, training=False))
        assert got[key].shape == want.shape
        scale = np.max(np.abs(want))
        err = np.max(np.abs(got[key] - want))
        assert err <= RTOL * scale, f"{family} {fmt} {key}: max error {err:.3g}, scale {scale:.3g}"
    # The logits depend on the input (a model that ignored it would pass trivially).
    assert np.ptp(np.asarray(model(arrays["batch3"], training=False)), axis=0).max() > 1e-3


def _cases():
    """Every family x format; the default suite keeps model "b" (~5 s a format), the rest
    is `slow`."""
    for family in FAMILIES:
        for fmt in export.RUNTIME_FORMATS:
            marks = () if (family, fmt) in DEFAULT_CASES else (pytest.mark.slow,)
            yield pytest.param(family, fmt, marks=marks, id=f"{family}-{fmt}")


@pytest.mark.parametrize("family,fmt", list(_cases()))
def test_parity(exports, family, fmt, tmp_path, subprocess_env):
    _check_parity(exports, family, fmt, tmp_path, subprocess_env)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["vit_b", "vivit"])
def test_openvino_with_the_preprocessing_inside(exports, family, tmp_path, subprocess_env):
    """`pixels=True`: uint8 pixels of any size in, the evaluation pre-processing
    (`data.preprocess`) inside the OpenVINO model; batches of two sizes."""
    _needs("openvino")
    model = exports.model(family)
    prep = data.preprocessing_for(model)
    path = os.path.join(exports.root, family, "pixels", "model.xml")
    export.export_runtime(model, path, "openvino", pixels=True)
    rng = np.random.default_rng(12)
    lead = (4,) if prep.kind == "video" else ()
    arrays = {
        "a": rng.integers(0, 256, (1,) + lead + (45, 38, 3), dtype=np.uint8),
        "b": rng.integers(0, 256, (2,) + lead + (36, 52, 3), dtype=np.uint8),
    }
    got, info = run_in_runtime("openvino", path, arrays, tmp_path, subprocess_env)
    assert info["imported"] == []
    assert info["shape"] == [-1] + [4] * (prep.kind == "video") + [-1, -1, 3]
    for key, pixels in arrays.items():
        x = data.preprocess(pixels, prep, round_to_uint8=False)
        want = np.asarray(model(x, training=False))
        err = np.max(np.abs(got[key] - want))
        print(f"{family} {key}: max error {err / np.max(np.abs(want)):.3g} of the scale")
        assert err <= RTOL_PIXELS * np.max(np.abs(want)), f"{family} {key}: max error {err:.3g}"
    with open(path + ".json") as f:
        info = json.load(f)
    assert info["preprocessing_in_graph"] is True and info["input"]["dtype"] == "uint8"
    with pytest.raises(ValueError, match="pixels=True .* is for openvino only"):
        export.export_runtime(model, str(tmp_path / "m.onnx"), "onnx", pixels=True)


def test_json_beside_the_file(exports):
    """`<file>.json`: the input, the output, the pre-processing the caller applies."""
    _needs("onnx")
    path = exports.path("vit_b", "onnx")
    with open(path + ".json") as f:
        info = json.load(f)
    prep = data.preprocessing_for(exports.model("vit_b"))
    assert info["input"] == {"name": "images", "dtype": "float32", "shape": [-1, 32, 32, 3]}
    assert info["output"]["shape"] == [-1, 5]
    assert info["preprocessing"] == json.loads(json.dumps(prep.to_dict()))
    assert info["preprocessing_in_graph"] is False


def test_export_runtime_argument_errors(exports, tmp_path):
    model = exports.model("vit_b")
    with pytest.raises(ValueError, match="format='tflite'"):
        export.export_runtime(model, str(tmp_path / "m.tflite"), "tflite")
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export.export_runtime(model, str(tmp_path / "m.tflite"), "onnx")
    with pytest.raises(ValueError, match="2 class names for a model with 5"):
        export.export_runtime(model, str(tmp_path / "m.tflite"), "litert", class_names=["a", "b"])
    assert not os.listdir(tmp_path)  # nothing written on an error


def _load_tool(monkeypatch):
    """`tools/export_model.py` as a module, its folder on `sys.path` as when it runs."""
    monkeypatch.syspath_prepend(TOOLS)
    spec = importlib.util.spec_from_file_location(
        "export_model_cli", os.path.join(TOOLS, "export_model.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_each_format(exports, tmp_path, subprocess_env, monkeypatch, capsys):
    """`tools/export_model.py --model=M.keras --format=keras,onnx`: `OUT/onnx/model.onnx` runs
    in onnxruntime with the `.keras` model's logits; an existing export is kept."""
    _needs("onnx")
    tool = _load_tool(monkeypatch)
    model = exports.model("vit_b")
    source = str(tmp_path / "source.keras")
    export.save_keras(model, source)
    out = tmp_path / "out"
    argv = [f"--model={source}", f"--output={out}", "--format=keras,onnx", "--class_names=a,b,c,d,e"]
    assert tool.main(argv) == 0
    printed = capsys.readouterr().out
    onnx_file = str(out / "onnx" / "model.onnx")
    assert f"onnx: {onnx_file}" in printed
    assert "pre-processing is the caller's" in printed
    assert (out / "model.keras").is_file() and not (out / "saved_model").exists()
    with open(onnx_file + ".json") as f:
        assert json.load(f)["class_names"] == ["a", "b", "c", "d", "e"]
    x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    got, _ = run_in_runtime("onnx", onnx_file, {"x": x}, tmp_path, subprocess_env)
    want = np.asarray(model(x, training=False))
    assert np.max(np.abs(got["x"] - want)) <= RTOL * np.max(np.abs(want))
    # An existing export is kept unless --overwrite; a directory that is not one never.
    assert tool.main([f"--model={source}", f"--output={out}", "--format=onnx"]) == 2
    assert f"{out / 'onnx'} exists; pass --overwrite" in capsys.readouterr().err
    (out / "litert").mkdir()
    (out / "litert" / "notes.txt").write_text("mine")
    assert tool.main([f"--model={source}", f"--output={out}", "--format=litert",
                      "--overwrite"]) == 2
    assert "is not a litert export (no model.tflite)" in capsys.readouterr().err
    assert (out / "litert" / "notes.txt").read_text() == "mine"


def test_tool_rejects_unknown_format(monkeypatch, capsys):
    tool = _load_tool(monkeypatch)
    assert tool.main(["--model=m.keras", "--output=o", "--format=onnx,tflite"]) == 2
    assert "expected saved_model, keras, litert, onnx, openvino" in capsys.readouterr().err
    assert tool.main(["--model=m.keras", "--output=o", "--format=onnx", "--openvino_pixels"]) == 2
    assert "--openvino_pixels is an option of --format=openvino" in capsys.readouterr().err


@pytest.mark.slow
def test_tool_openvino_pixels(exports, tmp_path, subprocess_env, monkeypatch, capsys):
    """`--format=openvino --openvino_pixels`: uint8 pixels in, the run's pre-processing
    (here `--min_resize=40`) inside."""
    _needs("openvino")
    tool = _load_tool(monkeypatch)
    model = exports.model("vit_a")
    source = export.save_keras(model, str(tmp_path / "source.keras"))
    out = tmp_path / "out"
    assert tool.main([f"--model={source}", f"--output={out}", "--format=openvino",
                      "--openvino_pixels", "--min_resize=40"]) == 0
    assert "pre-processing inside" in capsys.readouterr().out
    pixels = np.random.default_rng(4).integers(0, 256, (2, 50, 44, 3), dtype=np.uint8)
    got, _ = run_in_runtime("openvino", str(out / "openvino" / "model.xml"), {"p": pixels},
                            tmp_path, subprocess_env)
    prep = data.preprocessing_for(model, min_resize=40)
    want = np.asarray(model(data.preprocess(pixels, prep), training=False))
    assert np.max(np.abs(got["p"] - want)) <= RTOL * np.max(np.abs(want))


# --------------------------------------------------------------------------------------
# LiteRT quantization (tiny models; the trained model's agreement: test_int8.py).
# --------------------------------------------------------------------------------------

# Of the logits' scale, on the tiny model with every weight perturbed by N(0, 0.2) and random
# inputs (seen: dynamic range 0.017, full integer 0.28, calibrated on 10 random images): a
# plumbing check (calibration on normalised pixels, float32 in and out); what int8 does to
# a trained model is measured by test_int8.py (top-1 agreement).
QUANT_RTOL = {"dynamic_range": 0.05, "full_integer": 0.5}


@pytest.mark.parametrize("mode", [
    "dynamic_range", pytest.param("full_integer", marks=pytest.mark.slow)])
def test_litert_quantized(exports, mode, tmp_path, subprocess_env):
    """`export_runtime(..., "litert", quantization=mode)`: int8 weights (a smaller file),
    the batch dynamic, float32 logits near the Keras model's;
    `full_integer` calibrated on uint8 pixel batches (normalised by the export) with
    labels, as a `uint8` pipeline yields them."""
    _needs("litert")
    model = exports.model("vit_b")
    rng = np.random.default_rng(5)
    options = {}
    if mode == "full_integer":
        batches = [(rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.eye(5)[:4])
                   for _ in range(3)]
        options = dict(representative_data=batches, representative_examples=10)
    path = export.export_runtime(model, str(tmp_path / "q" / "model.tflite"), "litert",
                                 quantization=mode, **options)
    with open(path + ".json") as f:
        info = json.load(f)["quantization"]
    assert info["mode"] == mode and info["weights"] == "int8"
    if mode == "full_integer":
        assert info["activations"] == "int8" and info["representative_examples"] == 10
        assert info["float_ops"] == {}, info["float_ops"]  # an image model: every op int8
    # Smaller, though not 4x: in a model this tiny most tensors are below the converter's
    # 1024-element threshold (kept float32) and the flatbuffer's own bytes weigh in.
    assert os.path.getsize(path) < 0.8 * os.path.getsize(exports.path("vit_b", "litert"))
    x = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    got, run_info = run_in_runtime("litert", path, {"x": x[:1], "y": x}, tmp_path, subprocess_env)
    assert run_info["imported"] == [] and run_info["shape_signature"] == [-1, 32, 32, 3]
    want = np.asarray(model(x, training=False))
    err = np.max(np.abs(got["y"] - want)) / np.max(np.abs(want))
    print(f"{mode}: max error {err:.3g} of the logits' scale")
    assert err <= QUANT_RTOL[mode], f"{mode}: max error {err:.3g} of the scale"
    np.testing.assert_allclose(got["x"], got["y"][:1], atol=1e-5 * np.max(np.abs(want)))


def test_litert_quantization_argument_errors(exports, tmp_path):
    model = exports.model("vit_b")
    path = str(tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="quantization='int4'"):
        export.export_runtime(model, path, "litert", quantization="int4")
    with pytest.raises(ValueError, match="is for format='litert' only"):
        export.export_runtime(model, str(tmp_path / "m.onnx"), "onnx", quantization="dynamic_range")
    with pytest.raises(ValueError, match="needs representative_data"):
        export.export_runtime(model, path, "litert", quantization="full_integer")
    with pytest.raises(ValueError, match="dynamic_range needs no representative_data"):
        export.export_runtime(model, path, "litert", quantization="dynamic_range",
                              representative_data=[np.zeros((1, 32, 32, 3), np.float32)])
    with pytest.raises(ValueError, match="representative_data is for quantization='full_integer'"):
        export.export_runtime(model, path, "litert",
                              representative_data=[np.zeros((1, 32, 32, 3), np.float32)])
    assert not os.listdir(tmp_path)


def test_tool_quantize_flags(monkeypatch, capsys):
    tool = _load_tool(monkeypatch)
    argv = ["--model=m.keras", "--output=o"]
    assert tool.main(argv + ["--format=onnx", "--quantize=dynamic_range"]) == 2
    assert "--quantize is an option of --format=litert" in capsys.readouterr().err
    assert tool.main(argv + ["--format=litert", "--quantize=int4"]) == 2
    assert "expected dynamic_range, full_integer or none" in capsys.readouterr().err
    assert tool.main(argv + ["--format=litert", "--quantize=full_integer"]) == 2
    assert "with --model needs --representative_data" in capsys.readouterr().err
    assert tool.main(argv + ["--format=litert", "--representative_data=x.npy"]) == 2
    err = capsys.readouterr().err
    assert "--representative_data is an option of --quantize=full_integer" in err


@pytest.mark.slow
def test_tool_quantized_litert_from_a_keras_file(exports, tmp_path, subprocess_env, monkeypatch,
                                                 capsys):
    """`--model=M.keras --format=litert --quantize=none,dynamic_range,full_integer
    --representative_data=X.npy`: three files, each in its folder, each running."""
    _needs("litert")
    tool = _load_tool(monkeypatch)
    model = exports.model("vit_a")
    source = export.save_keras(model, str(tmp_path / "source.keras"))
    calibration = tmp_path / "calibration.npy"
    rng = np.random.default_rng(6)
    np.save(calibration, rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32"))
    out = tmp_path / "out"
    assert tool.main([f"--model={source}", f"--output={out}", "--format=litert",
                      "--quantize=none,dynamic_range,full_integer",
                      f"--representative_data={calibration}"]) == 0
    printed = capsys.readouterr().out
    assert "calibrated on 8 examples; ops left in float32: none" in printed
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    for folder in ("litert", "litert_dynamic_range", "litert_full_integer"):
        path = str(out / folder / "model.tflite")
        assert f"{folder}: {path}" in printed
        got, _ = run_in_runtime("litert", path, {"x": x}, tmp_path, subprocess_env)
        assert got["x"].shape == want.shape and np.all(np.isfinite(got["x"]))
