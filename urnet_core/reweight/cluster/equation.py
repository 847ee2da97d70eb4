"""Eq. 7 of the paper (section 4.2): the weight of an instance from the size of its group.

An instance of class ``j`` in group ``G_jl`` of class ``j``'s problem gets
``wG = N_Gjl / sum_t N_Gjt``. ``N_Gjl`` counts every instance of the group (``count="all"``,
the paper's reading) or only class ``j``'s own (``count="class"``). The raw fractions are then
rescaled (``normalize``, see :mod:`urnet_core.reweight.cluster`).

Every clustering mode (one pass, blocks, trivial problems) reduces to the same
:class:`Grouping` - each problem's group composition and the group of every row in its own
class's problem - so eq. 7 is written once, here, and every count is derived from one
clustering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COUNT_MODES = ("all", "class")
NORMALIZE_MODES = ("class_mean", "n_groups", "none")


@dataclass
class Grouping:
    """What eq. 7 needs from a clustering of every class's problem.

    Attributes
    ----------
    own_group : ndarray of int64, shape (n,)
        Group of each row in its own class's problem.
    compositions : dict class -> ndarray of int64, shape (n_groups, 1 + top_k)
        Rows per group (rows) and pooled class (columns, the class first).
    pieces : dict class -> (indices, groups)
        Rows of the problem (ascending) and their groups; only kept for
        :class:`~urnet_core.reweight.cluster.problems.ClassClusters` (``return_details``).
    """

    own_group: np.ndarray
    compositions: dict[int, np.ndarray] = field(default_factory=dict)
    pieces: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def group_fractions(composition: np.ndarray, count: str) -> np.ndarray:
    """``N_Gjl / sum_t N_Gjt`` of every group ``l`` (eq. 7), float64 of shape (n_groups,).

    ``composition`` is (n_groups, 1 + top_k) with class ``j``'s own column first; ``count``
    is ``"all"`` (every instance of the group) or ``"class"`` (class ``j``'s own only).
    """
    sizes = composition.sum(1) if count == "all" else composition[:, 0]
    return sizes / max(int(sizes.sum()), 1)


def eq7_weights(
    labels: np.ndarray, grouping: Grouping, num_classes: int, *, count: str, normalize: str
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Per-instance cluster weights ``wG`` of one count mode from a :class:`Grouping` (eq. 7).

    ``normalize="class_mean"`` rescales each class's weights to mean 1 (the scale
    ``rows / sum of raw weights`` of the class, sums in row order), ``"n_groups"`` multiplies
    by the class problem's number of groups, ``"none"`` keeps the raw fractions. Rows of a
    class without a problem keep weight 1.

    Returns
    -------
    weights : ndarray of float64, shape (n,)
    group_weights : dict class -> ndarray (n_groups,)
        The weight each group gives its class's instances, after the rescaling.
    """
    comps = grouping.compositions
    width = max((m.shape[0] for m in comps.values()), default=1)
    frac = np.zeros((num_classes, width), dtype=np.float64)
    n_groups = np.ones(num_classes, dtype=np.float64)
    has = np.zeros(num_classes, dtype=bool)
    for j, comp in comps.items():
        frac[j, : comp.shape[0]] = group_fractions(comp, count)
        n_groups[j] = float(comp.shape[0])
        has[j] = True
    weights = np.ones(labels.shape[0], dtype=np.float64)
    sel = has[labels]
    lab = labels[sel]
    w_sel = frac[lab, grouping.own_group[sel]]
    if normalize == "class_mean":
        sums = np.bincount(lab, weights=w_sel, minlength=num_classes)
        cnt = np.bincount(lab, minlength=num_classes)
        scale = np.where(sums > 0, cnt / np.where(sums > 0, sums, 1.0), 1.0)
    elif normalize == "n_groups":
        scale = n_groups
    else:
        scale = np.ones(num_classes, dtype=np.float64)
    weights[sel] = w_sel * scale[lab]
    group_weights = {j: frac[j, : comp.shape[0]] * scale[j] for j, comp in comps.items()}
    return weights, group_weights
