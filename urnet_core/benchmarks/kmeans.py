"""Section ``kmeans`` of ``urnet bench``: every k-means backend on the cluster-reweighting workload.

The workload is that of :func:`~urnet_core.reweight.cluster_weight.cluster_weights` (per class:
its rows plus its 4 most confused classes, ``k = 5``), scheduled in blocks by
:func:`~urnet_core.reweight.cluster.schedule_problems` exactly as the cluster step does,
and run by every backend on the same blocks. scikit-learn (and any backend given a problem cap)
runs on a fixed random subset of the problems and its time is extrapolated linearly in the
problems' rows (``t_all = t_subset * rows_all / rows_subset``); the column ``measured_on`` says
so. Inertia is compared with scikit-learn's on that same subset.

Besides the backends, ``sklearn_sub`` (scikit-learn trained on the same subsample faiss trains
on, then every row assigned) and ``faiss_onepass`` (faiss on that subsample, as the one-pass
cluster step), so the faiss/scikit-learn ratio is reported both against Lloyd on every row and
against the same subsample; inertia is always over every row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from urnet_core.benchmarks.data import SyntheticData
from urnet_core.benchmarks.fit import fit_exponent


def read_rows(features: np.ndarray, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """``features[rows]`` (rows sorted) as float32, read ``chunk_rows`` at a time.

    The block read of the cluster step (not timed here: every backend gets the same block).
    The synthetic features are finite by construction, so no NaN/inf check.
    """
    out = np.empty((rows.size, features.shape[1]), dtype=np.float32)
    for start in range(0, rows.size, chunk_rows):
        out[start : start + chunk_rows] = features[rows[start : start + chunk_rows]]
    return out


@dataclass
class KMeansWorkload:
    """The cluster-reweighting k-means problems of one data set, in blocks (as ``cluster_weights``)."""

    pools: dict[int, np.ndarray]
    by_class: list[np.ndarray]
    blocks: list[list[int]]
    problem_rows: dict[int, int]

    @property
    def n_problems(self) -> int:
        return len(self.pools)

    @property
    def total_rows(self) -> int:
        return int(sum(self.problem_rows.values()))


def kmeans_workload(labels: np.ndarray, predictions: np.ndarray, num_classes: int, d: int, *, top_k: int = 4,
                    max_block_bytes: int | None = None) -> KMeansWorkload:
    """The per-class problems (class + its ``top_k`` most confused classes) and their block schedule."""
    from urnet_core.reweight.cluster import confusion_matrix

    conf = confusion_matrix(labels, predictions, num_classes)
    return workload_from_confusion(labels, conf, d, top_k=top_k, max_block_bytes=max_block_bytes)


def workload_from_confusion(labels: np.ndarray, confusion: np.ndarray, d: int, *, top_k: int = 4,
                            max_block_bytes: int | None = None) -> KMeansWorkload:
    """:func:`kmeans_workload` from a ``(C, C)`` confusion matrix: the problems of
    :func:`~urnet_core.reweight.cluster_weight.cluster_weights` (its public
    ``most_confused``, ``class_rows`` and ``schedule_problems``), blocks of ``max_block_bytes``."""
    from urnet_core.reweight.cluster import DEFAULT_BLOCK_BYTES, class_rows, most_confused, schedule_problems

    num_classes = confusion.shape[0]
    partners = most_confused(confusion, top_k)
    by_class = class_rows(labels, num_classes)
    sizes = np.array([r.size for r in by_class], dtype=np.int64)
    present = [j for j in range(num_classes) if sizes[j]]
    pools = {j: np.concatenate([[j], partners[j]]).astype(np.int64) for j in present}
    max_rows = max(1, (max_block_bytes or DEFAULT_BLOCK_BYTES) // (4 * d))
    blocks = schedule_problems(pools, sizes, max_rows=max_rows)
    problem_rows = {j: int(sizes[pools[j]].sum()) for j in present}
    return KMeansWorkload(pools, by_class, blocks, problem_rows)


#: Bench-only names of k-means runs that are not a CPU backend: torch's batched Lloyd on the GPU.
GPU_ITEMS = ("torch_cuda", "cuml")


def backend_and_device(name: str) -> tuple[str, str | None]:
    """Bench item name -> (:func:`~urnet_core.reweight.kmeans.batched_kmeans` backend, torch device)."""
    if name == "torch_cuda":
        return "torch", "cuda"
    return name, ("cpu" if name == "torch" else None)


def available_backends() -> list[str]:
    """k-means backends to compare here: sklearn, faiss (if installed), torch (CPU), and with a CUDA
    GPU torch_cuda (the batched torch backend on the GPU) and cuml (when RAPIDS is installed)."""
    import torch

    from urnet_core.reweight import kmeans as km

    names = ["sklearn", "sklearn_sub"]
    if km.HAS_FAISS:
        names += ["faiss", "faiss_onepass"]
    names.append("torch")
    if torch.cuda.is_available():
        names.append("torch_cuda")
        if km.HAS_CUML:
            names.append("cuml")
    return names


def warm_up_backends(backends: Iterable[str], d: int) -> None:
    """One tiny solve per backend, so imports and thread pools are not timed."""
    from urnet_core.reweight.kmeans import batched_kmeans

    x = np.random.default_rng(0).standard_normal((200, d)).astype(np.float32)
    for name in backends:
        if name in SUBSAMPLE_ITEMS:
            subsample_kmeans(name, x, [np.arange(100), np.arange(100, 200)], 5, [0, 1])
            continue
        backend, device = backend_and_device(name)
        batched_kmeans(x, [np.arange(100), np.arange(100, 200)], 5, backend=backend, device=device)


#: k-means rows trained on the subsample faiss trains on (at most 256 k rows per problem, drawn as
#: :func:`~urnet_core.reweight.kmeans.training_subsample`), every row then assigned to its nearest centre:
#: ``sklearn_sub`` (scikit-learn's Lloyd) and ``faiss_onepass`` (faiss, as the one-pass cluster step).
SUBSAMPLE_ITEMS = ("sklearn_sub", "faiss_onepass")


def subsample_kmeans(item: str, xb: np.ndarray, groups: Sequence[np.ndarray], k: int, seeds: Sequence[int],
                      max_iter: int = 25) -> tuple[list[np.ndarray | None], float]:
    """Centres of every problem trained on its faiss subsample, and the seconds (training + assigning all rows)."""
    import warnings as _w

    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    from urnet_core.reweight.kmeans import faiss_threads, faiss_train, nearest_centroid, training_subsample

    import torch

    out: list[np.ndarray | None] = []
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small product per problem: intra-op threads only wait on each other
    t0 = time.perf_counter()
    for g, seed in zip(groups, seeds):
        xp = xb[g]
        if xp.shape[0] <= k:
            out.append(None)
            continue
        pos, rng = training_subsample(xp.shape[0], k, seed)
        sub = xp if pos is None else xp[pos]
        if item == "sklearn_sub":
            with _w.catch_warnings():
                _w.simplefilter("ignore", ConvergenceWarning)
                cen = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed,
                             init="k-means++").fit(sub).cluster_centers_.astype(np.float32)
        else:
            with faiss_threads(1):
                cen = faiss_train(sub, k, seed, max_iter, rng)
        nearest_centroid(xp, cen)  # assign every row (timed: part of the work)
        out.append(cen)
    seconds = time.perf_counter() - t0
    torch.set_num_threads(old_threads)
    return out, seconds


def kmeans_section(data: SyntheticData, *, backends: Sequence[str], max_problems: dict[str, int],
                   seed: int = 0, n_clusters: int = 5, progress: bool = True) -> list[dict[str, Any]]:
    """Time every backend on the cluster-reweighting workload of ``data``; one row per backend.

    Parameters
    ----------
    data : SyntheticData
    backends : list of str
        Must include ``"sklearn"`` (the reference).
    max_problems : dict backend -> int
        Backends listed here run only on a fixed random subset of that many problems (the same
        subset for all of them, seeded), and their time is extrapolated by rows.
    """
    from tqdm.auto import tqdm

    from urnet_core.reweight.kmeans import batched_kmeans, nearest_centroid

    if "sklearn" not in backends:
        raise ValueError("the k-means section needs 'sklearn' as the reference backend")
    size = data.size
    features, labels, preds, _ = data.load()
    work = kmeans_workload(labels, preds, size.c, size.d)
    classes = sorted(work.pools)
    cap = max(max_problems.values()) if max_problems else 0
    rng = np.random.default_rng([seed, 7])
    subset = set(int(j) for j in rng.choice(classes, size=min(cap, len(classes)), replace=False)) if cap else set()
    # every capped backend measures the same problems: the first max_problems[b] of one permutation
    order = [j for j in rng.permutation(classes) if int(j) in subset] if cap else []
    chosen = {b: set(int(j) for j in order[: max_problems[b]]) for b in backends if b in max_problems}
    compare = set.intersection(*chosen.values()) if chosen else set(classes)
    seeds = {j: seed + i for i, j in enumerate(classes)}
    seconds = {b: 0.0 for b in backends}
    rows_done = {b: 0 for b in backends}
    problems_done = {b: 0 for b in backends}
    inertia = {b: {} for b in backends}
    warm_up_backends(backends, size.d)
    chunk_rows = max(1, (64 << 20) // (4 * size.d))
    for block in tqdm(work.blocks, desc=f"k-means {size}", disable=not progress, leave=False):
        cls = np.unique(np.concatenate([work.pools[j] for j in block]))
        rows = np.sort(np.concatenate([work.by_class[t] for t in cls]))
        xb = read_rows(features, rows, chunk_rows)
        local = {j: np.searchsorted(rows, np.sort(np.concatenate([work.by_class[t] for t in work.pools[j]])))
                 for j in block}
        for b in backends:
            todo = [j for j in block if b not in chosen or j in chosen[b]]
            if not todo:
                continue
            if b in SUBSAMPLE_ITEMS:
                centres, dt = subsample_kmeans(b, xb, [local[j] for j in todo], n_clusters,
                                                [seeds[j] for j in todo])
                seconds[b] += dt
                rows_done[b] += int(sum(local[j].size for j in todo))
                problems_done[b] += len(todo)
                for j, cen in zip(todo, centres):
                    if j in compare:  # inertia of every row of the problem (not timed)
                        xp = xb[local[j]]
                        inertia[b][j] = 0.0 if cen is None else float(
                            ((xp - cen[nearest_centroid(xp, cen)]) ** 2).sum(dtype=np.float64))
                continue
            backend, device = backend_and_device(b)
            t0 = time.perf_counter()
            res = batched_kmeans(xb, [local[j] for j in todo], n_clusters, backend=backend,
                                 seeds=[seeds[j] for j in todo], device=device)
            seconds[b] += time.perf_counter() - t0  # results come back as numpy: GPU work is finished
            rows_done[b] += int(sum(local[j].size for j in todo))
            problems_done[b] += len(todo)
            for j, r in zip(todo, res):
                if j in compare:
                    inertia[b][j] = r.inertia
        del xb
    total_rows = work.total_rows
    ref_inertia = sum(inertia["sklearn"].values())
    ref_seconds = seconds["sklearn"] * total_rows / max(rows_done["sklearn"], 1)
    sub_seconds = (seconds["sklearn_sub"] * total_rows / max(rows_done["sklearn_sub"], 1)
                   if "sklearn_sub" in seconds and rows_done["sklearn_sub"] else float("nan"))
    out = []
    for b in backends:
        full = problems_done[b] == work.n_problems
        est = seconds[b] if full else seconds[b] * total_rows / max(rows_done[b], 1)
        rel = sum(inertia[b].values()) / ref_inertia if ref_inertia > 0 else float("nan")
        out.append({
            "section": "kmeans", "item": b, "N": size.n, "C": size.c, "D": size.d, "seconds": est,
            "speedup_vs_sklearn": ref_seconds / est if est > 0 else float("nan"),
            "speedup_vs_sklearn_sub": sub_seconds / est if est > 0 else float("nan"),
            "inertia_vs_sklearn": rel,
            "measured_on": f"{problems_done[b]} of {work.n_problems} problems",
            "note": ("all problems" if full else
                     f"extrapolated: {seconds[b]:.3g}s on {rows_done[b]:,} of {total_rows:,} rows, x rows ratio")
                    + f"; inertia on {len(compare)} shared problems",
        })
    return out


def add_kmeans_exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``exponent`` of k-means rows: fitted over N per (backend, C, D) series with >= 2 N."""
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("section") == "kmeans":
            series.setdefault((r["item"], r["C"], r["D"]), []).append(r)
    for items in series.values():
        if len({r["N"] for r in items}) >= 2 and all(r["seconds"] > 0 for r in items):
            b, _ = fit_exponent([r["N"] for r in items], [r["seconds"] for r in items])
            for r in items:
                r["exponent"] = b
    return rows


def problem_rows(data: SyntheticData, top_k: int = 4) -> list[int]:
    """Rows of every cluster problem of ``data`` (class + its ``top_k`` most confused), for the projection."""
    _, labels, preds, _ = data.load()
    work = kmeans_workload(labels, preds, data.size.c, data.size.d, top_k=top_k)
    return [int(v) for v in work.problem_rows.values()]


# --------------------------------------------------------------------------- a study's own data (notebook 04)
def cluster_problems(labels: Any, confusion: Any, *, top_k: int = 4) -> list[np.ndarray]:
    """Row indices of each class's k-means problem (the class plus its ``top_k`` most confused),
    sorted, in class order: the problems of :func:`workload_from_confusion`, for timing the
    k-means backends on a study's data (notebook 04)."""
    from urnet_core.utils.validation import as_labels

    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    labels = as_labels(labels, num_classes=m.shape[0])
    work = workload_from_confusion(labels, m, 1, top_k=top_k)
    return [np.sort(np.concatenate([work.by_class[t] for t in work.pools[j]])) for j in sorted(work.pools)]


def available_kmeans_backends() -> list[str]:
    """Concrete k-means backends usable on this machine (cuML only with CUDA)."""
    from urnet_core.reweight.kmeans import BACKENDS, resolve_backend

    out = []
    for name in BACKENDS:
        if name == "auto":
            continue
        try:
            resolve_backend(name, batched=True)
        except ValueError:
            continue
        out.append(name)
    return out


def time_kmeans_backends(features: Any, problems: Sequence[np.ndarray], n_clusters: int = 5, *,
                         backends: Sequence[str] | None = None, repeats: int = 3, seed: int = 0,
                         n_jobs: int | None = None, timer: Callable[[], float] = time.perf_counter) -> pd.DataFrame:
    """Wall-clock time of :func:`urnet_core.reweight.kmeans.batched_kmeans` per backend on ``problems``.

    Each backend runs once untimed (warm-up: imports, CUDA context), then ``repeats`` timed
    runs; the table reports the median and the minimum, and the mean inertia (to check the
    backends solve the problem equally well).

    Returns
    -------
    DataFrame: ``backend``, ``seconds`` (median), ``min_seconds``, ``problems``, ``rows``
    (total rows over problems), ``mean_inertia``.
    """
    from urnet_core.reweight.kmeans import batched_kmeans
    from urnet_core.utils.validation import as_features, check_positive_int

    x = as_features(features)
    repeats = check_positive_int(repeats, "repeats")
    names = list(backends) if backends is not None else available_kmeans_backends()
    rows = []
    for name in names:
        batched_kmeans(x, problems, n_clusters, backend=name, seed=seed, n_jobs=n_jobs)
        times = []
        for _ in range(repeats):
            t0 = timer()
            res = batched_kmeans(x, problems, n_clusters, backend=name, seed=seed, n_jobs=n_jobs)
            times.append(timer() - t0)
        rows.append({"backend": name, "seconds": float(np.median(times)), "min_seconds": float(np.min(times)),
                     "problems": len(problems), "rows": int(sum(len(p) for p in problems)),
                     "mean_inertia": float(np.mean([r.inertia for r in res])) if res else float("nan")})
    return pd.DataFrame(rows)
