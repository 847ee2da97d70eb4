"""The cluster problems of eq. 6-7 (paper section 4.2): which rows form each class's problem.

Class ``j``'s problem pools the rows of ``j`` and of its ``top_k`` most confused classes;
every row sits in about ``1 + top_k`` problems. :class:`ProblemSet` holds the rows of every
class once and derives each problem's rows, seed and members from them;
:func:`schedule_problems` packs problems into blocks that share loaded rows (out of core).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


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


@dataclass
class ClusterStats:
    """How the cluster problems were scheduled and what they cost (filled by :func:`cluster_weights`).

    Attributes
    ----------
    n_problems : int
        Non-empty classes (one k-means each).
    n_blocks : int
        Blocks of problems run together.
    rows_read : int
        Feature rows read from ``features`` over all blocks.
    problem_rows : int
        Sum of the problems' row counts (the k-means work; ~``(1 + top_k) * n``).
    read_amplification : float
        ``rows_read / n``; 1.0 means every row was read exactly once.
    seconds_read, seconds_kmeans : float
        Wall time spent reading/converting rows and in k-means.
    mode : str
        ``"one_pass"`` or ``"blocks"`` (see :func:`cluster_weights`).
    train_rows : int
        One-pass mode: rows gathered to train the centroids (at most ``256 k`` per problem).
    seconds_train, seconds_assign : float
        One-pass mode: gathering the training rows + k-means on them; the pass over every row
        (read, float32 conversion, NaN/inf check, distances to every problem's centres).
    """

    n_problems: int = 0
    n_blocks: int = 0
    rows_read: int = 0
    problem_rows: int = 0
    read_amplification: float = 0.0
    seconds_read: float = 0.0
    seconds_kmeans: float = 0.0
    block_sizes: list = field(default_factory=list)
    mode: str = "blocks"
    train_rows: int = 0
    seconds_train: float = 0.0
    seconds_assign: float = 0.0


def class_rows(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Row indices of every class, ascending within a class, in ``O(n log n)`` (not ``O(n C)``)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=num_classes)
    return np.split(order, np.cumsum(counts)[:-1])


def schedule_problems(
    pools: dict[int, np.ndarray], class_sizes: np.ndarray, *, max_rows: int
) -> list[list[int]]:
    """Pack class problems into blocks that share loaded rows.

    Classes are visited breadth-first over the undirected "most confused" graph (a class,
    then its partners, then theirs), starting from the smallest unvisited class id, so
    confusable classes - whose problems overlap - fall into the same block. A block takes
    problems in that order until the rows of the union of their classes would exceed
    ``max_rows``; a single problem larger than ``max_rows`` gets a block of its own.

    Parameters
    ----------
    pools : dict class -> array of classes
        Classes pooled by each problem (the class first).
    class_sizes : array (C,)
        Rows per class.
    max_rows : int
        Row budget of a block's union of classes.

    Returns
    -------
    list of list of int
        Problem classes per block, in run order; every key of ``pools`` appears once.
    """
    neighbours: dict[int, set[int]] = {j: set() for j in pools}
    for j, pooled in pools.items():
        for t in pooled[1:]:
            t = int(t)
            if t in neighbours:
                neighbours[j].add(t)
                neighbours[t].add(j)
    order, seen = [], set()
    for start in sorted(pools):
        if start in seen:
            continue
        seen.add(start)
        queue = deque([start])
        while queue:
            j = queue.popleft()
            order.append(j)
            for t in sorted(neighbours[j]):
                if t not in seen:
                    seen.add(t)
                    queue.append(t)
    blocks: list[list[int]] = []
    current: list[int] = []
    union: set[int] = set()
    rows = 0
    for j in order:
        new = [int(t) for t in pools[j] if int(t) not in union]
        extra = int(sum(class_sizes[t] for t in new))
        if current and rows + extra > max_rows:
            blocks.append(current)
            current, union, rows = [], set(), 0
            new = [int(t) for t in pools[j]]
            extra = int(sum(class_sizes[t] for t in new))
        current.append(j)
        union.update(new)
        rows += extra
    if current:
        blocks.append(current)
    return blocks


def sorted_union(parts: list[np.ndarray]) -> np.ndarray:
    """Sorted union of disjoint sorted row arrays (concatenation when their ranges do not interleave)."""
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    parts.sort(key=lambda p: int(p[0]))
    if all(int(a[-1]) < int(b[0]) for a, b in zip(parts, parts[1:])):
        return np.concatenate(parts)
    return np.sort(np.concatenate(parts), kind="stable")


@dataclass
class ProblemSet:
    """Every class's cluster problem (class ``j`` pooled with its most confused classes).

    Attributes
    ----------
    by_class : list of ndarray
        Rows of each class, ascending (:func:`class_rows`).
    sizes : ndarray of int64, shape (C,)
        Rows per class.
    pools : dict class -> ndarray of int64
        Classes pooled by each non-empty class's problem, the class first.
    present : list of int
        Non-empty classes, ascending; problem ``i`` of this list uses seed ``seed + i``.
    """

    by_class: list
    sizes: np.ndarray
    pools: dict[int, np.ndarray]
    present: list[int]

    @classmethod
    def build(cls, labels: np.ndarray, partners: np.ndarray) -> "ProblemSet":
        """Problems of ``labels`` given each class's most confused classes ``partners`` (C, top_k)."""
        by_class = class_rows(labels, partners.shape[0])
        sizes = np.array([r.size for r in by_class], dtype=np.int64)
        present = [j for j in range(partners.shape[0]) if sizes[j]]
        pools = {j: np.concatenate([[j], partners[j]]).astype(np.int64) for j in present}
        return cls(by_class, sizes, pools, present)

    @property
    def index(self) -> dict[int, int]:
        """Position of each problem in :attr:`present` (its seed offset)."""
        return {j: i for i, j in enumerate(self.present)}

    def n_rows(self, j: int) -> int:
        """Rows of class ``j``'s problem."""
        return int(self.sizes[self.pools[j]].sum())

    def rows(self, j: int) -> np.ndarray:
        """Rows of class ``j``'s problem, ascending."""
        return sorted_union([self.by_class[int(t)] for t in self.pools[j]])

    def columns(self, j: int, row_labels: np.ndarray) -> np.ndarray:
        """Column of each row's class in ``pools[j]`` order (0: class ``j`` itself)."""
        pooled = self.pools[j]
        return np.argsort(pooled)[np.searchsorted(np.sort(pooled), row_labels)]

    def members(self) -> list[list[tuple[int, int]]]:
        """Per class: the problems its rows belong to and its column there."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.by_class]
        for j in self.present:
            for col, t in enumerate(self.pools[j]):
                if self.sizes[t]:
                    out[int(t)].append((j, col))
        return out

    def composition(self, j: int, prows: np.ndarray, groups: np.ndarray, labels: np.ndarray,
                    n_groups: int) -> np.ndarray:
        """Rows per group and pooled class of class ``j``'s problem, int64 (n_groups, 1 + top_k)."""
        width = self.pools[j].size
        col = self.columns(j, labels[prows])
        return np.bincount(groups * width + col, minlength=n_groups * width).reshape(n_groups, width)
