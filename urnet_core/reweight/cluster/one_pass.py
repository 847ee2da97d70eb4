"""One-pass cluster problems (faiss backend, the default on CPU; paper section 4.2).

faiss trains each problem on at most ``256 k`` of its rows anyway, so copying every row of
every problem (each row sits in ~``1 + top_k`` problems: 16M x 256 float32 copied five times
is ~82 GB of copies) only serves the final assignment. In one-pass mode:

1. :func:`train_centers`: each problem's training rows are drawn as
   :func:`~urnet_core.reweight.kmeans.training_subsample` (the draw
   :func:`~urnet_core.reweight.kmeans.kmeans` makes, seed ``seed + i``), gathered from
   ``features`` in batches of problems (unique rows, read forwards, with ``np.take`` and one
   torch float32 conversion: numpy's fancy indexing and float16 ``astype`` made this gather
   half of the step), seeded by k-means++ a cache-sized group of problems at a time
   (:mod:`~urnet_core.reweight.kmeans.seeding`), and faiss trains the centres on them: work
   ``O(C k 256 d)``, independent of ``n`` once problems have ``256 k`` rows;
2. :func:`one_pass_assign` then reads the file once, in sequential row chunks (float32
   conversion, NaN/inf check, pages released), and assigns each row to its nearest centre in
   every problem it belongs to with one matrix product against the stacked centres of those
   problems, counting group compositions on the fly; no per-problem copy of rows is made.

A problem whose rows all fit the subsample gets exactly the centres of the block mode
(:mod:`~urnet_core.reweight.cluster.blocks`); a larger one trains on the same subsample size
from a different draw (faiss drew its own).
"""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np

from urnet_core.reweight.cluster.equation import Grouping
from urnet_core.reweight.cluster.problems import ClusterStats, ProblemSet
from urnet_core.reweight.kmeans import faiss_threads, nearest_centroid, training_subsample
from urnet_core.reweight.kmeans.backends import faiss_fit
from urnet_core.reweight.kmeans.seeding import group_plan, pad_group, seed_problems
from urnet_core.utils.memory import release_pages, take_rows
from urnet_core.utils.threads import single_threaded_pool
from urnet_core.utils.validation import nonfinite_rows

#: float32 values per chunk of the one-pass assignment (64 MB).
ONE_PASS_CHUNK_VALUES = 1 << 24
#: float32 bytes of training rows gathered at a time in one-pass mode.
TRAIN_BATCH_BYTES = 256 << 20


def nonfinite_error(n_bad: int, first_row: int) -> ValueError:
    """The error naming the first NaN/inf feature row (file row number)."""
    return ValueError(
        f"features contain NaN or inf in {n_bad} row(s), first at row {first_row} "
        "(counted within the rows read so far); check the feature extraction (e.g. a diverged model) "
        "before reweighting"
    )


def as_float32_tensor(block: np.ndarray, out=None):
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
    # One float32 buffer per thread, reused for every chunk: a fresh 64 MB tensor per chunk is a
    # new memory mapping whose first-touch page faults cost ~8x the float16 conversion itself.
    local = threading.local()

    def work(start: int):
        stop = min(n, start + chunk)
        block = np.asarray(features[start:stop])
        bad = nonfinite_rows(block)
        if bad.size:
            return start, bad, None
        if block.dtype != np.float32 and getattr(local, "buf", None) is None:
            local.buf = torch.empty((chunk, d), dtype=torch.float32)
        x = as_float32_tensor(block, out=getattr(local, "buf", None))
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
    starts = list(range(0, n, chunk))
    with single_threaded_pool(workers, tasks=len(starts)) as pool:
        for start, owns, rest in pool.map(work, starts):
            if rest is None:
                bad = owns
                raise nonfinite_error(bad.size, start + int(bad[0]))
            part, kept = rest
            if part is not None:
                counts_flat += part
            for rows, g in owns:
                own[rows] = g
            pieces += kept
    counts_all = counts_flat.reshape(len(probs), k, n_cols)
    return {p: counts_all[slot[p]] for p in probs}, own, pieces




def _training_jobs(problems: ProblemSet, k: int, seed: int) -> tuple[list, list[int]]:
    """(class, training rows, generator) of every non-trivial problem, and the trivial classes (``<= k`` rows)."""
    index = problems.index
    jobs, trivial = [], []
    for j in problems.present:
        m = problems.n_rows(j)
        if m <= k:
            trivial.append(j)
            continue
        pos, rng = training_subsample(m, k, seed + index[j])
        rows = problems.rows(j)
        jobs.append((j, rows if pos is None else rows[pos], rng))
    return jobs, trivial


def _gather(features: np.ndarray, batch: list, buf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """The batch's training rows as one float32 block (unique rows, read forwards) and each row's place in it.

    The block is written into ``buf`` (a reused (R, d) float32 buffer) when it fits there.
    """
    allrows = np.concatenate([b[1] for b in batch])
    uniq, inverse = np.unique(allrows, return_inverse=True)  # sorted: the file is read forwards, once
    d = features.shape[1]
    out = buf[: uniq.size] if buf is not None and buf.shape[0] >= uniq.size else np.empty((uniq.size, d), np.float32)
    block = take_rows(features, uniq, out=out)  # converted to float32 chunk by chunk
    release_pages(features)
    bad = nonfinite_rows(block)  # on float32: the screen is one sum
    if bad.size:
        raise nonfinite_error(bad.size, int(uniq[bad[0]]))
    return block, inverse, int(allrows.size)


def _batches(jobs: list, batch_rows: int) -> list[list]:
    """Consecutive jobs whose training rows add up to at most ``batch_rows`` (a larger job alone)."""
    batches, i = [], 0
    while i < len(jobs):
        batch, rows_in = [], 0
        while i < len(jobs) and (not batch or rows_in + jobs[i][1].size <= batch_rows):
            batch.append(jobs[i])
            rows_in += jobs[i][1].size
            i += 1
        batches.append(batch)
    return batches


def train_centers(features: np.ndarray, jobs: list, k: int, *, seed_of: dict[int, int], max_iter: int,
                  n_jobs: int | None, stats: ClusterStats) -> dict[int, np.ndarray]:
    """faiss centres (k, d) of every job ``(class, training rows, generator)``: :func:`faiss_train`'s, problem by problem.

    Training rows are gathered in batches of :data:`TRAIN_BATCH_BYTES` (into two float32
    buffers used in turn, so the next batch is gathered while the pool trains the current one)
    and split into cache-sized groups of problems
    (:func:`~urnet_core.reweight.kmeans.seeding.group_plan`). A group is one task: it pads its
    problems (:func:`~urnet_core.reweight.kmeans.seeding.pad_group`), seeds them together
    (:func:`~urnet_core.reweight.kmeans.seeding.seed_problems`, the k-means++ centres
    :func:`faiss_train` draws, in a few batched products), then faiss runs Lloyd on each of
    them. Tasks run on ``n_jobs`` threads, each single-threaded (faiss OpenMP, numpy BLAS and
    torch at one thread; :func:`~urnet_core.utils.threads.single_threaded_pool`); faiss and torch
    release the GIL, so the threads run in parallel.
    """
    import torch
    from threadpoolctl import threadpool_limits

    d = features.shape[1]
    workers = n_jobs or os.cpu_count() or 1
    centers: dict[int, np.ndarray] = {}

    def train(task) -> list[tuple[int, np.ndarray]]:
        group, src, rows, n_max = task
        x = pad_group(src, rows, n_max)
        sizes = np.array([r.size for r in rows], dtype=np.int64)
        inits = seed_problems(x, sizes, k, [rng for _, _, rng in group])
        with faiss_threads(1):
            return [(j, faiss_fit(x[q, : sizes[q]].numpy(), inits[q], seed_of[j], max_iter)[0])
                    for q, (j, _, _) in enumerate(group)]

    batch_rows = max(1, TRAIN_BATCH_BYTES // (4 * max(d, 1)))
    batches = _batches(jobs, batch_rows)
    n_rows = max((sum(job[1].size for job in b) for b in batches), default=0)
    buffers = [np.empty((min(n_rows, batch_rows), d), np.float32) for _ in range(min(2, len(batches)))]

    def tasks_of(i: int) -> list:
        batch = batches[i]
        block, inverse, n_gathered = _gather(features, batch, buffers[i % 2])
        stats.train_rows += n_gathered
        src = torch.from_numpy(block)
        offs = np.concatenate([[0], np.cumsum([b[1].size for b in batch])])
        rows = [inverse[offs[q]:offs[q + 1]] for q in range(len(batch))]
        return [(batch[a:b], src, rows[a:b], n_max) for a, b, n_max in group_plan([r.size for r in rows], d)]

    with threadpool_limits(1, user_api="blas"), single_threaded_pool(workers) as pool:
        if workers == 1:
            for i in range(len(batches)):
                for task in tasks_of(i):
                    centers.update(train(task))
        else:
            pending: list = []
            for i in range(len(batches)):
                # gathered while the previous batch trains; its buffer is free once that
                # batch's results are in (two buffers in turn)
                futures = [pool.submit(train, t) for t in tasks_of(i)]
                for f in pending:
                    centers.update(f.result())
                pending = futures
            for f in pending:
                centers.update(f.result())
    return centers


def trivial_groups(features: np.ndarray, labels: np.ndarray, problems: ProblemSet, j: int, grouping: Grouping,
                   keep: bool) -> int:
    """Class ``j``'s problem of ``n <= K`` rows: each row its own group (rows still checked for NaN/inf).

    Returns the problem's row count.
    """
    prows = problems.rows(j)
    bad = nonfinite_rows(np.asarray(features[prows], dtype=np.float32))
    if bad.size:
        raise ValueError(f"features contain NaN or inf in {bad.size} row(s), first at row {int(prows[bad[0]])}")
    groups = np.arange(prows.size, dtype=np.int64)
    grouping.compositions[j] = problems.composition(j, prows, groups, labels, prows.size)
    own = labels[prows] == j
    grouping.own_group[prows[own]] = groups[own]
    if keep:
        grouping.pieces[j] = (prows, groups)
    return int(prows.size)


def one_pass_grouping(features: np.ndarray, labels: np.ndarray, problems: ProblemSet, k: int, *, seed: int,
                      max_iter: int, n_jobs: int | None, keep: bool, stats: ClusterStats) -> Grouping:
    """Groups of every problem in one-pass mode: train on subsamples, then assign every row in one read.

    Fills ``stats`` (``train_rows``, ``seconds_train``, ``seconds_assign``, ``rows_read``,
    ``problem_rows``).
    """
    n = features.shape[0]
    t0 = time.perf_counter()
    jobs, trivial = _training_jobs(problems, k, seed)
    index = problems.index
    centers = train_centers(features, jobs, k, seed_of={j: seed + index[j] for j, _, _ in jobs},
                            max_iter=max_iter, n_jobs=n_jobs, stats=stats)
    t1 = time.perf_counter()
    stats.seconds_train = t1 - t0
    counts, own, pieces = one_pass_assign(features, labels, centers, problems.members(), keep=keep,
                                          workers=n_jobs)
    stats.seconds_assign = time.perf_counter() - t1
    stats.rows_read = n
    grouping = Grouping(own_group=own.astype(np.int64))
    for j in centers:
        comp = counts[j][:, : problems.pools[j].size].copy()
        stats.problem_rows += int(comp.sum())
        grouping.compositions[j] = comp
    if keep:
        by_problem: dict[int, list] = {}
        for p, _, rows, groups in pieces:
            by_problem.setdefault(p, []).append((rows, groups))
        for j, parts in by_problem.items():
            rows = np.concatenate([r for r, _ in parts])
            groups = np.concatenate([g for _, g in parts])
            order = np.argsort(rows, kind="stable")
            grouping.pieces[j] = (rows[order], groups[order])
    for j in trivial:
        stats.problem_rows += trivial_groups(features, labels, problems, j, grouping, keep)
    return grouping
