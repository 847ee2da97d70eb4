"""Scale benchmarks of the URNet weighting pipeline (``urnet bench``): the driver.

Every number comes from one run on this machine, all rows measured side by side, on
synthetic data shaped like web data (:mod:`urnet_core.benchmarks.data`). Sections (one table,
column ``section``), each in its own module:

1. ``kmeans`` (:mod:`~urnet_core.benchmarks.kmeans`): every k-means backend on the
   cluster-reweighting workload, scheduled in blocks as the cluster step does;
2. ``pipeline`` (:mod:`~urnet_core.benchmarks.pipeline`): ``urnet weights`` itself, end to end in
   a fresh process per run, stage seconds from the ``timings`` of its ``weights.json``, peak RSS
   the child's own (:mod:`~urnet_core.benchmarks.launch`), and the 16M projection;
3. ``train`` (:mod:`~urnet_core.benchmarks.train`): URNet's training step (sample weights, soft
   targets, bag branch) against plain cross entropy on the same backbone and batch;
4. ``data`` (:mod:`~urnet_core.benchmarks.loading`): images/s decoded and transformed from files.

:mod:`~urnet_core.benchmarks.report` writes the table, the targets and the figure.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from urnet_core.benchmarks.data import (
    FULL_TRAIN_SETUPS, PROJECTION_C, PROJECTION_D, PROJECTION_N, Size, SyntheticData, synthetic_data,
)
from urnet_core.benchmarks.kmeans import add_kmeans_exponents, available_backends, kmeans_section
from urnet_core.benchmarks.kmeans import problem_rows as kmeans_problem_rows
from urnet_core.benchmarks.loading import data_loading_section
from urnet_core.benchmarks.pipeline import (
    pipeline_rows,
    projection,
    skipped_variants,
    weights_section,
    weights_variants,
)
from urnet_core.benchmarks.report import make_table
from urnet_core.benchmarks.train import train_step_section

logger = logging.getLogger(__name__)


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
            settings.notes.extend(skipped_variants(size, pipe_sizes))
            for variant in weights_variants(size, pipe_sizes):
                if settings.max_minutes is not None and (time.perf_counter() - t_start) / 60 > settings.max_minutes:
                    settings.notes.append(f"SKIPPED (over the {settings.max_minutes:g} min budget): "
                                          f"urnet weights {size} [{variant}]")
                    continue
                res = weights_section(data_cache[size], variant, instance_epochs=settings.instance_epochs,
                                      backend=settings.pipeline_backend, seed=settings.seed, device=settings.device)
                if size.c == PROJECTION_C and size.d == PROJECTION_D:
                    res["problem_rows"] = kmeans_problem_rows(data_cache[size])
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
    rows = add_kmeans_exponents(rows)
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





def default_cache_dir() -> Path:
    """``$URNET_BENCH_CACHE`` or ``<tmp>/urnet-bench``."""
    return Path(os.environ.get("URNET_BENCH_CACHE") or Path(tempfile.gettempdir()) / "urnet-bench")
