"""Class reweighting (paper section 4.1, eq. 2-4) and the effective-number peer baseline.

Notation: ``n`` instances, ``C`` classes, ``N_j`` instances observed with label ``j``,
``N = sum_j N_j``.

The paper defines ``r_j = 1 / N_j`` (eq. 2) and ``wC_j = (1 - alpha) + alpha * r_j / sum_k r_k``
(eq. 3-4). Taken literally (``scheme="literal"``) the alpha-term is at most ``alpha`` and about
``alpha / C`` for most classes, so at large ``C`` the weighting barely acts. The default
``scheme="balanced"`` replaces ``r_j / sum_k r_k`` by ``N / (C * N_j)`` (scikit-learn's
``class_weight="balanced"``): ``alpha=1`` then gives every class the same total weight and, for
every alpha, the mean weight per instance is exactly 1.

Classes with no instances: their alpha-term is defined as 0 (so ``wC_j = 1 - alpha``), they are
left out of ``sum_k r_k`` and ``C`` counts only non-empty classes. No instance carries such a
label, so the value never reaches the loss; it is finite so arrays stay NaN-free.
"""

from __future__ import annotations

import numpy as np

from urnet_core.utils.validation import as_labels, check_fraction, check_option, check_positive_int

CLASS_SCHEMES = ("balanced", "literal")


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Return ``N_j``, the number of instances per class, shape ``(C,)`` int64."""
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    return np.bincount(labels, minlength=num_classes).astype(np.int64)


def class_weights(
    labels: np.ndarray,
    num_classes: int,
    *,
    alpha: float = 0.5,
    scheme: str = "balanced",
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """Per-class weights ``wC`` of URNet's class reweighting (eq. 2-4).

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels in ``[0, num_classes)``.
    num_classes : int
        ``C``.
    alpha : float in [0, 1], default=0.5
        0: every instance weighs the same; 1: (balanced scheme) every class weighs the same.
    scheme : {'balanced', 'literal'}, default='balanced'
        - ``'balanced'``: ``wC_j = (1 - alpha) + alpha * N / (C * N_j)``; mean weight per
          instance is 1 and at ``alpha=1`` each class's total weight is ``N / C``.
        - ``'literal'``: eq. 3 as printed, ``wC_j = (1 - alpha) + alpha * r_j / sum_k r_k``
          with ``r_j = 1 / N_j``.
    counts : array of float, shape (C,), optional
        Class sizes to use instead of the label counts (e.g. URNet+'s estimated clean counts).

    Returns
    -------
    weights : ndarray of float64, shape (C,)
        Index it with the labels (``weights[labels]``) for per-instance weights.

    Examples
    --------
    >>> class_weights([1, 1, 1, 1, 0, 0], 2, alpha=1.0)
    array([1.5 , 0.75])
    """
    alpha = check_fraction(alpha, "alpha")
    check_option(scheme, "scheme", CLASS_SCHEMES)
    counts = _counts(labels, num_classes, counts)
    present = counts > 0
    term = np.zeros_like(counts)
    if present.any():
        if scheme == "balanced":
            term[present] = counts.sum() / (present.sum() * counts[present])
        else:
            r = 1.0 / counts[present]
            term[present] = r / r.sum()
    return (1.0 - alpha) + alpha * term


def _counts(labels: np.ndarray, num_classes: int, counts: np.ndarray | None) -> np.ndarray:
    if counts is None:
        return class_counts(labels, num_classes).astype(np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (num_classes,) or not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"counts must be {num_classes} finite non-negative class sizes, got shape {counts.shape}")
    return counts


def effective_number_weights(labels: np.ndarray, num_classes: int, *, beta: float = 0.999,
                             counts: np.ndarray | None = None) -> np.ndarray:
    """Class-balanced weights by effective number of samples (Cui et al., CVPR 2019).

    ``w_j = (1 - beta) / (1 - beta ** N_j)``, then rescaled so the mean weight per *instance*
    is 1 (``sum_j N_j w_j = N``). ``beta=0`` gives uniform weights; ``beta -> 1`` approaches
    inverse class frequency. This is the peer baseline URNet's class reweighting is measured
    against.

    Parameters
    ----------
    labels : array of int, shape (n,)
    num_classes : int
    beta : float in [0, 1), default=0.999
    counts : array of float, shape (C,), optional
        Class sizes to use instead of the label counts (see :func:`class_weights`).

    Returns
    -------
    weights : ndarray of float64, shape (C,)
        Empty classes get 0 (no instance uses it).
    """
    beta = check_fraction(beta, "beta")
    if beta >= 1.0:
        raise ValueError("beta must be < 1 (beta=1 divides by zero); use 0.9999 for near-inverse frequency")
    counts = _counts(labels, num_classes, counts)
    present = counts > 0
    w = np.zeros_like(counts)
    # 1 - beta**N = -expm1(N ln beta): accurate for beta close to 1.
    w[present] = (1.0 - beta) / -np.expm1(counts[present] * np.log(beta)) if beta > 0 else 1.0
    total = float((counts * w).sum())
    if total > 0:
        w *= counts.sum() / total
    return w
