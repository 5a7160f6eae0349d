"""tl_keras.train.metrics against straightforward, independent NumPy computations."""

import numpy as np
import pytest

from tl_keras.train import metrics


def _reference_topk(scores, labels, k):
    hits = 0
    for s, y in zip(scores, labels):
        order = sorted(range(len(s)), key=lambda c: -s[c])
        hits += y in order[:k]
    return hits / len(labels)


def _reference_ap(scores, positives):
    """AP as the mean, over the positives, of the precision at each positive's rank."""
    ranked = sorted(zip(scores, positives), key=lambda t: -t[0])
    found, precisions = 0, []
    for rank, (_, is_pos) in enumerate(ranked, start=1):
        if is_pos:
            found += 1
            precisions.append(found / rank)
    return sum(precisions) / len(precisions)


def test_topk_matches_reference():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 10))
    labels = rng.integers(0, 10, 200)
    onehot = np.eye(10)[labels]
    for k in (1, 3, 5):
        expected = _reference_topk(scores, labels, k)
        assert metrics.topk_accuracy(scores, labels, k) == pytest.approx(expected)
        assert metrics.topk_accuracy(scores, onehot, k) == pytest.approx(expected)


def test_map_matches_reference_and_skips_classes_without_positives():
    rng = np.random.default_rng(1)
    n, k = 60, 8
    labels = (rng.random((n, k)) < 0.3).astype(np.float32)
    labels[:, 5] = 0  # no positive: left out
    scores = rng.normal(size=(n, k)) + 1.5 * labels
    aps = [_reference_ap(scores[:, c], labels[:, c]) for c in range(k) if labels[:, c].any()]
    assert len(aps) == k - 1
    assert metrics.mean_average_precision(scores, labels) == pytest.approx(np.mean(aps), abs=1e-12)
    assert np.isnan(metrics.average_precision(scores[:, 5], labels[:, 5]))


def test_map_known_values():
    # One class, positives ranked 1st and 3rd: AP = (1/1 + 2/3) / 2.
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    labels = np.array([[1], [0], [1], [0]])
    assert metrics.mean_average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    # Perfect ranking -> 1.0.
    assert metrics.mean_average_precision([[2.0, 0.0], [0.0, 2.0]], [[1, 0], [0, 1]]) == 1.0


def test_mean_class_accuracy_matches_reference():
    rng = np.random.default_rng(2)
    labels = np.concatenate([np.zeros(50, int), np.ones(10, int), np.full(5, 3)])  # class 2 absent
    scores = rng.normal(size=(len(labels), 4))
    pred = scores.argmax(1)
    per_class = []
    for c in (0, 1, 3):
        idx = [i for i, y in enumerate(labels) if y == c]
        per_class.append(sum(pred[i] == c for i in idx) / len(idx))
    expected = sum(per_class) / len(per_class)
    assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(expected)
    # Differs from plain accuracy when classes are unbalanced.
    scores = np.zeros((len(labels), 4))
    scores[:, 0] = 1  # always predicts class 0
    assert metrics.topk_accuracy(scores, labels, 1) == pytest.approx(50 / 65)
    assert metrics.mean_class_accuracy(scores, labels) == pytest.approx(1 / 3)


def test_merge_views_logits_and_probabilities():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(5, 6, 4)) * 3
    np.testing.assert_allclose(metrics.merge_views(logits, "logits"), logits.mean(1))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(
        metrics.merge_views(logits, "probabilities"), (e / e.sum(-1, keepdims=True)).mean(1)
    )
    np.testing.assert_allclose(
        metrics.merge_views(logits, "probabilities", multilabel=True),
        (1 / (1 + np.exp(-logits))).mean(1),
    )
    two_d = rng.normal(size=(5, 4))
    assert metrics.merge_views(two_d) is not None and np.array_equal(metrics.merge_views(two_d), two_d)
    with pytest.raises(ValueError, match="eval.average"):
        metrics.merge_views(logits, "median")


def test_averaging_logits_and_probabilities_can_disagree():
    # View 1 is extremely sure of class 0; views 2-4 fairly sure of class 1.
    logits = np.array([[[10.0, 0.0], [0.0, 3.0], [0.0, 3.0], [0.0, 3.0]]])
    assert metrics.merge_views(logits, "logits").argmax() == 0
    assert metrics.merge_views(logits, "probabilities").argmax() == 1


def test_compute_metrics_keys():
    single = metrics.compute_metrics(np.eye(3), np.eye(3))
    assert single == {"num_examples": 3, "top1": 1.0, "mean_class_accuracy": 1.0}
    multi = metrics.compute_metrics(np.eye(3), np.eye(3), multilabel=True)
    assert multi == {"num_examples": 3, "mAP": 1.0}


@pytest.mark.parametrize("num_classes", [4, 5, 6, 10])
def test_top5_only_with_more_than_five_classes(num_classes):
    """With 5 or fewer classes every label is in the top 5: no `top5` (always 1.0)."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(50, num_classes))
    labels = rng.integers(0, num_classes, 50)
    out = metrics.compute_metrics(scores, labels)
    assert ("top5" in out) == (num_classes > 5)
    if num_classes > 5:
        assert out["top5"] == pytest.approx(_reference_topk(scores, labels, 5))
        assert out["top5"] < 1.0
