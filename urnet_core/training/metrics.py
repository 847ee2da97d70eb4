"""Classification metrics for a model's predicted probabilities.

Notation: N instances, C classes; ``pred_probs`` is (N, C) with rows summing to 1.
The paper reports top-5 accuracy on WebVision; we add top-1, balanced accuracy, macro F1,
calibration (ECE) and NLL, and per-class accuracy for the head/medium/tail breakdown of
class-imbalance (challenge C1).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import f1_score

from urnet_core.utils.validation import as_labels, check_positive_int, check_probabilities

ECE_BINS = 15


def expected_calibration_error(labels: np.ndarray, pred_probs: np.ndarray, *, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 confidence with ``n_bins`` equal-width bins.

    ``ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b|``.
    """
    labels = as_labels(labels)
    probs = check_probabilities(pred_probs, n_rows=labels.size)
    check_positive_int(n_bins, "n_bins")
    if labels.size == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # Bins are (lo, hi]; confidence 0 (impossible for a probability row) would fall in bin 0.
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / labels.size)


def classification_metrics(labels: np.ndarray, pred_probs: np.ndarray, *, num_classes: int) -> dict:
    """Summary metrics of predictions against labels.

    Parameters
    ----------
    labels : array-like (N,)
        True (or evaluation) labels in ``[0, num_classes)``.
    pred_probs : array-like (N, C)
        Predicted class probabilities.
    num_classes : int
        C.

    Returns
    -------
    dict
        - ``top1``, ``top5``: top-k accuracy, with k = min(5, C) for ``top5``;
        - ``balanced_accuracy``: mean per-class recall over classes present in ``labels``;
        - ``macro_f1``: sklearn's macro F1 over the classes present in ``labels``;
        - ``ece``: expected calibration error, 15 bins;
        - ``nll``: mean negative log-likelihood of the label (probabilities clipped at 1e-12);
        - ``per_class_accuracy``: list of C floats, NaN for classes absent from ``labels``;
        - ``n``: N.
    """
    check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    probs = check_probabilities(pred_probs, n_rows=labels.size, num_classes=num_classes)
    n = labels.size
    if n == 0:
        raise ValueError("classification_metrics needs at least one instance")
    pred = probs.argmax(axis=1)
    correct = pred == labels
    k = min(5, num_classes)
    # Top-k by partition: ties at the k-th place count as hits, as in torch.topk's usual use.
    topk = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    top5 = (topk == labels[:, None]).any(axis=1)
    counts = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    present = np.flatnonzero(counts > 0)
    macro_f1 = f1_score(labels, pred, labels=present, average="macro", zero_division=0)
    p_true = np.clip(probs[np.arange(n), labels], 1e-12, 1.0)
    return {
        "top1": float(correct.mean()),
        "top5": float(top5.mean()),
        "balanced_accuracy": float(np.nanmean(per_class)),
        "macro_f1": float(macro_f1),
        "ece": expected_calibration_error(labels, probs),
        "nll": float(-np.log(p_true).mean()),
        "per_class_accuracy": [float(a) for a in per_class],
        "n": int(n),
    }


def accuracy_by_class_size(
    per_class_acc: Sequence[float],
    class_counts: Sequence[int],
    groups: Sequence[str] = ("head", "medium", "tail"),
) -> dict:
    """Mean per-class accuracy within groups of classes ordered by training-set size.

    Classes are sorted by ``class_counts`` (largest first, ties by class id) and cut into
    ``len(groups)`` nearly equal parts (``np.array_split``): with the default, the largest third
    is "head", the middle third "medium", the smallest third "tail".

    Parameters
    ----------
    per_class_acc : array-like (C,)
        Accuracy of each class (NaN for classes without evaluation instances; ignored).
    class_counts : array-like (C,)
        Training instances of each class.
    groups : sequence of str
        Group names, largest classes first.

    Returns
    -------
    dict
        ``{group: mean accuracy}`` plus ``{group + "_classes": list of class ids}``.
    """
    acc = np.asarray(per_class_acc, dtype=np.float64)
    counts = np.asarray(class_counts)
    if acc.ndim != 1 or counts.shape != acc.shape:
        raise ValueError(f"per_class_acc and class_counts must be 1-D of equal length; got {acc.shape} and {counts.shape}")
    if len(groups) == 0 or len(groups) > acc.size:
        raise ValueError(f"need between 1 and {acc.size} groups, got {len(groups)}")
    order = np.lexsort((np.arange(acc.size), -counts))
    out: dict = {}
    for name, members in zip(groups, np.array_split(order, len(groups))):
        vals = acc[members]
        out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        out[f"{name}_classes"] = sorted(int(c) for c in members)
    return out
