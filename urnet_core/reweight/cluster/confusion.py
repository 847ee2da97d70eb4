"""The baseline's confusions (paper section 4.2, eq. 5-6): which classes each class's problem pools.

``M_jk`` counts the instances labelled ``j`` that the baseline predicts as ``k`` (eq. 5); class
``j``'s cluster problem pools ``j`` with its ``top_k`` most confused classes (eq. 6).
Predictions may be probabilities too large for RAM (16M x 5000 float32 is 320 GB): they are
streamed in row chunks and reduced to their argmax.
"""

from __future__ import annotations

import numpy as np

from urnet_core.utils import validation as _validation
from urnet_core.utils.memory import release_pages
from urnet_core.utils.validation import as_labels, check_positive_int

#: Rows read per chunk when streaming predictions (argmax) from a memory map.
DEFAULT_CHUNK_ROWS = 1 << 18


def predicted_classes(
    predictions: np.ndarray, num_classes: int, n_rows: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
    name: str = "predictions", check_range: bool = False,
) -> np.ndarray:
    """Class ids from int predictions ``(n,)`` or probabilities ``(n, C)``, streamed in chunks.

    Probabilities (possibly a memory map too large for RAM: 16M x 5000 float32 is 320 GB)
    are read at most ``chunk_rows`` rows and :data:`~urnet_core.utils.validation.CHECK_CHUNK_VALUES`
    values at a time, checked for NaN/inf (and, with ``check_range``, to lie in [0, 1]) and
    reduced to their argmax in the same pass, so memory stays ``O(chunk + n)``. ``name``
    names the array in error messages.

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
    arr = predictions if isinstance(predictions, np.ndarray) else np.asarray(predictions)
    if arr.ndim == 2:
        if arr.shape != (n_rows, num_classes):
            raise ValueError(f"{name} have shape {arr.shape}, expected ({n_rows}, {num_classes})")
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        step = max(1, min(chunk_rows, _validation.CHECK_CHUNK_VALUES // max(num_classes, 1)))
        out = np.empty(n_rows, dtype=np.int64)
        n_bad, first_bad = 0, -1
        for start in range(0, n_rows, step):
            block = np.asarray(arr[start : start + step])
            bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
            if bad.size:  # keep reading: the message counts every bad row
                n_bad += bad.size
                first_bad = start + int(bad[0]) if first_bad < 0 else first_bad
            elif check_range and block.size and (block.min() < -1e-6 or block.max() > 1 + 1e-6):
                raise ValueError(f"{name} must lie in [0, 1]; rows {start}..{start + block.shape[0] - 1} do not")
            out[start : start + block.shape[0]] = block.argmax(1)
            release_pages(arr, start, start + step)
        if n_bad:
            raise ValueError(f"{name} contain NaN or inf in {n_bad} row(s), first at row {first_bad}")
        return out
    pred = as_labels(arr, num_classes=num_classes, name="predictions")
    if pred.shape[0] != n_rows:
        raise ValueError(f"predictions have {pred.shape[0]} rows but labels have {n_rows}")
    return pred


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> np.ndarray:
    """Confusion matrix of the baseline (eq. 5).

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels.
    predictions : array of int, shape (n,), or array of float, shape (n, C)
        Predicted class ids, or predicted probabilities (argmax is taken). Probabilities may
        be a memory map; they are streamed ``chunk_rows`` rows at a time.
    num_classes : int
    chunk_rows : int, default=262144

    Returns
    -------
    M : ndarray of int64, shape (C, C)
        ``M[j, k]`` = instances labelled ``j`` predicted as ``k``.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    pred = predicted_classes(predictions, num_classes, labels.shape[0], chunk_rows=chunk_rows)
    flat = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, labels.shape[0], chunk_rows):  # bounded temporaries at any n
        sl = slice(start, start + chunk_rows)
        flat += np.bincount(labels[sl] * num_classes + pred[sl], minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def most_confused(confusion: np.ndarray, top_k: int = 4) -> np.ndarray:
    """The ``top_k`` classes each class is most often predicted as (eq. 6).

    Parameters
    ----------
    confusion : array, shape (C, C)
        ``M[j, k]`` = instances of ``j`` predicted as ``k``.
    top_k : int, default=4
        Clipped to ``C - 1``.

    Returns
    -------
    ndarray of int64, shape (C, min(top_k, C - 1))
        Row ``j`` lists classes ``k != j`` by decreasing ``M[j, k]``; ties broken by
        decreasing ``M[k, j]`` (confusion in the other direction), then by smaller class id.
        Classes with zero confusion fill the row when fewer than ``top_k`` are confused.
    """
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    top_k = check_positive_int(top_k, "top_k", minimum=0)
    c = m.shape[0]
    top_k = min(top_k, c - 1)
    out = np.empty((c, top_k), dtype=np.int64)
    ids = np.arange(c)
    for j in range(c):
        others = ids[ids != j]
        # lexsort: last key is primary.
        order = np.lexsort((others, -m[others, j], -m[j, others]))
        out[j] = others[order[:top_k]]
    return out
