"""k-means with interchangeable backends: cuML (GPU), faiss, PyTorch and scikit-learn.

Cluster reweighting (paper 4.2) runs one small k-means per class, so at WebVision scale
k-means is the heavy step (see SCALE_NOTES). :func:`kmeans` solves one problem;
:func:`batched_kmeans` solves many small ones together.

Backends
--------
- ``"cuml"``: RAPIDS cuML on a CUDA GPU (import guarded). Seeded runs are not bit-reproducible.
- ``"faiss"``: ``faiss.Kmeans`` on CPU, trained on at most 256 points per centroid, then every
  row is assigned with an exact search. float32.
- ``"torch"``: plain Lloyd iterations with k-means++ initialisation, on CPU or CUDA. The batched
  form advances all problems together (rows concatenated, centroid sums by ``index_add_``).
- ``"sklearn"``: ``sklearn.cluster.KMeans`` with one k-means++ initialisation.
- ``"auto"``: cuML when CUDA and cuML are available, else faiss, else scikit-learn. For
  :func:`batched_kmeans`, ``"auto"`` prefers the segmented torch Lloyd on CUDA (cuML has no
  batched multi-problem k-means), else faiss, else scikit-learn. The choice is logged once.

Conventions shared by all backends: ``inertia`` is the sum of *squared* Euclidean distances of
every row to its assigned centre; labels are int64 in ``[0, n_clusters)``. When a problem has
``n <= n_clusters`` rows, every row is its own cluster (``centers`` has ``n`` rows, inertia 0)
and no backend is called. Duplicated rows are allowed (clusters may then be empty or coincide).
NaN/inf rows raise ``ValueError``. On CPU a given seed reproduces the result bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from urnet_core._validation import as_features, check_option, check_positive_int

logger = logging.getLogger(__name__)

try:  # optional: fast CPU k-means
    import faiss

    HAS_FAISS = True
except ImportError:  # pragma: no cover - faiss-cpu is a dependency, but keep the fallback
    faiss = None
    HAS_FAISS = False

try:  # optional: RAPIDS cuML (GPU only)
    from cuml.cluster import KMeans as _CumlKMeans

    HAS_CUML = True
except Exception:  # ImportError, or CUDA runtime errors raised while importing cuML
    _CumlKMeans = None
    HAS_CUML = False

BACKENDS = ("auto", "cuml", "faiss", "torch", "sklearn")
_LOGGED: set[str] = set()


@dataclass(frozen=True)
class KMeansResult:
    """Result of one k-means problem.

    Attributes
    ----------
    centers : ndarray of float32, shape (k, d)
        ``k = min(n_clusters, n)``.
    labels : ndarray of int64, shape (n,)
        Cluster of each row.
    inertia : float
        Sum of squared distances of the rows to their centres.
    backend : str
        The backend that actually ran (``"trivial"`` when ``n <= n_clusters``).
    """

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    backend: str


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        logger.info(message)


def resolve_backend(backend: str = "auto", *, batched: bool = False) -> str:
    """Return the concrete backend ``"auto"`` stands for here (or check an explicit one)."""
    check_option(backend, "backend", BACKENDS)
    if backend == "auto":
        if batched and _cuda_available():
            chosen = "torch"
        elif not batched and HAS_CUML and _cuda_available():
            chosen = "cuml"
        elif HAS_FAISS:
            chosen = "faiss"
        else:
            chosen = "sklearn"
        _log_once(f"k-means backend auto -> {chosen}" + (" (batched)" if batched else ""))
        return chosen
    if backend == "cuml" and not (HAS_CUML and _cuda_available()):
        raise ValueError("backend='cuml' needs RAPIDS cuML and a CUDA GPU; install urnet_core[gpu] or pick another")
    if backend == "faiss" and not HAS_FAISS:
        raise ValueError("backend='faiss' needs the faiss-cpu package; pip install faiss-cpu or pick another")
    return backend


@contextlib.contextmanager
def faiss_threads(n_threads: int) -> Iterator[None]:
    """Set faiss's OpenMP thread count for the calling thread, restoring it afterwards.

    pip's faiss-cpu can run 10-60x slower on small inputs with default OpenMP settings
    (faiss issue #422); many small problems run best with one OpenMP thread per job.
    """
    if not HAS_FAISS:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n_threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


# --------------------------------------------------------------------------- single-problem backends
def _trivial(x: np.ndarray) -> KMeansResult:
    return KMeansResult(
        centers=np.asarray(x, dtype=np.float32).copy(),
        labels=np.arange(x.shape[0], dtype=np.int64),
        inertia=0.0,
        backend="trivial",
    )


def _kmeanspp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ centres of ``x`` (float32, ``n > k``), as scikit-learn draws them."""
    n_trials = 2 + int(np.log(k))
    x64 = x.astype(np.float64)
    centers = np.empty((k, x.shape[1]), dtype=np.float64)
    centers[0] = x64[rng.integers(x.shape[0])]
    closest = ((x64 - centers[0]) ** 2).sum(1)
    for step in range(1, k):
        total = closest.sum()
        if total > 0:
            cand = np.searchsorted(np.cumsum(closest), rng.random(n_trials) * total, side="right")
            cand = np.minimum(cand, x.shape[0] - 1)
        else:  # every row coincides with a chosen centre (duplicates)
            cand = rng.integers(x.shape[0], size=n_trials)
        d = np.minimum(((x64[None, :, :] - x64[cand][:, None, :]) ** 2).sum(2), closest[None, :])
        best = int(np.argmin(d.sum(1)))
        centers[step] = x64[cand[best]]
        closest = d[best]
    return centers.astype(np.float32)


def _kmeans_faiss(x: np.ndarray, k: int, seed: int, max_iter: int) -> KMeansResult:
    xf = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    # faiss initialises from random rows (one run), which often puts two centres in one
    # cluster; seed it with greedy k-means++ on the same-size subsample faiss trains on.
    sub = xf if xf.shape[0] <= 256 * k else xf[np.sort(rng.choice(xf.shape[0], 256 * k, replace=False))]
    init = _kmeanspp(sub, k, rng)
    # min_points_per_centroid=1 only silences faiss's "please provide at least 39*k points"
    # warning; small class problems are expected here.
    km = faiss.Kmeans(
        xf.shape[1], k, niter=max_iter, seed=int(seed), max_points_per_centroid=256,
        min_points_per_centroid=1, verbose=False,
    )
    km.train(xf, init_centroids=init)
    dist, idx = km.index.search(xf, 1)
    # km.obj is measured on the training subsample; report the inertia of all rows instead.
    return KMeansResult(
        centers=np.asarray(km.centroids, dtype=np.float32).copy(),
        labels=idx[:, 0].astype(np.int64),
        inertia=float(dist[:, 0].astype(np.float64).sum()),
        backend="faiss",
    )


def _kmeans_sklearn(x: np.ndarray, k: int, seed: int, max_iter: int) -> KMeansResult:
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Duplicated rows can leave fewer distinct clusters than k; that is documented, not an error.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed, init="k-means++").fit(x)
    return KMeansResult(
        centers=km.cluster_centers_.astype(np.float32),
        labels=km.labels_.astype(np.int64),
        inertia=float(km.inertia_),
        backend="sklearn",
    )


def _kmeans_cuml(x: np.ndarray, k: int, seed: int, max_iter: int) -> KMeansResult:  # pragma: no cover - GPU
    km = _CumlKMeans(
        n_clusters=k, max_iter=max_iter, random_state=seed, init="scalable-k-means++", output_type="numpy"
    ).fit(np.ascontiguousarray(x, dtype=np.float32))
    return KMeansResult(
        centers=np.asarray(km.cluster_centers_, dtype=np.float32),
        labels=np.asarray(km.labels_).astype(np.int64),
        inertia=float(km.inertia_),
        backend="cuml",
    )


def _kmeans_torch(x: np.ndarray, k: int, seed: int, max_iter: int, device: str | None = None) -> KMeansResult:
    return _segmented_lloyd([np.asarray(x)], k, seed=seed, max_iter=max_iter, device=device)[0]


_DISPATCH: dict[str, Callable[..., KMeansResult]] = {
    "faiss": _kmeans_faiss,
    "sklearn": _kmeans_sklearn,
    "cuml": _kmeans_cuml,
    "torch": _kmeans_torch,
}


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    backend: str = "auto",
    seed: int = 0,
    max_iter: int = 25,
    device: str | None = None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``n_clusters`` groups.

    Parameters
    ----------
    x : array, shape (n, d)
        Finite features (NaN/inf raise ``ValueError`` naming the first bad row).
    n_clusters : int
        ``k``. When ``n <= k`` every row is its own cluster.
    backend : {'auto', 'cuml', 'faiss', 'torch', 'sklearn'}, default='auto'
        See the module docstring.
    seed : int, default=0
        Fixes the initialisation (bit-reproducible on CPU).
    max_iter : int, default=25
        Lloyd iterations (faiss: ``niter``).
    device : str, optional
        Torch backend only: ``"cpu"``/``"cuda"``; default CUDA when available.

    Returns
    -------
    KMeansResult
    """
    x = as_features(x, name="x")
    k = check_positive_int(n_clusters, "n_clusters")
    check_positive_int(max_iter, "max_iter")
    chosen = resolve_backend(backend)
    if x.shape[0] <= k:
        return _trivial(x)
    if chosen == "torch":
        return _kmeans_torch(x, k, seed, max_iter, device)
    return _DISPATCH[chosen](x, k, seed, max_iter)


# --------------------------------------------------------------------------- segmented Lloyd (torch)
def _segmented_lloyd(
    blocks: Sequence[np.ndarray],
    k: int,
    *,
    seed: int,
    max_iter: int,
    device: str | None = None,
    chunk_rows: int = 16384,
) -> list[KMeansResult]:
    """Run Lloyd's k-means on every block at once.

    Rows of all blocks are concatenated; ``seg`` maps a row to its problem. Each problem has
    ``k_p = min(k, n_p)`` centres (slots beyond ``k_p`` are masked with +inf distance).
    Initialisation is k-means++ advanced for all problems together: one D^2-weighted draw per
    problem per step via a global cumulative sum and ``searchsorted``.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    sizes = np.array([b.shape[0] for b in blocks], dtype=np.int64)
    n_prob = len(blocks)
    d = blocks[0].shape[1]
    x = torch.from_numpy(np.ascontiguousarray(np.concatenate(blocks, axis=0), dtype=np.float32)).to(dev)
    starts_np = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    starts = torch.from_numpy(starts_np).to(dev)
    sizes_t = torch.from_numpy(sizes).to(dev)
    seg = torch.repeat_interleave(torch.arange(n_prob, device=dev), sizes_t)
    k_p = torch.clamp(sizes_t, max=k)  # centres per problem
    slot_ok = torch.arange(k, device=dev)[None, :] < k_p[:, None]  # (P, k)
    x_sq = (x * x).sum(1)

    def sq_dist_to(centers: torch.Tensor) -> torch.Tensor:
        """(N, k) squared distances of each row to its own problem's centres, in row chunks."""
        out = torch.empty((x.shape[0], k), dtype=torch.float32, device=dev)
        for s in range(0, x.shape[0], chunk_rows):
            e = min(s + chunk_rows, x.shape[0])
            c = centers[seg[s:e]]  # (b, k, d)
            dots = torch.bmm(c, x[s:e, :, None])[:, :, 0]
            out[s:e] = (x_sq[s:e, None] - 2 * dots + (c * c).sum(2)).clamp_min_(0)
        out.masked_fill_(~slot_ok[seg], float("inf"))
        return out

    # ---- greedy k-means++ initialisation (as scikit-learn: 2 + ln k candidates per step,
    # keep the one that lowers the potential most), all problems together
    n_trials = 2 + int(np.log(k))
    centers = torch.zeros((n_prob, k, d), dtype=torch.float32, device=dev)
    ends = starts + sizes_t - 1
    u = torch.rand(n_prob, generator=gen, dtype=torch.float64).to(dev)
    first = starts + torch.clamp((u * sizes_t).long(), max=sizes_t - 1)
    centers[:, 0] = x[first]
    closest = ((x - centers[seg, 0]) ** 2).sum(1).double()
    for step in range(1, k):
        cs = torch.cumsum(closest, 0)
        base = torch.where(starts > 0, cs[(starts - 1).clamp_min(0)], torch.zeros((), dtype=cs.dtype, device=dev))
        total = cs[ends] - base
        u = torch.rand((n_prob, n_trials), generator=gen, dtype=torch.float64).to(dev)
        pick = torch.searchsorted(cs, base[:, None] + u * total[:, None], right=True)
        pick = torch.minimum(torch.maximum(pick, starts[:, None]), ends[:, None])
        # All rows of a problem coincide with chosen centres (duplicates): draw uniformly.
        uniform = starts[:, None] + torch.minimum((u * sizes_t[:, None]).long(), sizes_t[:, None] - 1)
        pick = torch.where(total[:, None] > 0, pick, uniform)  # (P, L)
        cand = x[pick]  # (P, L, d)
        cand_d = torch.empty((x.shape[0], n_trials), dtype=torch.float64, device=dev)
        for s in range(0, x.shape[0], chunk_rows):
            e = min(s + chunk_rows, x.shape[0])
            cand_d[s:e] = ((x[s:e, None, :] - cand[seg[s:e]]) ** 2).sum(2).double()
        cand_d = torch.minimum(cand_d, closest[:, None])
        potential = torch.zeros((n_prob, n_trials), dtype=torch.float64, device=dev).index_add_(0, seg, cand_d)
        best = potential.argmin(1)  # first minimum: deterministic
        centers[:, step] = cand[torch.arange(n_prob, device=dev), best]
        closest = cand_d.gather(1, best[seg][:, None])[:, 0]

    # ---- Lloyd iterations
    labels = None
    for _ in range(max_iter):
        dist = sq_dist_to(centers)
        new_labels = dist.argmin(1)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        gid = seg * k + labels
        sums = torch.zeros((n_prob * k, d), dtype=torch.float64, device=dev)
        sums.index_add_(0, gid, x.double())
        counts = torch.bincount(gid, minlength=n_prob * k).double()
        nonempty = counts > 0
        flat = centers.reshape(n_prob * k, d)
        # Empty clusters keep their previous centre.
        flat = torch.where(nonempty[:, None], (sums / counts.clamp_min(1)[:, None]).float(), flat)
        centers = flat.reshape(n_prob, k, d)
    dist = sq_dist_to(centers)
    labels = dist.argmin(1)
    best = dist.gather(1, labels[:, None])[:, 0].double()
    inertia = torch.zeros(n_prob, dtype=torch.float64, device=dev).index_add_(0, seg, best)

    labels_np = labels.cpu().numpy().astype(np.int64)
    centers_np = centers.cpu().numpy()
    inertia_np = inertia.cpu().numpy()
    out = []
    for p in range(n_prob):
        s, n = int(starts_np[p]), int(sizes[p])
        out.append(
            KMeansResult(
                centers=centers_np[p, : min(k, n)].copy(),
                labels=labels_np[s : s + n].copy(),
                inertia=float(inertia_np[p]),
                backend="torch",
            )
        )
    return out


# --------------------------------------------------------------------------- many problems
def batched_kmeans(
    x: np.ndarray,
    groups: Sequence[np.ndarray],
    n_clusters: int,
    *,
    backend: str = "auto",
    seed: int = 0,
    max_iter: int = 25,
    n_jobs: int | None = None,
    device: str | None = None,
) -> list[KMeansResult]:
    """Solve one k-means problem per group of rows of ``x``.

    Parameters
    ----------
    x : array, shape (n, d)
        Finite features shared by all problems.
    groups : list of int arrays
        Row indices of each problem (a row may appear in several problems).
    n_clusters : int
    backend : {'auto', 'cuml', 'faiss', 'torch', 'sklearn'}, default='auto'
        - ``'torch'``: one segmented Lloyd advancing every problem together.
        - ``'faiss'``: a thread pool of ``n_jobs`` workers, each running faiss with one
          OpenMP thread (faiss releases the GIL).
        - ``'sklearn'`` / ``'cuml'``: problems run one after another.
    seed : int, default=0
        Problem ``i`` uses seed ``seed + i`` for the faiss/sklearn/cuml backends, so its result
        equals ``kmeans(x[groups[i]], ..., seed=seed + i)``. The torch backend draws all
        initialisations from one generator seeded with ``seed``.
    max_iter : int, default=25
    n_jobs : int, optional
        Threads for the faiss pool; default ``os.cpu_count()``.
    device : str, optional
        Torch backend device.

    Returns
    -------
    list of KMeansResult
        One per group, labels aligned with ``x[groups[i]]``.
    """
    x = as_features(x, name="x")
    k = check_positive_int(n_clusters, "n_clusters")
    check_positive_int(max_iter, "max_iter")
    chosen = resolve_backend(backend, batched=True)
    idx = []
    for i, g in enumerate(groups):
        g = np.asarray(g)
        if g.ndim != 1 or (g.size and not np.issubdtype(g.dtype, np.integer)):
            raise TypeError(f"groups[{i}] must be a 1-D integer index array")
        if g.size and (g.min() < 0 or g.max() >= x.shape[0]):
            raise ValueError(f"groups[{i}] has indices outside [0, {x.shape[0]})")
        idx.append(g.astype(np.int64))
    results: list[KMeansResult | None] = [None] * len(idx)
    todo = []
    for i, g in enumerate(idx):
        if g.size <= k:  # trivial or empty problem: every row its own cluster
            results[i] = _trivial(x[g])
        else:
            todo.append(i)
    if not todo:
        return results  # type: ignore[return-value]

    if chosen == "torch":
        solved = _segmented_lloyd([x[idx[i]] for i in todo], k, seed=seed, max_iter=max_iter, device=device)
        for i, r in zip(todo, solved):
            results[i] = r
    elif chosen == "faiss":
        workers = n_jobs or os.cpu_count() or 1
        xf = np.ascontiguousarray(x, dtype=np.float32)

        def job(i: int) -> KMeansResult:
            with faiss_threads(1):
                return _kmeans_faiss(xf[idx[i]], k, seed + i, max_iter)

        if workers == 1:
            solved = [job(i) for i in todo]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                solved = list(pool.map(job, todo))
        for i, r in zip(todo, solved):
            results[i] = r
    else:
        fn = _DISPATCH[chosen]
        for i in todo:
            results[i] = fn(x[idx[i]], k, seed + i, max_iter)
    return results  # type: ignore[return-value]
