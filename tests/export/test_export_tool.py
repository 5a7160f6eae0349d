"""`tools/export_model.py` (from a training run's newest checkpoint, or a `.keras` file),
the `.keras` archive, and export argument checks."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import configs, data, export
from tl_keras.data import synthetic
from tl_keras.models import TL, create_model
from tl_keras.train import checkpoint as ckpt_lib
from tl_keras.train import optim as optim_lib
from tl_keras.train import tasks

pytestmark = pytest.mark.tf_only

TOOLS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "tools"))


def _load_tool(name, monkeypatch):
    """`tools/<name>.py` as a module, its folder on `sys.path` as when it runs as a script
    (it imports `tools/_common.py` as `_common`)."""
    monkeypatch.syspath_prepend(TOOLS)
    spec = importlib.util.spec_from_file_location(f"{name}_cli", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_config():
    """The tiny ViViT of `experiments/kinetics.py --runlocal`, smaller, on the built-in
    dataset (resolved as the trainer resolves it)."""
    cfg = configs.Config(experiment="export-test")
    cfg.model = configs.ModelConfig(
        name="vivit_b16", patch_size=8, tubelet_size=2, hidden_dim=32, num_layers=2,
        num_heads=2, mlp_dim=64, tokenlearner=configs.TokenLearnerConfig(num_tokens=3, at=1),
    )
    cfg.data = configs.DataConfig(dataset="synthetic_single", eval_split="test")
    cfg.train.num_steps = 10
    tasks.resolve_data(cfg)
    return cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A training run directory in the trainer's layout: `config.json` and two checkpoints
    (steps 3 and 7, different heads) written by `tl_keras.train.checkpoint.CheckpointState`."""
    root = str(tmp_path_factory.mktemp("run"))
    cfg = _run_config()
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(configs.to_dict(cfg), f)
    model = tasks.build_model(cfg)
    optimizer = optim_lib.build_optimizer(cfg.optim, 0.1, model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    state = ckpt_lib.CheckpointState(root, model, optimizer, step)
    head = model.get_layer("head")
    rng = np.random.default_rng(0)
    heads = {}
    for s in (3, 7):
        kernel = rng.normal(0, 1, head.kernel.shape).astype("float32")
        head.kernel.assign(kernel)
        step.assign(s)
        state.save()
        heads[s] = kernel
    return root, cfg, heads


def _videos(num, frames, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num, frames, size, size, 3)).astype(np.uint8)


def test_export_tool_skips_a_damaged_newest_checkpoint(workdir, tmp_path, capsys, monkeypatch):
    """Without the `checkpoint` state file and with the newest checkpoint truncated (a
    write cut short), the tool exports the newest one that reads, and says so."""
    import glob
    import shutil

    root, _, heads = workdir
    run = str(tmp_path / "run")
    shutil.copytree(root, run, ignore=shutil.ignore_patterns("export", "from_keras"))
    os.remove(os.path.join(run, "checkpoints", "checkpoint"))
    (data_file,) = glob.glob(os.path.join(run, "checkpoints", "ckpt-7.data-*"))
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    tool = _load_tool("export_model", monkeypatch)
    out_dir = str(tmp_path / "out")
    assert tool.main([f"--workdir={run}", f"--output={out_dir}", "--format=keras"]) == 0
    captured = capsys.readouterr()
    assert "ckpt-7" in captured.err and "damaged" in captured.err
    assert "step 3" in captured.out
    restored = keras.saving.load_model(os.path.join(out_dir, "model.keras"))
    np.testing.assert_array_equal(restored.get_layer("head").kernel.numpy(), heads[3])


def test_export_tool_from_workdir(workdir, capsys, monkeypatch):
    root, cfg, heads = workdir
    tool = _load_tool("export_model", monkeypatch)
    assert tool.main([f"--workdir={root}", "--format=saved_model,keras"]) == 0
    out = capsys.readouterr().out
    target = os.path.join(root, "export", "7")
    assert f"saved_model: {target}/saved_model" in out and "step 7" in out
    # The serving options come from the run's config.
    with open(os.path.join(target, "saved_model", export.SERVING_INFO_FILE)) as f:
        info = json.load(f)
    assert info["class_names"] == list(synthetic.class_names("single"))
    assert info["multilabel"] is False
    assert info["preprocessing"]["min_resize"] == cfg.data.min_resize
    assert info["preprocessing"]["eval_split"] == "test"
    assert info["preprocessing"]["num_frames"] == cfg.data.num_frames
    # The newest checkpoint's weights: the head saved at step 7.
    restored = keras.saving.load_model(os.path.join(target, "model.keras"))
    np.testing.assert_array_equal(restored.get_layer("head").kernel.numpy(), heads[7])
    serving = tf.saved_model.load(os.path.join(target, "saved_model")).signatures["serving_default"]
    pixels = _videos(2, cfg.data.num_frames, 40)
    got = serving(videos=tf.constant(pixels, tf.float32))
    prep = data.Preprocessing(**info["preprocessing"])
    expected = restored(data.preprocess(pixels, prep), training=False).numpy()
    np.testing.assert_allclose(got["logits"].numpy(), expected, atol=1e-5)
    assert got["top_k_labels"].numpy()[0, 0].decode() in synthetic.class_names("single")

    # The same export again: refused, the export is kept as it was.
    before = {name: os.path.getmtime(os.path.join(target, name))
              for name in ("saved_model/saved_model.pb", "model.keras")}
    assert tool.main([f"--workdir={root}", "--format=saved_model,keras"]) == 2
    err = capsys.readouterr().err
    assert f"{target}/saved_model exists; pass --overwrite" in err
    assert {n: os.path.getmtime(os.path.join(target, n)) for n in before} == before
    # --overwrite replaces it; --class_names given on the command line win over the config's.
    names = [f"c{i}" for i in range(len(synthetic.class_names("single")))]
    assert tool.main([f"--workdir={root}", "--overwrite", f"--class_names={','.join(names)}"]) == 0
    assert f"class names from --class_names ({len(names)}): c0, c1" in capsys.readouterr().out
    with open(os.path.join(target, "saved_model", export.SERVING_INFO_FILE)) as f:
        assert json.load(f)["class_names"] == names
    assert not [n for n in os.listdir(target) if n.startswith(".")]  # no temporary left
    serving = tf.saved_model.load(os.path.join(target, "saved_model")).signatures["serving_default"]
    assert serving(videos=tf.constant(pixels, tf.float32))["top_k_labels"].numpy()[0, 0].decode() in names

    # A .keras file with explicit options.
    keras_path = os.path.join(target, "model.keras")
    out_dir = os.path.join(root, "from_keras")
    assert tool.main([f"--model={keras_path}", f"--output={out_dir}", "--min_resize=48",
                      "--class_names=l,r,u,d", "--multilabel", "--top_k=2"]) == 0
    with open(os.path.join(out_dir, "saved_model", export.SERVING_INFO_FILE)) as f:
        info = json.load(f)
    assert info["class_names"] == ["l", "r", "u", "d"] and info["multilabel"] is True
    assert info["preprocessing"]["min_resize"] == 48 and info["top_k"] == 2


def test_export_tool_errors(workdir, tmp_path, capsys, monkeypatch):
    root, _, _ = workdir
    tool = _load_tool("export_model", monkeypatch)
    assert tool.main([f"--workdir={root}", "--format=tflite"]) == 2  # litert is the name
    assert "--format=tflite" in capsys.readouterr().err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.json").write_text(open(os.path.join(root, "config.json")).read())
    assert tool.main([f"--workdir={empty}"]) == 2
    assert "No checkpoint" in capsys.readouterr().err
    assert tool.main(["--model=missing.keras", f"--output={tmp_path}"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_export_tool_keeps_what_is_not_an_export(tmp_path, capsys, monkeypatch, tiny_models):
    """A `saved_model/` that is not a SavedModel is never deleted, even with --overwrite;
    bad --class_names are refused before anything is written."""
    tool = _load_tool("export_model", monkeypatch)
    keras_path = export.save_keras(tiny_models.vit(), str(tmp_path / "model.keras"))
    out = tmp_path / "out"
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert tool.main([f"--model={keras_path}", f"--output={out}", *extra]) == 2
        assert "is not a SavedModel directory (no saved_model.pb); not touched" in capsys.readouterr().err
        assert (out / "saved_model" / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    for value, message in (("a,b", "--class_names=a,b: 2 names for a model with 5 classes"),
                           (str(tmp_path / "missing.txt"), "no such file")):
        assert tool.main([f"--model={keras_path}", f"--output={fresh}", f"--class_names={value}"]) == 2
        assert message in capsys.readouterr().err
    assert not fresh.exists() or not any(fresh.iterdir())
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\ne\n")
    assert tool.main([f"--model={keras_path}", f"--output={fresh}", "--max_request_pixels=100",
                      f"--class_names={tmp_path / 'names.txt'}"]) == 0
    with open(fresh / "saved_model" / export.SERVING_INFO_FILE) as f:
        info = json.load(f)
    assert info["class_names"] == list("abcde") and info["max_request_pixels"] == 100


def test_export_tool_help_loads_no_tensorflow():
    """`--help` parses arguments before anything imports TensorFlow."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{os.path.join(TOOLS, 'export_model.py')!r}, '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('LOADED', 'tensorflow' in sys.modules or 'keras' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--overwrite" in proc.stdout and "LOADED False" in proc.stdout


def test_keras_archive_loads_without_custom_objects(tmp_path, tiny_models):
    model = tiny_models.vivit()
    x = np.random.default_rng(1).normal(size=(2, 4, 32, 32, 3)).astype("float32")
    expected = model(x, training=False).numpy()
    path = export.save_keras(model, str(tmp_path / "sub" / "model.keras"))
    keras.backend.clear_session()
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded).__name__ == "ViViT"
    assert loaded.get_config()["tokenlearner"] == {"num_tokens": 3, "at": 1, "fuser": False, "version": "1.1"}
    np.testing.assert_allclose(loaded(x, training=False).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match=".keras"):
        export.save_keras(model, str(tmp_path / "model.h5"))


def test_export_argument_checks(tmp_path, tiny_models):
    model = tiny_models.vit()
    with pytest.raises(ValueError, match="2 class names for a model with 5 classes"):
        export.export_saved_model(model, str(tmp_path / "a"), class_names=["x", "y"])
    with pytest.raises(ValueError, match="crop_size=48 differs from the model's input size 32"):
        export.export_saved_model(model, str(tmp_path / "b"), crop_size=48)
    with pytest.raises(ValueError, match="input_kind='video'"):
        export.export_saved_model(model, str(tmp_path / "c"), input_kind="video")
    with pytest.raises(ValueError, match="larger than min_resize"):
        export.export_saved_model(model, str(tmp_path / "d"), min_resize=20)
    features = create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=1,
                            num_heads=2, mlp_dim=64, include_top=False, tokenlearner=TL(2, at=0))
    with pytest.raises(ValueError, match="include_top=False"):
        export.export_saved_model(features, str(tmp_path / "e"))
    assert not os.path.exists(tmp_path / "a")


def test_serving_options_from_config():
    cfg = _run_config()
    options = export.serving_options_from_config(configs.to_dict(cfg))
    assert options["eval_split"] == "test" and options["min_resize"] == cfg.data.min_resize
    assert options["class_names"] == list(synthetic.class_names("single"))
    assert options["multilabel"] is False
    cfg.data.dataset = "charades"
    cfg.data.multilabel = True
    options = export.serving_options_from_config(cfg)
    assert options["multilabel"] is True and "class_names" not in options
    cfg.train.loss = "softmax"  # trained with a softmax despite multi-label data
    assert export.serving_options_from_config(cfg)["multilabel"] is False
