"""The result every k-means backend returns, and the array-type check they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    """Result of one k-means problem.

    Attributes
    ----------
    centers : ndarray of float32, shape (k, d)
        ``k = min(n_clusters, n)``.
    labels : ndarray of int64, shape (n,)
        Cluster of each row.
    inertia : float
        Sum of squared distances of the rows to their centres.
    backend : str
        The backend that actually ran (``"trivial"`` when ``n <= n_clusters``).
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    backend: str


def is_cupy_array(x: object) -> bool:
    """True for a CuPy ndarray (checked by module name, so CuPy is never imported here)."""
    return type(x).__module__.split(".")[0] == "cupy"
