"""Fits of time against N: power laws (k-means exponents) and affine models (the projection)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def fit_exponent(n: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log t = log a + b log N``; returns ``(b, a)``.

    Needs at least two distinct ``N`` and positive times.
    """
    x = np.log(np.asarray(n, dtype=np.float64))
    y = np.log(np.asarray(seconds, dtype=np.float64))
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError("fit_exponent needs at least two distinct N")
    if not np.all(np.isfinite(y)):
        raise ValueError("fit_exponent needs positive, finite times")
    b, log_a = np.polyfit(x, y, 1)
    return float(b), float(np.exp(log_a))


def project_time(seconds: float, n_from: float, n_to: float, exponent: float) -> float:
    """``t(n_to) = t(n_from) * (n_to / n_from) ** exponent``."""
    return float(seconds) * (float(n_to) / float(n_from)) ** float(exponent)


def affine_fit(n: Sequence[float], t: Sequence[float], *, min_slope: float = 0.0) -> tuple[float, float]:
    """``t = a + b N`` with ``a >= 0`` and ``b >= min_slope`` (least squares; one point: ``a = 0``)."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if np.unique(n).size < 2:
        return 0.0, max(float(t.mean() / n.mean()), min_slope)
    b, a = np.polyfit(n, t, 1)
    if b < min_slope:
        b = min_slope
        a = float(np.mean(t - b * n))
    if a < 0:
        a, b = 0.0, max(float((n * t).sum() / (n * n).sum()), min_slope)
    return float(a), float(b)
