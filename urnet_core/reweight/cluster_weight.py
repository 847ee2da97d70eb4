"""Deprecated import path of cluster reweighting: use :mod:`urnet_core.reweight.cluster`.

The implementation moved into the :mod:`urnet_core.reweight.cluster` package after 0.1.0; this module
re-exports its public names for code written against the old path and goes in the next release
(see the README).
"""

from __future__ import annotations

from urnet_core.reweight.cluster import (  # noqa: F401  (re-exported)
    COUNT_MODES, DEFAULT_BLOCK_BYTES, DEFAULT_CHUNK_ROWS, NORMALIZE_MODES, ClassClusters, ClusterStats, Grouping,
    ProblemSet, as_float32_tensor, class_rows, cluster_weights, cluster_weights_by_count, confusion_matrix,
    eq7_weights, group_fractions, most_confused, one_pass_assign, predicted_classes, read_rows, schedule_problems,
    sorted_union,
)
