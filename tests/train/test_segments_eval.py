"""Segment evaluation (paper A.3, `data.eval_split=segments`) and evaluation at another crop
size (`data.eval_crop_size`): the merge against NumPy, the loop's evaluator on one device and
under a 2-replica MirroredStrategy, and the config wiring end to end on real records."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras import configs
from tl_keras import train as train_lib
from tl_keras.configs import ConfigError
from tl_keras.data import writer
from tl_keras.train import Task, metrics, tasks

pytestmark = pytest.mark.tf_only

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _reference_merge(logits, labels, ids, merge, average="logits", multilabel=True):
    """One video at a time, with plain Python grouping."""
    rows = {}
    for row, label, i in zip(np.asarray(logits, np.float64), labels, ids):
        if average == "probabilities":
            row = 1 / (1 + np.exp(-row)) if multilabel else np.exp(row) / np.exp(row).sum()
        rows.setdefault(int(i), ([], label))[0].append(row)
    out = sorted(rows.items())
    fn = np.max if merge == "max" else np.mean
    return (np.stack([fn(np.stack(r), axis=0) for _, (r, _) in out]),
            np.stack([label for _, (_, label) in out]))


# -- the merge ---------------------------------------------------------------------------------


def test_merge_segments_hand_made_case_then_map():
    # 3 videos, 2 classes; rows in any order (video 2 has 3 segments, video 0 two).
    ids = np.array([2, 0, 1, 0, 2, 2])
    logits = np.array([[0.1, -1.0], [2.0, 0.0], [-1.0, 3.0], [-2.0, 1.0], [0.5, 0.3], [-0.4, 2.0]])
    per_video = {0: [1, 0], 1: [0, 1], 2: [1, 1]}
    labels = np.array([per_video[i] for i in ids], np.float32)

    scores, merged_labels, video_ids = metrics.merge_segments(logits, labels, ids, merge="max")
    np.testing.assert_array_equal(video_ids, [0, 1, 2])
    np.testing.assert_allclose(scores, [[2.0, 1.0], [-1.0, 3.0], [0.5, 2.0]])
    np.testing.assert_array_equal(merged_labels, [[1, 0], [0, 1], [1, 1]])
    # Max: both classes rank their positives first -> mAP 1.
    assert metrics.mean_average_precision(scores, merged_labels) == 1.0

    scores, _, _ = metrics.merge_segments(logits, labels, ids, merge="mean")
    np.testing.assert_allclose(scores, [[0.0, 0.5], [-1.0, 3.0], [0.2 / 3, 1.3 / 3]])
    # Mean: class 0 ranks 2, 0 (both positive) then 1 -> AP 1; class 1 ranks 1 (+), 0 (-),
    # 2 (+) -> AP (1 + 2/3) / 2. The short action of video 0 (one segment) is diluted.
    expected = (1.0 + (1 + 2 / 3) / 2) / 2
    assert metrics.mean_average_precision(scores, merged_labels) == pytest.approx(expected)


@pytest.mark.parametrize("merge", ["max", "mean"])
@pytest.mark.parametrize("average, multilabel", [("logits", True), ("probabilities", True),
                                                 ("probabilities", False)])
def test_merge_segments_matches_reference(merge, average, multilabel):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.repeat(np.arange(7) * 3 + 1, rng.integers(1, 5, 7)))
    video_labels = (rng.random((22, 5)) < 0.4).astype(np.float32)
    labels = video_labels[ids]
    logits = rng.normal(size=(len(ids), 5))
    got, got_labels, got_ids = metrics.merge_segments(logits, labels, ids, merge, average,
                                                      multilabel)
    want, want_labels = _reference_merge(logits, labels, ids, merge, average, multilabel)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(got_labels, want_labels)
    np.testing.assert_array_equal(got_ids, np.arange(7) * 3 + 1)


def test_merge_segments_bad_arguments():
    with pytest.raises(ValueError, match="eval.segment_merge='median'"):
        metrics.merge_segments(np.zeros((2, 3)), np.zeros((2, 3)), [0, 0], merge="median")
    with pytest.raises(ValueError, match="2 logit rows, 2 label rows and 3 video ids"):
        metrics.merge_segments(np.zeros((2, 3)), np.zeros((2, 3)), [0, 0, 1])


# -- the loop's evaluator ----------------------------------------------------------------------


def _segment_data(seed=0):
    """13 segment rows of 5 videos (1 to 4 segments each), features [13, 6], labels [13, 3]."""
    rng = np.random.default_rng(seed)
    counts = [3, 1, 4, 2, 3]
    ids = np.repeat(np.arange(5), counts).astype(np.int32)
    video_labels = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0], [0, 1, 0]], np.float32)
    x = rng.normal(size=(len(ids), 6)).astype(np.float32)
    return x, video_labels[ids], ids


def _mlp():
    inp = keras.Input((6,))
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inp)))


@pytest.mark.parametrize("merge", ["max", "mean"])
def test_evaluator_merges_segments_spread_over_batches(merge):
    x, y, ids = _segment_data()
    cfg = configs.Config()
    cfg.eval.batch_size = 4  # 13 = 4 + 4 + 4 + 1: videos split between batches
    cfg.eval.segment_merge = merge
    task = Task(model_fn=_mlp, multilabel=True, eval_dataset_fn=lambda ctx, b: (
        tf.data.Dataset.from_tensor_slices((x, y, ids)).batch(ctx.get_per_replica_batch_size(b))))
    si = train_lib.make_strategy("one_device")
    with si.strategy.scope():
        model = task.model_fn()
    got = train_lib.evaluate_model(cfg, si, model, task)
    scores, labels = _reference_merge(np.asarray(model(x)), y, ids, merge)
    assert got["num_examples"] == 5 and got["num_segments"] == 13
    assert got["mAP"] == pytest.approx(metrics.mean_average_precision(scores, labels), abs=1e-6)


_MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    from tl_keras import configs, train as train_lib
    from tl_keras.train import Task
    sys.path.insert(0, sys.argv[1])
    from test_segments_eval import _mlp, _reference_merge, _segment_data
    from tl_keras.train import metrics

    train_lib.split_cpu(2)
    si = train_lib.make_strategy("mirrored")
    x, y, ids = _segment_data()

    def eval_ds(ctx, batch):  # each replica reads every other video, ids stay global
        keep = ids % ctx.num_input_pipelines == ctx.input_pipeline_id
        ds = tf.data.Dataset.from_tensor_slices((x[keep], y[keep], ids[keep]))
        return ds.batch(ctx.get_per_replica_batch_size(batch))

    out = {}
    for merge in ("max", "mean"):
        cfg = configs.Config()
        cfg.eval.batch_size = 4  # 2 per replica; the replicas' shares differ in length
        cfg.eval.segment_merge = merge
        task = Task(model_fn=_mlp, eval_dataset_fn=eval_ds, multilabel=True)
        with si.strategy.scope():
            model = task.model_fn()
        got = train_lib.evaluate_model(cfg, si, model, task)
        scores, labels = _reference_merge(np.asarray(model(x)), y, ids, merge)
        out[merge] = [got["mAP"], metrics.mean_average_precision(scores, labels),
                      got["num_examples"], got["num_segments"], si.num_replicas]
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.slow
def test_evaluator_merges_segments_under_two_replica_mirrored_strategy():
    """Under MirroredStrategy over 2 logical CPUs (a subprocess: the CPU is split before
    TensorFlow starts) the gathered segments of both replicas merge to the NumPy result."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, here], capture_output=True,
                          text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    for merge, (got, want, videos, segments, replicas) in result.items():
        assert replicas == 2 and videos == 5 and segments == 13, merge
        assert got == pytest.approx(want, abs=1e-6), merge


# -- the config wiring on real records ---------------------------------------------------------


def _video(num_frames, labels, seed):
    """A serialized record: `num_frames` random 24 x 32 JPEG frames."""
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, 24, 32, 3), np.uint8)
    jpegs = [writer.encode_jpeg(f, 90) for f in frames]
    return writer.make_sequence_example(jpegs, list(labels)).SerializeToString()


def _video_config(tmp_path, **data):
    """A tiny X(2+1)D on records in tmp_path: 4-frame clips of 16 px, 3 classes."""
    lengths = (3, 4, 10, 8, 6, 12)
    writer.write_tfrecord(str(tmp_path / "validation-00000-of-00001"), [
        _video(n, (k % 3, (k + 1) % 3), k) for k, n in enumerate(lengths)])
    writer.write_tfrecord(str(tmp_path / "train-00000-of-00001"), [_video(8, (0,), 9)] * 2)
    cfg = configs.Config()
    configs.apply_overrides(cfg, [
        "model.name=x2plus1d_m", "data.dataset=charades", f"data.data_dir={tmp_path}", "data.num_classes=3",
        "data.num_frames=4", "data.stride=1", "data.crop_size=16", "data.min_resize=24",
        "data.eval_split=segments", "data.on_error=raise", "eval.batch_size=4",
    ] + [f"data.{k}={v}" for k, v in data.items()])
    return cfg


def _tiny_x2plus1d(cfg, image_size=None):
    from tl_keras.models import create_model

    kwargs = tasks.model_kwargs(cfg)
    kwargs.update(stem_width=4, widths=(4, 4, 8, 8), depths=(1, 1, 1, 1), head_width=8,
                  fc_width=8, dropout_rate=0.0)
    if image_size is not None:
        kwargs["image_size"] = image_size
    return create_model(cfg.model.name, **kwargs)


def test_segments_and_eval_crop_size_end_to_end(tmp_path, monkeypatch):
    """make_task on records: segments of every video at 24 px through an X(2+1)D built at
    24 px holding the 16-px model's weights; metrics equal the NumPy merge of that model."""
    monkeypatch.setattr(tasks, "build_model", _tiny_x2plus1d)
    cfg = _video_config(tmp_path, eval_crop_size=24)
    tasks.resolve_data(cfg)
    tasks.validate(cfg, modes=("train_and_evaluate",))
    task = tasks.make_task(cfg)
    si = train_lib.make_strategy("one_device")
    with si.strategy.scope():
        model = task.model_fn()
    assert tuple(model.inputs[0].shape[1:]) == (4, 16, 16, 3)
    got = train_lib.evaluate_model(cfg, si, model, task)

    eval_model = task.eval_model_fn(model)
    assert tuple(eval_model.inputs[0].shape[1:]) == (4, 24, 24, 3)
    for a, b in zip(model.weights, eval_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    xs, ys, ids = [], [], []
    for x, y, i in task.eval_dataset_fn(tf.distribute.InputContext(), 4):
        assert x.shape[1:] == (4, 24, 24, 3)
        xs.append(np.asarray(eval_model(x)))
        ys.append(y.numpy())
        ids.append(i.numpy())
    ids = np.concatenate(ids)
    # 3, 4, 10, 8, 6, 12 frames in 4-frame segments: 1 + 1 + 3 + 2 + 2 + 3.
    np.testing.assert_array_equal(np.bincount(ids), [1, 1, 3, 2, 2, 3])
    scores, labels = _reference_merge(np.concatenate(xs), np.concatenate(ys), ids, "max")
    assert got["num_examples"] == 6 and got["num_segments"] == 12
    assert got["mAP"] == pytest.approx(metrics.mean_average_precision(scores, labels), abs=1e-5)

    # The eval model follows the trained weights: change them, evaluate again.
    for v in model.trainable_weights:
        v.assign(v.numpy() * 0.5 + 0.1)
    again = task.eval_model_fn(model)
    assert again is eval_model
    for a, b in zip(model.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_copy_weights_resizes_a_vit_position_embedding():
    from tl_keras.models import create_model
    from tl_keras.models.vit.model import adapt_position_embedding

    kw = dict(patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=16, num_classes=3)
    small = create_model("vit_b16", image_size=16, **kw)  # 2 x 2 patches + class token
    large = create_model("vit_b16", image_size=32, **kw)  # 4 x 4 patches + class token
    for v in small.weights:
        v.assign(np.random.default_rng(len(v.path)).normal(size=v.shape).astype("float32"))
    tasks.copy_weights(small, large)
    for a, b in zip(small.weights, large.weights):
        if a.path.startswith("posembed_input"):
            assert a.shape == (1, 5, 16) and b.shape == (1, 17, 16)
            want = adapt_position_embedding(a.numpy(), 1, large.resolved)
            np.testing.assert_allclose(b.numpy(), want, rtol=1e-6)
            np.testing.assert_array_equal(b.numpy()[:, 0], a.numpy()[:, 0])  # class token row
        else:
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    assert np.isfinite(np.asarray(large(x))).all()


def test_copy_weights_refuses_a_weight_it_cannot_resize():
    def flat_model(size):
        inp = keras.Input((size, size, 3))
        return keras.Model(inp, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(inp)))

    with pytest.raises(ConfigError, match=r"data.eval_crop_size: weight 'head/kernel'.*\(48, 2\).*"
                                          r"\(108, 2\).*leave data.eval_crop_size unset"):
        tasks.copy_weights(flat_model(4), flat_model(6))
