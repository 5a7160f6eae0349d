"""The figures of a training run: the token maps as a TensorBoard image at each evaluation
(`loop._TokenMapSummary`), and `tools/plot_run.py` (training curves from the run's own
records, read without TensorFlow by `tl_keras.plotting`), on one tiny real run."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import plotting
from tl_keras import train as train_lib
from tl_keras.models import TL, create_model
from tl_keras.train import loop

pytestmark = pytest.mark.tf_only

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PLOT_RUN = os.path.join(ROOT, "tools", "plot_run.py")


def _script_module():
    spec = importlib.util.spec_from_file_location("_train_script", os.path.join(HERE, "train_script.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_vit_task(num_classes=3):
    """A tiny ViT with a TokenLearner (4 tokens on a 4 x 4 patch grid) on in-memory images."""
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (48, 32, 32, 3)).astype("float32")
    y = np.eye(num_classes, dtype="float32")[rng.randint(0, num_classes, 48)]

    def model_fn():
        return create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=16, num_layers=1,
                            num_heads=2, mlp_dim=32, num_classes=num_classes,
                            tokenlearner=TL(4, at=0))

    def train_ds(ctx, batch):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
        return ds.batch(ctx.get_per_replica_batch_size(batch), drop_remainder=True)

    def eval_ds(ctx, batch):
        ds = tf.data.Dataset.from_tensor_slices((x[:16], y[:16]))
        return ds.batch(ctx.get_per_replica_batch_size(batch))

    return train_lib.Task(model_fn, train_ds, eval_ds, multilabel=False, num_train_examples=48)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """6 steps of the tiny ViT + TokenLearner, evaluated at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("run")
    cfg = _script_module().mlp_config()
    cfg.experiment = "tiny-vit"
    cfg.train.deterministic = False  # op determinism is process-global
    cfg.train.num_steps, cfg.train.steps_per_loop = 6, 3
    cfg.train.log_every = cfg.train.eval_every = cfg.train.checkpoint_every = 3
    cfg.optim.warmup_steps = 2
    si = train_lib.make_strategy("one_device")
    train_lib.run(cfg, "train_and_evaluate", str(workdir), si, _tiny_vit_task())
    return workdir


def _images(directory):
    """`{tag: [(step, plugin name, [width, height, png bytes...])]}` of the string-tensor
    summaries in the event files of `directory`."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.startswith("events"):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                if value.tensor.dtype == tf.string.as_datatype_enum:
                    out.setdefault(value.tag, []).append(
                        (event.step, value.metadata.plugin_data.plugin_name,
                         list(value.tensor.string_val)))
    return out


@pytest.mark.xdist_group("tiny_run")
def test_token_maps_are_a_tensorboard_image_at_each_evaluation(tiny_run):
    images = _images(tiny_run / "eval")
    assert list(images) == ["eval/token_maps"]
    assert [step for step, _, _ in images["eval/token_maps"]] == [3, 6]
    for _, plugin, (width, height, png) in images["eval/token_maps"]:
        assert plugin == "images"
        decoded = tf.io.decode_png(png, channels=3).numpy()
        assert decoded.shape == (int(height), int(width), 3)
        assert decoded.shape[0] > 150 and decoded.shape[1] > 300  # image, 4 tokens, bar
        assert len(np.unique(decoded.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
    assert not _images(tiny_run / "train")  # the training summaries stay scalars


def test_no_token_map_image_for_a_model_without_tokenlearner(tmp_path):
    script = _script_module()
    cfg = script.mlp_config()
    task = script.mlp_task(cfg)
    si = train_lib.make_strategy("one_device")
    summary = loop._TokenMapSummary(task, si)
    writer = tf.summary.create_file_writer(str(tmp_path))
    summary(writer, 1, task.model_fn())
    writer.flush()
    assert not summary.enabled and not _images(tmp_path)


def _plot_run_tool(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(PLOT_RUN))
    spec = importlib.util.spec_from_file_location("plot_run_cli", PLOT_RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.xdist_group("tiny_run")
def test_plot_run_draws_loss_learning_rate_and_eval_metrics(tiny_run, tmp_path, monkeypatch,
                                                            capsys):
    run = plotting.read_run(tiny_run)  # the event files, read without TensorFlow
    assert [s for s, _ in run["train"]["train/loss"]] == [3, 6]
    assert run["train"]["train/learning_rate"][-1] == (6, pytest.approx(0.0, abs=1e-7))
    assert [r["step"] for r in run["history"]] == [3, 6]
    with open(tiny_run / "metrics.json") as f:
        final = json.load(f)
    assert run["eval"]["eval/top1"][-1] == (6, pytest.approx(final["top1"]))

    figures = []
    save = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure",
                        lambda fig, path, **kw: figures.append(fig) or save(fig, path, **kw))
    tool = _plot_run_tool(monkeypatch)
    assert tool.main([str(tiny_run)]) == 0
    out = tiny_run / "training_curves.png"
    assert str(out) in capsys.readouterr().out
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    assert len(fig.axes) == 3
    loss, lr, evals = fig.axes
    assert [ax.get_title() for ax in fig.axes][:2] == ["training loss", "learning rate"]
    assert evals.get_title().startswith("evaluation")
    assert all(ax.get_xlabel() == "training step" for ax in fig.axes)
    np.testing.assert_allclose(loss.lines[0].get_xydata(), run["train"]["train/loss"])
    np.testing.assert_allclose(lr.lines[0].get_xydata(), run["train"]["train/learning_rate"])
    labels = [line.get_label() for line in evals.lines]
    assert "top1" in labels
    np.testing.assert_allclose(evals.lines[labels.index("top1")].get_xydata()[-1],
                               [6, final["top1"]])
    assert "tiny-vit" in fig.get_suptitle() and "top1" in fig.get_suptitle()

    other = tmp_path / "curves.png"
    assert tool.main([str(tiny_run), f"--output={other}"]) == 0 and other.exists()
    # A folder that is no run: one line that says so.
    assert tool.main([str(tmp_path)]) == 2
    assert "has no training records" in capsys.readouterr().err


def test_plot_run_errors_are_one_line_without_tensorflow(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    missing = tmp_path / "no_such_run"
    proc = subprocess.run([sys.executable, "-X", "importtime", PLOT_RUN, str(missing)],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2
    assert lines == [f"plot_run: error: {missing}: no such file or directory."]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "tensorflow" not in imported and "keras" not in imported
