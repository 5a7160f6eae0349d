"""Evaluation metrics of the paper, on NumPy arrays of a whole split.

* `topk_accuracy`: top-1 / top-5 (Kinetics, ImageNet). A label counts as found in the top k
  when fewer than k classes score strictly higher than it (ties resolve in the label's favour).
* `mean_average_precision`: Charades mAP, the mean over classes of the average precision
  (precision at every positive, averaged over the positives, with examples sorted by score);
  classes without any positive are left out, as in the official Charades evaluation.
* `mean_class_accuracy`: AViD's accuracy averaged over the classes present in the labels.
* `merge_views`: multi-view test (e.g. 4 clips x 3 crops): the views of a video are averaged,
  as logits (default) or as probabilities (softmax, or sigmoid for multi-label), before the
  metric.
* `merge_segments`: segment test (Charades, paper A.3): the outputs of all segments of a
  video, rows tagged with the video's id, are merged by `max` or `mean` (as logits, or as
  probabilities) into one row per video.

Scores are `[N, K]`; labels are `[N, K]` (one-hot or multi-hot) or `[N]` class indices.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "topk_accuracy",
    "average_precision",
    "mean_average_precision",
    "mean_class_accuracy",
    "merge_views",
    "merge_segments",
    "SEGMENT_MERGES",
    "compute_metrics",
]


def _class_indices(labels, num_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"labels have {labels.shape[1]} classes, scores {num_classes}")
        return labels.argmax(axis=1)
    return labels.astype(np.int64)


def topk_accuracy(scores, labels, k=1):
    """Fraction of examples whose label is among the `k` highest scores."""
    scores = np.asarray(scores, np.float64)
    if scores.shape[0] == 0:
        return float("nan")
    idx = _class_indices(labels, scores.shape[1])
    label_scores = scores[np.arange(len(idx)), idx]
    higher = (scores > label_scores[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def average_precision(scores, positives):
    """AP of one class: scores `[N]`, positives `[N]` bool. NaN when there is no positive."""
    scores = np.asarray(scores, np.float64)
    positives = np.asarray(positives).astype(bool)
    num_pos = positives.sum()
    if num_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = positives[order].astype(np.float64)
    precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    return float(np.sum(precision * tp) / num_pos)


def mean_average_precision(scores, labels):
    """Charades mAP: mean AP over the classes that have at least one positive."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = np.eye(scores.shape[1], dtype=bool)[labels]
    aps = [average_precision(scores[:, c], labels[:, c] > 0) for c in range(scores.shape[1])]
    aps = [ap for ap in aps if not np.isnan(ap)]
    return float(np.mean(aps)) if aps else float("nan")


def mean_class_accuracy(scores, labels):
    """Top-1 accuracy computed per class (over the classes present), then averaged."""
    scores = np.asarray(scores)
    if scores.shape[0] == 0:
        return float("nan")
    idx = _class_indices(labels, scores.shape[1])
    pred = scores.argmax(axis=1)
    accs = [np.mean(pred[idx == c] == c) for c in np.unique(idx)]
    return float(np.mean(accs))


def _softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def merge_views(logits, average="logits", multilabel=False):
    """`[N, V, K]` logits of V views -> `[N, K]` scores.

    `average="logits"` averages the logits; `"probabilities"` averages softmax (sigmoid for
    multi-label) probabilities. `[N, K]` input (one view) is returned unchanged.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 2:
        return logits
    if average == "logits":
        return logits.mean(axis=1)
    if average == "probabilities":
        probs = 1.0 / (1.0 + np.exp(-logits)) if multilabel else _softmax(logits)
        return probs.mean(axis=1)
    raise ValueError(f"eval.average={average!r}: expected 'logits' or 'probabilities'")


SEGMENT_MERGES = ("max", "mean")


def merge_segments(logits, labels, video_ids, merge="max", average="logits", multilabel=False):
    """Per-segment rows -> one row per video: `(scores [N, K], labels [N, K], ids [N])`.

    `logits` `[M, K]`, `labels` `[M, K]` and `video_ids` `[M]` hold one row per segment
    view, in any order (segments of a video may be spread over batches and replicas).
    `average="probabilities"` first maps the logits to softmax (sigmoid for multi-label)
    probabilities; then the rows of each video are reduced by `merge` (`"max"` or
    `"mean"`). Videos come out sorted by id; a video's label is that of its first row.
    """
    if merge not in SEGMENT_MERGES:
        raise ValueError(f"eval.segment_merge={merge!r}: expected one of {SEGMENT_MERGES}")
    if average not in ("logits", "probabilities"):
        raise ValueError(f"eval.average={average!r}: expected 'logits' or 'probabilities'")
    scores = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    video_ids = np.asarray(video_ids).reshape(-1)
    if not (scores.shape[0] == labels.shape[0] == video_ids.shape[0]):
        raise ValueError(
            f"merge_segments: {scores.shape[0]} logit rows, {labels.shape[0]} label rows and "
            f"{video_ids.shape[0]} video ids; expected one of each per segment"
        )
    if average == "probabilities":
        scores = 1.0 / (1.0 + np.exp(-scores)) if multilabel else _softmax(scores)
    ids, first, inverse = np.unique(video_ids, return_index=True, return_inverse=True)
    reduce = np.maximum if merge == "max" else np.add
    merged = np.full((len(ids), scores.shape[1]), -np.inf if merge == "max" else 0.0)
    reduce.at(merged, inverse, scores)  # [N, K]
    if merge == "mean":
        merged /= np.bincount(inverse, minlength=len(ids))[:, None]
    return merged, labels[first], ids


def compute_metrics(scores, labels, multilabel=False):
    """The metrics of the paper for one split.

    Single-label: `top1`, `top5` (only with more than 5 classes: with 5 or fewer every label
    is in the top 5), `mean_class_accuracy`. Multi-label: `mAP` (Charades). Always
    `num_examples`.
    """
    scores = np.asarray(scores)
    out = {"num_examples": int(scores.shape[0])}
    if multilabel:
        out["mAP"] = mean_average_precision(scores, labels)
    else:
        out["top1"] = topk_accuracy(scores, labels, 1)
        if scores.shape[1] > 5:
            out["top5"] = topk_accuracy(scores, labels, 5)
        out["mean_class_accuracy"] = mean_class_accuracy(scores, labels)
    return out
