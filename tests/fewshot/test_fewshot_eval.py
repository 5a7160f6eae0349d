"""Few-shot linear evaluation: the closed-form solver against NumPy's least squares, accuracy
on separable features, the L2 chosen on the held-out part of the training split, features
from the pre-logits, and `tools/fewshot_eval.py` on TFDS and on the built-in dataset."""

import importlib.util
import json
import os

import numpy as np
import pytest

from tl_keras import fewshot

TOOLS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "tools"))


def _lstsq_ridge(x, targets, l2):
    """Ridge regression as an ordinary least-squares problem: [x; sqrt(l2) I] W = [t; 0]."""
    d = x.shape[1]
    a = np.concatenate([x, np.sqrt(l2) * np.eye(d)])
    b = np.concatenate([targets, np.zeros((d, targets.shape[1]))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


@pytest.mark.parametrize("n, d", [(60, 8), (12, 40)])  # N >= D and N < D (kernel form)
def test_solver_matches_numpy_least_squares(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    labels = rng.integers(0, 4, n)
    solver = fewshot.LeastSquares(x, labels, 4)
    # The solver standardises with the training mean / std and appends a bias feature.
    xs = (x - x.mean(0)) / (x.std(0) + 1e-5)
    xs = np.concatenate([xs, np.full((n, 1), fewshot.BIAS_CONSTANT)], 1)
    assert np.allclose(solver.transform(x), xs)
    targets = 2 * np.eye(4)[labels] - 1
    for l2 in (2.0**-6, 1.0, 2.0**10):
        expected = _lstsq_ridge(xs, targets, l2)
        np.testing.assert_allclose(solver.weights(l2), expected, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(fewshot.ridge_weights(xs, targets, l2), expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(solver.predict(x, 1.0), np.argmax(xs @ _lstsq_ridge(xs, targets, 1.0), 1))
    with pytest.raises(ValueError, match="l2 must be > 0"):
        solver.weights(0.0)


def _clusters(num_classes, per_class, dim, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(num_classes, dim))
    y = np.repeat(np.arange(num_classes), per_class)
    return centres[y] + spread * rng.normal(size=(len(y), dim)), y


def test_separable_features_reach_high_accuracy():
    train_x, train_y = _clusters(10, 20, 32, seed=0)
    test_x, test_y = _clusters(10, 30, 32, seed=1)
    result = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=(1, 5), num_seeds=3)
    assert result[5]["accuracy"] >= 0.98 and result[1]["accuracy"] >= 0.9
    assert len(result[5]["per_seed"]) == 3 and len(result[5]["l2"]) == 3
    # Shuffled labels: chance level (~10 %), so the accuracy above is earned.
    shuffled = np.random.default_rng(0).permutation(test_y)
    assert fewshot.evaluate(train_x, train_y, test_x, shuffled, shots=(5,))[5]["accuracy"] < 0.3


def test_l2_follows_the_held_out_data():
    """The same shots, two held-out sets: one where only a weakly regularised fit is right,
    one where only a strongly regularised fit is right; the chosen L2 moves accordingly."""
    rng = np.random.default_rng(0)
    cov = np.array([[10.0, 9.9], [9.9, 10.0]])  # correlated noise: LDA != mean difference
    means = np.array([[0.0, 0.0], [1.0, -1.0], [2.0, -2.0]])

    def draw(n):
        y = np.repeat(np.arange(3), n)
        return means[y] + rng.multivariate_normal([0, 0], cov, size=len(y)), y

    shots_x, shots_y = draw(6)
    solver = fewshot.LeastSquares(shots_x, shots_y, 3)
    pool_x, pool_y = draw(400)
    weak = solver.predict(pool_x, 2.0**-10) == pool_y
    strong = solver.predict(pool_x, 2.0**20) == pool_y
    prefers_weak, prefers_strong = weak & ~strong, strong & ~weak
    assert prefers_weak.sum() >= 5 and prefers_strong.sum() >= 5
    l2_weak, acc_weak = fewshot.select_l2(solver, pool_x[prefers_weak], pool_y[prefers_weak])
    l2_strong, acc_strong = fewshot.select_l2(solver, pool_x[prefers_strong], pool_y[prefers_strong])
    assert l2_weak < l2_strong
    assert acc_weak[l2_weak] == 1.0 and acc_strong[l2_strong] == 1.0
    assert acc_weak[max(fewshot.DEFAULT_L2_GRID)] == 0.0 and acc_strong[min(fewshot.DEFAULT_L2_GRID)] == 0.0


def test_l2_is_chosen_on_the_held_out_training_examples():
    """`evaluate` picks, per seed, the grid value that is best on held-out *training*
    examples (brute force here with NumPy), never looks at the test split, and never
    uses a held-out example as a shot."""
    train_x, train_y = _clusters(4, 25, 6, seed=3, spread=1.5)
    test_x, test_y = _clusters(4, 20, 6, seed=4, spread=1.5)
    grid = tuple(2.0**i for i in range(-6, 12, 2))
    result = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=(3,), seeds=(0, 1, 2),
                              holdout_per_class=8, l2_grid=grid)[3]
    for seed, chosen, test_acc in zip((0, 1, 2), result["l2"], result["per_seed"]):
        shot_idx, held_idx = fewshot.split_few_shot(
            train_y, 3, 8, np.random.default_rng([seed, 3]), 4)
        assert not set(shot_idx) & set(held_idx)
        assert np.bincount(train_y[shot_idx]).tolist() == [3] * 4
        mean, std = train_x[shot_idx].mean(0), train_x[shot_idx].std(0) + 1e-5

        def features(x):
            return np.concatenate([(x - mean) / std, np.full((len(x), 1), 100.0)], 1)

        targets = 2 * np.eye(4)[train_y[shot_idx]] - 1
        scores = []
        for l2 in grid:
            w = _lstsq_ridge(features(train_x[shot_idx]), targets, l2)
            s = features(train_x[held_idx]) @ w
            held_targets = 2 * np.eye(4)[train_y[held_idx]] - 1
            scores.append((np.mean(np.argmax(s, 1) == train_y[held_idx]),
                           -np.mean((s - held_targets) ** 2), l2))
        assert chosen == max(scores)[2]
        w = _lstsq_ridge(features(train_x[shot_idx]), targets, chosen)
        assert test_acc == pytest.approx(np.mean(np.argmax(features(test_x) @ w, 1) == test_y))
    # The test split does not influence the choice.
    other = fewshot.evaluate(train_x, train_y, test_x[::-1] * 3, np.roll(test_y, 5), shots=(3,),
                             seeds=(0, 1, 2), holdout_per_class=8, l2_grid=grid)[3]
    assert other["l2"] == result["l2"]


def test_too_few_examples_and_table():
    x, y = _clusters(3, 4, 5, seed=0)
    with pytest.raises(ValueError, match="class 0 has 4 training examples; 5 shots"):
        fewshot.evaluate(x, y, x, y, shots=(5,), holdout_per_class=1)
    result = fewshot.evaluate(x, y, x, y, shots=(1, 2), holdout_per_class=2, num_seeds=2)
    table = fewshot.format_table(result, title="demo")
    assert table.splitlines()[0] == "demo" and len(table.splitlines()) == 4
    assert "2^" in table


@pytest.mark.tf_only
def test_features_are_the_pre_logits():
    from tl_keras.models import TL, create_model

    model = create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=2,
                         num_heads=2, mlp_dim=64, num_classes=5, tokenlearner=TL(4, at=1))
    head = model.get_layer("head")
    head.kernel.assign(np.random.default_rng(0).normal(size=head.kernel.shape).astype("float32"))
    x = np.random.default_rng(1).normal(size=(5, 32, 32, 3)).astype("float32")
    features = fewshot.extract_features(model, x, batch_size=2)
    assert features.shape == (5, 32)
    logits = model(x, training=False).numpy()
    np.testing.assert_allclose(features @ head.kernel.numpy() + head.bias.numpy(), logits, atol=1e-4)


# --------------------------------------------------------------------------------------
# tools/fewshot_eval.py
# --------------------------------------------------------------------------------------


def _tool(monkeypatch):
    """`tools/fewshot_eval.py` as a module, its folder on `sys.path` as when it runs as a
    script (it imports `tools/_common.py` as `_common`)."""
    monkeypatch.syspath_prepend(TOOLS)
    spec = importlib.util.spec_from_file_location(
        "fewshot_eval_cli", os.path.join(TOOLS, "fewshot_eval.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PALETTE = np.array([
    [230, 40, 40], [40, 220, 40], [40, 60, 230], [230, 230, 40], [40, 220, 220],
    [220, 40, 220], [240, 240, 240], [20, 20, 20], [240, 140, 30], [120, 120, 120],
], np.float64)


def _coloured_images(n_per_class, seed):
    """The 10 classes of CIFAR-10's metadata as 10 colours (+ noise): PNG bytes of various
    sizes, label-interleaved."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    encoded, labels = [], []
    for i in range(10 * n_per_class):
        c = i % 10
        h, w = rng.integers(30, 60, 2)
        image = np.clip(PALETTE[c] + rng.normal(0, 25, (h, w, 3)), 0, 255)
        encoded.append(tf.io.encode_png(image.astype(np.uint8)).numpy())
        labels.append(c)
    return encoded, labels


@pytest.mark.tf_only
def test_fewshot_tool_on_tfds(tmp_path, capsys, monkeypatch):
    """A TFDS image dataset (mocked: TFDS's own builder, metadata and `as_dataset`, with our
    examples) through the whole tool: pool reading, pre-processing, features, JSON."""
    import tensorflow as tf
    tfds = pytest.importorskip("tensorflow_datasets")

    from tl_keras.models import TL, create_model

    model_path = str(tmp_path / "vit.keras")
    create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=2,
                 num_heads=2, mlp_dim=64, num_classes=5, tokenlearner=TL(4, at=1)).save(model_path)
    splits = {"train": _coloured_images(12, 0), "test": _coloured_images(10, 1)}
    requested = []

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kw):
        requested.append((split, decoders is not None and "image" in decoders))
        encoded, labels = splits[str(split)]
        return tf.data.Dataset.from_tensor_slices(
            {"image": tf.constant(encoded), "label": tf.constant(labels, tf.int64)})

    out = str(tmp_path / "result.json")
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        code = _tool(monkeypatch).main([f"--model={model_path}", "--dataset=cifar10", "--shots=1,3",
                             "--seeds=2", "--holdout_per_class=4", "--pool_per_class=9",
                             f"--output={out}", f"--data_dir={tmp_path}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cifar10: 10 classes, 32-d features" in printed and "shots" in printed
    with open(out) as f:
        record = json.load(f)
    assert set(record["results"]) == {"1", "3"}
    assert record["num_train_pool"] == 10 * 9  # reading stopped at 9 per class
    assert record["num_test"] == 100 and record["feature_dim"] == 32
    assert record["preprocessing"]["min_resize"] == 37
    assert ("train", True) in requested and ("test", True) in requested
    # Colour is linearly visible through random features: far above chance (10 %).
    assert record["results"]["3"]["accuracy"] > 0.8
    assert all(len(r["l2"]) == 2 for r in record["results"].values())


@pytest.mark.tf_only
def test_fewshot_tool_on_the_builtin_dataset(tmp_path, capsys, monkeypatch):
    from tl_keras.models import TL, create_model

    model_path = str(tmp_path / "vivit.keras")
    create_model("vivit_b16", num_frames=4, image_size=32, patch_size=8, tubelet_size=2,
                 hidden_dim=32, num_layers=2, num_heads=2, mlp_dim=64, num_classes=4,
                 tokenlearner=TL(3, at=1)).save(model_path)
    out = str(tmp_path / "synthetic.json")
    tool = _tool(monkeypatch)
    assert tool.main([f"--model={model_path}", "--dataset=synthetic_single", "--shots=1,2",
                      "--seeds=2", "--holdout_per_class=3", "--max_test_examples=24",
                      "--min_resize=32", f"--output={out}"]) == 0
    with open(out) as f:
        record = json.load(f)
    assert record["num_classes"] == 4 and record["num_test"] == 24
    assert record["num_train_pool"] == 4 * 7  # holdout 3 + 2 x 2 shots per class
    assert 0.0 <= record["results"]["2"]["accuracy"] <= 1.0
    assert "synthetic_single: 4 classes" in capsys.readouterr().out
    # An image model on the (video) built-in dataset: a clear error.
    image_model = str(tmp_path / "vit.keras")
    create_model("vit_b16", image_size=32, patch_size=8, hidden_dim=32, num_layers=1,
                 num_heads=2, mlp_dim=64, num_classes=4, tokenlearner=TL(2, at=0)).save(image_model)
    assert tool.main([f"--model={image_model}", "--dataset=synthetic_single", f"--output={out}"]) == 2
    assert "is a video dataset; the model takes image input" in capsys.readouterr().err
