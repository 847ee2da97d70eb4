"""Memory of out-of-core passes: the resident pages of memory-mapped feature files.

The reweighting stages read feature files larger than RAM (WebVision: 16M x 256 float16) in
row chunks; :func:`release_pages` drops each chunk's pages after use so the resident set stays
near one chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def release_pages(arr: Any, start: int | None = None, stop: int | None = None) -> None:
    """Drop this process's resident pages of a memory-mapped array (no-op for other arrays).

    ``arr`` is an ``np.memmap`` or a view of one (``np.load(path, mmap_mode='r')``, also after
    ``np.asarray``). With ``start``/``stop``, only the pages of rows ``arr[start:stop]`` are
    released (``madvise(MADV_DONTNEED)`` on that byte range), else the whole mapping. The pages
    stay in the OS page cache; only the resident set shrinks, so a pass over a file larger than
    RAM keeps the RSS near one chunk. Copy-on-write maps (``mmap_mode='c'``) are left alone:
    dropping their pages would discard the process's edits.
    """
    import mmap

    obj, mm = arr, None
    for _ in range(8):  # views of views: follow .base to the mapping
        if getattr(obj, "mode", None) == "c":
            return
        mm = getattr(obj, "_mmap", None)
        if mm is None and isinstance(obj, mmap.mmap):
            mm = obj
        if mm is not None:
            break
        obj = getattr(obj, "base", None)
        if obj is None:
            return
    if mm is None:
        return
    try:
        if start is None and stop is None:
            mm.madvise(mmap.MADV_DONTNEED)
            return
        view = np.asarray(arr)[start:stop]
        if view.size == 0:
            return
        if not view.flags.c_contiguous:  # strided view: the whole mapping
            mm.madvise(mmap.MADV_DONTNEED)
            return
        base = np.frombuffer(mm, dtype=np.uint8)  # the mapping's address (read-only export, dropped below)
        first = view.ctypes.data - base.ctypes.data
        del base
        page = mmap.PAGESIZE
        lo = (first // page) * page
        hi = min(len(mm), first + view.nbytes)
        if 0 <= lo < hi:
            mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (AttributeError, OSError, ValueError, BufferError, TypeError):  # no madvise, closed map
        pass


#: Bytes of rows :func:`take_rows` copies between two releases of a memory map's pages.
TAKE_CHUNK_BYTES = 16 << 20


def take_rows(arr: np.ndarray, rows: np.ndarray, *, chunk_bytes: int = TAKE_CHUNK_BYTES,
              out: np.ndarray | None = None) -> np.ndarray:
    """``arr[rows]`` (rows of a 2-D array, possibly a memory map) as a new in-memory array, or in ``out``.

    ``np.take`` copies whole rows; numpy's fancy indexing ``arr[rows]`` on a float16 memory
    map copied element by element and measured ~10x slower (0.8 s against 0.08 s for 600k
    rows of 256 float16 values), which made it the largest part of the cluster step's training.
    For a memory map the rows are copied ``chunk_bytes`` at a time and the mapping's pages are
    released after each chunk (:func:`release_pages`): the kernel maps neighbouring pages with
    every fault, so gathering 135k scattered rows of 2048 float16 at once left 3.3 GB resident
    for a 0.55 GB result.

    ``out`` (``(len(rows),) + arr.shape[1:]``, C-contiguous, e.g. a reused float32 buffer) receives
    the rows instead, each chunk converted into it as it is copied (:func:`as_float32`'s exact
    conversion for float16 -> float32): no intermediate array of ``arr``'s dtype, and a buffer
    reused across calls saves the page faults of a fresh allocation per call.
    """
    idx = np.asarray(rows, dtype=np.intp)
    shape = (idx.size,) + tuple(arr.shape[1:])
    if out is not None and (out.shape != shape or not out.flags.c_contiguous):
        raise ValueError(f"out has shape {out.shape} (contiguous: {out.flags.c_contiguous}), expected {shape}")
    if not _is_memmap(arr):
        taken = np.asarray(np.take(arr, idx, axis=0))
        if out is None:
            return taken
        _copy_converted(out, taken)
        return out
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    step = max(1, int(chunk_bytes) // row_bytes)
    direct = out is None or out.dtype == arr.dtype
    if out is None:
        out = np.empty(shape, dtype=arr.dtype)
    tmp = None if direct else np.empty((min(step, idx.size),) + shape[1:], dtype=arr.dtype)
    for start in range(0, idx.size, step):
        part = idx[start:start + step]
        if direct:
            np.take(arr, part, axis=0, out=out[start:start + step])
        else:
            np.take(arr, part, axis=0, out=tmp[: part.size])
            _copy_converted(out[start:start + part.size], tmp[: part.size])
        if part.size:
            release_pages(arr, int(part.min()), int(part.max()) + 1)
    return out


def _copy_converted(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[...] = src`` with a dtype conversion (torch's copy for float16/float64 -> float32, as :func:`as_float32`)."""
    if dst.dtype == np.float32 and src.dtype in (np.float16, np.float64) and src.size:
        import warnings

        import torch

        with warnings.catch_warnings():  # read-only memory maps: torch warns, nothing writes to them
            warnings.simplefilter("ignore", UserWarning)
            src_t = torch.from_numpy(np.ascontiguousarray(src))
        torch.from_numpy(dst).copy_(src_t)
    else:
        np.copyto(dst, src, casting="unsafe")  # as astype


def _is_memmap(arr: Any) -> bool:
    """Whether ``arr`` is (a view of) a memory map."""
    import mmap

    obj = arr
    for _ in range(8):
        if isinstance(obj, (np.memmap, mmap.mmap)) or getattr(obj, "_mmap", None) is not None:
            return True
        obj = getattr(obj, "base", None)
        if obj is None:
            return False
    return False


def as_float32(block: np.ndarray) -> np.ndarray:
    """``block`` as a float32 array: itself when already float32, else converted by torch.

    numpy's float16 -> float32 ``astype`` runs at ~150M values/s on one core; torch's copy
    is several times faster (both exact: every float16 is a float32).
    """
    if block.dtype == np.float32:
        return block
    out = np.empty(np.shape(block), dtype=np.float32)
    _copy_converted(out, np.asarray(block))
    return out
