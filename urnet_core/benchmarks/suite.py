"""Scale benchmarks of the URNet weighting pipeline (``urnet bench``).

Every number comes from one run on this machine, all rows measured side by side, on
synthetic data shaped like web data (no real dataset at WebVision scale is available here):

- **features**: a Gaussian mixture, written once as a float16 ``.npy`` memory map in a cache
  folder keyed by a hash of the parameters (reruns reuse it). Class sizes follow an
  exponential long tail (largest / smallest = ``imbalance``, 100 by default, as WebVision's
  head and tail); classes come in groups of ``group_size`` (5) whose centres sit close to a
  shared group centre (confusable classes, challenge C2), and each class has ``modes`` (3)
  sub-centres (intra-class diversity). Rows are stored ordered by class, as features
  extracted from WebVision's class-sorted file lists are.
- **predictions**: a baseline that is right with probability ``accuracy`` (0.7), confuses a
  class with another of its group with probability ``within_group`` (0.25), else predicts a
  random class. Stored as predicted class ids (``(n,)`` int64 memory map): the dense
  ``(n, C)`` probabilities are 320 GB at 16M x 5000 and the pipeline only needs the argmax.
- **label text vectors**: ``(C, 300)``, a group vector plus a class perturbation.

Sections (one table, column ``section``):

1. ``kmeans``: the cluster-reweighting workload (per class: its rows plus its 4 most
   confused classes, ``k = 5``), scheduled in blocks exactly as
   :func:`~urnet_core.reweight.cluster_weight.cluster_weights` does, run by every backend
   on the same blocks. scikit-learn (and any backend given a problem cap) runs on a fixed
   random subset of the problems and its time is extrapolated linearly in the problems'
   rows (``t_all = t_subset * rows_all / rows_subset``); the column ``measured_on`` says so.
   Inertia is compared with scikit-learn's on that same subset.
   Besides the backends, ``sklearn_sub`` (scikit-learn trained on the same subsample faiss
   trains on, then every row assigned) and ``faiss_onepass`` (faiss on that subsample, as the
   one-pass cluster step), so the faiss/scikit-learn ratio is reported both against Lloyd on
   every row and against the same subsample; inertia is always over every row.
2. ``pipeline``: ``urnet weights`` itself, end to end (``python -m urnet_core.cli -v weights``
   in a fresh process per run) on a parquet table, float16 or float32 feature memory maps,
   class-id or dense ``(n, C)`` probabilities, text vectors and a config with every strategy
   on (:func:`weights_variants`). Stage seconds are parsed from the child's log (``stage <name>
   took <s>s`` from :func:`~urnet_core.reweight.compose.compose_weights` and
   :func:`~urnet_core.utils.io.file_hash`), peak RSS is the child's own (:func:`run_weights_cli`).
   The 16M projection uses a model per stage (:func:`projection`).
3. ``train``: URNet's training step (sample weights, soft targets, bag branch) against plain
   cross entropy on the same backbone and batch, repeated (median and spread of the ratio).
4. ``data``: images/s decoded and transformed from PNG/JPEG files through
   :class:`~urnet_core.data.datasets.ImageFileDataset` and a ``DataLoader``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from urnet_core.utils.io import atomic_path, read_json, stable_hash, write_json, write_text

logger = logging.getLogger(__name__)

#: Bump when the synthetic data generator changes, so cached files are not reused.
DATA_VERSION = 1
#: Where the paper's setting sits: WebVision 2.0.
PROJECTION_N, PROJECTION_C, PROJECTION_D = 16_000_000, 5000, 256
#: Columns of the benchmark table, in order.
COLUMNS = (
    "section", "item", "N", "C", "D", "seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub", "inertia_vs_sklearn",
    "peak_rss_gb", "exponent", "ratio_vs_ce", "images_per_s", "workers", "measured_on", "note",
)
#: The targets of the "Scale" issue (name -> human-readable threshold).
TARGETS = {
    "projected_16m_minutes": "projected `urnet weights` time at 16M instances / 5000 classes / D=256 (float16) < 30 min",
    "cluster_16m": "cluster step at 16M x 5000 x 256 (float16) projected < 30 s and within 10x of one read pass",
    "peak_rss_gb": "peak RSS of `urnet weights` < 8 GB (measured)",
    "kmeans_speedup": "fastest CPU k-means >= 5x scikit-learn with inertia within 1% (vs all rows / vs the same subsample)",
    "train_overhead": "URNet training step <= 1.10x plain cross entropy (median over repetitions)",
}


# --------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Size:
    """One benchmark size: ``n`` instances, ``c`` classes, ``d`` feature dimensions."""

    n: int
    c: int
    d: int

    def __str__(self) -> str:
        return f"N={self.n:,} C={self.c} D={self.d}"


#: Train-section setups: (classes, backbone, image size, also time ``train()``). small_cnn at 28x28 is
#: the default study's backbone; resnet18 at 64x64 RGB stands for a WebVision-like backbone.
FULL_TRAIN_SETUPS = ((10, "small_cnn", 28, True), (5000, "small_cnn", 28, True), (5000, "resnet18", 64, False))
#: The setups a default run times (resnet18 steps x 5 repetitions cost ~10 min on 2 shared cores; pass
#: FULL_TRAIN_SETUPS to BenchSettings to include it).
DEFAULT_TRAIN_SETUPS = FULL_TRAIN_SETUPS[:2]
QUICK_TRAIN_SETUPS = FULL_TRAIN_SETUPS[:2]
QUICK_SIZES = (Size(20_000, 1000, 256), Size(100_000, 1000, 256))
#: The full grid, in run order: the paper's C (it feeds the 16M projection), the paper's D=2048 at the
#: largest N, then C=1000 (the pipeline at D=2048 runs last, see :func:`plan_tasks`).
FULL_SIZES = (
    tuple(Size(n, 5000, 256) for n in (100_000, 1_000_000, 4_000_000))
    + tuple(Size(n, 1000, 256) for n in (100_000, 1_000_000, 4_000_000))
)
#: Sizes of the k-means section in a full run (the section re-runs every backend on every problem).
FULL_KMEANS_SIZES = (Size(100_000, 5000, 256), Size(1_000_000, 5000, 256), Size(1_000_000, 1000, 256))


def _parse_count(text: str) -> int:
    value = float(text)
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(value)


def parse_sizes(text: str) -> list[Size]:
    """Parse ``"NxCxD,NxCxD"`` (numbers may be written ``1e6``) into sizes.

    Examples
    --------
    >>> parse_sizes("1e5x1000x256,2e4x100x64")
    [Size(n=100000, c=1000, d=256), Size(n=20000, c=100, d=64)]
    """
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = part.lower().split("x")
        if len(fields) != 3:
            raise ValueError(f"--sizes entry {part!r} must look like NxCxD, e.g. 1e6x5000x256")
        try:
            n, c, d = (_parse_count(f) for f in fields)
        except ValueError as exc:
            raise ValueError(f"--sizes entry {part!r}: {exc}") from None
        if c < 2 or n < c:
            raise ValueError(f"--sizes entry {part!r}: need C >= 2 and N >= C")
        sizes.append(Size(n, c, d))
    if not sizes:
        raise ValueError("--sizes is empty")
    return sizes


# --------------------------------------------------------------------------- synthetic data
def long_tail_sizes(n: int, c: int, *, imbalance: float = 100.0, seed: int = 0) -> np.ndarray:
    """Class sizes with an exponential long tail, summing to ``n`` (every class >= 1 when ``n >= c``).

    Size of the class of rank ``r`` is proportional to ``imbalance ** (-r / (c - 1))``, so the
    largest class is about ``imbalance`` times the smallest. Ranks are shuffled over class ids
    (with ``seed``), so a group of confusable classes mixes head and tail classes.
    """
    ranks = np.arange(c, dtype=np.float64)
    raw = imbalance ** (-ranks / max(c - 1, 1))
    spare = n - c if n >= c else n
    base = 1 if n >= c else 0
    share = raw / raw.sum() * spare
    sizes = np.floor(share).astype(np.int64)
    short = spare - int(sizes.sum())
    sizes[np.argsort(-(share - sizes), kind="stable")[:short]] += 1
    sizes += base
    return np.random.default_rng(seed).permutation(sizes)


@dataclass(frozen=True)
class SyntheticData:
    """Paths of one cached synthetic data set (see the module docstring)."""

    root: Path
    size: Size
    features: Path
    labels: Path
    predictions: Path
    label_vectors: Path

    def load(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(features memmap (n, d) float16, labels (n,) int64, predictions memmap (n,) int64, vectors (C, 300))``."""
        return (
            np.load(self.features, mmap_mode="r"),
            np.load(self.labels),
            np.load(self.predictions, mmap_mode="r"),
            np.load(self.label_vectors),
        )


def _data_params(size: Size, seed: int) -> dict[str, Any]:
    return {
        "version": DATA_VERSION, "n": size.n, "c": size.c, "d": size.d, "seed": seed, "imbalance": 100.0,
        "group_size": 5, "modes": 3, "group_scale": 1.0, "class_scale": 0.25, "mode_scale": 0.25,
        "accuracy": 0.7, "within_group": 0.25, "text_dim": 300,
    }


def synthetic_predictions(labels: np.ndarray, groups: np.ndarray, *, accuracy: float, within_group: float,
                          seed: int) -> np.ndarray:
    """Predicted classes that confuse a class with the other classes of its group.

    Right with probability ``accuracy``; another class of the same group with probability
    ``within_group`` (when the group has one); else a uniformly random class.
    """
    rng = np.random.default_rng(seed)
    c = groups.size
    n = labels.size
    pred = labels.copy()
    u = rng.random(n)
    members = [np.flatnonzero(groups == g) for g in range(int(groups.max()) + 1)]
    group_size = np.array([m.size for m in members])[groups]  # per class
    confuse = (u >= accuracy) & (u < accuracy + within_group) & (group_size[labels] > 1)
    rows = np.flatnonzero(confuse)
    if rows.size:
        lab = labels[rows]
        start = np.array([m[0] for m in members])[groups[lab]]  # groups are contiguous id ranges
        size = group_size[lab]
        offset = (lab - start + rng.integers(1, np.maximum(size, 2), size=rows.size)) % size
        pred[rows] = start + offset
    rand = u >= accuracy + within_group
    pred[rand] = rng.integers(0, c, size=int(rand.sum()))
    return pred


def _fill_features(out: np.ndarray, labels: np.ndarray, centres: np.ndarray, seed: int, *,
                   chunk_rows: int, progress: bool) -> None:
    """Write ``centres[label, random mode] + N(0, 1)`` into ``out`` chunk by chunk (2 threads).

    Chunk ``i`` draws from its own generator seeded by ``(seed, i)``, so the file does not
    depend on the thread count. numpy's generators release the GIL while filling.
    """
    from tqdm.auto import tqdm

    n = labels.size
    starts = list(range(0, n, chunk_rows))
    modes = centres.shape[1]

    def fill(i: int) -> None:
        rng = np.random.default_rng([seed, 1, i])
        s = starts[i]
        lab = labels[s : s + chunk_rows]
        block = rng.standard_normal((lab.size, centres.shape[2]), dtype=np.float32)
        block += centres[lab, rng.integers(0, modes, size=lab.size)]
        out[s : s + lab.size] = block

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(tqdm(pool.map(fill, range(len(starts))), total=len(starts), desc=f"features {out.shape}",
                  disable=not progress, leave=False))


def synthetic_data(size: Size, cache_dir: str | os.PathLike, *, seed: int = 0, progress: bool = True) -> SyntheticData:
    """Create (or reuse from ``cache_dir``) the synthetic features, labels, predictions and text vectors.

    The folder is named by a hash of every generator parameter; ``meta.json`` is written last,
    so a half-written folder is never reused. All files are written atomically.
    """
    params = _data_params(size, seed)
    root = Path(cache_dir) / f"synthetic-{size.n}x{size.c}x{size.d}-{stable_hash(params)}"
    data = SyntheticData(root, size, root / "features.npy", root / "labels.npy", root / "predictions.npy",
                         root / "label_vectors.npy")
    meta = root / "meta.json"
    if meta.exists() and read_json(meta).get("params") == params and all(
        p.exists() for p in (data.features, data.labels, data.predictions, data.label_vectors)
    ):
        return data
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    sizes = long_tail_sizes(size.n, size.c, imbalance=params["imbalance"], seed=seed)
    labels = np.repeat(np.arange(size.c, dtype=np.int64), sizes)  # rows ordered by class
    groups = np.arange(size.c) // params["group_size"]
    n_groups = int(groups.max()) + 1
    g_centres = rng.standard_normal((n_groups, size.d), dtype=np.float32) * params["group_scale"]
    c_centres = g_centres[groups] + rng.standard_normal((size.c, size.d), dtype=np.float32) * params["class_scale"]
    centres = c_centres[:, None, :] + rng.standard_normal(
        (size.c, params["modes"], size.d), dtype=np.float32) * params["mode_scale"]
    text_g = rng.standard_normal((n_groups, params["text_dim"]), dtype=np.float32)
    vectors = text_g[groups] + 0.5 * rng.standard_normal((size.c, params["text_dim"]), dtype=np.float32)
    pred = synthetic_predictions(labels, groups, accuracy=params["accuracy"], within_group=params["within_group"],
                                 seed=seed + 1)
    with atomic_path(data.features) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(size.n, size.d))
        chunk_rows = max(1, (16 << 20) // size.d)
        _fill_features(mm, labels, centres, seed, chunk_rows=chunk_rows, progress=progress)
        mm.flush()
        del mm
    for path, arr in ((data.labels, labels), (data.predictions, pred), (data.label_vectors, vectors)):
        with atomic_path(path) as tmp:
            np.save(tmp, arr, allow_pickle=False)
    write_json(meta, {"params": params, "seconds": time.perf_counter() - t0})
    logger.info("synthetic data %s written to %s in %.1fs", size, root, time.perf_counter() - t0)
    return data


# --------------------------------------------------------------------------- fitting
def fit_exponent(n: Sequence[float], seconds: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``log t = log a + b log N``; returns ``(b, a)``.

    Needs at least two distinct ``N`` and positive times.
    """
    x = np.log(np.asarray(n, dtype=np.float64))
    y = np.log(np.asarray(seconds, dtype=np.float64))
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError("fit_exponent needs at least two distinct N")
    if not np.all(np.isfinite(y)):
        raise ValueError("fit_exponent needs positive, finite times")
    b, log_a = np.polyfit(x, y, 1)
    return float(b), float(np.exp(log_a))


def project_time(seconds: float, n_from: float, n_to: float, exponent: float) -> float:
    """``t(n_to) = t(n_from) * (n_to / n_from) ** exponent``."""
    return float(seconds) * (float(n_to) / float(n_from)) ** float(exponent)


# --------------------------------------------------------------------------- section 1: k-means
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
    from urnet_core.reweight.cluster_weight import (
        DEFAULT_BLOCK_BYTES, class_rows, confusion_matrix, most_confused, schedule_problems,
    )

    conf = confusion_matrix(labels, predictions, num_classes)
    partners = most_confused(conf, top_k)
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


def _backend_and_device(name: str) -> tuple[str, str | None]:
    """Bench item name -> (:func:`~urnet_core.reweight.kmeans.batched_kmeans` backend, torch device)."""
    if name == "torch_cuda":
        return "torch", "cuda"
    return name, ("cpu" if name == "torch" else None)


def available_backends() -> list[str]:
    """k-means backends to compare here: sklearn, faiss (if installed), torch (CPU), and with a CUDA
    GPU torch_cuda (the batched torch backend on the GPU) and cuml (when RAPIDS is installed)."""
    from urnet_core.reweight import kmeans as km

    names = ["sklearn", "sklearn_sub"]
    if km.HAS_FAISS:
        names += ["faiss", "faiss_onepass"]
    names.append("torch")
    if km._cuda_available():
        names.append("torch_cuda")
        if km.HAS_CUML:
            names.append("cuml")
    return names


def _warm_up_backends(backends: Iterable[str], d: int) -> None:
    """One tiny solve per backend, so imports and thread pools are not timed."""
    from urnet_core.reweight.kmeans import batched_kmeans

    x = np.random.default_rng(0).standard_normal((200, d)).astype(np.float32)
    for name in backends:
        if name in SUBSAMPLE_ITEMS:
            _subsample_kmeans(name, x, [np.arange(100), np.arange(100, 200)], 5, [0, 1])
            continue
        backend, device = _backend_and_device(name)
        batched_kmeans(x, [np.arange(100), np.arange(100, 200)], 5, backend=backend, device=device)


#: k-means rows trained on the subsample faiss trains on (at most 256 k rows per problem, drawn as
#: :func:`~urnet_core.reweight.kmeans.training_subsample`), every row then assigned to its nearest centre:
#: ``sklearn_sub`` (scikit-learn's Lloyd) and ``faiss_onepass`` (faiss, as the one-pass cluster step).
SUBSAMPLE_ITEMS = ("sklearn_sub", "faiss_onepass")


def _subsample_kmeans(item: str, xb: np.ndarray, groups: Sequence[np.ndarray], k: int, seeds: Sequence[int],
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
    from urnet_core.reweight.cluster_weight import _read_rows

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
    _warm_up_backends(backends, size.d)
    chunk_rows = max(1, (64 << 20) // (4 * size.d))
    for block in tqdm(work.blocks, desc=f"k-means {size}", disable=not progress, leave=False):
        cls = np.unique(np.concatenate([work.pools[j] for j in block]))
        rows = np.sort(np.concatenate([work.by_class[t] for t in cls]))
        xb = _read_rows(features, rows, chunk_rows)
        local = {j: np.searchsorted(rows, np.sort(np.concatenate([work.by_class[t] for t in work.pools[j]])))
                 for j in block}
        for b in backends:
            todo = [j for j in block if b not in chosen or j in chosen[b]]
            if not todo:
                continue
            if b in SUBSAMPLE_ITEMS:
                centres, dt = _subsample_kmeans(b, xb, [local[j] for j in todo], n_clusters,
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
            backend, device = _backend_and_device(b)
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


# --------------------------------------------------------------------------- section 2: urnet weights end to end
#: Stages of ``urnet weights`` timed from the child's log (``stage <name> took <s>s``, emitted by
#: compose_weights and file_hash), then what the log does not cover (``other``: interpreter start,
#: imports, reading the table and the .npy headers, writing the outputs).
WEIGHTS_STAGES = ("validate_features", "validate_probs", "class", "cluster", "instance", "combine", "label",
                  "file_hash", "other")
PIPELINE_STAGES = WEIGHTS_STAGES
#: How each stage grows with N at fixed C and D (see :func:`projection`): ``linear`` = a pass over
#: the rows; ``affine`` = a fixed part (depends on C only) plus a pass over the rows.
STAGE_MODEL = {"validate_features": "linear", "validate_probs": "linear", "class": "linear",
               "cluster_train": "train_rows", "cluster_assign": "linear", "instance": "affine",
               "combine": "linear", "label": "linear", "file_hash": "linear", "other": "linear"}
_STAGE_RE = re.compile(r"stage (\w+) took ([0-9.]+)s")
_ONE_PASS_RE = re.compile(r"cluster weights \(one pass\): .* train ([0-9.]+)s on (\d+) rows, assign pass ([0-9.]+)s")

#: Forks (no vfork) and execs the command, polls the child's VmHWM and reads its ru_maxrss from
#: wait4: the child's own peak RSS (the launcher is ~10 MB when it forks).
_LAUNCHER = r"""
import json, os, sys, threading, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable] + sys.argv[2:])
peak = [0]
def poll():
    while True:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.05)
threading.Thread(target=poll, daemon=True).start()
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as fh:
    json.dump({"wall": wall, "status": os.waitstatus_to_exitcode(status), "ru_maxrss_bytes": ru.ru_maxrss * 1024,
               "vmhwm_polled_bytes": peak[0]}, fh)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass(frozen=True)
class WeightsVariant:
    """Input formats of one ``urnet weights`` run: feature dtype and probabilities kind."""

    dtype: str = "float16"
    probs: str = "ids"  # "ids": (n,) class ids; "dense": (n, C) float32 probabilities

    def __str__(self) -> str:
        return f"{self.dtype}, {'class ids' if self.probs == 'ids' else 'dense (n, C) probs'}"


def weights_variants(size: Size, sizes: Sequence[Size]) -> list[WeightsVariant]:
    """Runs per size: float16 features + class ids always; float32 at the largest N of the size's
    (C, D) series (the peak-memory case); dense (n, C) probabilities at the smallest N (n x C floats)."""
    same = [s.n for s in sizes if (s.c, s.d) == (size.c, size.d)]
    out = [WeightsVariant("float16", "ids")]
    if size.n == max(same):
        out.append(WeightsVariant("float32", "ids"))
    if size.n == min(same):
        out.append(WeightsVariant("float16", "dense"))
    return out


def _stream_write(path: Path, shape: tuple[int, int], dtype, fill: Callable[[int, int], np.ndarray]) -> None:
    """Write an .npy of ``shape`` atomically, rows produced by ``fill(start, stop)`` in ~64 MB chunks."""
    with atomic_path(path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        step = max(1, (64 << 20) // (np.dtype(dtype).itemsize * shape[1]))
        for s in range(0, shape[0], step):
            e = min(shape[0], s + step)
            mm[s:e] = fill(s, e)
            mm.flush()
            _release(mm, s, e)
        del mm


def _release(arr, start, stop) -> None:
    from urnet_core.utils.validation import release_pages

    release_pages(arr, start, stop)


def weights_inputs(data: SyntheticData, variant: WeightsVariant, *, instance_epochs: int, backend: str = "auto",
                   device: str = "cpu") -> dict[str, Path]:
    """Files ``urnet weights`` reads for ``data`` in ``variant`` (cached beside the data): the table
    (parquet: label, split, rank, source, class_name), features (float16 = the data's file, float32 a
    converted copy), probabilities (class ids, or dense (n, C) float32 whose argmax is the
    prediction), text vectors and a config with every strategy on."""
    import yaml

    root = data.root
    n, c = data.size.n, data.size.c
    table = root / "table.parquet"
    if not table.exists():
        labels = np.load(data.labels)
        rng = np.random.default_rng(3)
        order = np.argsort(labels, kind="stable")
        starts = np.searchsorted(labels[order], np.arange(c))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(starts, np.bincount(labels, minlength=c))
        src = np.where(rng.random(n) < 0.6, "google", "flickr")
        df = pd.DataFrame({"label": labels, "split": "train", "rank": rank, "source": src,
                           "class_name": pd.Series([f"class {j}" for j in range(c)]).to_numpy()[labels]})
        with atomic_path(table) as tmp:
            df.to_parquet(tmp, index=False)
        del df
    feats = data.features
    if variant.dtype == "float32":
        feats = root / "features_f32.npy"
        if not feats.exists():
            src16 = np.load(data.features, mmap_mode="r")
            _stream_write(feats, src16.shape, np.float32, lambda s, e: np.asarray(src16[s:e], dtype=np.float32))
    elif variant.dtype != "float16":
        raise ValueError(f"feature dtype {variant.dtype!r}: float16 or float32")
    probs = data.predictions
    if variant.probs == "dense":
        probs = root / "probs_dense.npy"
        if not probs.exists():
            pred = np.load(data.predictions, mmap_mode="r")

            def fill(s: int, e: int) -> np.ndarray:
                rng = np.random.default_rng([11, s])
                p = rng.random((e - s, c), dtype=np.float32)
                p[np.arange(e - s), pred[s:e]] += c / 10.0  # the prediction is the argmax
                p /= p.sum(1, keepdims=True)
                return p

            _stream_write(probs, (n, c), np.float32, fill)
    config = root / f"config-e{instance_epochs}-{backend}-{device}.yaml"
    if not config.exists():
        cfg = {"class_reweight": True, "cluster_reweight": True, "instance_reweight": True, "bag_branch": True,
               "label_reweight": True, "instance_epochs": int(instance_epochs), "kmeans_backend": backend,
               "device": device}
        write_text(config, yaml.safe_dump(cfg, sort_keys=True))
    return {"table": table, "features": Path(feats), "probs": Path(probs), "label_vectors": data.label_vectors,
            "config": config}


def run_weights_cli(inputs: dict[str, Path], out_dir: Path, *, seed: int = 0, timeout: float | None = None
                    ) -> dict[str, Any]:
    """Run ``python -m urnet_core.cli -v weights ...`` as a child; return its stage seconds, wall and peak RSS.

    Stage seconds come from the child's log lines (``stage <name> took <s>s``); ``other`` is the
    wall time the stages do not cover. Peak RSS is the child's own: ``ru_maxrss`` from ``wait4`` in
    a small launcher that forks it (no vfork, so the bench's memory is not inherited), checked
    against ``VmHWM`` polled from ``/proc/<pid>/status``.
    """
    cmd = [sys.executable, "-c", _LAUNCHER, str(out_dir / "launcher.json"), "-m", "urnet_core.cli", "-v", "weights",
           "--table", str(inputs["table"]), "--features", str(inputs["features"]), "--probs", str(inputs["probs"]),
           "--label-vectors", str(inputs["label_vectors"]), "--config", str(inputs["config"]),
           "--seed", str(seed), "--out", str(out_dir / "out")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    launch = out_dir / "launcher.json"
    if proc.returncode != 0 or not launch.exists():
        raise RuntimeError(f"urnet weights failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    meta = read_json(launch)
    seconds: dict[str, float] = {}
    for name, value in _STAGE_RE.findall(proc.stderr):
        if name == "file_hash":
            seconds[name] = seconds.get(name, 0.0) + float(value)
        else:
            seconds[name] = float(value)  # compose logs the running total of a stage
    seconds["other"] = max(0.0, meta["wall"] - sum(seconds.values()))
    one = _ONE_PASS_RE.search(proc.stderr)
    cluster = ({"train": float(one.group(1)), "train_rows": int(one.group(2)), "assign": float(one.group(3))}
               if one else {})
    summary = read_json(out_dir / "out" / "weights.json")
    return {"seconds": seconds, "total": meta["wall"], "cluster": cluster,
            "peak_rss_bytes": max(meta["ru_maxrss_bytes"], meta["vmhwm_polled_bytes"]),
            "ru_maxrss_bytes": meta["ru_maxrss_bytes"], "vmhwm_polled_bytes": meta["vmhwm_polled_bytes"],
            "n": summary["n"], "inputs_bytes": {k: Path(v).stat().st_size for k, v in inputs.items()}}


def read_pass_seconds(features_path: Path, *, chunk_values: int = 1 << 24, workers: int | None = None) -> float:
    """Seconds to read every row of a feature file once and convert it to float32 (the one-pass floor).

    The same chunking, threads and float32 conversion as the cluster step's assignment pass, with
    no distances: the time any pass that looks at every row needs.
    """
    import torch

    from urnet_core.reweight.cluster_weight import _as_float32_tensor
    from urnet_core.utils.validation import release_pages

    x = np.load(features_path, mmap_mode="r")
    step = max(1, chunk_values // x.shape[1])

    def work(s: int) -> None:
        torch.set_num_threads(1)
        _as_float32_tensor(np.asarray(x[s : s + step])).sum()
        release_pages(x, s, s + step)

    old = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            list(pool.map(work, range(0, x.shape[0], step)))
    finally:
        torch.set_num_threads(old)
    return time.perf_counter() - t0


def weights_section(data: SyntheticData, variant: WeightsVariant, *, instance_epochs: int, backend: str = "auto",
                    seed: int = 0, device: str = "cpu", workdir: Path | None = None) -> dict[str, Any]:
    """One ``urnet weights`` run on ``data`` in ``variant`` plus the one-pass read floor of its features."""
    inputs = weights_inputs(data, variant, instance_epochs=instance_epochs, backend=backend, device=device)
    base = Path(workdir) if workdir is not None else data.root
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="urnet-weights-", dir=base) as tmp:
        res = run_weights_cli(inputs, Path(tmp), seed=seed)
    res["read_pass"] = read_pass_seconds(inputs["features"])
    res["variant"] = asdict(variant)
    return res


def _train_rows(problem_rows: Sequence[int], k: int = 5) -> int:
    from urnet_core.reweight.kmeans import TRAIN_POINTS_PER_CENTROID

    return int(sum(min(int(m), TRAIN_POINTS_PER_CENTROID * k) for m in problem_rows if m > k))


def pipeline_rows(results: Sequence[tuple[Size, dict[str, Any]]], *, instance_epochs: int) -> list[dict[str, Any]]:
    """Table rows of the ``urnet weights`` runs: one per (size, variant), stage seconds in ``note``."""
    rows = []
    for size, res in results:
        st = res["seconds"]
        cl = res.get("cluster", {})
        parts = ", ".join(f"{k} {st[k]:.3g}s" for k in WEIGHTS_STAGES if k in st)
        if cl:
            parts += f"; cluster = train {cl['train']:.3g}s ({cl['train_rows']:,} rows) + assign pass {cl['assign']:.3g}s"
        rows.append({
            "section": "pipeline", "item": f"urnet weights [{WeightsVariant(**res['variant'])}]", "N": size.n,
            "C": size.c, "D": size.d, "seconds": res["total"], "peak_rss_gb": res["peak_rss_bytes"] / 1e9,
            "note": parts + f"; one-pass read of the features {res['read_pass']:.3g}s; instance_epochs={instance_epochs}",
        })
    return rows


def _affine_fit(n: Sequence[float], t: Sequence[float], *, min_slope: float = 0.0) -> tuple[float, float]:
    """``t = a + b N`` with ``a >= 0`` and ``b >= min_slope`` (least squares; one point: ``a = 0``)."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if np.unique(n).size < 2:
        return 0.0, max(float(t.mean() / n.mean()), min_slope)
    b, a = np.polyfit(n, t, 1)
    if b < min_slope:
        b = min_slope
        a = float(np.mean(t - b * n))
    if a < 0:
        a, b = 0.0, max(float((n * t).sum() / (n * n).sum()), min_slope)
    return float(a), float(b)


def projection(results: Sequence[tuple[Size, dict[str, Any]]], *, n_to: int = PROJECTION_N,
               c_to: int = PROJECTION_C, d_to: int = PROJECTION_D, dtype: str = "float16",
               problem_rows: dict[int, Sequence[int]] | None = None) -> dict[str, Any] | None:
    """Project ``urnet weights`` to ``n_to`` rows from the (C, D) series closest to ``(c_to, d_to)``.

    Per stage, a model that follows what the stage does (:data:`STAGE_MODEL`):

    - ``linear`` (a pass over the rows: validation, hashing, assignment, combining, writing):
      ``t(n_to) = t(N_max) * n_to / N_max``, the start-up cost included (an upper bound);
    - ``train_rows`` (cluster centroid training on at most ``256 k`` rows per problem):
      ``t(N_max)`` times the ratio of training rows at ``n_to`` to those at ``N_max``
      (``problem_rows`` of ``N_max``, each problem scaled by ``n_to / N_max``, capped at ``256 k``);
    - ``affine`` (instance weights: the confidence model trains on ``top_r * C`` positives, then
      scores every row): ``a + b n_to`` with ``a, b`` fitted over the series' N, ``b`` no less
      than the measured one-pass read time per row.

    ``linear_bound`` projects every stage linearly from ``N_max``. Returns None without a series.
    """
    series: dict[tuple[int, int], list[tuple[Size, dict]]] = {}
    for size, res in results:
        if res.get("variant", {}).get("dtype", "float16") == dtype and res.get("variant", {}).get("probs", "ids") == "ids":
            series.setdefault((size.c, size.d), []).append((size, res))
    if not series:
        return None
    key = min(series, key=lambda k: (k[1] != d_to, abs(math.log(k[0] / c_to)), abs(math.log(k[1] / d_to))))
    items = sorted(series[key], key=lambda it: it[0].n)
    n_max = items[-1][0].n
    last = items[-1][1]
    scale = n_to / n_max
    stages: dict[str, dict[str, Any]] = {}
    read_per_row = last["read_pass"] / n_max
    for stage in WEIGHTS_STAGES:
        t_last = last["seconds"].get(stage, 0.0)
        if stage == "cluster" and last.get("cluster"):
            cl = last["cluster"]
            rest = max(0.0, t_last - cl["train"] - cl["assign"])  # confusion matrix, weights: passes over rows
            if problem_rows and n_max in problem_rows:
                pr = problem_rows[n_max]
                ratio = _train_rows([m * scale for m in pr]) / max(_train_rows(pr), 1)
            else:
                ratio = scale
            train = cl["train"] * ratio
            assign = cl["assign"] * scale
            stages["cluster"] = {"seconds": train + assign + rest * scale, "measured": t_last,
                                 "model": f"train x{ratio:.2f} (training rows) + assign pass x{scale:g} + rest x{scale:g}",
                                 "train": train, "assign": assign}
        elif STAGE_MODEL.get(stage) == "affine" and len(items) >= 2:
            a, b = _affine_fit([s.n for s, _ in items], [r["seconds"].get(stage, 0.0) for _, r in items],
                               min_slope=read_per_row)
            stages[stage] = {"seconds": a + b * n_to, "measured": t_last,
                             "model": f"{a:.1f}s + {b * 1e6:.2f}us/row (fit over N)"}
        else:
            stages[stage] = {"seconds": t_last * scale, "measured": t_last, "model": f"x{scale:g} (linear)"}
    total = float(sum(v["seconds"] for v in stages.values()))
    bound = float(sum(last["seconds"].get(s, 0.0) for s in WEIGHTS_STAGES) * scale)
    return {"from": {"C": key[0], "D": key[1], "N_max": n_max, "dtype": dtype}, "seconds": total,
            "linear_bound": bound, "stages": stages, "exact_setting": key == (c_to, d_to),
            "read_pass_16m": last["read_pass"] * scale,
            "cluster_16m": stages.get("cluster", {}).get("seconds", float("nan"))}


# --------------------------------------------------------------------------- section 3: training step
class _TensorDataset:
    """In-memory ``(image, label, index)`` items, so :func:`urnet_core.training.loop.train` times compute, not decoding."""

    def __init__(self, images: "torch.Tensor", labels: np.ndarray) -> None:  # noqa: F821
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), int(i)


def train_step_section(*, num_classes: int = 5000, batch_size: int = 128, steps: int = 30, warmup: int = 5,
                       epochs: int = 3, seed: int = 0, device: str = "cpu", model_name: str = "small_cnn",
                       image_size: int = 28, train_loop: bool = True, reps: int = 5) -> list[dict[str, Any]]:
    """Median step time of URNet vs plain cross entropy (one backbone, image size and batch size).

    ``small_cnn`` at 28x28 grey is the default study's backbone; ``resnet18`` at 64x64 RGB
    stands for a WebVision-like backbone whose compute dominates the C-sized heads.

    Two measurements:

    - ``step``: the body of :func:`urnet_core.training.loop.train`'s loop, with the project's model,
      optimiser, loss and :class:`~urnet_core.models.bag.BagAttentionBranch`; URNet looks up
      the batch's weights and its eq. 10 targets in compact form
      (:class:`~urnet_core.reweight.label_weight.LabelPairs`, loss
      :func:`~urnet_core.training.losses.weighted_label_pair_cross_entropy`, as ``train`` does), plain
      CE is ``F.cross_entropy``. The variants alternate step by step (same input batch: ``batch_size``
      rounded down to whole bags of 3, as ``train`` forms URNet batches), ``warmup`` steps
      untimed, the median of ``steps`` timed steps.
    - ``train()`` (with ``train_loop``): :func:`urnet_core.training.loop.train` itself for ``epochs`` epochs on in-memory
      images (baseline: no weights/targets; URNet: weights, compact soft targets, bag branch);
      seconds per instance from each epoch's record, median over epochs.

    With ``device="cuda"`` both run on the GPU under bf16 autocast (AMP, as ``train`` does
    there), and each timed step ends with ``torch.cuda.synchronize()``.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    from urnet_core.training.losses import weighted_label_pair_cross_entropy
    from urnet_core.models.backbones import build_model
    from urnet_core.models.bag import BagAttentionBranch
    from urnet_core.reweight.label_weight import LabelPairs
    from urnet_core.training.loop import TrainConfig, _make_optimizer, train

    bag_size = 3
    b = (batch_size // bag_size) * bag_size
    rng = np.random.default_rng(seed)
    n_pool = b * 8
    labels = np.repeat(rng.integers(0, num_classes, n_pool // bag_size), bag_size)
    predicted = np.where(rng.random(n_pool) < 0.7, labels, rng.integers(0, num_classes, n_pool))
    weights = rng.uniform(0.2, 2.0, n_pool).astype(np.float32)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    channels = 1 if model_name == "small_cnn" else 3
    images_cpu = torch.from_numpy(rng.standard_normal((n_pool, channels, image_size, image_size), dtype=np.float32))
    images = images_cpu.to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    weights_t = torch.from_numpy(weights).to(dev)
    predicted_t = torch.from_numpy(predicted).to(dev)
    beta = 0.8
    cfg = TrainConfig(model=model_name, batch_size=batch_size, device=device, amp=cuda)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def make(urnet: bool):
        torch.manual_seed(seed)
        model = build_model(model_name, num_classes, in_channels=channels).to(dev)
        bag = BagAttentionBranch(model.feature_dim, num_classes).to(dev) if urnet else None
        params = list(model.parameters()) + (list(bag.parameters()) if bag is not None else [])
        model.train()
        return model, bag, _make_optimizer(params, cfg)

    def step(state, idx: np.ndarray, urnet: bool) -> None:
        model, bag, opt = state
        idx_t = torch.from_numpy(idx).to(dev)
        x = images[idx_t]
        y = labels_t[idx_t]
        with autocast():
            feats = model.encoder(x)
            logits = model.head(feats)
            if urnet:
                loss = weighted_label_pair_cross_entropy(logits, y, predicted_t[idx_t], weights_t[idx_t], beta=beta)
                bag_logits, _ = bag(feats.float().reshape(-1, bag_size, feats.shape[1]))
                loss = loss + F.cross_entropy(bag_logits.float(), y.reshape(-1, bag_size)[:, 0])
            else:
                loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    states = {"ce": make(False), "urnet": make(True)}
    rep_ce, rep_ur, ratios = [], [], []
    for rep in range(reps):  # each repetition: warm-up, then `steps` interleaved timed steps
        times: dict[str, list[float]] = {"ce": [], "urnet": []}
        for i in range((warmup if rep == 0 else 1) + steps):
            idx = np.arange((i * b) % n_pool, (i * b) % n_pool + b)
            for name in (("ce", "urnet") if i % 2 == 0 else ("urnet", "ce")):
                sync()
                t0 = time.perf_counter()
                step(states[name], idx, name == "urnet")
                sync()
                if i >= (warmup if rep == 0 else 1):
                    times[name].append(time.perf_counter() - t0)
        rep_ce.append(float(np.median(times["ce"])))
        rep_ur.append(float(np.median(times["urnet"])))
        ratios.append(rep_ur[-1] / rep_ce[-1])
    ce = float(np.median(rep_ce))
    ur = float(np.median(rep_ur))
    ratio = float(np.median(ratios))
    spread = f"ratio median {ratio:.3f} [min {min(ratios):.3f}, max {max(ratios):.3f}] over {reps} repetitions"
    where = (f"{torch.cuda.get_device_name(dev)}, bf16 autocast" if cuda
             else f"{torch.get_num_threads()} torch threads")
    rows = [
        {"section": "train", "item": f"step: plain CE [{model_name}]", "C": num_classes, "seconds": ce,
         "note": f"median over {reps} repetitions of the median of {steps} steps (after {warmup} warm-up); "
                 f"{model_name} {image_size}x{image_size}, batch {b}; {where}; seconds min {min(rep_ce):.4g} max {max(rep_ce):.4g}"},
        {"section": "train", "item": f"step: URNet (weights + soft targets + bag) [{model_name}]", "C": num_classes, "seconds": ur,
         "ratio_vs_ce": ratio, "ratio_min": min(ratios), "ratio_max": max(ratios),
         "note": f"{spread}; interleaved with CE; batch {b} = {b // bag_size} bags"},
    ]
    if not train_loop:
        return rows
    # The real training loop, end to end (in-memory images; DataLoader with 0 workers).
    n_train = b * 6
    ds = _TensorDataset(images_cpu[:n_train], labels[:n_train])
    targets = LabelPairs(predicted[:n_train], beta)
    per_instance = {}
    variants = (
        ("ce", {}, TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, device=device, seed=seed,
                               amp=cuda)),
        ("urnet", {"sample_weights": weights[:n_train], "soft_targets": targets},
         TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, device=device, seed=seed, amp=cuda,
                     bag_branch=True, bag_size=bag_size)),
    )
    train_logger = logging.getLogger("urnet_core.training.loop")
    old_level = train_logger.level
    train_logger.setLevel(logging.WARNING)  # no per-epoch lines in the benchmark output
    try:
        for name, kwargs, config in variants:
            res = train(ds, num_classes=num_classes, config=config, progress=False, in_channels=channels, **kwargs)
            per_instance[name] = float(np.median([h["seconds"] / n_train for h in res.history]))
    finally:
        train_logger.setLevel(old_level)
    rows += [
        {"section": "train", "item": f"train(): baseline (one-hot CE) [{model_name}]", "C": num_classes,
         "seconds": per_instance["ce"] * batch_size,
         "note": f"train() {epochs} epochs x {n_train} in-memory images; seconds per {batch_size} instances, median epoch"},
        {"section": "train", "item": f"train(): URNet (weights + soft targets + bag) [{model_name}]", "C": num_classes,
         "seconds": per_instance["urnet"] * batch_size, "ratio_vs_ce": per_instance["urnet"] / per_instance["ce"],
         "note": "ratio of seconds per instance (URNet batches hold 126 = 42 bags x 3)"},
    ]
    return rows


# --------------------------------------------------------------------------- section 4: data loading
def write_image_files(root: str | os.PathLike, n: int, *, fmt: str = "JPEG", seed: int = 0,
                      num_classes: int = 10) -> pd.DataFrame:
    """Write ``n`` smooth random RGB images (about 256-384 x 256 px, like WebVision's resized set).

    Returns an instances table (``path``, ``label``) for :class:`~urnet_core.data.datasets.ImageFileDataset`.
    """
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    paths = []
    for i in range(n):
        w = int(rng.integers(256, 385))
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, 256), Image.BILINEAR)
        name = f"{i:06d}.{ext}"
        img.save(root / name, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        paths.append(name)
    return pd.DataFrame({"path": paths, "label": rng.integers(0, num_classes, n)})


def data_loading_section(*, n_images: int = 512, batch_size: int = 64, workers: int | None = None,
                         tmp_dir: str | os.PathLike | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Images/s decoded + transformed through ``ImageFileDataset`` and a ``DataLoader``.

    Files are written first (so they sit in the page cache: this measures decoding and
    transforms, not disk). Throughput counts the images after the first batch, timed from
    the first batch's arrival (worker start-up excluded).
    """
    import torch

    from urnet_core.data.datasets import ImageFileDataset, default_transforms

    workers = workers if workers is not None else (os.cpu_count() or 1)
    rows = []
    if tmp_dir is not None:  # e.g. <tmp>/urnet-bench on a fresh machine: mkdtemp does not create parents
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="urnet-bench-img-", dir=tmp_dir) as tmp:
        for fmt in ("JPEG", "PNG"):
            table = write_image_files(Path(tmp) / fmt, n_images, fmt=fmt, seed=seed)
            for model, mode, label in (("small_cnn", "L", "small_cnn 28x28 grey (train)"),
                                       ("resnet50", "RGB", "RandomResizedCrop 224 RGB (train)")):
                ds = ImageFileDataset(table, Path(tmp) / fmt, default_transforms(model, train=True,
                                      in_channels=1 if mode == "L" else 3), mode=mode)
                loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
                it = iter(loader)
                first = next(it)
                t0 = time.perf_counter()
                count = 0
                for x, _, _ in it:
                    count += x.shape[0]
                dt = time.perf_counter() - t0
                del it, loader
                rows.append({"section": "data", "item": f"{fmt} -> {label}", "seconds": dt,
                             "images_per_s": count / dt if dt > 0 else float("nan"), "workers": workers,
                             "note": f"{count} images after the first batch of {first[0].shape[0]}; "
                                     f"~256x(256-384) px files, batch {batch_size}"})
    return rows


# --------------------------------------------------------------------------- report
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU and library versions of this machine."""
    import sklearn
    import torch

    from urnet_core.reweight import kmeans as km

    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = float("nan")
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram, 1), "gpu": gpu,
        "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
        "faiss": getattr(km.faiss, "__version__", "?") if km.HAS_FAISS else "not installed", "sklearn": sklearn.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(value: Any) -> str:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0:
            return "0"
        if abs(v) >= 1e4 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 100 else f"{v:.0f}"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return str(value).replace("|", "/").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no ``tabulate`` needed); empty cells for NaN."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


#: The columns of :data:`COLUMNS` a section's rows fill: a report written from one section alone
#: (``--sections kmeans``) has exactly these, so its rows can be placed under the full header.
SECTION_COLUMNS = {
    "kmeans": ("section", "item", "N", "C", "D", "seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub",
               "inertia_vs_sklearn", "peak_rss_gb", "measured_on", "note"),
}


def markdown_cells(line: str) -> list[str]:
    """The cells of one markdown table row (values never hold ``|``: :func:`_fmt` writes ``/``)."""
    text = line.strip()
    if text.startswith("|"):
        text = text[1:]
    if text.endswith("|"):
        text = text[:-1]
    return [c.strip() for c in text.split("|")]


def markdown_tables(text: str) -> list[dict[str, Any]]:
    """Every table of a markdown text: ``{"start", "end"}`` (line indices, end exclusive),
    ``header`` (cells) and ``rows`` (lists of cells, as written)."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*",
                                                                                   lines[i + 1].strip()):
            j = i + 2
            while j < len(lines) and lines[j].lstrip().startswith("|"):
                j += 1
            out.append({"start": i, "end": j, "header": markdown_cells(lines[i]),
                        "rows": [markdown_cells(line) for line in lines[i + 2:j]]})
            i = j
        else:
            i += 1
    return out


def realign_row(header: Sequence[str], cells: Sequence[str]) -> list[str]:
    """``cells`` under ``header``: as they are when they fill it; a row with fewer cells (pasted
    from a report of its section alone) is placed column by column using :data:`SECTION_COLUMNS`.
    Raises ``ValueError`` when the row's columns cannot be known (never guessed)."""
    cells = list(cells)
    if len(cells) == len(header):
        return cells
    section = cells[0] if cells else ""
    own = [c for c in header if c in SECTION_COLUMNS.get(section, ())]
    if len(own) != len(cells) or len(own) != len(SECTION_COLUMNS.get(section, ())):
        raise ValueError(f"a {section!r} row has {len(cells)} cells under {len(header)} headers and its columns are "
                         f"not known: {cells[:3]}")
    by_name = dict(zip(own, cells))
    return [by_name.get(c, "") for c in header]


def rerender_markdown(text: str) -> str:
    """``text`` with every table row holding one cell per header (:func:`realign_row`); the cells'
    text is kept as written, so no number changes."""
    lines = text.split("\n")
    for table in reversed(markdown_tables(text)):
        header = table["header"]
        rows = [realign_row(header, r) for r in table["rows"]]
        block = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        block += ["| " + " | ".join(r) + " |" for r in rows]
        lines[table["start"]:table["end"]] = block
    return "\n".join(lines)


def _number(cell: str) -> float:
    try:
        return float(cell.replace(",", ""))
    except ValueError:
        return float("nan")


def table_from_markdown(text: str) -> pd.DataFrame:
    """The report's "All rows" table (the one headed by :data:`COLUMNS`) read back as a DataFrame."""
    for table in markdown_tables(text):
        if table["header"][:2] == ["section", "item"] and set(table["header"]) <= set(COLUMNS):
            rows = [realign_row(table["header"], r) for r in table["rows"]]
            df = pd.DataFrame(rows, columns=table["header"])
            for col in df.columns:
                if col not in ("section", "item", "measured_on", "note"):
                    df[col] = df[col].map(_number)
            for col in ("N", "C", "D", "workers"):
                if col in df:
                    df[col] = df[col].astype("Int64")
            return df
    raise ValueError("no table headed section | item | ... in the report")


def projection_from_table(table: pd.DataFrame) -> dict[str, Any] | None:
    """What :func:`scaling_figure` draws of the projection, read back from its table row (its
    seconds and the series it came from, as the row's note states them); None without one."""
    rows = table[(table["section"] == "pipeline") & table["item"].str.startswith("projection")]
    if not len(rows):
        return None
    row = rows.iloc[0]
    m = re.search(r"from C=(\d+), D=(\d+), N_max=([\d,]+)", str(row["note"]))
    dtype = re.search(r"\[(float\d+),", str(row["item"]))
    if not m:
        return None
    return {"seconds": float(row["seconds"]),
            "from": {"C": int(m.group(1)), "D": int(m.group(2)), "N_max": int(m.group(3).replace(",", "")),
                     "dtype": dtype.group(1) if dtype else "float16"}}


def rerender_report(path: str | os.PathLike, figure_path: str | os.PathLike | None = None) -> Path:
    """Rewrite a written report with one cell per header in every table (:func:`rerender_markdown`)
    and, with ``figure_path``, redraw its scaling figure from the report's own table (so the
    figure shows the rows the table shows). Nothing is measured again; no number changes."""
    path = Path(path)
    text = rerender_markdown(path.read_text())
    if figure_path is not None:
        table = table_from_markdown(text)
        save_figure(scaling_figure(table, projection_from_table(table)), figure_path)
    return write_text(path, text)


def make_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> the one benchmark table, columns in :data:`COLUMNS` order, empty columns dropped."""
    table = pd.DataFrame(list(rows)).reindex(columns=list(COLUMNS))
    for col in ("N", "C", "D", "workers"):
        table[col] = table[col].astype("Int64")
    keep = [c for c in table.columns if c in ("section", "item") or table[c].notna().any()]
    return table[keep]


def evaluate_targets(table: pd.DataFrame, proj: dict[str, Any] | None) -> list[dict[str, Any]]:
    """PASS/FAIL of each issue target, with the numbers behind it."""
    out = []
    pipe = table[(table["section"] == "pipeline") & ~table["item"].str.startswith("projection")] \
        if "section" in table else table.iloc[0:0]
    if proj is not None:
        minutes = proj["seconds"] / 60
        src = proj["from"]
        value = (f"{minutes:.1f} min (all-linear bound {proj['linear_bound'] / 60:.1f} min) from C={src['C']}, "
                 f"D={src['D']}, N_max={src['N_max']:,}")
        if not proj["exact_setting"]:
            value += " - NOT the 5000/256 setting, indicative only"
        out.append({"target": TARGETS["projected_16m_minutes"], "value": value,
                    "result": ("PASS" if minutes < 30 else "FAIL") if proj["exact_setting"] else "n/a"})
        cl, rd = proj["cluster_16m"], proj["read_pass_16m"]
        ok = cl < 30 and cl <= 10 * rd
        out.append({"target": TARGETS["cluster_16m"],
                    "value": f"cluster {cl:.0f}s (train {proj['stages']['cluster'].get('train', float('nan')):.0f}s + "
                             f"assign pass {proj['stages']['cluster'].get('assign', float('nan')):.0f}s + rest); one read "
                             f"pass {rd:.1f}s; ratio {cl / rd:.1f}x",
                    "result": ("PASS" if ok else "FAIL") if proj["exact_setting"] else "n/a"})
    else:
        out.append({"target": TARGETS["projected_16m_minutes"], "value": "not measured", "result": "n/a"})
        out.append({"target": TARGETS["cluster_16m"], "value": "not measured", "result": "n/a"})
    if len(pipe):
        peak = float(pipe["peak_rss_gb"].max())
        at = pipe.loc[pipe["peak_rss_gb"].idxmax()]
        out.append({"target": TARGETS["peak_rss_gb"],
                    "value": f"max {peak:.2f} GB (at N={int(at.N):,}, C={int(at.C)}, D={int(at.D)}, {at['item']})",
                    "result": "PASS" if peak < 8 else "FAIL"})
    else:
        out.append({"target": TARGETS["peak_rss_gb"], "value": "not measured", "result": "n/a"})
    km = table[(table["section"] == "kmeans") & ~table["item"].isin(("sklearn", "sklearn_sub"))
               & ~table["item"].isin(GPU_ITEMS)] if "section" in table else table.iloc[0:0]
    if len(km):
        parts, ok_all = [], True
        for (n, c, d), grp in km.groupby(["N", "C", "D"]):
            best = grp.loc[grp["seconds"].idxmin()]
            sub = best.get("speedup_vs_sklearn_sub", float("nan"))
            ok = best["speedup_vs_sklearn"] >= 5 and best["inertia_vs_sklearn"] <= 1.01
            ok_all &= bool(ok)
            parts.append(f"N={int(n):,}/C={int(c)}/D={int(d)}: {best['item']} {best['speedup_vs_sklearn']:.1f}x all-rows"
                         f" sklearn, {sub:.1f}x subsample sklearn, inertia {best['inertia_vs_sklearn']:.4f}")
        out.append({"target": TARGETS["kmeans_speedup"], "value": "; ".join(parts),
                    "result": ("PASS" if ok_all else "FAIL") + " (vs all rows)"})
    else:
        out.append({"target": TARGETS["kmeans_speedup"], "value": "not measured", "result": "n/a"})
    tr = table[(table["section"] == "train") & table["ratio_vs_ce"].notna()] if "ratio_vs_ce" in table \
        else table.iloc[0:0]
    if len(tr):
        step = tr[tr["item"].str.startswith("step")]

        def where(r) -> str:
            m = re.search(r"\[(.+)\]$", r.item)
            return f"{m.group(1)} C={int(r.C)}" if m else f"C={int(r.C)}"

        parts = [f"{where(r)}: {r.ratio_vs_ce:.3f}x" for r in step.itertuples()]
        ok = bool((step["ratio_vs_ce"] <= 1.10).all()) if len(step) else bool((tr["ratio_vs_ce"] <= 1.10).all())
        out.append({"target": TARGETS["train_overhead"], "value": f"median step {', '.join(parts)} (spread in the table)",
                    "result": "PASS" if ok else "FAIL"})
    else:
        out.append({"target": TARGETS["train_overhead"], "value": "not measured", "result": "n/a"})
    return out


def scaling_figure(table: pd.DataFrame, proj: dict[str, Any] | None = None):
    """Log-log time vs N: k-means backends (left) and the whole pipeline (right), one line per (C, D).

    With ``proj`` the pipeline panel also shows the projection to 16M (dashed, star) and the
    30-minute target.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, section, title in ((axes[0], "kmeans", "k-means, cluster-reweighting workload"),
                               (axes[1], "pipeline", "urnet weights, end to end")):
        sub = table[(table["section"] == section) & ~table["item"].str.startswith("projection")] \
            if "section" in table else table.iloc[0:0]
        for (item, c, d), grp in sub.groupby(["item", "C", "D"]):
            grp = grp.sort_values("N")
            label = f"{item} C={int(c)} D={int(d)}"
            ax.plot(grp["N"].astype(float), grp["seconds"].astype(float), marker="o", label=label)
        if section == "pipeline" and proj is not None and len(sub):
            src = proj["from"]
            last = sub[(sub["C"] == src["C"]) & (sub["D"] == src["D"]) & (sub["N"] == src["N_max"])
                       & (sub["item"] == f"urnet weights [{WeightsVariant(src.get('dtype', 'float16'), 'ids')}]")]
            if len(last):
                ax.plot([src["N_max"], PROJECTION_N], [float(last["seconds"].iloc[0]), proj["seconds"]], "k--",
                        marker="*", markersize=10, label=f"projection to 16M (from C={src['C']} D={src['D']})")
            ax.axhline(30 * 60, color="r", lw=0.8, ls=":", label="30 min target")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (instances)")
        ax.set_ylabel("seconds")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def weights_table(pipe: Sequence[tuple[Size, dict[str, Any]]]) -> pd.DataFrame:
    """One row per ``urnet weights`` run: inputs, per-stage seconds, wall, peak RSS, one-pass read."""
    rows = []
    for size, res in pipe:
        st = res["seconds"]
        cl = res.get("cluster", {})
        row = {"N": size.n, "C": size.c, "D": size.d, "inputs": str(WeightsVariant(**res["variant"]))}
        for k in WEIGHTS_STAGES:
            row[k] = st.get(k, float("nan"))
        row["cluster: train"] = cl.get("train", float("nan"))
        row["cluster: assign pass"] = cl.get("assign", float("nan"))
        row["one read pass"] = res.get("read_pass", float("nan"))
        row["wall"] = res["total"]
        row["peak_rss_gb"] = res["peak_rss_bytes"] / 1e9
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("N", "C", "D"):
        df[col] = df[col].astype("Int64")
    return df


def write_report(path: str | os.PathLike, table: pd.DataFrame, targets: Sequence[dict[str, Any]],
                 info: dict[str, Any], *, settings: dict[str, Any], figure_path: str | os.PathLike | None,
                 proj: dict[str, Any] | None, pipe: Sequence[tuple[Size, dict[str, Any]]] | None = None) -> Path:
    """Write the markdown report atomically: machine, what was run, `urnet weights` end to end, the table, targets."""
    path = Path(path)
    load = settings.get("load_average")
    lines = [
        "# URNet scale benchmark (`urnet bench`)", "",
        f"Generated {info['date']} by `{settings.get('command', 'urnet bench')}`"
        f" in {settings.get('wall_seconds', float('nan')) / 60:.1f} min.", "",
        "## Machine", "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; RAM {info['ram_gib']} GiB; GPU: {info['gpu']}",
        f"- Python {info['python']}, numpy {info['numpy']}, torch {info['torch']} ({info['torch_threads']} threads), "
        f"faiss {info['faiss']}, scikit-learn {info['sklearn']}",
    ]
    if load:
        lines.append(f"- 1-minute load average at the start / end of the run: {load[0]:.1f} / {load[1]:.1f} on "
                     f"{info['cores']} cores (other work shared the CPUs: times are upper bounds for an idle machine)")
    lines += [
        "", "## What was run", "",
        f"- sizes (N x C x D): {', '.join(f'{s.n:,} x {s.c} x {s.d}' for s in settings['sizes'])}",
        f"- `urnet weights` sizes: {', '.join(f'{s.n:,} x {s.c} x {s.d}' for s in settings['pipeline_sizes'])}"
        if settings.get("pipeline_sizes") else "- `urnet weights` sizes: the same",
        f"- sections: {', '.join(settings['sections'])}; k-means rows: {', '.join(settings['backends'])}",
        f"- problem caps (fixed random subset, time extrapolated by rows): {settings['max_problems']}",
        f"- `urnet weights`: every strategy on (class, cluster, instance with instance_epochs="
        f"{settings['instance_epochs']}, bag, label), k-means backend '{settings['pipeline_backend']}', "
        f"confidence model on '{settings.get('device', 'cpu')}'",
        "- synthetic data: memmap features (Gaussian mixture, exponential long tail 100:1, confusable groups of 5 "
        "classes, 3 modes per class, rows ordered by class), predicted class ids confusing classes within groups "
        "(70% right, 25% group mate, 5% random); see `urnet_core/benchmarks/suite.py`.",
    ]
    for note in settings.get("notes", []):
        lines.append(f"- {note}")
    if pipe:
        lines += [
            "", "## urnet weights, end to end", "",
            "Each row is one run of `python -m urnet_core.cli -v weights --table T.parquet --features F.npy "
            "--probs P.npy --label-vectors V.npy --config cfg.yaml --out DIR` in a fresh process, on the inputs "
            "named in `inputs` (features as a float16 or float32 `.npy` memory map; probabilities as (n,) class "
            "ids or dense (n, C) float32). Stage seconds come from the child's log: `compose_weights` logs "
            "`stage <name> took <s>s` for `validate_features` (NaN/inf pass over the features), `validate_probs` "
            "(the pass over the probabilities: checks + argmax), `class`, `cluster` (confusion matrix + cluster "
            "weights; split into centroid training on the subsamples and the one assignment pass), `instance`, "
            "`combine`, `label`; `file_hash` sums the hashes of the inputs (sha256 of the whole file); `other` is "
            "the rest of the wall time (interpreter start and imports, reading the table, writing the outputs). "
            "`wall` is the child's wall time. `peak_rss_gb` is the child's own peak RSS: `ru_maxrss` from "
            "`wait4` in a launcher that forks it (no vfork, so the bench's memory is not inherited), checked "
            "against VmHWM polled from `/proc/<pid>/status`. `one read pass` is, separately, the time to read "
            "every row of the same features file once and convert it to float32 in the cluster pass's chunks "
            "and threads (no distances).", "",
            to_markdown(weights_table(pipe)), "",
        ]
    if proj is not None:
        src = proj["from"]
        lines += [
            "### Projection to 16M x 5000 x 256", "",
            f"From the float16 / class-ids series C={src['C']}, D={src['D']} (largest measured N_max="
            f"{src['N_max']:,}), per stage, with a model that follows what the stage does:", "",
            "- passes over the rows (validation of features and probabilities, file hashes, the cluster "
            "assignment pass, confusion matrix, combining, label targets, `other`): linear, "
            "`t(16M) = t(N_max) * 16M / N_max` (their start-up cost is scaled too, so this overestimates);",
            "- cluster centroid training: at most 256 k = 1280 rows per problem, so it depends on C, not N, once "
            "problems are that large: `t(N_max)` times the ratio of training rows at 16M to those at N_max "
            "(computed from the measured problems' rows, each scaled by 16M / N_max and capped at 1280);",
            "- instance weights: the confidence model trains on top_r x C positives (fixed in N), then scores every "
            "row: `a + b N` fitted over the measured N (least squares, a >= 0), with `b` at least the measured "
            "one-read-pass time per row;",
            "- no stage is given an exponent below 1 in N for its per-row part; the all-linear bound scales "
            "every stage's time at N_max by 16M / N_max.", "",
            "| stage | measured at N_max (s) | model | projected at 16M (s) |", "|---|---|---|---|",
        ]
        for k, v in proj["stages"].items():
            lines.append(f"| {k} | {v['measured']:.3g} | {v['model']} | {v['seconds']:.3g} |")
        lines += [
            f"| **total** | {sum(v['measured'] for v in proj['stages'].values()):.3g} | | "
            f"**{proj['seconds']:.0f} s = {proj['seconds'] / 60:.1f} min** (all-linear bound "
            f"{proj['linear_bound'] / 60:.1f} min) |", "",
            f"Cluster step at 16M x 5000 x 256 (float16): **{proj['cluster_16m']:.0f} s** projected; one read pass of "
            f"the 16M-row float16 file: {proj['read_pass_16m']:.1f} s projected (linear from its measurement at "
            f"N_max); ratio {proj['cluster_16m'] / proj['read_pass_16m']:.1f}x.", "",
        ]
        p32 = proj.get("float32")
        if p32 is not None:
            lines += [f"float32 features (series N = "
                      f"{', '.join(str(n) for n in sorted({s.n for s, r in (pipe or []) if r['variant']['dtype'] == 'float32' and s.c == src['C'] and s.d == src['D']}))}): "
                      f"{p32['seconds'] / 60:.1f} min projected at 16M, cluster step {p32['cluster_16m']:.0f} s, "
                      f"one read pass {p32['read_pass_16m']:.1f} s.", ""]
    lines += [
        "## All rows", "",
        "How to read the table: `seconds` is, for `kmeans`, the k-means time of all the size's problems "
        "(reading the rows excluded; extrapolated by rows where `measured_on` is a subset): `sklearn` runs Lloyd "
        "on every row of a problem, `sklearn_sub` trains scikit-learn on the same subsample faiss trains on "
        "(at most 256 k rows) and then assigns every row, `faiss` trains on its own 256 k subsample and assigns "
        "every row with an exact search, `faiss_onepass` trains faiss on the subsample as the cluster step does "
        "and assigns every row; `speedup_vs_sklearn` / `speedup_vs_sklearn_sub` = that scikit-learn time / the "
        "row's; `inertia_vs_sklearn` = the row's inertia over *every* row of the compared problems / all-rows "
        "scikit-learn's (lower is better). For `pipeline`, `seconds` is the wall time of `urnet weights` "
        "(stages in `note`); for `train`, the median over repetitions of the median step (spread in `note`); "
        "for `data`, the time for the images after the first batch.", "",
        to_markdown(table), "",
    ]
    lines += ["## Targets (issue \"Scale\")", "", "| target | measured | result |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['value']} | **{t['result']}** |" for t in targets]
    if figure_path is not None:
        rel = os.path.relpath(figure_path, path.parent)
        lines += ["", f"![time vs N]({rel})"]
    return write_text(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- driver
@dataclass
class BenchSettings:
    """Everything :func:`run_bench` needs (the CLI builds it)."""

    sizes: Sequence[Size]
    cache_dir: Path
    sections: Sequence[str] = ("kmeans", "pipeline", "train", "data")
    pipeline_sizes: Sequence[Size] | None = None
    kmeans_sizes: Sequence[Size] | None = None
    backends: Sequence[str] | None = None
    max_problems: dict[str, int] = field(default_factory=lambda: {"sklearn": 40})
    instance_epochs: int = 50
    pipeline_backend: str = "auto"
    train_steps: int = 30
    train_reps: int = 5
    train_warmup: int = 5
    train_epochs: int = 3
    train_setups: Sequence[tuple[int, str, int, bool]] = FULL_TRAIN_SETUPS
    data_images: int = 1024
    data_batch_size: int = 64
    data_workers: int | None = None
    isolate: bool = True
    device: str = "cpu"
    max_minutes: float | None = None
    seed: int = 0
    progress: bool = True
    notes: list[str] = field(default_factory=list)


SECTIONS = ("kmeans", "pipeline", "train", "data")


def run_bench(settings: BenchSettings) -> tuple[pd.DataFrame, list[tuple[Size, dict]], dict[str, Any] | None]:
    """Run the selected sections; returns ``(table, pipeline results, projection)``."""
    from tqdm.auto import tqdm

    backends = list(settings.backends or available_backends())
    rows: list[dict[str, Any]] = []
    pipe: list[tuple[Size, dict]] = []
    tasks = plan_tasks(settings)
    bar = tqdm(tasks, desc="bench", disable=not settings.progress)
    data_cache: dict[Size, SyntheticData] = {}
    t_start = time.perf_counter()
    Path(settings.cache_dir).mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache folder yet
    for section, size in bar:
        bar.set_postfix_str(f"{section} {size or ''}")
        t0 = time.perf_counter()
        if settings.max_minutes is not None and (t0 - t_start) / 60 > settings.max_minutes:
            settings.notes.append(f"SKIPPED (over the {settings.max_minutes:g} min budget): {section} {size or ''}")
            logger.warning("bench: over the time budget, skipping %s %s", section, size or "")
            continue
        if size is not None and size not in data_cache:
            data_cache[size] = synthetic_data(size, settings.cache_dir, seed=settings.seed, progress=settings.progress)
        if section == "kmeans":
            rows += kmeans_section(data_cache[size], backends=backends, max_problems=settings.max_problems,
                                   seed=settings.seed, progress=settings.progress)
        elif section == "pipeline":
            pipe_sizes = list(settings.sizes if settings.pipeline_sizes is None else settings.pipeline_sizes)
            for variant in weights_variants(size, pipe_sizes):
                if settings.max_minutes is not None and (time.perf_counter() - t_start) / 60 > settings.max_minutes:
                    settings.notes.append(f"SKIPPED (over the {settings.max_minutes:g} min budget): "
                                          f"urnet weights {size} [{variant}]")
                    continue
                res = weights_section(data_cache[size], variant, instance_epochs=settings.instance_epochs,
                                      backend=settings.pipeline_backend, seed=settings.seed, device=settings.device)
                if size.c == PROJECTION_C and size.d == PROJECTION_D:
                    res["problem_rows"] = _problem_rows(data_cache[size])
                logger.info("urnet weights %s [%s]: %.1fs, peak RSS %.2f GB", size, variant, res["total"],
                            res["peak_rss_bytes"] / 1e9)
                pipe.append((size, res))
        elif section == "train":
            for c, model_name, image_size, loop in settings.train_setups:
                rows += train_step_section(num_classes=c, steps=settings.train_steps, warmup=settings.train_warmup,
                                           epochs=settings.train_epochs, seed=settings.seed, device=settings.device,
                                           model_name=model_name, image_size=image_size, train_loop=loop,
                                           reps=settings.train_reps)
        elif section == "data":
            rows += data_loading_section(n_images=settings.data_images, batch_size=settings.data_batch_size,
                                         workers=settings.data_workers, tmp_dir=settings.cache_dir,
                                         seed=settings.seed)
        logger.info("bench %s %s: %.1fs", section, size or "", time.perf_counter() - t0)
    if pipe:
        rows += pipeline_rows(pipe, instance_epochs=settings.instance_epochs)
    rows = _add_kmeans_exponents(rows)
    proj = None
    if pipe:
        problem_rows = {s.n: r["problem_rows"] for s, r in pipe if "problem_rows" in r}
        proj = projection(pipe, problem_rows=problem_rows)
        proj32 = projection(pipe, problem_rows=problem_rows, dtype="float32")
        if proj is not None:
            proj["float32"] = proj32
    if proj is not None:
        rows.append({"section": "pipeline", "item": "projection [float16, class ids]", "N": PROJECTION_N,
                     "C": PROJECTION_C, "D": PROJECTION_D, "seconds": proj["seconds"],
                     "note": "; ".join(f"{k} {v['seconds']:.3g}s ({v['model']})" for k, v in proj["stages"].items())
                             + f"; from C={proj['from']['C']}, D={proj['from']['D']}, N_max={proj['from']['N_max']:,};"
                             f" all-linear bound {proj['linear_bound']:.0f}s"})
    order = {s: i for i, s in enumerate(SECTIONS)}
    table = make_table(rows)
    # Sections in SECTIONS order; within one, by (C, D, N); backends keep their run order.
    table = table.sort_values(["section", "C", "D", "N"], key=lambda col: col.map(order)
                              if col.name == "section" else col, kind="stable").reset_index(drop=True)
    return table, pipe, proj


def plan_tasks(settings: BenchSettings) -> list[tuple[str, Size | None]]:
    """Run order: train and data (cheap, size-free), then k-means and pipeline per size in the given
    order, except pipeline runs at a D other than the projection's (the most expensive, not used by
    the projection) which come last. A time budget (``max_minutes``) therefore cuts those first.
    """
    tasks: list[tuple[str, Size | None]] = [(s, None) for s in ("train", "data") if s in settings.sections]
    pipe_sizes = list(settings.sizes if settings.pipeline_sizes is None else settings.pipeline_sizes)
    last: list[tuple[str, Size | None]] = []
    for size in list(settings.sizes) + [s for s in pipe_sizes if s not in settings.sizes]:
        if "kmeans" in settings.sections and size in settings.sizes and (
                settings.kmeans_sizes is None or size in settings.kmeans_sizes):
            tasks.append(("kmeans", size))
        if "pipeline" in settings.sections and size in pipe_sizes:
            (tasks if size.d == PROJECTION_D else last).append(("pipeline", size))
    return tasks + last


def _add_kmeans_exponents(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure atomically (PNG, 120 dpi)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)


def default_cache_dir() -> Path:
    """``$URNET_BENCH_CACHE`` or ``<tmp>/urnet-bench``."""
    return Path(os.environ.get("URNET_BENCH_CACHE") or Path(tempfile.gettempdir()) / "urnet-bench")


def _problem_rows(data: SyntheticData, top_k: int = 4) -> list[int]:
    """Rows of every cluster problem of ``data`` (class + its ``top_k`` most confused), for the projection."""
    _, labels, preds, _ = data.load()
    work = kmeans_workload(labels, preds, data.size.c, data.size.d, top_k=top_k)
    return [int(v) for v in work.problem_rows.values()]
