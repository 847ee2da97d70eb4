"""Lloyd's k-means in PyTorch for many problems at once (the torch backend, CPU or CUDA).

Problems of similar size are padded into one ``(P, n_max, d)`` tensor, so each iteration's
distances and centroid sums are one ``bmm`` for all of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from urnet_core.reweight.kmeans.result import KMeansResult, is_cupy_array


class GroupRows:
    """The rows of ``x`` in each group, gathered only when asked (``rows[i]`` = ``x[groups[i]]``).

    The batched torch solver takes this instead of a list of gathered copies, so it holds one
    batch of problems at a time, not every problem's rows at once (the problems of a block
    overlap: class + its 4 most confused classes, about 5x the block's rows in total).
    """

    def __init__(self, x: np.ndarray, groups: Sequence[np.ndarray]) -> None:
        self.x = x
        self.groups = groups
        self.shape1 = x.shape[1]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.x[self.groups[i]]

    def size(self, i: int) -> int:
        return int(len(self.groups[i]))


def segmented_lloyd(
    blocks: Sequence[np.ndarray] | GroupRows,
    k: int,
    *,
    seed: int,
    max_iter: int,
    device: str | None = None,
    max_batch_elems: int = 1 << 26,
) -> list[KMeansResult]:
    """Run Lloyd's k-means on every block, advancing many problems together.

    Problems are sorted by size and packed into batches of similar size; a batch is a padded
    ``(P, n_max, d)`` tensor with a row mask, so every distance and centroid update is one
    ``bmm`` for the whole batch (no Python loop over problems). A batch holds at most
    ``max_batch_elems`` padded floats. Initialisation is greedy k-means++ (as scikit-learn:
    ``2 + ln k`` candidates per step), drawn for all problems of the batch at once from one
    generator. Problems need ``n_p > k`` (callers handle the trivial ones). Empty clusters keep
    their previous centre.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if isinstance(blocks, GroupRows):
        sizes = np.array([blocks.size(i) for i in range(len(blocks))], dtype=np.int64)
        d = blocks.shape1
    else:
        sizes = np.array([b.shape[0] for b in blocks], dtype=np.int64)
        d = blocks[0].shape[1]
    order = np.argsort(-sizes, kind="stable")
    batches, current = [], []
    for p in order:
        if current and (len(current) + 1) * int(sizes[current[0]]) * d > max_batch_elems:
            batches.append(current)
            current = []
        current.append(int(p))
    if current:
        batches.append(current)
    out: list[KMeansResult | None] = [None] * len(blocks)
    for batch in batches:
        n_max = int(sizes[batch[0]])
        first = blocks[batch[0]]
        if is_cupy_array(first):  # pragma: no cover - GPU: DLPack, no host round trip
            x = torch.zeros((len(batch), n_max, d), dtype=torch.float32, device=dev)
            for i, p in enumerate(batch):
                x[i, : sizes[p]] = torch.from_dlpack(first if i == 0 else blocks[p]).to(dev, torch.float32)
        else:
            xb = np.zeros((len(batch), n_max, d), dtype=np.float32)
            for i, p in enumerate(batch):
                xb[i, : sizes[p]] = first if i == 0 else blocks[p]
            x = torch.from_numpy(xb).to(dev)
            del xb
        del first
        n_t = torch.from_numpy(sizes[batch]).to(dev)
        centers, labels, inertia = _padded_lloyd(x, n_t, k, gen=gen, max_iter=max_iter)
        for i, p in enumerate(batch):
            out[p] = KMeansResult(
                centers=centers[i].cpu().numpy().copy(),
                labels=labels[i, : sizes[p]].cpu().numpy().astype(np.int64),
                inertia=float(inertia[i]),
                backend="torch",
            )
    return out  # type: ignore[return-value]


def _padded_lloyd(x, n_rows, k: int, *, gen, max_iter: int):
    """Greedy k-means++ then Lloyd on a padded batch ``x`` (P, n_max, d) with ``n_rows`` (P,) valid rows."""
    import torch

    dev = x.device
    n_prob, n_max, d = x.shape
    ar = torch.arange(n_prob, device=dev)
    valid = torch.arange(n_max, device=dev)[None, :] < n_rows[:, None]  # (P, n_max)
    x_sq = (x * x).sum(2)  # (P, n_max)

    def sq_dist(c: torch.Tensor) -> torch.Tensor:  # (P, m, d) -> (P, n_max, m)
        return (x_sq[:, :, None] - 2 * torch.bmm(x, c.transpose(1, 2)) + (c * c).sum(2)[:, None, :]).clamp_min_(0)

    def draw(weights: torch.Tensor, n_draw: int) -> torch.Tensor:
        """Row indices (P, n_draw) drawn with probability ~ weights (uniform where all zero)."""
        u = torch.rand((n_prob, n_draw), generator=gen, dtype=torch.float64).to(dev)
        cs = torch.cumsum(weights, 1)
        total = cs[:, -1:]
        pick = torch.searchsorted(cs, u * total, right=True)
        uniform = (u * n_rows[:, None]).long()
        pick = torch.where(total > 0, pick, uniform)
        return torch.minimum(pick, (n_rows - 1)[:, None])

    n_trials = 2 + int(np.log(k))
    centers = torch.zeros((n_prob, k, d), dtype=x.dtype, device=dev)
    first = draw(valid.double(), 1)[:, 0]
    centers[:, 0] = x[ar, first]
    closest = (sq_dist(centers[:, :1])[:, :, 0].double()) * valid
    for step in range(1, k):
        cand_idx = draw(closest, n_trials)  # (P, L)
        cand = x[ar[:, None], cand_idx]  # (P, L, d)
        dist = torch.minimum(sq_dist(cand).double(), closest[:, :, None]) * valid[:, :, None]
        best = dist.sum(1).argmin(1)  # first minimum: deterministic
        centers[:, step] = cand[ar, best]
        closest = dist[ar, :, best]

    labels = None
    for _ in range(max_iter):
        new_labels = sq_dist(centers).argmin(2)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype) * valid[:, :, None]
        sums = torch.bmm(onehot.transpose(1, 2), x)  # (P, k, d)
        counts = onehot.sum(1)  # (P, k)
        centers = torch.where(counts[:, :, None] > 0, sums / counts.clamp_min(1)[:, :, None], centers)
    dist = sq_dist(centers)
    labels = dist.argmin(2)
    inertia = (dist.gather(2, labels[:, :, None])[:, :, 0].double() * valid).sum(1)
    return centers, labels, inertia.cpu().numpy()
