"""End to end (slow): a real `--runlocal` training run (the README's main command), its
stderr, `tools/export_model.py --workdir`, every signature through the `saved_model_cli`
binary, and the run's token-map PNG."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_noise import noise_lines

# One worker runs the module: its fixture is a training run, built once.
pytestmark = [pytest.mark.slow, pytest.mark.tf_only, pytest.mark.xdist_group("export_runlocal")]

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _run(args, env, timeout=600):
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def runlocal_run(trained_runlocal):
    """`(workdir, stderr)` of `kinetics.py --runlocal` (the session's one training run,
    `conftest.trained_runlocal`, shared with the int8 tests of `test_int8.py`)."""
    return trained_runlocal


@pytest.fixture(scope="module")
def runlocal_workdir(runlocal_run):
    return runlocal_run[0]


def test_runlocal_stderr_has_no_tensorflow_startup_noise(runlocal_run):
    """The README's main command: nothing on stderr but real messages."""
    workdir, stderr = runlocal_run
    assert not noise_lines(stderr), stderr[-3000:]
    assert os.path.exists(os.path.join(workdir, "metrics.json"))


def test_runlocal_run_exports_and_serves(runlocal_workdir, tmp_path, subprocess_env):
    import keras
    import tensorflow as tf

    import tl_keras.models  # noqa: F401  (registers ViViT for keras.saving.load_model)
    from tl_keras import data, export

    workdir = runlocal_workdir
    served = os.path.join(workdir, "served")
    _run([sys.executable, "tools/export_model.py", f"--workdir={workdir}", f"--output={served}",
          "--format=saved_model,keras"], subprocess_env)
    with open(os.path.join(served, "saved_model", export.SERVING_INFO_FILE)) as f:
        info = json.load(f)
    prep = data.Preprocessing(**info["preprocessing"])
    model = keras.saving.load_model(os.path.join(served, "model.keras"))
    pixels = np.random.default_rng(0).integers(0, 256, (2, prep.num_frames, 40, 52, 3)).astype(np.uint8)
    frames = np.array([[tf.io.encode_jpeg(f, quality=95).numpy() for f in clip] for clip in pixels],
                      dtype=object)
    decoded = np.stack([[tf.io.decode_jpeg(j).numpy() for j in clip] for clip in frames])
    feeds = {
        "serving_default": ("videos", pixels.astype(np.float32), pixels),
        "serve_uint8": ("videos", pixels, pixels),
        "serve_encoded": ("encoded_videos", frames, decoded),
    }
    exe = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    for signature, (name, feed, source) in feeds.items():
        np.save(tmp_path / f"{signature}.npy", feed, allow_pickle=True)
        _run([exe, "run", "--dir", os.path.join(served, "saved_model"), "--tag_set", "serve",
              "--signature_def", signature, "--inputs", f"{name}={tmp_path / f'{signature}.npy'}",
              "--outdir", str(tmp_path / signature)], subprocess_env)
        logits = np.load(tmp_path / signature / "logits.npy")
        expected = model(data.preprocess(source, prep), training=False).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-5, err_msg=signature)
        labels = np.load(tmp_path / signature / "top_k_labels.npy", allow_pickle=True)
        assert labels[0, 0].decode().startswith("move_")


def test_runlocal_run_writes_token_maps(runlocal_workdir):
    """`--runlocal` draws the token maps into the workdir at the end
    (`tl_keras.visualize.write_token_maps`, called by the experiments' runner)."""
    png = os.path.join(runlocal_workdir, "token_maps.png")
    assert os.path.exists(png), "--runlocal did not write token_maps.png into the workdir"
    with open(png, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    # The figure's labels, as JSON in the PNG: a block per TokenLearner layer, its columns
    # the clip frames they stand for, a colour scale.
    from PIL import Image

    with Image.open(png) as image:
        (block, *_) = json.loads(image.text["tl_keras:token_maps"])
    assert block["columns"] and all(c["frames"] for c in block["columns"])
    assert block["rows"][0] == "token 0" and block["colorbar"]["range"] == [0.0, 1.0]
    # TensorBoard got the token maps at the evaluation too (tl_keras.train's summaries).
    import tensorflow as tf

    eval_dir = os.path.join(runlocal_workdir, "eval")
    tags = {value.tag
            for name in os.listdir(eval_dir) if name.startswith("events")
            for event in tf.compat.v1.train.summary_iterator(os.path.join(eval_dir, name))
            for value in event.summary.value}
    assert "eval/token_maps" in tags and "eval/top1" in tags
