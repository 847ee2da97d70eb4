"""Cluster weights of every instance (paper section 4.2, eq. 5-7): the public entry points.

See :mod:`urnet_core.reweight.cluster` for the method and its interpretation choices.
:func:`cluster_weights_by_count` clusters once and derives the weights of every count mode
(``N_Gjl`` counting all instances or the class's own) from that one clustering.

Bit-identity: the default CPU path (faiss, one pass) gives the same weights, bit for bit, as
the implementation before this package. Block mode (the other backends) now rescales with the
same eq. 7 function as one pass (class mean as ``rows / sum``, sums in row order) instead of
``1 / mean``; its weights may differ in the last bits (relative difference below 1e-13,
``tests/test_reweight_cluster_package.py``). So may those of trivial problems (``n <= K``
rows, all weights 1 up to rounding).
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from urnet_core.reweight.cluster.blocks import block_grouping
from urnet_core.reweight.cluster.confusion import most_confused
from urnet_core.reweight.cluster.equation import COUNT_MODES, NORMALIZE_MODES, Grouping, eq7_weights
from urnet_core.reweight.cluster.one_pass import one_pass_grouping
from urnet_core.reweight.cluster.problems import ClassClusters, ClusterStats, ProblemSet
from urnet_core.reweight.kmeans import resolve_backend
from urnet_core.utils.validation import as_features, as_labels, check_option, check_positive_int

logger = logging.getLogger(__name__)

#: Default float32 bytes of feature rows held per block of cluster problems.
DEFAULT_BLOCK_BYTES = 1 << 30


def cluster_weights_by_count(
    features: np.ndarray,
    labels: np.ndarray,
    confusion: np.ndarray,
    *,
    top_k: int = 4,
    n_clusters: int = 5,
    counts: Sequence[str] = ("all",),
    normalize: str = "class_mean",
    backend: str = "auto",
    seed: int = 0,
    max_iter: int = 25,
    n_jobs: int | None = None,
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    return_details: bool = False,
    stats: ClusterStats | None = None,
    one_pass: bool | None = None,
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, list[ClassClusters | None]]]:
    """Per-instance cluster weights ``wG`` (eq. 5-7) of every count mode in ``counts``, from one clustering.

    The clustering does not depend on what eq. 7 counts, so ``counts=("all", "class")`` gives
    exactly what two :func:`cluster_weights` calls with the same seed give, at the cost of one.

    Parameters
    ----------
    features : array, shape (n, d)
        Baseline penultimate features, float16/float32/float64; may be a read-only memory map
        (it is read in chunks, never whole; see :mod:`~urnet_core.reweight.cluster.blocks`).
    labels : array of int, shape (n,)
        Observed labels.
    confusion : array, shape (C, C)
        Baseline confusion matrix (:func:`confusion_matrix`).
    top_k : int, default=4
        Confused classes pooled with each class.
    n_clusters : int, default=5
        ``K``.
    counts : sequence of {'all', 'class'}, default=('all',)
        What ``N_Gjl`` counts: every instance in the group, or class ``j``'s only.
    normalize : {'class_mean', 'n_groups', 'none'}, default='class_mean'
        Rescale each class's weights to mean 1, multiply by the number of groups, or keep
        eq. 7's raw fractions.
    backend : str, default='auto'
        k-means backend (:func:`urnet_core.reweight.kmeans.batched_kmeans`).
    seed, max_iter, n_jobs
        Passed to :func:`batched_kmeans`; problem ``i`` (classes in id order) uses
        ``seed + i`` whatever the blocks (faiss/sklearn/cuml).
    max_block_bytes : int, default=1 GiB
        float32 bytes of feature rows a block of problems may hold. Peak memory is about
        this plus the problems' gathered copies (``(1 + top_k)`` times a class's rows each,
        ``n_jobs`` at a time) plus ``O(n)`` index arrays.
    return_details : bool, default=False
        Also return one :class:`ClassClusters` per class (None for empty classes).
    stats : ClusterStats, optional
        Filled in place with the schedule and timings.
    one_pass : bool, optional
        One-pass mode (default for the faiss backend; see :mod:`~urnet_core.reweight.cluster.one_pass`):
        centres trained on each problem's faiss subsample, then every row read once and
        assigned in every problem it belongs to. ``False`` runs the block schedule (every
        backend; faiss then assigns each problem's gathered rows).

    Returns
    -------
    weights : dict count -> ndarray of float64, shape (n,)
    details : dict count -> list of ClassClusters or None, length C (only with ``return_details``)
    """
    features, labels, m = _checked_inputs(features, labels, confusion)
    c = m.shape[0]
    k = check_positive_int(n_clusters, "n_clusters")
    counts = tuple(counts)
    for count in counts:
        check_option(count, "count", COUNT_MODES)
    check_option(normalize, "normalize", NORMALIZE_MODES)
    max_block_bytes = check_positive_int(max_block_bytes, "max_block_bytes")
    backend = resolve_backend(backend, batched=True)
    stats = stats if stats is not None else ClusterStats()
    problems = ProblemSet.build(labels, most_confused(m, top_k))
    stats.n_problems = len(problems.present)
    if one_pass is None:
        one_pass = backend == "faiss"
    if one_pass and backend != "faiss":
        raise ValueError(f"one_pass needs backend='faiss' (its subsampled training), got {backend!r}")
    stats.mode = "one_pass" if one_pass else "blocks"
    if one_pass:
        grouping = one_pass_grouping(features, labels, problems, k, seed=seed, max_iter=max_iter, n_jobs=n_jobs,
                                     keep=return_details, stats=stats)
        stats.n_blocks, stats.block_sizes = 0, []
        stats.seconds_read, stats.seconds_kmeans = stats.seconds_assign, stats.seconds_train
        logger.info(
            "cluster weights (one pass): %d problems, train %.1fs on %d rows, assign pass %.1fs over %d rows",
            stats.n_problems, stats.seconds_train, stats.train_rows, stats.seconds_assign, labels.shape[0],
        )
    else:
        grouping = block_grouping(features, labels, problems, k, backend=backend, seed=seed, max_iter=max_iter,
                                  n_jobs=n_jobs, max_block_bytes=max_block_bytes, keep=return_details, stats=stats)
    stats.read_amplification = stats.rows_read / max(labels.shape[0], 1)
    if not one_pass:
        logger.info(
            "cluster weights: %d problems in %d block(s), read amplification %.2f, read %.1fs, k-means %.1fs",
            stats.n_problems, stats.n_blocks, stats.read_amplification, stats.seconds_read, stats.seconds_kmeans,
        )
    weights, details = {}, {}
    for count in counts:
        weights[count], group_weights = eq7_weights(labels, grouping, c, count=count, normalize=normalize)
        if return_details:
            details[count] = _details(problems, grouping, group_weights, c)
    return (weights, details) if return_details else weights


def _details(problems: ProblemSet, grouping: Grouping, group_weights: dict, c: int) -> list[ClassClusters | None]:
    """One :class:`ClassClusters` per class (None for empty classes)."""
    out: list[ClassClusters | None] = [None] * c
    for j in problems.present:
        rows, groups = grouping.pieces[j]
        out[j] = ClassClusters(cls=j, classes=problems.pools[j], indices=rows, groups=groups,
                               composition=grouping.compositions[j], group_weights=group_weights[j])
    return out


def _checked_inputs(features, labels, confusion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``features`` (kept lazy: arrays and memory maps are not read here), labels, confusion."""
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    labels = as_labels(labels, num_classes=m.shape[0])
    n = labels.shape[0]
    if not isinstance(features, np.ndarray):
        features = as_features(features, n_rows=n)  # lists etc.; arrays/memmaps are read lazily
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number):
        raise TypeError(f"features must be numeric, got dtype {features.dtype}")
    if features.shape[0] != n:
        raise ValueError(f"features has {features.shape[0]} rows but {n} were expected")
    return features, labels, m


def cluster_weights(
    features: np.ndarray,
    labels: np.ndarray,
    confusion: np.ndarray,
    *,
    count: str = "all",
    return_details: bool = False,
    **options,
) -> np.ndarray | tuple[np.ndarray, list[ClassClusters | None]]:
    """Per-instance cluster weights ``wG`` (eq. 5-7) of one count mode.

    :func:`cluster_weights_by_count` with ``counts=(count,)``; every other keyword (``top_k``,
    ``n_clusters``, ``normalize``, ``backend``, ``seed``, ``max_iter``, ``n_jobs``,
    ``max_block_bytes``, ``stats``, ``one_pass``) is passed on and documented there.

    Returns
    -------
    weights : ndarray of float64, shape (n,)
    details : list of ClassClusters or None, length C (only with ``return_details``)
    """
    check_option(count, "count", COUNT_MODES)
    out = cluster_weights_by_count(features, labels, confusion, counts=(count,), return_details=return_details,
                                   **options)
    if return_details:
        return out[0][count], out[1][count]
    return out[count]
