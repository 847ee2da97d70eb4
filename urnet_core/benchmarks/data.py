"""Synthetic web-like data of the scale benchmarks: sizes, features, predictions, text vectors.

Everything ``urnet bench`` measures runs on these files (no real dataset at WebVision scale is
available here), shaped like web data:

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
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from urnet_core.utils.io import atomic_path, read_json, stable_hash, write_json

logger = logging.getLogger(__name__)

#: Bump when the synthetic data generator changes, so cached files are not reused.
DATA_VERSION = 1
#: Where the paper's setting sits: WebVision 2.0.
PROJECTION_N, PROJECTION_C, PROJECTION_D = 16_000_000, 5000, 256


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
