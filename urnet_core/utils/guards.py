"""Pre-flight guards: fail before a long job starts, not half-way through it.

A feature cache for WebVision (2.4M images x 2048 floats, plus 2.4M x 1000 probabilities)
is tens of gigabytes; discovering a full disk after an hour of inference wastes the hour
and, without atomic writes, would leave a truncated file. :func:`check_disk_space` compares
the planned size of an artefact (e.g. :func:`planned_feature_bytes`) with the free space of
the filesystem that will hold it and raises :class:`InsufficientDiskSpaceError` up front.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from urnet_core.utils.validation import check_positive_int

logger = logging.getLogger(__name__)

GB = 1024**3
#: Default head-room on top of the planned size: atomic writes briefly hold the old and
#: the new copy, and other processes share the disk.
DEFAULT_MARGIN_FRACTION = 0.10
DEFAULT_MARGIN_BYTES = 256 * 1024**2


class InsufficientDiskSpaceError(OSError, ValueError):
    """Not enough free disk space for a planned artefact (``errno`` is ``ENOSPC``).

    It is an :class:`OSError` (the condition is about the environment, and ``except OSError``
    handlers see it) and also a :class:`ValueError`, like :class:`io.UnsupportedOperation`,
    so the ``urnet`` command line reports it as one line instead of a traceback.
    """


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent (the folder may not be created yet)."""
    path = path.expanduser().absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or os.sep)


def check_disk_space(
    path: str | os.PathLike,
    needed_bytes: int,
    *,
    what: str,
    margin_fraction: float = DEFAULT_MARGIN_FRACTION,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
) -> int:
    """Raise when the filesystem holding ``path`` has less room than ``needed_bytes`` plus a margin.

    Parameters
    ----------
    path : path
        Where the artefact will be written (a folder or a file; it need not exist yet - its
        nearest existing parent decides the filesystem).
    needed_bytes : int
        Planned size of what will be written.
    what : str
        Name of the artefact for the message (e.g. ``"feature cache"``).
    margin_fraction, margin_bytes : float, int
        Required free space is ``needed_bytes * (1 + margin_fraction) + margin_bytes``.

    Returns
    -------
    free_bytes : int
        Free space found (for logging).

    Raises
    ------
    InsufficientDiskSpaceError
        (an ``OSError`` with ``errno.ENOSPC`` that is also a ``ValueError``) with the needed
        and free sizes in GB and the folder checked.
    """
    needed = check_positive_int(int(needed_bytes), "needed_bytes", minimum=0)
    if not (margin_fraction >= 0):
        raise ValueError(f"margin_fraction must be >= 0, got {margin_fraction}")
    target = _existing_ancestor(Path(path))
    free = int(shutil.disk_usage(target).free)
    required = int(needed * (1.0 + margin_fraction)) + int(margin_bytes)
    if free < required:
        raise InsufficientDiskSpaceError(
            errno.ENOSPC,
            f"not enough disk space for the {what} in {target}: needs {needed / GB:.2f} GB "
            f"({required / GB:.2f} GB with margin) but only {free / GB:.2f} GB is free; "
            "free some space or point the output at another disk",
        )
    logger.debug("%s: %.2f GB needed, %.2f GB free in %s", what, needed / GB, free / GB, target)
    return free


def planned_feature_bytes(n: int, feature_dim: int, num_classes: int, dtype: Any = np.float32, *,
                          predictions: str = "probs") -> int:
    """Bytes of a feature cache: features (n, feature_dim) of ``dtype`` plus float32
    probabilities (n, num_classes), or int64 class ids (n,) with ``predictions='classes'``, as
    :func:`urnet_core.training.features.extract_features` writes them (``.npy`` headers are negligible
    and covered by the margin)."""
    n = check_positive_int(n, "n", minimum=0)
    feature_dim = check_positive_int(feature_dim, "feature_dim")
    num_classes = check_positive_int(num_classes, "num_classes")
    itemsize = np.dtype(dtype).itemsize
    pred_bytes = n * 8 if predictions == "classes" else n * num_classes * np.dtype(np.float32).itemsize
    return n * feature_dim * itemsize + pred_bytes
