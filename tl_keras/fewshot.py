"""Few-shot linear evaluation of frozen features (the ViT protocol; paper §3.4).

For n shots, each seed draws n training examples per class, fits a regularised
least-squares classifier of the frozen pre-logit features to `{-1, 1}^K` targets in closed
form, and measures top-1 accuracy on the test split; the accuracies of several seeds are
averaged. As in the ViT / big_vision evaluator, features are standardised with the shots'
mean and std and a constant bias feature (100) is appended. The L2 regularisation is
chosen, per shot count and seed, on a held-out part of the *training* split (examples
that are never shots): the grid value with the best held-out accuracy (ties: lower
held-out squared error, then the larger value). The test split is used only for the
reported accuracy.

```python
from tl_keras import fewshot
train_x = fewshot.extract_features(model, train_images)     # [N, D]
result = fewshot.evaluate(train_x, train_y, test_x, test_y, shots=(1, 5, 10), num_seeds=3)
result[5]["accuracy"], result[5]["l2"]
```

The solver (`LeastSquares`) precomputes one eigendecomposition per fit, so trying the whole
L2 grid costs one matrix product per value.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tl_keras import data as data_lib

__all__ = [
    "BIAS_CONSTANT",
    "DEFAULT_L2_GRID",
    "LeastSquares",
    "ridge_weights",
    "select_l2",
    "split_few_shot",
    "evaluate",
    "feature_model",
    "extract_features",
    "format_table",
    "FewShotData",
    "tfds_features",
    "synthetic_features",
    "dataset_features",
]

BIAS_CONSTANT = 100.0  # big_vision: a large constant feature = an (almost) unregularised bias
DEFAULT_L2_GRID = tuple(float(2.0**i) for i in range(-10, 21))


def ridge_weights(x, targets, l2):
    """Closed-form L2-regularised least squares: `argmin_W |x W - targets|^2 + l2 |W|^2`
    = `(x^T x + l2 I)^{-1} x^T targets` (solved in the smaller of the two dimensions)."""
    x = np.asarray(x, np.float64)
    targets = np.asarray(targets, np.float64)
    n, d = x.shape
    if n >= d:
        return np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ targets)
    return x.T @ np.linalg.solve(x @ x.T + l2 * np.eye(n), targets)


class LeastSquares:
    """Regularised least squares from features to `{-1, 1}^K`, for any L2 at once.

    Args:
        x: training features `[N, D]`.
        labels: int class indices `[N]`.
        num_classes: K.

    Features are standardised with the training mean/std (+1e-5), and a constant feature
    `BIAS_CONSTANT` is appended (an almost unregularised bias). The Gram matrix (`[D+1]^2`
    or `[N]^2`, whichever is smaller) is eigendecomposed once; `weights(l2)` is then
    `lhs diag(1 / (eigs + l2)) rhs`.
    """

    def __init__(self, x, labels, num_classes):
        x = np.asarray(x, np.float64)
        labels = np.asarray(labels).astype(np.int64)
        if x.ndim != 2 or labels.shape != (x.shape[0],):
            raise ValueError(
                f"LeastSquares: expected features [N, D] and labels [N]; got {x.shape} and "
                f"{labels.shape}."
            )
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
            raise ValueError(f"LeastSquares: labels must be in [0, {num_classes}).")
        self.num_classes = int(num_classes)
        self.mean = x.mean(0, keepdims=True)
        self.std = x.std(0, keepdims=True) + 1e-5
        xs = self.transform(x)
        targets = 2.0 * np.eye(num_classes)[labels] - 1.0  # {-1, 1}^K
        n, d = xs.shape
        if n >= d:
            eigs, q = np.linalg.eigh(xs.T @ xs)
            self._lhs, self._rhs = q, q.T @ (xs.T @ targets)
        else:
            eigs, q = np.linalg.eigh(xs @ xs.T)
            self._lhs, self._rhs = xs.T @ q, q.T @ targets
        self._eigs = np.maximum(eigs, 0.0)  # a Gram matrix: tiny negative values are round-off

    def transform(self, x):
        """Standardised features with the bias column: `[N, D + 1]`."""
        x = (np.asarray(x, np.float64) - self.mean) / self.std
        return np.concatenate([x, np.full((x.shape[0], 1), BIAS_CONSTANT)], axis=1)

    def weights(self, l2):
        """`[D + 1, K]` weights for regularisation `l2` (> 0)."""
        if not l2 > 0:
            raise ValueError(f"LeastSquares: l2 must be > 0, got {l2!r}.")
        return (self._lhs / (self._eigs + l2)[None, :]) @ self._rhs

    def scores(self, x, l2):
        return self.transform(x) @ self.weights(l2)

    def predict(self, x, l2):
        return np.argmax(self.scores(x, l2), axis=1)

    def accuracy(self, x, labels, l2):
        return float(np.mean(self.predict(x, l2) == np.asarray(labels)))


def select_l2(solver, x_val, y_val, l2_grid=DEFAULT_L2_GRID):
    """The L2 of `l2_grid` with the best accuracy on the held-out `(x_val, y_val)`; ties go
    to the lower held-out squared error against the `{-1, 1}` targets, then to the larger L2.

    Returns `(l2, {l2: held-out accuracy})`.
    """
    y_val = np.asarray(y_val).astype(np.int64)
    targets = 2.0 * np.eye(solver.num_classes)[y_val] - 1.0
    xs = solver.transform(x_val)
    accuracy, keys = {}, []
    for l2 in l2_grid:
        scores = xs @ solver.weights(l2)
        acc = float(np.mean(np.argmax(scores, 1) == y_val))
        mse = float(np.mean((scores - targets) ** 2))
        accuracy[float(l2)] = acc
        keys.append((acc, -mse, float(l2)))
    best = max(keys)
    return best[2], accuracy


def split_few_shot(labels, shots, holdout_per_class, rng, num_classes=None):
    """Indices `(shot_idx, holdout_idx)`: per class, a random permutation gives
    `holdout_per_class` held-out examples, then `shots` training examples (disjoint).
    Raises ValueError naming a class with too few examples."""
    labels = np.asarray(labels).astype(np.int64)
    num_classes = int(num_classes if num_classes is not None else labels.max() + 1)
    shot_idx, holdout_idx = [], []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        need = shots + holdout_per_class
        if len(members) < need:
            raise ValueError(
                f"few-shot: class {c} has {len(members)} training examples; {shots} shots + "
                f"{holdout_per_class} held out need {need}."
            )
        members = rng.permutation(members)
        holdout_idx.append(members[:holdout_per_class])
        shot_idx.append(members[holdout_per_class:need])
    return np.concatenate(shot_idx), np.concatenate(holdout_idx)


def evaluate(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    shots: Sequence[int] = (1, 5, 10),
    num_seeds: int = 3,
    seeds: Optional[Sequence[int]] = None,
    holdout_per_class: int = 5,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    num_classes: Optional[int] = None,
) -> Dict[int, dict]:
    """Few-shot accuracy for each shot count, averaged over seeds.

    Args:
        train_x, train_y: features `[N, D]` and labels `[N]` of the training split (the
            pool shots and held-out examples are drawn from).
        test_x, test_y: the test split.
        shots: shot counts (examples per class).
        num_seeds / seeds: seeds averaged (default `range(num_seeds)`).
        holdout_per_class: held-out examples per class (from the training split, never
            shots) on which the L2 is chosen.
        l2_grid: L2 values tried.
        num_classes: K (default: from the labels).

    Returns:
        `{n: {"accuracy": mean, "std": std over seeds, "per_seed": [...], "l2": [chosen
        per seed], "holdout_accuracy": [...], "seeds": [...]}}`.
    """
    train_y = np.asarray(train_y).astype(np.int64)
    test_y = np.asarray(test_y).astype(np.int64)
    if num_classes is None:
        num_classes = int(max(train_y.max(), test_y.max()) + 1)
    if holdout_per_class < 1:
        raise ValueError("few-shot: holdout_per_class must be >= 1 (the L2 is chosen on it).")
    seeds = list(seeds) if seeds is not None else list(range(num_seeds))
    if not seeds:
        raise ValueError("few-shot: at least one seed is needed.")
    results = {}
    for n in shots:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"few-shot: shot counts must be positive ints, got {n!r}.")
        per_seed, chosen, held = [], [], []
        for seed in seeds:
            rng = np.random.default_rng([int(seed), int(n)])
            shot_idx, holdout_idx = split_few_shot(
                train_y, int(n), holdout_per_class, rng, num_classes
            )
            solver = LeastSquares(train_x[shot_idx], train_y[shot_idx], num_classes)
            l2, acc = select_l2(solver, train_x[holdout_idx], train_y[holdout_idx], l2_grid)
            chosen.append(l2)
            held.append(acc[l2])
            per_seed.append(solver.accuracy(test_x, test_y, l2))
        results[int(n)] = {
            "accuracy": float(np.mean(per_seed)),
            "std": float(np.std(per_seed)),
            "per_seed": per_seed,
            "l2": chosen,
            "holdout_accuracy": held,
            "seeds": seeds,
        }
    return results


def format_table(results, title=None):
    """A plain-text table of `evaluate`'s result."""
    lines = [title] if title else []
    lines.append(f"{'shots':>5}  {'accuracy':>9}  {'± std':>7}  {'seeds':>5}  chosen L2 (per seed)")
    for n in sorted(results):
        r = results[n]
        l2 = ", ".join(f"2^{np.log2(v):g}" for v in r["l2"])
        lines.append(
            f"{n:>5}  {100 * r['accuracy']:>8.2f}%  {100 * r['std']:>6.2f}%  "
            f"{len(r['per_seed']):>5}  {l2}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Features.
# --------------------------------------------------------------------------------------


def feature_model(model):
    """The model up to its pre-logits: the input of the `head` layer (tl_keras models;
    ViT/ViViT: the pooled, optionally `pre_logits`, feature; X(2+1)D: the FC features), or
    the model itself when it has no `head` (built with `include_top=False`)."""
    try:
        head = model.get_layer("head")
    except ValueError:
        head = None
    if head is None:
        if len(model.outputs[0].shape) != 2:
            raise ValueError(
                f"feature_model: {model.name} has no `head` layer and its output "
                f"{model.outputs[0].shape} is not a feature vector [B, D]."
            )
        return model
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, head.input, name=f"{model.name}_features")


def extract_features(model, inputs, *, batch_size=32, labels_too=False):
    """Frozen pre-logit features `[N, D]` (float64) of `inputs`.

    `inputs`: an array of pre-processed model inputs, or a dataset / iterable of batches
    (`x` or `(x, y)`). With `labels_too=True` (dataset of `(x, y)`) returns
    `(features, labels)` where one-hot labels are turned into indices.
    """
    features_fn = feature_model(model)
    feats, labels = [], []
    if hasattr(inputs, "shape"):
        array = np.asarray(inputs, np.float32)
        batches = (array[i : i + batch_size] for i in range(0, len(array), batch_size))
    else:
        batches = inputs
    for batch in batches:
        y = None
        if isinstance(batch, (tuple, list)):
            batch, y = batch[0], (batch[1] if len(batch) > 1 else None)
        out = features_fn(batch, training=False)
        feats.append(np.asarray(ops.convert_to_numpy(ops.cast(out, "float32")), np.float64))
        if labels_too:
            if y is None:
                raise ValueError("extract_features: labels_too=True needs (x, y) batches.")
            y = np.asarray(y)
            labels.append(np.argmax(y, -1) if y.ndim == 2 else y.astype(np.int64))
    if not feats:
        raise ValueError("extract_features: no input.")
    features = np.concatenate(feats)
    if labels_too:
        return features, np.concatenate(labels)
    return features


@dataclasses.dataclass
class FewShotData:
    """Features and labels of a training pool and a test set (what `evaluate` takes)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: Optional[list] = None


SYNTHETIC = {"synthetic_single": "single"}


def _collect(elements, num_classes, per_class, limit=None):
    """Keeps at most `per_class` (None: all) elements of each class, in order, from an
    iterable of `(x, label)`; stops early once every class is full (or after `limit`)."""
    kept, counts, total = [], np.zeros(num_classes, np.int64), 0
    for x, label in elements:
        label = int(label)
        if not 0 <= label < num_classes:
            raise ValueError(f"few-shot: label {label} is outside [0, {num_classes}).")
        if per_class is None or counts[label] < per_class:
            kept.append((x, label))
            counts[label] += 1
            total += 1
        if per_class is not None and counts.min() >= per_class:
            break
        if limit is not None and total >= limit:
            break
    return kept


def _features_of(model, examples, make_input, batch_size):
    if not examples:
        raise ValueError("few-shot: no examples were read.")
    xs = [x for x, _ in examples]
    labels = np.array([y for _, y in examples], np.int64)
    array = np.array(xs, dtype=object) if isinstance(xs[0], bytes) else np.stack(xs)
    ds = tf.data.Dataset.from_tensor_slices(array)
    ds = ds.map(make_input, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return extract_features(model, ds), labels


def tfds_features(
    model,
    name,
    *,
    data_dir=None,
    preprocessing=None,
    train_split="train",
    test_split="test",
    pool_per_class=None,
    max_test_examples=None,
    batch_size=32,
    image_key="image",
    label_key="label",
):
    """Pre-logit features of a TFDS image classification dataset (`name`, e.g.
    `"cifar100"`, `"oxford_flowers102"`) read from `data_dir`.

    The training pool keeps at most `pool_per_class` examples per class (reading stops once
    every class is full); the test split at most `max_test_examples`. Images (JPEG/PNG,
    grey or RGB) are pre-processed as in evaluation (`tl_keras.data.preprocess_encoded`
    with `preprocessing`, default `tl_keras.data.preprocessing_for(model)`).
    """
    import tensorflow_datasets as tfds  # optional (extra "test"): only for TFDS datasets

    prep = preprocessing or data_lib.preprocessing_for(model)
    if prep.kind != "image":
        raise ValueError(
            f"few-shot: {name!r} is an image dataset; the model takes {prep.kind} input."
        )
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"few-shot: {name!r} is neither a TFDS dataset nor a built-in one "
            f"({sorted(SYNTHETIC)})."
        ) from None
    features = builder.info.features
    if image_key not in features or label_key not in features:
        raise ValueError(
            f"few-shot: TFDS {name!r} has features {sorted(features.keys())}; need "
            f"{image_key!r} and {label_key!r}."
        )
    label_feature = features[label_key]
    num_classes = int(label_feature.num_classes)
    names = list(getattr(label_feature, "names", None) or []) or None

    def read(split, per_class, limit):
        try:
            ds = builder.as_dataset(
                split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
            )
        except AssertionError as e:  # TFDS's "could not find data in ..." / unknown split
            raise ValueError(f"few-shot: TFDS {name!r}, split {split!r}: {e}") from None
        ds = ds.map(lambda e: (e[image_key], e[label_key]))
        return _collect(((x.numpy(), y.numpy()) for x, y in ds), num_classes, per_class, limit)

    def make_input(encoded):
        return data_lib.preprocess_encoded(encoded[None], prep)[0]

    train = read(train_split, pool_per_class, None)
    test = read(test_split, None, max_test_examples)
    train_x, train_y = _features_of(model, train, make_input, batch_size)
    test_x, test_y = _features_of(model, test, make_input, batch_size)
    return FewShotData(train_x, train_y, test_x, test_y, num_classes, names)


def synthetic_features(
    model,
    name="synthetic_single",
    *,
    data_dir=None,
    preprocessing=None,
    pool_per_class=None,
    max_test_examples=None,
    batch_size=16,
):
    """Pre-logit features of the built-in video dataset (`tl_keras.data.synthetic`,
    single-label variant): its train split is the pool, its validation split the test set.
    Clips are sampled and pre-processed by the evaluation pipeline (`video_dataset`) at
    the model's frame count and size."""
    if name not in SYNTHETIC:
        raise ValueError(
            f"few-shot: built-in dataset {name!r} unknown; few-shot classification needs a "
            f"single-label one: {sorted(SYNTHETIC)}."
        )
    prep = preprocessing or data_lib.preprocessing_for(model)
    if prep.kind != "video":
        raise ValueError(
            f"few-shot: {name!r} is a video dataset; the model takes {prep.kind} input."
        )
    info = data_lib.synthetic.make_dataset(SYNTHETIC[name], root=data_dir)
    views = {"num_clips": 1, "num_crops": 1} if prep.eval_split == "test" else {}

    def read(pattern, per_class, limit):
        ds = data_lib.video_dataset(
            pattern,
            split=prep.eval_split,
            num_classes=info.num_classes,
            num_frames=prep.num_frames,
            stride=info.stride,
            crop_size=prep.crop_size,
            min_resize=prep.min_resize,
            normalization=prep.normalization,
            batch_size=1,
            on_error="raise",
            log_skipped=False,
            **views,
        ).unbatch()
        elements = ((x.numpy(), int(np.argmax(y.numpy()))) for x, y in ds)
        return _collect(elements, info.num_classes, per_class, limit)

    train = read(info.train_pattern, pool_per_class, None)
    test = read(info.validation_pattern, None, max_test_examples)
    train_x, train_y = _features_of(model, train, lambda x: x, batch_size)
    test_x, test_y = _features_of(model, test, lambda x: x, batch_size)
    return FewShotData(train_x, train_y, test_x, test_y, info.num_classes, list(info.class_names))


def dataset_features(model, dataset, **kwargs):
    """`synthetic_features` for the built-in `synthetic_single`, else `tfds_features`."""
    if dataset in SYNTHETIC:
        for key in ("train_split", "test_split", "image_key", "label_key"):
            kwargs.pop(key, None)
        return synthetic_features(model, dataset, **kwargs)
    return tfds_features(model, dataset, **kwargs)
