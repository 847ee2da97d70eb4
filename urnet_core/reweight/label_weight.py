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

import numpy as np

from urnet_core.utils.validation import as_labels, check_fraction, check_positive_int
from urnet_core.reweight.cluster import DEFAULT_CHUNK_ROWS, predicted_classes
from urnet_core.data.targets import LabelPairs, expand_label_targets


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
    pred = predicted_classes(predictions, num_classes, labels.shape[0])
    return expand_label_targets(labels, pred, num_classes, beta=beta)
