"""Label reweighting (paper section 4.5, eq. 10): soft targets mixing label and prediction.

Notation: ``n`` instances, ``C`` classes. The target of instance ``i`` is
``beta * onehot(y_i) + (1 - beta) * onehot(yhat_i)`` where ``yhat_i`` is the baseline's predicted
class; where the baseline agrees with the label the target stays ``onehot(y_i)``.

At scale the dense ``(n, C)`` targets do not fit (16M x 5000 float32 is 320 GB): keep the
predicted class per instance (:func:`label_target_pairs`, ``(n,)`` int64, computed from
memory-mapped probabilities in chunks) and either expand a batch at a time with
:func:`expand_label_targets`, which gives exactly the rows of :func:`label_targets`, or hand
the trainer a :class:`LabelPairs` (``train(..., soft_targets=LabelPairs(predicted, beta))``),
whose loss gathers two log-probabilities per instance and never builds a ``(B, C)`` target.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urnet_core._validation import as_labels, check_fraction, check_positive_int
from urnet_core.reweight.cluster_weight import DEFAULT_CHUNK_ROWS, _as_predictions, predicted_classes


@dataclass(frozen=True)
class LabelPairs:
    """Eq. 10's targets in compact form: the predicted class per instance and ``beta``.

    Row ``i`` stands for ``beta * onehot(labels[i]) + (1 - beta) * onehot(predicted[i])``;
    ``O(n)`` memory instead of ``O(n * C)``. Build it with :func:`label_pairs`.
    """

    predicted: np.ndarray
    beta: float

    def __post_init__(self) -> None:
        check_fraction(self.beta, "beta")
        pred = np.asarray(self.predicted)
        if pred.ndim != 1 or not np.issubdtype(pred.dtype, np.integer):
            raise ValueError(f"LabelPairs.predicted must be a 1-D integer array, got {pred.dtype} {pred.shape}")

    def expand(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        """The dense ``(n, C)`` targets (small data only)."""
        return expand_label_targets(labels, self.predicted, num_classes, beta=self.beta)


def save_label_pairs(path, pairs: LabelPairs):
    """Write :class:`LabelPairs` atomically as ``.npz`` (``predicted``, ``beta``)."""
    from urnet_core.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, predicted=np.asarray(pairs.predicted, dtype=np.int64), beta=np.float64(pairs.beta))
    return path


def load_label_pairs(path) -> LabelPairs:
    """Read :class:`LabelPairs` written by :func:`save_label_pairs` (clear error when it is not one)."""
    with np.load(path, allow_pickle=False) as z:
        if set(z.files) != {"predicted", "beta"}:
            raise ValueError(f"{path}: not a compact targets file (expected arrays 'predicted' and 'beta', "
                             f"found {sorted(z.files)})")
        return LabelPairs(z["predicted"].astype(np.int64), float(z["beta"]))


def label_pairs(labels: np.ndarray, predictions: np.ndarray, num_classes: int, *, beta: float = 0.8,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> LabelPairs:
    """:class:`LabelPairs` of eq. 10 from class ids or (memory-mapped) probabilities."""
    beta = check_fraction(beta, "beta")
    return LabelPairs(label_target_pairs(labels, predictions, num_classes, chunk_rows=chunk_rows), beta)


def label_target_pairs(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> np.ndarray:
    """The baseline's predicted class of every instance: the compact form of eq. 10's targets.

    Parameters
    ----------
    labels : array of int, shape (n,)
    predictions : array of int, shape (n,), or array of float, shape (n, C)
        Class ids or probabilities (possibly a memory map; streamed ``chunk_rows`` at a time).
    num_classes : int

    Returns
    -------
    predicted : ndarray of int64, shape (n,)
        Pass it with the labels to :func:`expand_label_targets` per batch.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    return predicted_classes(predictions, num_classes, labels.shape[0], chunk_rows=chunk_rows)


def expand_label_targets(labels: np.ndarray, predicted: np.ndarray, num_classes: int, *, beta: float = 0.8) -> np.ndarray:
    """Dense soft targets ``(len(labels), C)`` float32 of eq. 10 for a batch of instances.

    Identical to the matching rows of :func:`label_targets`.
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(predicted, dtype=np.int64)
    rows = np.arange(labels.shape[0])
    targets = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    targets[rows, labels] = beta
    targets[rows, pred] += 1.0 - beta
    agree = pred == labels
    targets[rows[agree], labels[agree]] = 1.0  # exactly one-hot, no float32 rounding residue
    return targets


def label_targets(
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
    *,
    beta: float = 0.8,
) -> np.ndarray:
    """Soft targets of eq. 10.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels.
    predictions : array of int, shape (n,), or array of float, shape (n, C)
        Baseline predicted class ids, or predicted probabilities (argmax is taken, so the
        target mixes two one-hots as in the paper, not the full distribution).
    num_classes : int
    beta : float in [0, 1], default=0.8
        Weight of the observed label.

    Returns
    -------
    targets : ndarray of float32, shape (n, C)
        Rows sum to 1.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    beta = check_fraction(beta, "beta")
    labels = as_labels(labels, num_classes=num_classes)
    pred = _as_predictions(predictions, num_classes, labels.shape[0])
    return expand_label_targets(labels, pred, num_classes, beta=beta)
