"""Shared input checks. They raise ``TypeError``/``ValueError`` with concrete messages.

Public functions validate their inputs with these helpers, then call unvalidated
private code (the cleanlab pattern).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from urnet_core.utils.memory import release_pages

#: Values per chunk when validating large (possibly memory-mapped) arrays.
CHECK_CHUNK_VALUES = 1 << 24


def as_labels(labels: Any, *, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D int64 array, checking range against ``num_classes``."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes")
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = arr[(arr < 0) | (arr >= num_classes)]
            raise ValueError(
                f"{name} must lie in [0, {num_classes}); found {bad.size} value(s) outside, e.g. {int(bad[0])}"
            )
    return arr


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as int, raising when it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_fraction(value: Any, name: str, *, low: float = 0.0, high: float = 1.0) -> float:
    """Return ``value`` as float, raising when it is not finite and within [low, high]."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(out) or out < low or out > high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return out


def _chunk_all_finite(block: np.ndarray) -> bool:
    """Fast screen: True when every value of the float ``block`` is finite.

    float32/float64: the sum of the block is finite unless some value is NaN/inf (or the sum
    overflows; the caller then checks row by row, so a huge finite value is never reported).
    float16: no value has an all-ones exponent (integer view, no conversion).
    """
    if block.dtype == np.float16:
        bits = block.view(np.uint16)
        return bool(np.bitwise_and(bits, 0x7FFF).max(initial=0) < 0x7C00)
    return bool(np.isfinite(np.add.reduce(block, axis=None)))


def nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Indices of the rows of a 2-D float ``block`` holding NaN or inf (screened fast, exact)."""
    if block.size == 0 or _chunk_all_finite(block):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(~np.isfinite(block).all(axis=1))


def as_features(features: Any, *, n_rows: int | None = None, name: str = "features", digest: Any = None) -> np.ndarray:
    """Return a 2-D float array, raising on NaN/inf (naming the first bad row) or a row-count mismatch.

    The check streams row chunks of :data:`CHECK_CHUNK_VALUES` values and, for a memory map,
    releases each chunk's pages after it (:func:`release_pages`), so validating a file of any
    size keeps the resident set near one chunk.

    ``digest`` (a ``hashlib`` object, optional) is fed the array's bytes in C order, chunk by
    chunk, on a second thread while this one checks the chunk (hashlib releases the GIL), so a
    caller that also hashes the file behind a memory map reads it once instead of twice
    (:class:`urnet_core.utils.io.NpyDigest`). The array must then be C-contiguous.
    """
    arr = np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} rows but {n_rows} were expected")
    floating = np.issubdtype(arr.dtype, np.floating)
    if not floating and digest is None:
        return arr
    if digest is not None and not arr.flags.c_contiguous:
        raise ValueError(f"{name}: a digest needs a C-contiguous array")
    # In row chunks: a memory-mapped (n, d) array is checked with O(chunk) temporaries, not O(n d).
    chunk = max(1, CHECK_CHUNK_VALUES // max(arr.shape[1], 1))
    n_bad, first = 0, -1
    pool = None
    if digest is not None:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1)
    try:
        for start in range(0, arr.shape[0], chunk):
            block = arr[start : start + chunk]
            hashing = pool.submit(digest.update, memoryview(block).cast("B")) if pool is not None else None
            bad = nonfinite_rows(block) if floating else np.zeros(0, dtype=np.int64)
            if hashing is not None:
                hashing.result()  # the chunk's bytes are hashed in order before its pages go
            release_pages(arr, start, start + chunk)  # no-op unless memory-mapped
            if bad.size:
                n_bad += bad.size
                first = start + int(bad[0]) if first < 0 else first
    finally:
        if pool is not None:
            pool.shutdown()
    if n_bad:
        raise ValueError(
            f"{name} contain NaN or inf in {n_bad} row(s), first at row {first}; "
            "check the feature extraction (e.g. a diverged model) before reweighting"
        )
    return arr


def check_probabilities(pred_probs: Any, *, n_rows: int | None = None, num_classes: int | None = None) -> np.ndarray:
    """Return ``pred_probs`` as a float (n, K) array of rows summing to ~1."""
    arr = as_features(pred_probs, n_rows=n_rows, name="pred_probs").astype(np.float64, copy=False)
    if num_classes is not None and arr.shape[1] != num_classes:
        raise ValueError(f"pred_probs has {arr.shape[1]} columns but num_classes={num_classes}")
    if arr.size and (arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError("pred_probs must lie in [0, 1]")
    return arr


def check_option(value: Any, name: str, options: dict | list | tuple | set) -> Any:
    """Raise a ValueError listing the valid choices when ``value`` is not one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {sorted(map(str, options))}")
    return value
