"""Progress of long loops that run inside a notebook kernel, shown in the ``urnet study`` terminal.

A notebook executed by papermill cannot print to the terminal of ``urnet study``: its output
goes into the notebook. So a loop that runs many trainings reports through a small file in the
run folder, ``<run_dir>/progress.json``, which :func:`track` rewrites (atomically) after every
item, and the study runner polls it while the notebook executes
(:class:`urnet_core.study.runner.ProgressWatcher`) and prints, e.g.::

    08_ablation: ablation 12/57 runs, ~8 min left

Usage in a job loop (sequential or ``as_completed``)::

    for job in track(jobs, run_dir=study.run.run_dir, stage="ablation", unit="runs"):
        ...

The estimate of the time left averages the items that took real work (at least
:data:`CACHED_S` seconds), so cached items do not make it optimistic.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

#: File name of the progress record in the run folder.
PROGRESS_FILE = "progress.json"
#: Items faster than this are treated as cache hits and left out of the time estimate.
CACHED_S = 2.0

T = TypeVar("T")


def progress_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / PROGRESS_FILE


def write_progress(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Write ``record`` (plus the time) to ``<run_dir>/progress.json`` atomically; never raises
    (progress is a courtesy: a read-only or full disk must not stop a study)."""
    path = progress_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**record, "updated": time.time(), "pid": os.getpid()}))
        os.replace(tmp, path)
    except OSError:
        pass


def read_progress(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The last record :func:`write_progress` wrote (None when absent or unreadable)."""
    try:
        return json.loads(progress_path(run_dir).read_text())
    except (OSError, ValueError):
        return None


def seconds_left(record: dict[str, Any]) -> float | None:
    """Estimated seconds until ``record``'s loop ends (None before any item did real work)."""
    left = int(record.get("total", 0)) - int(record.get("done", 0))
    slow, slow_s = int(record.get("slow_done", 0)), float(record.get("slow_seconds", 0.0))
    if left <= 0:
        return 0.0
    if slow == 0:
        return None
    return left * slow_s / slow


def format_duration(seconds: float) -> str:
    """``"40 s"``, ``"8 min"``, ``"1.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_progress(record: dict[str, Any]) -> str:
    """One line for the terminal, e.g. ``"ablation: 12/57 runs, ~8 min left"``."""
    text = f"{record.get('stage', 'progress')}: {record.get('done', 0)}/{record.get('total', '?')} " \
           f"{record.get('unit', 'items')}"
    left = seconds_left(record)
    if left is not None and left > 0:
        text += f", ~{format_duration(left)} left"
    return text


def track(items: Iterable[T], *, run_dir: str | os.PathLike, stage: str, total: int | None = None,
          unit: str = "runs") -> Iterator[T]:
    """Yield ``items`` and record after each one how many are done in ``<run_dir>/progress.json``.

    ``total`` defaults to ``len(items)``. Works for a plain loop (the time of an item is the
    time between two yields) and for ``concurrent.futures.as_completed`` (the time between
    two completions, i.e. the throughput of the pool).
    """
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    record = {"stage": stage, "unit": unit, "done": 0, "total": int(total), "slow_done": 0, "slow_seconds": 0.0,
              "started": time.time()}
    write_progress(run_dir, record)
    last = time.monotonic()
    for item in items:
        yield item
        now = time.monotonic()
        record["done"] += 1
        if now - last >= CACHED_S:
            record["slow_done"] += 1
            record["slow_seconds"] += now - last
        last = now
        write_progress(run_dir, record)
