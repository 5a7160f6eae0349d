"""int8 (slow): the trained `--runlocal` model (`conftest.trained_runlocal`, the README's main
command) quantized three ways agrees with its float32 self on the built-in validation data,
top-1 on >= 98% of the clips:

* Keras' own `model.quantize("int8")` (the Dense layers' kernels int8, per output channel;
  activations quantized on the fly);
* LiteRT dynamic range (`tools/export_model.py --format=litert --quantize=dynamic_range`:
  int8 weights, float32 activations) and full integer (`--quantize=full_integer`: int8
  weights and activations calibrated on the run's training split through its own input
  pipeline), each run in the LiteRT interpreter in a fresh process that imports neither
  tl_keras, Keras nor TensorFlow (`runtime_runner.py`), against the float32 `.tflite`
  written by the same command from the same model (its parity with Keras:
  `test_export_runtimes.py`).

The clips are the run's evaluation views: the 120 validation videos x 4 clips x 3 crops
(1440 clips, `data.eval_split=test`), pre-processed by the run's pipeline. The figures
(agreement, file sizes) are printed (`-s`) for BENCHMARKS.md's int8 table.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tf_only, pytest.mark.xdist_group("export_runlocal")]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
RUNNER = os.path.join(HERE, "runtime_runner.py")
AGREEMENT = 0.98
VARIANTS = {None: "litert", "dynamic_range": "litert_dynamic_range",
            "full_integer": "litert_full_integer"}


def _validation_clips(workdir):
    """`(clips, labels)`: every evaluation view of the validation videos, as the model's
    input `[N, T, H, W, 3]`, through the run's own pipeline, and each clip's class."""
    from tl_keras import configs
    from tl_keras.train import tasks

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    task = tasks.make_task(configs.from_dict(configs.Config, config))
    clips, labels = [], []
    for x, y in task.eval_dataset_fn(None, 16):
        x = np.asarray(task.model_inputs(x), np.float32)
        views = x.shape[1] if x.ndim == 6 else 1
        clips.append(x.reshape((-1,) + x.shape[-4:]))
        labels.append(np.repeat(np.argmax(np.asarray(y), -1), views))
    return np.concatenate(clips), np.concatenate(labels)


@pytest.fixture(scope="module")
def validation(trained_runlocal):
    clips, labels = _validation_clips(trained_runlocal[0])
    assert clips.shape[1:] == (8, 32, 32, 3) and len(clips) == 1440
    return clips, labels


def _agreement(got, want):
    return float(np.mean(np.argmax(got, -1) == np.argmax(want, -1)))


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, -1) == labels))


def _weight_bytes(model):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights)


def test_keras_int8_agrees_with_float32(trained_runlocal, validation):
    """The run's exported `model.keras`, float32 and after `model.quantize("int8")`."""
    import tl_keras.models  # noqa: F401  (registers the model classes for load_model)

    clips, labels = validation
    workdir = trained_runlocal[0]
    step = max(int(s) for s in os.listdir(os.path.join(workdir, "export")) if s.isdigit())
    model = keras.saving.load_model(os.path.join(workdir, "export", str(step), "model.keras"))
    float_bytes = _weight_bytes(model)
    want = model.predict(clips, batch_size=64, verbose=0)
    model.quantize("int8")
    quantized = [l for l in model._flatten_layers()
                 if getattr(l, "quantization_mode", None) == "int8"]
    got = model.predict(clips, batch_size=64, verbose=0)
    agreement = _agreement(got, want)
    int8_bytes = _weight_bytes(model)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    print(f"\nKeras int8: top-1 agreement {agreement:.4f} ({len(clips)} clips), max logit error "
          f"{err:.3g} of the scale; top-1 accuracy float32 {_accuracy(want, labels):.4f}, "
          f"int8 {_accuracy(got, labels):.4f}; {len(quantized)} layers int8; weights "
          f"{float_bytes} -> {int8_bytes} bytes")
    assert quantized, "model.quantize('int8') quantized no layer"
    assert agreement >= AGREEMENT, f"Keras int8 top-1 agreement {agreement:.4f}"
    # Only the Dense kernels become int8 (the attention's [C, H, D] projections, the tubelet
    # embedding and the norms stay float32): 671280 -> 463456 bytes seen.
    assert int8_bytes < 0.75 * float_bytes


@pytest.fixture(scope="module")
def litert_files(trained_runlocal, subprocess_env):
    """The three LiteRT files of one `tools/export_model.py` run from the run directory."""
    workdir = trained_runlocal[0]
    out = os.path.join(workdir, "int8")
    args = [sys.executable, "tools/export_model.py", f"--workdir={workdir}", f"--output={out}",
            "--format=litert", "--quantize=none,dynamic_range,full_integer"]
    proc = subprocess.run(args, env=subprocess_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    print("\n" + proc.stdout)
    paths = {mode: os.path.join(out, folder, "model.tflite") for mode, folder in VARIANTS.items()}
    return paths, proc.stdout


def _run_litert(path, clips, tmp_path, env):
    inputs, outputs = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")
    chunks = {f"c{i:06d}": clips[i:i + 240] for i in range(0, len(clips), 240)}
    np.savez(inputs, **chunks)
    proc = subprocess.run([sys.executable, RUNNER, "litert", path, inputs, outputs],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["imported"] == [], f"the runner imported {info['imported']}"
    assert info["shape_signature"][0] == -1, "the batch must stay dynamic"
    with np.load(outputs) as out:
        return np.concatenate([out[k] for k in sorted(chunks)])


@pytest.fixture(scope="module")
def litert_float32(litert_files, validation, tmp_path_factory, subprocess_env):
    """The float32 `.tflite`'s logits: the reference of the quantized files, all three
    written from the same model by the same command."""
    return _run_litert(litert_files[0][None], validation[0], tmp_path_factory.mktemp("f32"),
                       subprocess_env)


@pytest.mark.parametrize("mode", ["dynamic_range", "full_integer"])
def test_litert_quantized_agrees_with_float32(mode, validation, litert_files, litert_float32,
                                              tmp_path, subprocess_env):
    clips, labels = validation
    paths, printed = litert_files
    path = paths[mode]
    want = litert_float32
    got = _run_litert(path, clips, tmp_path, subprocess_env)
    agreement = _agreement(got, want)
    err = np.max(np.abs(got - want)) / np.max(np.abs(want))
    size, float_size = os.path.getsize(path), os.path.getsize(paths[None])
    with open(path + ".json") as f:
        quantization = json.load(f)["quantization"]
    print(f"\nLiteRT {mode}: {size} bytes (float32 {float_size}); top-1 agreement "
          f"{agreement:.4f} ({len(clips)} clips), max logit error {err:.3g} of the scale; "
          f"top-1 accuracy float32 {_accuracy(want, labels):.4f}, {mode} "
          f"{_accuracy(got, labels):.4f}; {quantization}")
    assert quantization["mode"] == mode
    assert f"litert_{mode}: {path}" in printed
    assert agreement >= AGREEMENT, f"LiteRT {mode}: top-1 agreement {agreement:.4f}"
    assert size < 0.5 * float_size
    if mode == "full_integer":
        assert quantization["activations"] == "int8"
        assert quantization["representative_examples"] == 256
        # Every op computes in int8 (the tubelet embedding is a matmul, no CONV_3D).
        assert not quantization["float_ops"], quantization["float_ops"]
