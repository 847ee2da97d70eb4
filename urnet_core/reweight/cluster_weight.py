"""Cluster reweighting (paper section 4.2, eq. 5-7): the names of :mod:`urnet_core.reweight.cluster`.

The implementation lives in the :mod:`urnet_core.reweight.cluster` package; this module keeps
the import path that notebooks, figures and benchmarks use.
"""

from __future__ import annotations

import numpy as np

from urnet_core.reweight.cluster import (  # noqa: F401  (re-exported)
    COUNT_MODES, DEFAULT_BLOCK_BYTES, DEFAULT_CHUNK_ROWS, NORMALIZE_MODES, ClassClusters, ClusterStats, Grouping,
    ProblemSet, as_float32_tensor, class_rows, cluster_weights, cluster_weights_by_count, confusion_matrix,
    eq7_weights, group_fractions, most_confused, one_pass_assign, predicted_classes, read_rows, schedule_problems,
    sorted_union,
)
from urnet_core.utils.memory import release_pages  # noqa: F401  (re-exported)

# Old private names, kept for callers written against them (use the public names above).
_read_rows = read_rows
_as_float32_tensor = as_float32_tensor
_sorted_union = sorted_union


def _as_predictions(predictions: np.ndarray, num_classes: int, n_rows: int) -> np.ndarray:
    """Class ids from int predictions ``(n,)`` or probabilities ``(n, C)`` (argmax, chunked)."""
    return predicted_classes(predictions, num_classes, n_rows)
