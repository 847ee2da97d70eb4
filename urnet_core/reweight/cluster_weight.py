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

One pass (faiss backend, the default on CPU)
--------------------------------------------
faiss trains each problem on at most ``256 k`` of its rows anyway, so copying every row of
every problem (each row sits in ~``1 + top_k`` problems: 16M x 256 float32 copied five times
is ~82 GB of copies) only serves the final assignment. In one-pass mode (``one_pass=None`` with
``backend='faiss'``):

1. each problem's training rows are drawn as :func:`~urnet_core.reweight.kmeans.training_subsample`
   (the draw :func:`~urnet_core.reweight.kmeans.kmeans` makes, seed ``seed + i``), gathered from
   ``features`` in batches of problems (unique rows, read forwards), and faiss trains the centres
   (k-means++ initialised) on them: work ``O(C k 256 d)``, independent of ``n`` once problems
   have ``256 k`` rows;
2. :func:`one_pass_assign` then reads the file once, in sequential row chunks (float32
   conversion, NaN/inf check, pages released), and assigns each row to its nearest centre in
   every problem it belongs to with one matrix product against the stacked centres of those
   problems, counting group compositions on the fly; no per-problem copy of rows is made.

A problem whose rows all fit the subsample gets exactly the centres of the block mode below;
a larger one trains on the same subsample size from a different draw (faiss drew its own).

Out of core, block mode (WebVision 2.0: 16M x 256-5000 features, 5000 problems)
-------------------------------------------------------------------------------
Used by the other backends (and ``one_pass=False``). ``features`` may be a read-only memory map (``np.load(path, mmap_mode='r')``, float16 or
float32); it is never copied whole. Problems are scheduled in *blocks*: classes are visited
in breadth-first order of the "most confused" graph, so a class and its partners land in the
same block, and problems are packed into a block until the rows of the union of their
classes reach ``max_block_bytes`` (as float32). Each block reads its classes' rows once
(sorted, so a class-ordered feature file is read sequentially), converts them to float32,
runs all its problems together (:func:`~urnet_core.reweight.kmeans.batched_kmeans`: a faiss thread
pool on CPU, the segmented Lloyd on CUDA) and releases the mapped pages. Every class is read
about once (``ClusterStats.read_amplification``, rows read / rows, is ~1 when confusable
classes form groups). Problem ``i`` (in class order) always uses seed ``seed + i``, so the
faiss/sklearn/cuml results do not depend on the block size. A feature file ordered by class
(as extracted from WebVision's class-sorted file lists) is read sequentially; rows scattered
across the file cost page-sized reads per row.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from urnet_core.utils import validation as _validation
from urnet_core.utils.validation import (  # noqa: F401  (release_pages: re-exported for instance_weight)
    as_features, as_labels, check_option, check_positive_int, nonfinite_rows, release_pages,
)
from urnet_core.reweight.kmeans import (
    SMALL_PROBLEM_WORK, batched_kmeans, faiss_threads, faiss_train, nearest_centroid, resolve_backend,
    training_subsample,
)

logger = logging.getLogger(__name__)

#: Rows read per chunk when streaming predictions (argmax) from a memory map.
DEFAULT_CHUNK_ROWS = 1 << 18
#: Default float32 bytes of feature rows held per block of cluster problems.
DEFAULT_BLOCK_BYTES = 1 << 30

COUNT_MODES = ("all", "class")
NORMALIZE_MODES = ("class_mean", "n_groups", "none")


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


def _as_predictions(predictions: np.ndarray, num_classes: int, n_rows: int) -> np.ndarray:
    """Class ids from int predictions ``(n,)`` or probabilities ``(n, C)`` (argmax, chunked)."""
    return predicted_classes(predictions, num_classes, n_rows)


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


def _read_rows(features: np.ndarray, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """``features[rows]`` as float32 (rows sorted), read in chunks, NaN/inf rows named."""
    out = np.empty((rows.size, features.shape[1]), dtype=np.float32)
    for start in range(0, rows.size, chunk_rows):
        part = np.asarray(features[rows[start : start + chunk_rows]], dtype=np.float32)
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"features contain NaN or inf in {bad.size} row(s), first at row "
                f"{int(rows[start + bad[0]])} (counted within the rows read so far); check the feature extraction (e.g. a diverged model) "
                "before reweighting"
            )
        out[start : start + part.shape[0]] = part
    release_pages(features)
    return out


#: float32 values per chunk of the one-pass assignment (64 MB).
ONE_PASS_CHUNK_VALUES = 1 << 24
#: float32 bytes of training rows gathered at a time in one-pass mode.
TRAIN_BATCH_BYTES = 256 << 20


def _sorted_union(parts: list[np.ndarray]) -> np.ndarray:
    """Sorted union of disjoint sorted row arrays (concatenation when their ranges do not interleave)."""
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    parts.sort(key=lambda p: int(p[0]))
    if all(int(a[-1]) < int(b[0]) for a, b in zip(parts, parts[1:])):
        return np.concatenate(parts)
    return np.sort(np.concatenate(parts), kind="stable")


def _as_float32_tensor(block: np.ndarray, out=None):
    """``block`` (m, d) as a float32 torch tensor (a view for float32 input, else converted, into ``out`` if given)."""
    import torch

    with warnings.catch_warnings():  # read-only memory maps: torch warns, we never write to them
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(block)
    if t.dtype == torch.float32:
        return t
    if out is not None and out.shape[0] >= t.shape[0]:
        dst = out[: t.shape[0]]
        dst.copy_(t)
        return dst
    return t.float()


def one_pass_assign(
    features: np.ndarray,
    labels: np.ndarray,
    centers: dict[int, np.ndarray],
    members: list[list[tuple[int, int]]],
    *,
    chunk_values: int = ONE_PASS_CHUNK_VALUES,
    keep: bool = False,
    workers: int | None = None,
):
    """Assign every row to its nearest centre in every problem it belongs to, reading each row once.

    Parameters
    ----------
    features : array (n, d)
        May be a memory map (float16/32/64); read in sequential row chunks of ``chunk_values``
        values, each converted to float32 once, checked for NaN/inf and released after use.
    labels : int array (n,)
    centers : dict problem -> array (k, d)
        Centres of every non-trivial problem (all with the same ``k``).
    members : list over classes of [(problem, column)]
        The problems each class's rows belong to (a class is pooled by its own problem and by the
        problems that count it among their most confused classes), and its column there.
    keep : bool
        Also return every (rows, groups) piece (for :class:`ClassClusters`).

    Returns
    -------
    counts : dict problem -> int64 array (k, columns)
        Rows per group and pooled class (the composition).
    own : int8 array (n,)
        Group of each row in the problem whose column is 0 (its own class's problem); -1 when
        that problem is trivial.
    pieces : list of (problem, column, rows, groups) (only with ``keep``)
    """
    import torch

    n, d = features.shape
    probs = sorted(centers)
    if not probs:
        return {}, np.full(n, -1, dtype=np.int8), []
    k = int(next(iter(centers.values())).shape[0])
    n_cols = 1 + max(col for mem in members for _, col in mem) if any(members) else 1
    slot = {p: i for i, p in enumerate(probs)}
    # per class: stacked centres (P_t, k, d) of its non-trivial problems, their slots and columns
    per_class: dict[int, tuple] = {}
    for t, mem in enumerate(members):
        mem = [(p, col) for p, col in mem if p in centers]
        if mem:
            stack = torch.from_numpy(np.stack([centers[p] for p, _ in mem]).astype(np.float32))
            per_class[t] = (stack, np.array([slot[p] for p, _ in mem], dtype=np.int64),
                            np.array([col for _, col in mem], dtype=np.int64), mem)
    counts_flat = np.zeros(len(probs) * k * n_cols, dtype=np.int64)
    own = np.full(n, -1, dtype=np.int8)
    pieces = []
    chunk = max(1, chunk_values // max(d, 1))

    def work(start: int):
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        stop = min(n, start + chunk)
        block = np.asarray(features[start:stop])
        bad = nonfinite_rows(block)
        if bad.size:
            return start, bad, None
        x = _as_float32_tensor(block)
        lab = labels[start:stop]
        order = None
        if lab.size > 1 and not np.all(lab[1:] >= lab[:-1]):  # rows not ordered by class: group them
            order = np.argsort(lab, kind="stable")
            lab = lab[order]
            x = x[torch.from_numpy(order)]
        cuts = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        bounds = np.concatenate([[0], cuts, [lab.size]]).astype(np.int64)
        keys, owns, kept = [], [], []
        for a, b in zip(bounds[:-1], bounds[1:]):
            t = int(lab[a])
            if t not in per_class:
                continue
            stack, slots, cols, mem = per_class[t]
            groups = nearest_centroid(x[a:b], stack)  # (m, P_t)
            keys.append(((slots[None, :] * k + groups) * n_cols + cols[None, :]).ravel())
            rows = (np.arange(a, b) if order is None else order[a:b]) + start
            own_col = np.flatnonzero(cols == 0)
            if own_col.size:
                owns.append((rows, groups[:, own_col[0]]))
            if keep:
                kept += [(p, col, rows, groups[:, i].astype(np.int64)) for i, (p, col) in enumerate(mem)]
        del x, block
        release_pages(features, start, stop)
        part = np.bincount(np.concatenate(keys), minlength=counts_flat.size) if keys else None
        return start, owns, (part, kept)

    # Chunks in parallel threads, each single-threaded (torch and numpy release the GIL): on a
    # few cores this beats one chunk at a time with intra-op threads (measured: small products
    # with 2 OpenMP threads wait on each other).
    from concurrent.futures import ThreadPoolExecutor

    starts = list(range(0, n, chunk))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, len(starts)))) as pool:
            for start, owns, rest in pool.map(work, starts):
                if rest is None:
                    bad = owns
                    raise ValueError(
                        f"features contain NaN or inf in {bad.size} row(s), first at row {start + int(bad[0])} "
                        "(counted within the rows read so far); check the feature extraction (e.g. a diverged "
                        "model) before reweighting"
                    )
                part, kept = rest
                if part is not None:
                    counts_flat += part
                for rows, g in owns:
                    own[rows] = g
                pieces += kept
    finally:
        torch.set_num_threads(old_threads)
    counts_all = counts_flat.reshape(len(probs), k, n_cols)
    return {p: counts_all[slot[p]] for p in probs}, own, pieces


def _cluster_one_pass(features, labels, by_class, sizes_c, present, pools, problem_index, *, k, count, normalize,
                      seed, max_iter, n_jobs, return_details, stats):
    """One-pass cluster weights (faiss backend): train on subsamples, then assign every row in one read."""
    n, d = features.shape
    c = len(by_class)
    t0 = time.perf_counter()
    # 1. problem rows (sorted union of its classes), training positions, gathered in batches
    members: list[list[tuple[int, int]]] = [[] for _ in range(c)]
    for j in present:
        for col, t in enumerate(pools[j]):
            if sizes_c[t]:
                members[int(t)].append((j, col))
    trivial, jobs = [], []
    for j in present:
        m = int(sizes_c[pools[j]].sum())
        if m <= k:
            trivial.append(j)
            continue
        pos, rng = training_subsample(m, k, seed + problem_index[j])
        if pos is None:
            rows = _sorted_union([by_class[int(t)] for t in pools[j]])
        else:
            rows = _sorted_union([by_class[int(t)] for t in pools[j]])[pos]
        jobs.append((j, rows, rng))
    centers: dict[int, np.ndarray] = {}
    workers = n_jobs or os.cpu_count() or 1

    def train(job) -> np.ndarray:
        j, sub, rng = job
        with faiss_threads(1):
            return faiss_train(sub, k, seed + problem_index[j], max_iter, rng)

    batch_rows = max(1, TRAIN_BATCH_BYTES // (4 * max(d, 1)))
    i = 0
    from threadpoolctl import threadpool_limits

    while i < len(jobs):
        batch, rows_in = [], 0
        while i < len(jobs) and (not batch or rows_in + jobs[i][1].size <= batch_rows):
            batch.append(jobs[i])
            rows_in += jobs[i][1].size
            i += 1
        allrows = np.concatenate([b[1] for b in batch])
        uniq, inverse = np.unique(allrows, return_inverse=True)  # sorted: the file is read forwards, once
        block = np.asarray(features[uniq])
        release_pages(features)
        bad = nonfinite_rows(block)
        if bad.size:
            raise ValueError(
                f"features contain NaN or inf in {bad.size} row(s), first at row {int(uniq[bad[0]])} "
                "(counted within the rows read so far); check the feature extraction (e.g. a diverged model) "
                "before reweighting"
            )
        block = np.asarray(block, dtype=np.float32)
        stats.train_rows += int(allrows.size)
        offs = np.concatenate([[0], np.cumsum([b[1].size for b in batch])])
        subs = [(j, block[inverse[offs[q]:offs[q + 1]]], rng) for q, (j, _, rng) in enumerate(batch)]
        median_work = float(np.median([sj[1].shape[0] for sj in subs])) * d
        with threadpool_limits(1, user_api="blas"):
            if workers == 1 or len(subs) == 1 or median_work < SMALL_PROBLEM_WORK:
                results = [train(sj) for sj in subs]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=workers) as pool:
                    results = list(pool.map(train, subs))
        for (j, _, _), cen in zip(subs, results):
            centers[j] = cen
        del block, subs
    t1 = time.perf_counter()
    stats.seconds_train = t1 - t0
    # 2. one pass over every row
    counts, own, pieces = one_pass_assign(features, labels, centers, members, keep=return_details, workers=n_jobs)
    stats.seconds_assign = time.perf_counter() - t1
    stats.rows_read = n
    # 3. weights (eq. 7) from the compositions
    weights = np.ones(n, dtype=np.float64)
    details: list[ClassClusters | None] = [None] * c
    frac_own = np.zeros((c, k), dtype=np.float64)
    scale = np.ones(c, dtype=np.float64)
    for j in present:
        if j in trivial:
            continue
        comp = counts[j][:, : pools[j].size]
        stats.problem_rows += int(comp.sum())
        sizes = comp.sum(1) if count == "all" else comp[:, 0]
        frac_own[j] = sizes / max(int(sizes.sum()), 1)
    nontriv = np.ones(c, dtype=bool)
    nontriv[trivial] = False
    sel = nontriv[labels]
    w_sel = frac_own[labels[sel], own[sel].astype(np.int64)]
    if normalize == "class_mean":
        sums = np.bincount(labels[sel], weights=w_sel, minlength=c)
        cnt = np.bincount(labels[sel], minlength=c)
        scale = np.where(sums > 0, cnt / np.where(sums > 0, sums, 1.0), 1.0)
    elif normalize == "n_groups":
        scale = np.full(c, float(k))
    weights[sel] = w_sel * scale[labels[sel]]
    if return_details:
        by_problem: dict[int, list] = {}
        for p, col, rows, groups in pieces:
            by_problem.setdefault(p, []).append((rows, groups))
        for j in present:
            if j in trivial:
                continue
            rows = np.concatenate([r for r, _ in by_problem[j]])
            groups = np.concatenate([g for _, g in by_problem[j]])
            order = np.argsort(rows, kind="stable")
            details[j] = ClassClusters(
                cls=j, classes=pools[j], indices=rows[order], groups=groups[order],
                composition=counts[j][:, : pools[j].size].copy(), group_weights=frac_own[j] * scale[j],
            )
    for j in trivial:  # n <= K rows: each its own group
        pooled = pools[j]
        prows = _sorted_union([by_class[int(t)] for t in pooled])
        xs = np.asarray(features[prows], dtype=np.float32)
        bad = nonfinite_rows(xs)
        if bad.size:
            raise ValueError(f"features contain NaN or inf in {bad.size} row(s), first at row {int(prows[bad[0]])}")
        groups = np.arange(prows.size, dtype=np.int64)
        col = np.argsort(pooled)[np.searchsorted(np.sort(pooled), labels[prows])]
        composition = np.bincount(groups * pooled.size + col, minlength=prows.size * pooled.size).reshape(
            prows.size, pooled.size)
        stats.problem_rows += prows.size
        _finish_problem(j, pooled, prows, groups, composition, labels, count, normalize, weights, details,
                        return_details)
    return weights, details


def _finish_problem(j, pooled, prows, groups, composition, labels, count, normalize, weights, details,
                    return_details) -> None:
    """Eq. 7 weights of class ``j``'s own rows from one problem's groups (block mode and trivial problems)."""
    n_groups = composition.shape[0]
    sizes = composition.sum(1) if count == "all" else composition[:, 0]
    frac = sizes / max(int(sizes.sum()), 1)  # eq. 7
    own = labels[prows] == j
    w = frac[groups[own]]
    if normalize == "class_mean":
        scale = 1.0 / w.mean()
    elif normalize == "n_groups":
        scale = float(n_groups)
    else:
        scale = 1.0
    weights[prows[own]] = w * scale
    if return_details:
        details[j] = ClassClusters(cls=j, classes=pooled, indices=prows, groups=groups,
                                   composition=composition, group_weights=frac * scale)



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
    max_block_bytes: int = DEFAULT_BLOCK_BYTES,
    return_details: bool = False,
    stats: ClusterStats | None = None,
    one_pass: bool | None = None,
) -> np.ndarray | tuple[np.ndarray, list[ClassClusters | None]]:
    """Per-instance cluster weights ``wG`` (eq. 5-7).

    Parameters
    ----------
    features : array, shape (n, d)
        Baseline penultimate features, float16/float32/float64; may be a read-only memory map
        (see "Out of core" in the module docstring: it is read block by block, never whole).
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
        One-pass mode (default for the faiss backend; see "One pass" in the module docstring):
        centres trained on each problem's faiss subsample, then every row read once and
        assigned in every problem it belongs to. ``False`` runs the block schedule (every
        backend; faiss then assigns each problem's gathered rows).

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
    n = labels.shape[0]
    if not isinstance(features, np.ndarray):
        features = as_features(features, n_rows=n)  # lists etc.; arrays/memmaps are read lazily
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (n, d), got shape {features.shape}")
    if not np.issubdtype(features.dtype, np.number):
        raise TypeError(f"features must be numeric, got dtype {features.dtype}")
    if features.shape[0] != n:
        raise ValueError(f"features has {features.shape[0]} rows but {n} were expected")
    k = check_positive_int(n_clusters, "n_clusters")
    check_option(count, "count", COUNT_MODES)
    check_option(normalize, "normalize", NORMALIZE_MODES)
    max_block_bytes = check_positive_int(max_block_bytes, "max_block_bytes")
    backend = resolve_backend(backend, batched=True)
    stats = stats if stats is not None else ClusterStats()

    partners = most_confused(m, top_k)
    by_class = class_rows(labels, c)
    sizes_c = np.array([r.size for r in by_class], dtype=np.int64)
    present = [j for j in range(c) if sizes_c[j]]
    problem_index = {j: i for i, j in enumerate(present)}
    pools = {j: np.concatenate([[j], partners[j]]).astype(np.int64) for j in present}
    max_rows = max(1, max_block_bytes // (4 * max(features.shape[1], 1)))
    blocks = schedule_problems(pools, sizes_c, max_rows=max_rows)
    stats.n_problems, stats.n_blocks = len(present), len(blocks)
    stats.block_sizes = [len(b) for b in blocks]

    if one_pass is None:
        one_pass = backend == "faiss"
    if one_pass:
        if backend != "faiss":
            raise ValueError(f"one_pass needs backend='faiss' (its subsampled training), got {backend!r}")
        stats.mode = "one_pass"
        weights, details = _cluster_one_pass(
            features, labels, by_class, sizes_c, present, pools, problem_index, k=k, count=count,
            normalize=normalize, seed=seed, max_iter=max_iter, n_jobs=n_jobs, return_details=return_details,
            stats=stats,
        )
        stats.n_blocks, stats.block_sizes = 0, []
        stats.seconds_read, stats.seconds_kmeans = stats.seconds_assign, stats.seconds_train
        stats.read_amplification = stats.rows_read / max(n, 1)
        logger.info(
            "cluster weights (one pass): %d problems, train %.1fs on %d rows, assign pass %.1fs over %d rows",
            stats.n_problems, stats.seconds_train, stats.train_rows, stats.seconds_assign, n,
        )
        return (weights, details) if return_details else weights
    stats.mode = "blocks"
    weights = np.ones(n, dtype=np.float64)
    details: list[ClassClusters | None] = [None] * c
    chunk_rows = max(1, (64 << 20) // (4 * max(features.shape[1], 1)))  # 64 MB read chunks
    for block in blocks:
        t0 = time.perf_counter()
        classes = np.unique(np.concatenate([pools[j] for j in block]))
        rows = np.sort(np.concatenate([by_class[t] for t in classes]))
        xb = _read_rows(features, rows, chunk_rows)
        stats.rows_read += rows.size
        problems = [np.sort(np.concatenate([by_class[t] for t in pools[j]])) for j in block]
        local = [np.searchsorted(rows, p) for p in problems]  # rows is sorted and covers p
        t1 = time.perf_counter()
        results = batched_kmeans(
            xb, local, k, backend=backend, seed=seed, max_iter=max_iter, n_jobs=n_jobs,
            seeds=[seed + problem_index[j] for j in block],
        )
        stats.seconds_read += t1 - t0
        stats.seconds_kmeans += time.perf_counter() - t1
        del xb
        for j, prows, res in zip(block, problems, results):
            stats.problem_rows += prows.size
            pooled = pools[j]
            n_groups = int(res.centers.shape[0])
            col = np.searchsorted(np.sort(pooled), labels[prows])
            col = np.argsort(pooled)[col]  # column of each row's class in `pooled` order
            composition = np.bincount(
                res.labels * pooled.size + col, minlength=n_groups * pooled.size
            ).reshape(n_groups, pooled.size)
            sizes = composition.sum(1) if count == "all" else composition[:, 0]
            frac = sizes / max(int(sizes.sum()), 1)  # eq. 7
            own = labels[prows] == j
            w = frac[res.labels[own]]
            if normalize == "class_mean":
                scale = 1.0 / w.mean()
            elif normalize == "n_groups":
                scale = float(n_groups)
            else:
                scale = 1.0
            weights[prows[own]] = w * scale
            if return_details:
                details[j] = ClassClusters(
                    cls=j, classes=pooled, indices=prows, groups=res.labels,
                    composition=composition, group_weights=frac * scale,
                )
    stats.read_amplification = stats.rows_read / max(n, 1)
    logger.info(
        "cluster weights: %d problems in %d block(s), read amplification %.2f, read %.1fs, k-means %.1fs",
        stats.n_problems, stats.n_blocks, stats.read_amplification, stats.seconds_read, stats.seconds_kmeans,
    )
    if return_details:
        return weights, details
    return weights
