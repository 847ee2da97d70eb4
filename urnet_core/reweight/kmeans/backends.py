"""One k-means problem per call, on the backend chosen by :func:`resolve_backend` (conventions in the package docstring)."""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Callable, Iterator

import numpy as np

from urnet_core.reweight.kmeans.lloyd import segmented_lloyd
from urnet_core.reweight.kmeans.result import KMeansResult, is_cupy_array
from urnet_core.utils.validation import as_features, check_option, check_positive_int

logger = logging.getLogger("urnet_core.reweight.kmeans")  # the package's name: one logger for both modules

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

#: Below this many values (rows x d) per problem, batched faiss problems run in the calling thread.
SMALL_PROBLEM_WORK = 1 << 17
BACKENDS = ("auto", "cuml", "cuml_dask", "faiss", "torch", "sklearn")
_LOGGED: set[str] = set()




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
    if backend == "cuml_dask" and not (_has_cuml_dask() and _cuda_available()):
        raise ValueError(
            "backend='cuml_dask' needs RAPIDS cuML with dask (cuml.dask, dask_cuda) and a CUDA GPU; "
            "install urnet_core[gpu] plus dask-cuda, or pick another"
        )
    if backend == "faiss" and not HAS_FAISS:
        raise ValueError("backend='faiss' needs the faiss-cpu package; pip install faiss-cpu or pick another")
    return backend


def _has_cuml_dask() -> bool:
    try:
        import cuml.dask.cluster  # noqa: F401
        import dask_cuda  # noqa: F401
    except Exception:  # ImportError or CUDA errors while importing
        return False
    return True


def _as_cupy_features(x):  # pragma: no cover - GPU
    """Validate a CuPy (n, d) array on the device; float32, NaN/inf rows raise."""
    import cupy as cp

    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (n, d), got shape {x.shape}")
    x = x.astype(cp.float32, copy=False)
    bad = cp.flatnonzero(~cp.isfinite(x).all(axis=1))
    if bad.size:
        raise ValueError(f"x contain NaN or inf in {int(bad.size)} row(s), first at row {int(bad[0])}")
    return x


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
    """Greedy k-means++ centres of ``x`` (float32, ``n > k``), as scikit-learn draws them.

    Squared distances use ``|x|^2 - 2 x.c + |c|^2`` with one matrix product per step for all
    candidates (float32 BLAS, as scikit-learn on float32 data), clipped at 0; the running
    minimum and the candidate choice are summed in float64.
    """
    n_trials = 2 + int(np.log(k))
    xf = np.ascontiguousarray(x, dtype=np.float32)
    x_sq = np.einsum("ij,ij->i", xf, xf)

    def sq_dist(rows: np.ndarray) -> np.ndarray:  # (len(rows), n) float64
        c = xf[rows]
        # (x c^T)^T, not c x^T: the same float32 values (OpenBLAS computes each dot product in
        # the same order; tests/test_kmeans.py checks it) at 2-3x the speed for these few rows.
        d = x_sq[None, :] - 2.0 * (xf @ c.T).T + x_sq[rows][:, None]
        return np.maximum(d, 0.0, out=d).astype(np.float64)

    chosen = [int(rng.integers(xf.shape[0]))]
    closest = sq_dist(np.array(chosen))[0]
    for _ in range(1, k):
        total = closest.sum()
        if total > 0:
            cand = np.searchsorted(np.cumsum(closest), rng.random(n_trials) * total, side="right")
            cand = np.minimum(cand, xf.shape[0] - 1)
        else:  # every row coincides with a chosen centre (duplicates)
            cand = rng.integers(xf.shape[0], size=n_trials)
        d = np.minimum(sq_dist(cand), closest[None, :])
        best = int(np.argmin(d.sum(1)))
        chosen.append(int(cand[best]))
        closest = d[best]
    return xf[np.array(chosen)].copy()


#: Rows per centroid a faiss problem trains on (faiss's ``max_points_per_centroid``).
TRAIN_POINTS_PER_CENTROID = 256


def training_subsample(n: int, k: int, seed: int) -> tuple[np.ndarray | None, np.random.Generator]:
    """Positions (sorted) of the rows a faiss problem of ``n`` rows trains on, and the generator after the draw.

    ``None`` means every row (``n <= 256 k``); else ``256 k`` positions drawn without
    replacement by ``np.random.default_rng(seed)``. The returned generator then seeds the
    k-means++ initialisation, exactly as :func:`kmeans` with ``backend='faiss'`` does.
    """
    rng = np.random.default_rng(seed)
    cap = TRAIN_POINTS_PER_CENTROID * k
    if n <= cap:
        return None, rng
    return np.sort(rng.choice(n, cap, replace=False)), rng


def faiss_train(sub: np.ndarray, k: int, seed: int, max_iter: int, rng: np.random.Generator) -> np.ndarray:
    """Centroids ``(k, d)`` float32 of faiss k-means on ``sub`` (``k < len(sub)``), k-means++ seeded from ``rng``.

    ``sub`` is the training set (at most ``256 k`` rows from :func:`training_subsample`, so
    faiss subsamples nothing itself); assigning rows is left to the caller.
    """
    sub = np.ascontiguousarray(sub, dtype=np.float32)
    # faiss initialises from random rows (one run), which often puts two centres in one
    # cluster; seed it with greedy k-means++ on the rows it trains on.
    centers, _ = faiss_fit(sub, _kmeanspp(sub, k, rng), seed, max_iter)
    return centers


def faiss_fit(x: np.ndarray, init: np.ndarray, seed: int, max_iter: int):
    """faiss k-means on the float32 rows ``x`` from the centres ``init`` (k, d): (centres (k, d), trained index).

    ``faiss.Clustering`` directly, not the ``faiss.Kmeans`` wrapper: the wrapper copies every
    iteration's statistics into Python dicts, which costs as much as the clustering itself on
    the many small class problems here. faiss trains on at most
    :data:`TRAIN_POINTS_PER_CENTROID` rows per centre (its own draw, ``seed``, beyond that);
    ``min_points_per_centroid=1`` only silences faiss's "please provide at least 39*k points"
    warning: small class problems are expected. The index holds the final centres.
    """
    k, d = init.shape
    params = faiss.ClusteringParameters()
    params.niter = int(max_iter)
    params.seed = int(seed)
    params.max_points_per_centroid = TRAIN_POINTS_PER_CENTROID
    params.min_points_per_centroid = 1
    params.verbose = False
    clus = faiss.Clustering(d, k, params)
    faiss.copy_array_to_vector(np.ascontiguousarray(init, dtype=np.float32).ravel(), clus.centroids)
    index = faiss.IndexFlatL2(d)
    clus.train(x, index)
    centers = np.asarray(faiss.vector_float_to_array(clus.centroids).reshape(k, d), dtype=np.float32).copy()
    return centers, index


def nearest_centroid(x, centers) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) of every row: ``argmax(x c - |c|^2 / 2)``.

    ``x`` (m, d) and ``centers`` (..., k, d) as float32 torch tensors or arrays; ``centers`` of shape
    (P, k, d) stacks P problems' centres and returns (m, P) indices, one per problem. Each row's
    result depends only on that row and the centres (one matrix product, first index on ties), so
    assigning a row inside one stacked pass equals assigning it in its problem alone.
    """
    import torch

    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ct = centers if isinstance(centers, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(centers, dtype=np.float32))
    stacked = ct.ndim == 3
    c2 = ct.reshape(-1, ct.shape[-1])
    scores = xt @ c2.T - 0.5 * (c2 * c2).sum(1)
    k = ct.shape[-2]
    out = scores.view(xt.shape[0], -1, k).argmax(2)
    return out.numpy() if stacked else out[:, 0].numpy()


def _kmeans_faiss(x: np.ndarray, k: int, seed: int, max_iter: int) -> KMeansResult:
    xf = np.ascontiguousarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    # k-means++ on the same-size subsample faiss trains on (faiss draws its own 256 k rows below).
    sub = xf if xf.shape[0] <= 256 * k else xf[np.sort(rng.choice(xf.shape[0], 256 * k, replace=False))]
    centers, index = faiss_fit(xf, _kmeanspp(sub, k, rng), seed, max_iter)
    dist, idx = index.search(xf, 1)
    # faiss's objective is measured on the training subsample; report the inertia of all rows.
    return KMeansResult(
        centers=centers,
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


def _kmeans_cuml(x, k: int, seed: int, max_iter: int) -> KMeansResult:  # pragma: no cover - GPU
    # CuPy input stays on the device; numpy input is copied once by cuML.
    data = x if is_cupy_array(x) else np.ascontiguousarray(x, dtype=np.float32)
    km = _CumlKMeans(
        n_clusters=k, max_iter=max_iter, random_state=seed, init="scalable-k-means++", output_type="numpy"
    ).fit(data)
    return KMeansResult(
        centers=np.asarray(km.cluster_centers_, dtype=np.float32),
        labels=np.asarray(km.labels_).astype(np.int64),
        inertia=float(km.inertia_),
        backend="cuml",
    )


def _kmeans_cuml_dask(x, k: int, seed: int, max_iter: int, client=None) -> KMeansResult:  # pragma: no cover - GPU
    """One problem on every GPU of a Dask cluster (``cuml.dask.cluster.KMeans``).

    Rows are split into one block per worker (CuPy-backed Dask array); only the centroids
    travel between workers each iteration. ``score`` is minus the inertia (scikit-learn's
    convention). Cluster labels are computed on the workers and gathered to the host.
    """
    import cupy as cp
    import dask.array as da
    from cuml.dask.cluster import KMeans as DaskKMeans

    own_cluster = None
    if client is None:
        from dask.distributed import default_client

        try:
            client = default_client()
        except ValueError:  # no active client: start one worker per local GPU for this call
            from dask.distributed import Client
            from dask_cuda import LocalCUDACluster

            own_cluster = LocalCUDACluster()
            client = Client(own_cluster)
    try:
        n_workers = max(1, len(client.scheduler_info()["workers"]))
        host = cp.asnumpy(x) if is_cupy_array(x) else np.ascontiguousarray(x, dtype=np.float32)
        chunk = -(-host.shape[0] // n_workers)
        dx = da.from_array(host, chunks=(chunk, host.shape[1])).map_blocks(cp.asarray, dtype=np.float32)
        dx = client.persist(dx)
        model = DaskKMeans(client=client, n_clusters=k, max_iter=max_iter, random_state=seed,
                           init="scalable-k-means++")
        model.fit(dx)
        labels = cp.asnumpy(model.predict(dx).compute()).astype(np.int64)
        inertia = abs(float(model.score(dx)))
        centers = model.get_combined_model().cluster_centers_
        centers = cp.asnumpy(centers) if is_cupy_array(centers) else np.asarray(centers)
    finally:
        if own_cluster is not None:
            client.close()
            own_cluster.close()
    return KMeansResult(centers=centers.astype(np.float32), labels=labels, inertia=inertia, backend="cuml_dask")


def _kmeans_torch(x, k: int, seed: int, max_iter: int, device: str | None = None) -> KMeansResult:
    if is_cupy_array(x):  # pragma: no cover - GPU: hand the device buffer to torch via DLPack
        return segmented_lloyd([x], k, seed=seed, max_iter=max_iter, device=device or "cuda")[0]
    return segmented_lloyd([np.asarray(x)], k, seed=seed, max_iter=max_iter, device=device)[0]


_DISPATCH: dict[str, Callable[..., KMeansResult]] = {
    "faiss": _kmeans_faiss,
    "sklearn": _kmeans_sklearn,
    "cuml": _kmeans_cuml,
    "torch": _kmeans_torch,
    "cuml_dask": _kmeans_cuml_dask,
}


def kmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    backend: str = "auto",
    seed: int = 0,
    max_iter: int = 25,
    device: str | None = None,
    client=None,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``n_clusters`` groups.

    Parameters
    ----------
    x : array, shape (n, d)
        Finite features (NaN/inf raise ``ValueError`` naming the first bad row). A CuPy array
        stays on the GPU for the ``cuml``/``torch`` backends (``auto`` then picks ``cuml``).
    n_clusters : int
        ``k``. When ``n <= k`` every row is its own cluster.
    backend : {'auto', 'cuml', 'cuml_dask', 'faiss', 'torch', 'sklearn'}, default='auto'
        See the module docstring.
    seed : int, default=0
        Fixes the initialisation (bit-reproducible on CPU).
    max_iter : int, default=25
        Lloyd iterations (faiss: ``niter``).
    device : str, optional
        Torch backend only: ``"cpu"``/``"cuda"``; default CUDA when available.
    client : dask.distributed.Client, optional
        ``cuml_dask`` backend only (see the module docstring).

    Returns
    -------
    KMeansResult

    Examples
    --------
    Several GPUs, one large problem (documented; needs RAPIDS + dask_cuda)::

        from dask.distributed import Client
        from dask_cuda import LocalCUDACluster
        client = Client(LocalCUDACluster())          # one worker per GPU
        res = kmeans(x, 5, backend="cuml_dask", client=client)
    """
    k = check_positive_int(n_clusters, "n_clusters")
    check_positive_int(max_iter, "max_iter")
    if is_cupy_array(x):  # pragma: no cover - GPU
        x = _as_cupy_features(x)
        chosen = "cuml" if backend == "auto" and HAS_CUML else ("torch" if backend == "auto" else backend)
        chosen = resolve_backend(chosen)
        if x.shape[0] <= k:
            import cupy as cp

            return _trivial(cp.asnumpy(x))
        if chosen in ("faiss", "sklearn"):
            import cupy as cp

            x = cp.asnumpy(x)
    else:
        x = as_features(x, name="x")
        chosen = resolve_backend(backend)
        if x.shape[0] <= k:
            return _trivial(x)
        if x.dtype != np.float32 and chosen != "sklearn":
            x = x.astype(np.float32)  # float16 / float64 storage: the fast backends compute in float32
    if chosen == "torch":
        return _kmeans_torch(x, k, seed, max_iter, device)
    if chosen == "cuml_dask":
        return _kmeans_cuml_dask(x, k, seed, max_iter, client)
    return _DISPATCH[chosen](x, k, seed, max_iter)


# --------------------------------------------------------------------------- segmented Lloyd (torch)
