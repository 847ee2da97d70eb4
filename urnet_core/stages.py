"""Cached pipeline stages.

A stage writes its artefacts into ``<run_dir>/<stage>/<key>/`` where ``key`` is the
:func:`~urnet_core.io.stable_hash` of everything the stage depends on (data, parameters,
upstream keys, code version). The folder is complete only once its ``stage.json`` marker
exists; the marker is written last and atomically, so a stage killed half-way is simply
run again and a half-written folder is never read as valid.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import urnet_core

from .io import read_json, stable_hash, write_json

logger = logging.getLogger(__name__)

MARKER = "stage.json"


def package_version() -> str:
    """``urnet_core.__version__``, read at call time (not bound at import) so keys follow it."""
    return urnet_core.__version__


def stage_key(stage: str, *parts: Any) -> str:
    """Key of a stage: hash of its name, the package version and ``parts``."""
    return stable_hash(stage, package_version(), *parts)


def stage_dir(run_dir: str | Path, stage: str, key: str) -> Path:
    return Path(run_dir) / stage / key


def is_complete(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def run_stage(
    run_dir: str | Path,
    stage: str,
    key: str,
    compute: Callable[[Path], dict],
    *,
    force: bool = False,
    description: dict | None = None,
) -> tuple[Path, dict]:
    """Run ``compute(folder)`` unless the stage ``key`` is already complete.

    ``compute`` writes its artefacts into ``folder`` (atomically, via :mod:`urnet_core.io`)
    and returns a JSON-able summary, stored in the marker and returned on later calls.
    Returns ``(folder, summary)``.
    """
    folder = stage_dir(run_dir, stage, key)
    marker = folder / MARKER
    if marker.is_file() and not force:
        logger.debug("stage %s/%s cached", stage, key)
        return folder, read_json(marker)["summary"]
    if force and folder.exists():
        shutil.rmtree(folder)
    if folder.exists():
        # A killed run left the folder without its marker: its files are not trusted, the
        # stage runs again (a training inside it resumes from its own checkpoint).
        logger.info("stage %s/%s: incomplete (no %s), running again", stage, key, MARKER)
    else:
        logger.info("stage %s/%s: running", stage, key)
    folder.mkdir(parents=True, exist_ok=True)
    summary = compute(folder)
    write_json(marker, {"stage": stage, "key": key, "version": package_version(),
                        "description": description or {}, "summary": summary})
    return folder, summary
