"""Section ``pipeline`` of ``urnet bench``: ``urnet weights`` end to end, and its 16M projection.

Each run is ``python -m urnet_core.cli -v weights`` in a fresh process (:func:`run_weights_cli`)
on a parquet table, float16 or float32 feature memory maps, class-id or dense ``(n, C)``
probabilities, text vectors and a config with every strategy on (:func:`weights_variants`).
Stage seconds are the ``timings`` the command writes into its ``weights.json``; peak RSS is the
child's own (:mod:`urnet_core.benchmarks.launch`). The 16M projection uses a model per stage
(:func:`projection`).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from urnet_core.benchmarks.data import PROJECTION_C, PROJECTION_D, PROJECTION_N, Size, SyntheticData
from urnet_core.benchmarks.fit import affine_fit
from urnet_core.utils.io import atomic_path, read_json, write_text
from urnet_core.utils.threads import single_threaded_pool


#: Stages of ``urnet weights``, read from the ``timings`` of its ``weights.json`` (the seconds
#: :func:`~urnet_core.reweight.compose.compose_weights` fills, plus ``file_hash``: hashing the inputs
#: other than the features, which ``validate_features`` hashes in its pass over them),
#: then what they do not cover (``other``: interpreter start, imports, reading the table and the .npy
#: headers, writing the outputs).
WEIGHTS_STAGES = ("import_torch", "validate_features", "validate_probs", "class", "cluster", "instance", "combine",
                  "label", "file_hash", "other")
#: How each stage grows with N at fixed C and D (see :func:`projection`): ``linear`` = a pass over
#: the rows; ``affine`` = a fixed part (depends on C only) plus a pass over the rows; ``fixed`` =
#: independent of N (importing PyTorch).
STAGE_MODEL = {"import_torch": "fixed", "validate_features": "linear", "validate_probs": "linear", "class": "linear",
               "cluster_train": "train_rows", "cluster_assign": "linear", "instance": "affine",
               "combine": "linear", "label": "linear", "file_hash": "linear", "other": "linear"}
@dataclass(frozen=True)
class WeightsVariant:
    """Input formats of one ``urnet weights`` run: feature dtype and probabilities kind."""

    dtype: str = "float16"
    probs: str = "ids"  # "ids": (n,) class ids; "dense": (n, C) float32 probabilities

    def __str__(self) -> str:
        return f"{self.dtype}, {'class ids' if self.probs == 'ids' else 'dense (n, C) probs'}"


#: Largest input the optional variants write (the default float16 + class-ids run always runs):
#: float32 features of n x d, dense probabilities of n x C float32 (20 GB at 1e6 x 5000).
VARIANT_MAX_BYTES = {"float32": 5e9, "dense": 2e9}


def weights_variants(size: Size, sizes: Sequence[Size]) -> list[WeightsVariant]:
    """Runs per size: float16 features + class ids always; float32 at the largest N of the size's
    (C, D) series whose float32 features fit :data:`VARIANT_MAX_BYTES` (the peak-memory comparison
    with float16); dense (n, C) probabilities at the smallest N (n x C floats). An optional variant
    whose input would exceed :data:`VARIANT_MAX_BYTES` is left out (see :func:`skipped_variants`)."""
    same = [s.n for s in sizes if (s.c, s.d) == (size.c, size.d)]
    out = [WeightsVariant("float16", "ids")]
    if size.n == _largest_float32_n(same, size.d):
        out.append(WeightsVariant("float32", "ids"))
    if size.n == min(same) and size.n * size.c * 4 <= VARIANT_MAX_BYTES["dense"]:
        out.append(WeightsVariant("float16", "dense"))
    return out


def _largest_float32_n(series_n: Sequence[int], d: int) -> int | None:
    """The largest N of a series whose float32 features fit :data:`VARIANT_MAX_BYTES` (None if none does)."""
    fits = [n for n in series_n if n * d * 4 <= VARIANT_MAX_BYTES["float32"]]
    return max(fits) if fits else None


def skipped_variants(size: Size, sizes: Sequence[Size]) -> list[str]:
    """The optional variants :func:`weights_variants` leaves out at ``size`` for their input size, as report notes."""
    same = [s.n for s in sizes if (s.c, s.d) == (size.c, size.d)]
    notes = []
    if size.n == max(same) and size.n * size.d * 4 > VARIANT_MAX_BYTES["float32"]:
        at = _largest_float32_n(same, size.d)
        notes.append(f"urnet weights {size} [float32]: not run (float32 features would be "
                     f"{size.n * size.d * 4 / 1e9:.1f} GB on disk)"
                     + (f"; float32 runs at N={at:,} instead" if at is not None else ""))
    if size.n == min(same) and size.n * size.c * 4 > VARIANT_MAX_BYTES["dense"]:
        notes.append(f"urnet weights {size} [dense probs]: not run (dense (n, C) probabilities would be "
                     f"{size.n * size.c * 4 / 1e9:.1f} GB)")
    return notes


def stream_write(path: Path, shape: tuple[int, int], dtype, fill: Callable[[int, int], np.ndarray]) -> None:
    """Write an .npy of ``shape`` atomically, rows produced by ``fill(start, stop)`` in ~64 MB chunks."""
    from urnet_core.utils.memory import release_pages

    with atomic_path(path) as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        step = max(1, (64 << 20) // (np.dtype(dtype).itemsize * shape[1]))
        for s in range(0, shape[0], step):
            e = min(shape[0], s + step)
            mm[s:e] = fill(s, e)
            mm.flush()
            release_pages(mm, s, e)
        del mm


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
            stream_write(feats, src16.shape, np.float32, lambda s, e: np.asarray(src16[s:e], dtype=np.float32))
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

            stream_write(probs, (n, c), np.float32, fill)
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
    """Run ``python -m urnet_core.cli weights ...`` as a child; return its stage seconds, wall and peak RSS.

    Stage seconds are the ``timings`` the child writes into its ``weights.json``
    (:func:`stage_seconds`); ``other`` is the wall time the stages do not cover. Peak RSS is the
    child's own, measured by :mod:`urnet_core.benchmarks.launch` (``ru_maxrss`` from ``wait4``,
    checked against ``VmHWM`` polled from ``/proc/<pid>/status``); ``cpu`` is the launcher's
    :func:`~urnet_core.benchmarks.launch.cpu_share` (how many cores other work took meanwhile).
    """
    launch = out_dir / "launcher.json"
    cmd = [sys.executable, "-m", "urnet_core.benchmarks.launch", str(launch), "-m", "urnet_core.cli", "-v", "weights",
           "--table", str(inputs["table"]), "--features", str(inputs["features"]), "--probs", str(inputs["probs"]),
           "--label-vectors", str(inputs["label_vectors"]), "--config", str(inputs["config"]),
           "--seed", str(seed), "--out", str(out_dir / "out")]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0 or not launch.exists():
        raise RuntimeError(f"urnet weights failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    meta = read_json(launch)
    summary = read_json(out_dir / "out" / "weights.json")
    timings = summary.get("timings") or {}
    seconds, splits = stage_seconds(timings, meta["wall"])
    return {"seconds": seconds, "timings": timings, "total": meta["wall"], "cluster": splits["cluster"], "instance": splits["instance"],
            "peak_rss_bytes": max(meta["ru_maxrss_bytes"], meta["vmhwm_polled_bytes"]),
            "ru_maxrss_bytes": meta["ru_maxrss_bytes"], "vmhwm_polled_bytes": meta["vmhwm_polled_bytes"],
            "cpu": meta.get("cpu") or {}, "n": summary["n"], "inputs_bytes": {k: Path(v).stat().st_size for k, v in inputs.items()}}


def stage_seconds(timings: dict[str, float], wall: float) -> tuple[dict[str, float], dict[str, dict]]:
    """``(seconds per stage, {"cluster": split, "instance": split})`` from the ``timings`` of a ``weights.json``.

    Stages are the keys of :data:`WEIGHTS_STAGES` present in ``timings``, plus ``other`` (the
    wall time they do not cover). The cluster split (``train``, ``train_rows``, ``assign``) comes
    from ``cluster.train_s``, ``cluster.train_rows`` and ``cluster.assign_s`` when the weights
    wrote them, the instance split (``train``, ``score``, ``train_steps``) from ``instance.train_s``,
    ``instance.score_s`` and ``instance.train_steps``; a split the weights did not write is empty
    (the projection then models the whole stage, :data:`STAGE_MODEL`).
    """
    seconds = {k: float(timings[k]) for k in WEIGHTS_STAGES if k in timings}
    seconds["other"] = max(0.0, wall - sum(seconds.values()))
    parts = ("cluster.train_s", "cluster.train_rows", "cluster.assign_s")
    cluster = {}
    if all(k in timings for k in parts):
        cluster = {"train": float(timings["cluster.train_s"]), "train_rows": int(timings["cluster.train_rows"]),
                   "assign": float(timings["cluster.assign_s"])}
    instance = {}
    if all(k in timings for k in ("instance.train_s", "instance.score_s")):
        instance = {"train": float(timings["instance.train_s"]), "score": float(timings["instance.score_s"]),
                    "train_steps": int(timings.get("instance.train_steps", 0))}
        if "instance.fastest_epoch_s" in timings and "instance.epoch_steps" in timings:
            instance["fastest_epoch"] = float(timings["instance.fastest_epoch_s"])
            instance["epoch_steps"] = int(timings["instance.epoch_steps"])
    return seconds, {"cluster": cluster, "instance": instance}


def read_pass_seconds(features_path: Path, *, chunk_values: int = 1 << 24, workers: int | None = None) -> float:
    """Seconds to read every row of a feature file once and convert it to float32 (the one-pass floor).

    The same chunking, threads and float32 conversion as the cluster step's assignment pass, with
    no distances: the time any pass that looks at every row needs.
    """
    import torch

    from urnet_core.reweight.cluster.one_pass import as_float32_tensor
    from urnet_core.utils.memory import release_pages

    x = np.load(features_path, mmap_mode="r")
    step = max(1, chunk_values // x.shape[1])
    local = threading.local()

    def work(s: int) -> None:
        if getattr(local, "buf", None) is None:  # one reused float32 buffer per thread, as the pass has
            local.buf = torch.empty((step, x.shape[1]), dtype=torch.float32)
        as_float32_tensor(np.asarray(x[s : s + step]), out=local.buf).sum()  # the pass's one conversion
        release_pages(x, s, s + step)

    t0 = time.perf_counter()
    with single_threaded_pool(workers) as pool:
        list(pool.map(work, range(0, x.shape[0], step)))
    return time.perf_counter() - t0


def instance_train_floor(feature_dim: int, *, text_dim: int = 300, batch_size: int = 256, steps: int = 200,
                         seed: int = 0, repeats: int = 3) -> float:
    """Steps/s of the confidence model's floor: the same two-tower MLP (eq. 8's loss, one negative,
    Adam) forward + backward on tensors already resident in memory, with no sampling, gathering or
    label lookup. The instance stage's training steps/s divided by this is its overhead ratio.

    The fastest of ``repeats`` timings of ``steps`` steps: on shared cores a single timing swung
    from 82 to 152 steps/s between runs minutes apart, and other work only ever slows it down."""
    import torch
    import torch.nn.functional as F

    from urnet_core.models.confidence import ConfidenceModel

    gen = torch.Generator().manual_seed(seed)
    model = ConfidenceModel(feature_dim, text_dim)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, feature_dim, generator=gen)
    t = torch.randn(2 * batch_size, text_dim, generator=gen)

    def step() -> None:
        v_i = F.normalize(model.embed_image(x), dim=1)
        v_t = F.normalize(model.embed_text(t), dim=1).reshape(batch_size, 2, -1)
        cos = (v_i[:, None, :] * v_t).sum(2)
        loss = -(cos[:, 0] - cos[:, 1]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(20):  # warm-up: allocator and kernels
        step()
    best = 0.0
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = max(best, steps / (time.perf_counter() - t0))
    return best


def instance_score_floor(feature_dim: int, *, text_dim: int = 300, rows: int | None = None, reps: int | None = None,
                         seed: int = 0, repeats: int = 3) -> float:
    """Seconds per row of the scoring pass's arithmetic alone: the confidence model's image tower,
    the normalisation and the dot product with each row's label vector, on one resident float32 chunk
    of the pass's size (``rows``, default its ``DEFAULT_SCORE_ROWS``; nothing read or converted),
    ``reps`` times (default: ~320k rows in all) on one thread per core as the pass runs its
    chunks, the fastest of ``repeats`` such timings (as
    :func:`instance_train_floor`). The scoring pass over this is its read and conversion overhead."""
    import torch
    import torch.nn.functional as F

    from urnet_core.models.confidence import ConfidenceModel
    from urnet_core.reweight.instance_weight import DEFAULT_SCORE_ROWS

    rows = int(rows or DEFAULT_SCORE_ROWS)
    reps = int(reps or max(5, -(-(5 << 16) // rows)))

    gen = torch.Generator().manual_seed(seed)
    model = ConfidenceModel(feature_dim, text_dim).eval()
    x = torch.randn(rows, feature_dim, generator=gen)
    v_t = F.normalize(torch.randn(5000, 128, generator=gen), dim=1)
    y = torch.randint(0, 5000, (rows,), generator=gen)
    def once(_: int = 0) -> None:
        with torch.inference_mode():
            (F.normalize(model.embed_image(x), dim=1) * v_t[y]).sum(1)

    with single_threaded_pool() as pool:  # threaded as the pass is: a chunk per thread, one torch thread each
        list(pool.map(once, range(os.cpu_count() or 1)))  # warm-up: a chunk per worker
        best = float("inf")
        for _ in range(max(1, int(repeats))):
            t0 = time.perf_counter()
            list(pool.map(once, range(reps)))
            best = min(best, (time.perf_counter() - t0) / (reps * rows))
    return best


def page_cache_fraction(path: str | os.PathLike) -> float:
    """Fraction of a file's pages held in the page cache (``mincore`` on a read-only mapping of it).

    A pass over a file that is not resident reads from disk: on a machine whose page cache holds
    less than the features, the first pass of ``urnet weights`` is bound by the disk, not the CPU.
    NaN where ``mincore`` is not available (non-Linux).
    """
    import ctypes
    import mmap

    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_mmap, c_munmap, c_mincore = libc.mmap, libc.munmap, libc.mincore
    except (OSError, AttributeError):
        return float("nan")
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    c_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    n_pages = -(-size // mmap.PAGESIZE)
    with open(path, "rb") as fh:
        addr = c_mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fh.fileno(), 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        try:
            vec = np.zeros(n_pages, dtype=np.uint8)
            if c_mincore(addr, size, vec.ctypes.data) != 0:
                return float("nan")
        finally:
            c_munmap(addr, size)
    return float((vec & 1).mean())


def one_minute_load() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def contention(res: dict[str, Any]) -> float:
    """Cores other work took during a run on average: other processes plus hypervisor steal (NaN when unknown)."""
    cpu = res.get("cpu") or {}
    if cpu.get("other_cores") is None:
        return float("nan")
    return float(cpu["other_cores"]) + float(cpu.get("steal_cores") or 0.0)


#: Cores other work may take on average during a timed run before the row is repeated.
MAX_OTHER_CORES = 0.25


def weights_section(data: SyntheticData, variant: WeightsVariant, *, instance_epochs: int, backend: str = "auto",
                    seed: int = 0, device: str = "cpu", workdir: Path | None = None,
                    max_other_cores: float = MAX_OTHER_CORES) -> dict[str, Any]:
    """One ``urnet weights`` run on ``data`` in ``variant`` plus the one-pass read floor of its features.

    During the run the launcher measures how many cores other work took (:func:`contention`:
    other processes' CPU time plus hypervisor steal over the child's wall time; the 1-minute
    load before and after is kept too, ``load``, but it counts the run itself). When other work
    took more than ``max_other_cores`` the run is repeated once and the repetition with less
    of it is kept; ``attempts`` lists every run's ``(seconds, other cores, load before, load after)``.
    ``features_cached`` is the share of the features file in the page cache when the run started
    (:func:`page_cache_fraction`).
    """
    inputs = weights_inputs(data, variant, instance_epochs=instance_epochs, backend=backend, device=device)
    base = Path(workdir) if workdir is not None else data.root
    base.mkdir(parents=True, exist_ok=True)
    attempts: list[tuple[float, float, float, float]] = []
    best: dict[str, Any] | None = None
    for _ in range(2):
        before = one_minute_load()
        cached = page_cache_fraction(inputs["features"])
        with tempfile.TemporaryDirectory(prefix="urnet-weights-", dir=base) as tmp:
            res = run_weights_cli(inputs, Path(tmp), seed=seed)
        res["features_cached"] = cached
        res["load"] = (before, one_minute_load())
        other = contention(res)
        attempts.append((res["total"], other, *res["load"]))
        if best is None or other < contention(best):
            best = res
        if not other > max_other_cores:  # NaN (no /proc/stat): never repeated
            break
    best["attempts"] = attempts
    best["max_other_cores"] = max_other_cores
    best["read_pass"] = read_pass_seconds(inputs["features"])
    best["instance_floor_steps_s"] = instance_train_floor(data.size.d)
    best["instance_score_floor_s_per_row"] = instance_score_floor(data.size.d)
    best["variant"] = asdict(variant)
    return best


def train_rows(problem_rows: Sequence[int], k: int = 5) -> int:
    """Rows the cluster step trains centroids on: at most ``256 k`` per problem of more than ``k`` rows."""
    from urnet_core.reweight.kmeans import TRAIN_POINTS_PER_CENTROID

    return int(sum(min(int(m), TRAIN_POINTS_PER_CENTROID * k) for m in problem_rows if m > k))


def instance_floor_note(ins: dict[str, Any], res: dict[str, Any], n_rows: int | None = None) -> str:
    """The instance stage against its floors: training steps/s over :func:`instance_train_floor`'s,
    scoring over one read pass of the features."""
    note = ""
    floor = res.get("instance_floor_steps_s")
    if floor and ins.get("train_steps") and ins["train"] > 0:
        rate = ins["train_steps"] / ins["train"]
        note += f"; training {rate:.0f} steps/s = {floor / rate:.2f}x the floor ({floor:.0f} steps/s on resident tensors)"
        if ins.get("fastest_epoch", 0) > 0 and ins.get("epoch_steps"):
            best = ins["epoch_steps"] / ins["fastest_epoch"]
            note += f", its fastest epoch {best:.0f} steps/s = {floor / best:.2f}x"
    if res.get("read_pass"):
        note += f"; scoring = {ins['score'] / res['read_pass']:.2f}x one read pass"
    per_row = res.get("instance_score_floor_s_per_row")
    if per_row and n_rows:
        tower = per_row * n_rows
        note += (f", {ins['score'] / tower:.2f}x its arithmetic alone ({per_row * 1e6:.2f} us/row: the image tower "
                 "on resident rows)")
    return note


def instance_floors(res: dict[str, Any], n_rows: int) -> dict[str, float]:
    """The instance stage of one run against its floors: ``train_ratio`` (floor steps/s over the
    run's), ``train_ratio_best`` (the same for the run's fastest epoch: the floor is the fastest of
    its timings, so this compares like with like; the whole-run ratio adds the machine's drift over
    minutes of training), ``score_vs_read`` (scoring over one read pass) and ``score_vs_arithmetic`` (scoring over
    :func:`instance_score_floor` times the rows). Missing measurements are left out."""
    ins, out = res.get("instance") or {}, {}
    if ins.get("train_steps") and ins.get("train", 0) > 0 and res.get("instance_floor_steps_s"):
        out["train_ratio"] = res["instance_floor_steps_s"] / (ins["train_steps"] / ins["train"])
        if ins.get("fastest_epoch", 0) > 0 and ins.get("epoch_steps"):
            out["train_ratio_best"] = res["instance_floor_steps_s"] / (ins["epoch_steps"] / ins["fastest_epoch"])
    if ins.get("score") is not None and res.get("read_pass"):
        out["score_vs_read"] = ins["score"] / res["read_pass"]
    if ins.get("score") is not None and res.get("instance_score_floor_s_per_row"):
        out["score_vs_arithmetic"] = ins["score"] / (res["instance_score_floor_s_per_row"] * n_rows)
    return out


def load_note(res: dict[str, Any]) -> str:
    """``; other work x cores (1-min load a -> b)`` of the kept run, and the other attempt when the row was repeated."""
    if "load" not in res:
        return ""
    other = contention(res)
    note = "; other work " + ("not measured" if math.isnan(other) else f"{other:.2f} cores")
    note += f" (1-min load {res['load'][0]:.1f} -> {res['load'][1]:.1f})"
    cached = res.get("features_cached")
    if cached is not None and not math.isnan(cached):
        note += f"; features {100 * cached:.0f}% in the page cache at the start"
    others = [a for a in res.get("attempts", []) if a[0] != res["total"]]
    if others:
        note += f"; repeated (other work over {res.get('max_other_cores', MAX_OTHER_CORES):g} cores), other run: " + ", ".join(
            f"{a[0]:.0f}s with other work {a[1]:.2f} cores" for a in others)
    return note


def pipeline_rows(results: Sequence[tuple[Size, dict[str, Any]]], *, instance_epochs: int) -> list[dict[str, Any]]:
    """Table rows of the ``urnet weights`` runs: one per (size, variant), stage seconds in ``note``."""
    rows = []
    for size, res in results:
        st = res["seconds"]
        cl = res.get("cluster", {})
        parts = ", ".join(f"{k} {st[k]:.3g}s" for k in WEIGHTS_STAGES if k in st)
        if cl:
            parts += f"; cluster = train {cl['train']:.3g}s ({cl['train_rows']:,} rows) + assign pass {cl['assign']:.3g}s"
        ins = res.get("instance", {})
        if ins:
            parts += (f"; instance = train {ins['train']:.3g}s ({ins['train_steps']:,} steps) + score pass "
                      f"{ins['score']:.3g}s")
            parts += instance_floor_note(ins, res, size.n)
        rows.append({
            "section": "pipeline", "item": f"urnet weights [{WeightsVariant(**res['variant'])}]", "N": size.n,
            "C": size.c, "D": size.d, "seconds": res["total"], "peak_rss_gb": res["peak_rss_bytes"] / 1e9,
            "note": parts + f"; one-pass read of the features {res['read_pass']:.3g}s; instance_epochs={instance_epochs}"
                    + load_note(res),
        })
    return rows


def projection(results: Sequence[tuple[Size, dict[str, Any]]], *, n_to: int = PROJECTION_N,
               c_to: int = PROJECTION_C, d_to: int = PROJECTION_D, dtype: str = "float16",
               problem_rows: dict[int, Sequence[int]] | None = None) -> dict[str, Any] | None:
    """Project ``urnet weights`` to ``n_to`` rows from the (C, D) series closest to ``(c_to, d_to)``.

    Per stage, a model that follows what the stage does (:data:`STAGE_MODEL`):

    - ``fixed`` (importing PyTorch): ``t(N_max)``;
    - ``linear`` (a pass over the rows: validation, hashing, assignment, combining, writing):
      ``t(n_to) = t(N_max) * n_to / N_max``, the start-up cost included (an upper bound);
    - ``train_rows`` (cluster centroid training on at most ``256 k`` rows per problem):
      ``t(N_max)`` times the ratio of training rows at ``n_to`` to those at ``N_max``
      (``problem_rows`` of ``N_max``, each problem scaled by ``n_to / N_max``, capped at ``256 k``);
    - ``affine`` (instance weights: the confidence model trains on ``top_r * C`` positives, then
      scores every row): ``a + b n_to`` with ``a, b`` fitted over the series' N, ``b`` no less
      than the measured one-pass read time per row; when the run wrote the instance split
      (``instance.train_s``, ``instance.score_s``), the training part is kept and the scoring
      pass scaled linearly instead.

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
                ratio = train_rows([m * scale for m in pr]) / max(train_rows(pr), 1)
            else:
                ratio = scale
            train = cl["train"] * ratio
            assign = cl["assign"] * scale
            stages["cluster"] = {"seconds": train + assign + rest * scale, "measured": t_last,
                                 "model": f"train x{ratio:.2f} (training rows) + assign pass x{scale:g} + rest x{scale:g}",
                                 "train": train, "assign": assign}
        elif stage == "instance" and last.get("instance"):
            ins = last["instance"]  # the confidence model trains on top_r x C positives: fixed in N
            rest = max(0.0, t_last - ins["train"] - ins["score"])
            stages["instance"] = {"seconds": ins["train"] + (ins["score"] + rest) * scale, "measured": t_last,
                                  "model": f"train x1 (top_r x C positives) + score pass x{scale:g} + rest x{scale:g}"}
        elif STAGE_MODEL.get(stage) == "affine" and len(items) >= 2:
            a, b = affine_fit([s.n for s, _ in items], [r["seconds"].get(stage, 0.0) for _, r in items],
                               min_slope=read_per_row)
            stages[stage] = {"seconds": a + b * n_to, "measured": t_last,
                             "model": f"{a:.1f}s + {b * 1e6:.2f}us/row (fit over N)"}
        elif STAGE_MODEL.get(stage) == "fixed":
            stages[stage] = {"seconds": t_last, "measured": t_last, "model": "x1 (independent of N)"}
        else:
            stages[stage] = {"seconds": t_last * scale, "measured": t_last, "model": f"x{scale:g} (linear)"}
    total = float(sum(v["seconds"] for v in stages.values()))
    bound = float(sum(last["seconds"].get(s, 0.0) for s in WEIGHTS_STAGES) * scale)
    return {"from": {"C": key[0], "D": key[1], "N_max": n_max, "dtype": dtype}, "seconds": total,
            "linear_bound": bound, "stages": stages, "exact_setting": key == (c_to, d_to),
            "measured": n_max == n_to,  # the series reached n_to: every model is x1, the row itself
            "read_pass_16m": last["read_pass"] * scale, "instance_floors": instance_floors(last, n_max),
            "cluster_16m": stages.get("cluster", {}).get("seconds", float("nan"))}
