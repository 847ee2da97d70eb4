"""Cluster reweighting (paper section 4.2, eq. 5-7).

Notation: ``n`` instances, ``C`` classes, ``K`` clusters per class (paper: 5), ``top_k``
confused classes (paper: 4).

1. Confusion matrix ``M`` of the baseline: ``M_jk`` = instances labelled ``j`` predicted ``k``.
2. For each class ``j``: its ``top_k`` most confused classes ``T_j`` (largest off-diagonal
   ``M_jk``); k-means with ``K`` clusters on the baseline features of every instance whose
   label is in ``{j} + T_j``; groups ``G_j1 .. G_jK``.
3. An instance of class ``j`` in group ``G_jl`` gets ``wG = N_Gjl / sum_t N_Gjt`` (eq. 7).

Interpretation choices (documented because the paper leaves them open):

- ``N_Gjl`` counts **all** instances in group ``l`` (of all ``1 + top_k`` pooled classes),
  ``count="all"``, the default: "an instance that looks like many others across confusable
  classes is hard and gets more attention". ``count="class"`` counts only class ``j``'s own
  instances in the group (a within-class density weight).
- Only class ``j``'s own problem weighs its instances; their appearances in other classes'
  problems only shape those clusterings.
- Rescaling: the raw ``wG`` of eq. 7 shrinks as ``1/K`` and its mean differs between classes,
  which would act as a hidden class weight. ``normalize="class_mean"`` (default) rescales the
  weights of each class to mean 1, so cluster reweighting only redistributes weight *within*
  a class and class balance stays the job of class reweighting (4.1).
  ``normalize="n_groups"`` multiplies by the number of groups instead (uniform groups -> 1).
- A class problem with ``n <= K`` rows puts each row in its own group (all weights equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from urnet_core._validation import as_features, as_labels, check_option, check_positive_int
from urnet_core.kmeans import batched_kmeans, resolve_backend

COUNT_MODES = ("all", "class")
NORMALIZE_MODES = ("class_mean", "n_groups", "none")


def _as_predictions(predictions: np.ndarray, num_classes: int, n_rows: int) -> np.ndarray:
    """Class ids from int predictions ``(n,)`` or probabilities ``(n, C)`` (argmax)."""
    arr = np.asarray(predictions)
    if arr.ndim == 2:
        if arr.shape != (n_rows, num_classes):
            raise ValueError(f"predictions have shape {arr.shape}, expected ({n_rows}, {num_classes})")
        arr = as_features(arr, name="predictions")
        return arr.argmax(1).astype(np.int64)
    pred = as_labels(arr, num_classes=num_classes, name="predictions")
    if pred.shape[0] != n_rows:
        raise ValueError(f"predictions have {pred.shape[0]} rows but labels have {n_rows}")
    return pred


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix of the baseline (eq. 5).

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels.
    predictions : array of int, shape (n,), or array of float, shape (n, C)
        Predicted class ids, or predicted probabilities (argmax is taken).
    num_classes : int

    Returns
    -------
    M : ndarray of int64, shape (C, C)
        ``M[j, k]`` = instances labelled ``j`` predicted as ``k``.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    pred = _as_predictions(predictions, num_classes, labels.shape[0])
    flat = np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


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


@dataclass(frozen=True)
class ClassClusters:
    """Clustering of one class's problem (for figures like the paper's Fig. 6).

    Attributes
    ----------
    cls : int
        The class ``j``.
    classes : ndarray, shape (1 + top_k,)
        ``j`` followed by its most confused classes.
    indices : ndarray of int64, shape (m,)
        Rows of the problem (instances whose label is in ``classes``).
    groups : ndarray of int64, shape (m,)
        Group of each row.
    composition : ndarray of int64, shape (K, 1 + top_k)
        Instances per group (rows) and pooled class (columns, ordered as ``classes``).
    group_weights : ndarray of float64, shape (K,)
        The weight each group gives class ``j``'s instances, after normalisation.
    """

    cls: int
    classes: np.ndarray
    indices: np.ndarray
    groups: np.ndarray
    composition: np.ndarray
    group_weights: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """``N_Gjl``: all instances per group, shape (K,)."""
        return self.composition.sum(1)


def cluster_weights(
    features: np.ndarray,
    labels: np.ndarray,
    confusion: np.ndarray,
    *,
    top_k: int = 4,
    n_clusters: int = 5,
    count: str = "all",
    normalize: str = "class_mean",
    backend: str = "auto",
    seed: int = 0,
    max_iter: int = 25,
    n_jobs: int | None = None,
    return_details: bool = False,
) -> np.ndarray | tuple[np.ndarray, list[ClassClusters | None]]:
    """Per-instance cluster weights ``wG`` (eq. 5-7).

    Parameters
    ----------
    features : array, shape (n, d)
        Baseline penultimate features.
    labels : array of int, shape (n,)
        Observed labels.
    confusion : array, shape (C, C)
        Baseline confusion matrix (:func:`confusion_matrix`).
    top_k : int, default=4
        Confused classes pooled with each class.
    n_clusters : int, default=5
        ``K``.
    count : {'all', 'class'}, default='all'
        What ``N_Gjl`` counts: every instance in the group, or class ``j``'s only.
    normalize : {'class_mean', 'n_groups', 'none'}, default='class_mean'
        Rescale each class's weights to mean 1, multiply by the number of groups, or keep
        eq. 7's raw fractions.
    backend : str, default='auto'
        k-means backend (:func:`urnet_core.kmeans.batched_kmeans`).
    seed, max_iter, n_jobs
        Passed to :func:`batched_kmeans`.
    return_details : bool, default=False
        Also return one :class:`ClassClusters` per class (None for empty classes).

    Returns
    -------
    weights : ndarray of float64, shape (n,)
    details : list of ClassClusters or None, length C (only with ``return_details``)
    """
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    c = m.shape[0]
    labels = as_labels(labels, num_classes=c)
    features = as_features(features, n_rows=labels.shape[0])
    k = check_positive_int(n_clusters, "n_clusters")
    check_option(count, "count", COUNT_MODES)
    check_option(normalize, "normalize", NORMALIZE_MODES)
    backend = resolve_backend(backend, batched=True)

    partners = most_confused(m, top_k)
    by_class = [np.flatnonzero(labels == j) for j in range(c)]
    present = [j for j in range(c) if by_class[j].size]
    pools, problems = {}, []
    for j in present:
        pooled = np.concatenate([[j], partners[j]])
        pools[j] = pooled
        problems.append(np.sort(np.concatenate([by_class[t] for t in pooled])))
    results = batched_kmeans(
        features, problems, k, backend=backend, seed=seed, max_iter=max_iter, n_jobs=n_jobs
    )

    weights = np.ones(labels.shape[0], dtype=np.float64)
    details: list[ClassClusters | None] = [None] * c
    for j, rows, res in zip(present, problems, results):
        pooled = pools[j]
        n_groups = int(res.centers.shape[0])
        col = np.searchsorted(np.sort(pooled), labels[rows])
        col = np.argsort(pooled)[col]  # column of each row's class in `pooled` order
        composition = np.zeros((n_groups, pooled.size), dtype=np.int64)
        np.add.at(composition, (res.labels, col), 1)
        sizes = composition.sum(1) if count == "all" else composition[:, 0]
        frac = sizes / max(int(sizes.sum()), 1)  # eq. 7
        own = labels[rows] == j
        w = frac[res.labels[own]]
        if normalize == "class_mean":
            scale = 1.0 / w.mean()
        elif normalize == "n_groups":
            scale = float(n_groups)
        else:
            scale = 1.0
        weights[rows[own]] = w * scale
        if return_details:
            details[j] = ClassClusters(
                cls=j, classes=pooled, indices=rows, groups=res.labels,
                composition=composition, group_weights=frac * scale,
            )
    if return_details:
        return weights, details
    return weights
