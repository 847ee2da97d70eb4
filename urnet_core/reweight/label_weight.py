"""Label reweighting (paper section 4.5, eq. 10): soft targets mixing label and prediction.

Notation: ``n`` instances, ``C`` classes. The target of instance ``i`` is
``beta * onehot(y_i) + (1 - beta) * onehot(yhat_i)`` where ``yhat_i`` is the baseline's predicted
class; where the baseline agrees with the label the target stays ``onehot(y_i)``.
"""

from __future__ import annotations

import numpy as np

from urnet_core._validation import as_labels, check_fraction, check_positive_int
from urnet_core.reweight.cluster_weight import _as_predictions


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
    rows = np.arange(labels.shape[0])
    targets = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    targets[rows, labels] = beta
    targets[rows, pred] += 1.0 - beta
    agree = pred == labels
    targets[rows[agree], labels[agree]] = 1.0  # exactly one-hot, no float32 rounding residue
    return targets
