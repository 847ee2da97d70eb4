"""Out-of-core block mode of the cluster problems (paper section 4.2; every k-means backend).

WebVision 2.0: 16M x 256-5000 features, 5000 problems. ``features`` may be a read-only
memory map (``np.load(path, mmap_mode='r')``, float16 or float32); it is never copied whole.
Problems are scheduled in *blocks* (:func:`~urnet_core.reweight.cluster.problems.schedule_problems`):
classes are visited in breadth-first order of the "most confused" graph, so a class and its
partners land in the same block, and problems are packed into a block until the rows of the
union of their classes reach ``max_block_bytes`` (as float32). Each block reads its classes'
rows once (sorted, so a class-ordered feature file is read sequentially), converts them to
float32, runs all its problems together (:func:`~urnet_core.reweight.kmeans.batched_kmeans`: a
faiss thread pool on CPU, the segmented Lloyd on CUDA) and releases the mapped pages. Every
class is read about once (``ClusterStats.read_amplification``, rows read / rows, is ~1 when
confusable classes form groups). Problem ``i`` (in class order) always uses seed ``seed + i``,
so the faiss/sklearn/cuml results do not depend on the block size.
"""

from __future__ import annotations

import time

import numpy as np

from urnet_core.reweight.cluster.equation import Grouping
from urnet_core.reweight.cluster.one_pass import nonfinite_error
from urnet_core.reweight.cluster.problems import ClusterStats, ProblemSet, schedule_problems
from urnet_core.reweight.kmeans import batched_kmeans
from urnet_core.utils.memory import as_float32, release_pages, take_rows

#: Bytes of each chunk read by :func:`read_rows` (64 MB of float32).
READ_CHUNK_BYTES = 64 << 20


def read_rows(features: np.ndarray, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """``features[rows]`` as float32 (rows sorted), read in chunks, NaN/inf rows named."""
    out = np.empty((rows.size, features.shape[1]), dtype=np.float32)
    for start in range(0, rows.size, chunk_rows):
        part = as_float32(take_rows(features, rows[start : start + chunk_rows]))
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise nonfinite_error(bad.size, int(rows[start + bad[0]]))
        out[start : start + part.shape[0]] = part
    release_pages(features)
    return out


def block_grouping(features: np.ndarray, labels: np.ndarray, problems: ProblemSet, k: int, *, backend: str,
                   seed: int, max_iter: int, n_jobs: int | None, max_block_bytes: int, keep: bool,
                   stats: ClusterStats) -> Grouping:
    """Groups of every problem in block mode: read each block's rows once, k-means all its problems.

    Fills ``stats`` (blocks, ``rows_read``, ``problem_rows``, ``seconds_read``, ``seconds_kmeans``).
    """
    d = max(features.shape[1], 1)
    blocks = schedule_problems(problems.pools, problems.sizes, max_rows=max(1, max_block_bytes // (4 * d)))
    stats.n_blocks, stats.block_sizes = len(blocks), [len(b) for b in blocks]
    index = problems.index
    grouping = Grouping(own_group=np.full(labels.shape[0], -1, dtype=np.int64))
    chunk_rows = max(1, READ_CHUNK_BYTES // (4 * d))
    for block in blocks:
        t0 = time.perf_counter()
        classes = np.unique(np.concatenate([problems.pools[j] for j in block]))
        rows = np.sort(np.concatenate([problems.by_class[t] for t in classes]))
        xb = read_rows(features, rows, chunk_rows)
        stats.rows_read += rows.size
        prows_all = [problems.rows(j) for j in block]
        local = [np.searchsorted(rows, p) for p in prows_all]  # rows is sorted and covers p
        t1 = time.perf_counter()
        results = batched_kmeans(xb, local, k, backend=backend, seed=seed, max_iter=max_iter, n_jobs=n_jobs,
                                 seeds=[seed + index[j] for j in block])
        stats.seconds_read += t1 - t0
        stats.seconds_kmeans += time.perf_counter() - t1
        del xb
        for j, prows, res in zip(block, prows_all, results):
            stats.problem_rows += prows.size
            grouping.compositions[j] = problems.composition(j, prows, res.labels, labels, int(res.centers.shape[0]))
            own = labels[prows] == j
            grouping.own_group[prows[own]] = res.labels[own]
            if keep:
                grouping.pieces[j] = (prows, res.labels)
    return grouping
