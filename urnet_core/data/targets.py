"""Training targets: hard labels, dense soft targets, or eq. 10's compact :class:`LabelPairs`.

The trainer reads targets in one of three forms; this module defines the compact one (and its
file format) in the data layer, so that neither training nor a reweighting strategy imports the
other. Label reweighting (:mod:`urnet_core.reweight.label_weight`) builds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urnet_core.utils.validation import check_fraction


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
    from urnet_core.utils.io import atomic_path

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
