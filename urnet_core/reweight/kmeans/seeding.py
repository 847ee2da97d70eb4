"""Greedy k-means++ seeding of many small problems at once (cluster reweighting's one-pass training).

:func:`seed_problems` returns, for every problem, the centres
:func:`~urnet_core.reweight.kmeans.backends._kmeanspp` picks from the same generator - bit for
bit on the benchmark's class problems (tests compare them problem by problem) - with the
candidates of a group of problems evaluated by one batched product per step instead of one
small numpy product per problem and step. Per problem the random numbers are drawn in the same
order as there (one ``integers`` for the first centre, one ``random(2 + ln k)`` per further
centre). Distances are float32 terms ``|x|^2 - 2 x.c + |c|^2`` clipped at 0 and summed in
float64, as there; only the summation order of the float32 products can differ, so a pick can
change only where two candidates tie to float32 rounding.

Why: run one problem at a time, the seeding's small numpy calls held the GIL, so the thread
pool that trains the problems with faiss (which releases it) ran at ~1.3x of one thread on 2
cores instead of ~2x. A problem whose rows all coincide with a chosen centre (the total
distance is 0: duplicates) is seeded by the per-problem code from a copy of its generator.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np

from urnet_core.reweight.kmeans.backends import _kmeanspp

#: float32 bytes of padded rows seeded together: a group stays in the CPU's cache across its
#: k steps (a batch the size of RAM made every product memory-bound).
GROUP_BYTES = 16 << 20


def group_plan(sizes: Sequence[int], d: int, *, group_bytes: int = GROUP_BYTES) -> list[tuple[int, int, int]]:
    """``(first, stop, n_max)`` of each cache-sized group of consecutive problems of ``sizes`` rows.

    Problems ``first .. stop - 1`` padded to ``n_max`` rows of ``d`` float32 take at most
    ``group_bytes`` (a single larger problem is a group of its own).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    plan, i = [], 0
    while i < len(sizes):
        j, n_max = i + 1, int(sizes[i])
        while j < len(sizes) and (j + 1 - i) * max(n_max, int(sizes[j])) * d * 4 <= group_bytes:
            n_max = max(n_max, int(sizes[j]))
            j += 1
        plan.append((i, j, n_max))
        i = j
    return plan


def pad_group(src, rows: Sequence[np.ndarray], n_max: int):
    """Problems ``rows`` padded into one (P, n_max, d) float32 tensor by one ``index_select`` from ``src``
    (a (R, d) float32 tensor; padding repeats row 0 and is masked by the sizes)."""
    import torch

    idx = np.zeros((len(rows), n_max), dtype=np.int64)
    for q, r in enumerate(rows):
        idx[q, : r.size] = r
    return src.index_select(0, torch.from_numpy(idx.reshape(-1))).reshape(len(rows), n_max, src.shape[1])


def padded_groups(block: np.ndarray, rows: Sequence[np.ndarray], *, group_bytes: int = GROUP_BYTES):
    """Yield ``(first, x, sizes)``: problems ``first .. first + len(sizes) - 1`` padded into ``x`` (P, n_max, d).

    ``block`` (R, d) float32 holds the rows; ``rows[i]`` indexes problem ``i``'s rows in it
    (groups of :func:`group_plan`, each padded by :func:`pad_group`); ``x[i, :sizes[i]]`` is
    problem ``i``'s rows in order, contiguous.
    """
    import torch

    src = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
    sizes_all = np.array([r.size for r in rows], dtype=np.int64)
    for i, j, n_max in group_plan(sizes_all, src.shape[1], group_bytes=group_bytes):
        yield i, pad_group(src, rows[i:j], n_max), sizes_all[i:j]


def seed_problems(x, sizes: np.ndarray, k: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Greedy k-means++ centres (P, k, d) float32 of the padded problems ``x`` (P, n_max, d), ``sizes[i] > k``.

    ``rngs[i]`` is advanced as :func:`~urnet_core.reweight.kmeans.backends._kmeanspp` advances it.
    """
    import torch

    p, n_max, d = x.shape
    if (np.asarray(sizes) <= k).any():
        raise ValueError(f"every problem needs more than k={k} rows")
    saved = [copy.deepcopy(r) for r in rngs]
    valid = torch.arange(n_max)[None, :] < torch.from_numpy(np.asarray(sizes))[:, None]
    x_sq = (x * x).sum(2)
    n_trials = 2 + int(np.log(k))
    first = np.array([int(r.integers(int(n))) for r, n in zip(rngs, sizes)])
    ar = torch.arange(p)
    centers = torch.zeros((p, k, d), dtype=torch.float32)
    centers[:, 0] = x[ar, torch.from_numpy(first)]

    def sq_dist(cand):  # (P, L, d) -> (P, L, n_max) float64; x times cand^T keeps the large operand contiguous
        dist = x_sq[:, None, :] - 2.0 * torch.bmm(x, cand.transpose(1, 2)).transpose(1, 2) + (cand * cand).sum(2)[:, :, None]
        return dist.clamp_min_(0).double() * valid[:, None, :]

    closest = sq_dist(centers[:, :1])[:, 0]
    degenerate: set[int] = set()
    last = torch.from_numpy(np.asarray(sizes) - 1)[:, None]
    for step in range(1, k):
        total = closest.sum(1, keepdim=True)
        degenerate.update(np.flatnonzero(total[:, 0].numpy() <= 0).tolist())
        u = torch.from_numpy(np.stack([r.random(n_trials) for r in rngs]))
        cand_idx = torch.minimum(torch.searchsorted(torch.cumsum(closest, 1), u * total, right=True), last)
        cand = x[ar[:, None], cand_idx]  # (P, L, d)
        dist = torch.minimum(sq_dist(cand), closest[:, None, :])
        best = dist.sum(2).argmin(1)
        centers[:, step] = cand[ar, best]
        closest = dist[ar, best]
    out = centers.numpy()
    for i in sorted(degenerate):  # draws differ there (integers, not random): the per-problem code
        out[i] = _kmeanspp(x[i, : int(sizes[i])].numpy(), k, saved[i])
        rngs[i].bit_generator.state = saved[i].bit_generator.state
    return out
