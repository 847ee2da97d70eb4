"""Cached pipeline stages.

A stage writes its artefacts into ``<run_dir>/<stage>/<key>/`` where ``key`` is the
:func:`~urnet_core.utils.io.stable_hash` of everything the stage depends on (data, parameters,
upstream keys, code version: the package version and a hash of the source files that compute
artefacts, see :func:`code_version`). The folder is complete only once its ``stage.json`` marker
exists; the marker is written last and atomically, so a stage killed half-way is simply
run again and a half-written folder is never read as valid.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

import urnet_core

from urnet_core.utils.io import file_hash, read_json, stable_hash, write_json

logger = logging.getLogger(__name__)

MARKER = "stage.json"


def package_version() -> str:
    """``urnet_core.__version__``, read at call time (not bound at import) so keys follow it."""
    return urnet_core.__version__


#: Package paths that only present, launch or benchmark: editing them keeps cached stage
#: artefacts valid (the study's notebook skip key still follows them, see :func:`source_digest`).
PRESENTATION_PATHS = ("cli/", "benchmarks/", "study/analysis.py", "study/findings.py", "study/figures.py",
                      "study/plots.py", "study/report.py", "study/runner.py", "study/stats.py",
                      "study/scoring.py", "study/verdict.py", "study/plots_weights.py", "study/plots_results.py")


def package_files() -> list[Path]:
    """Every source and resource file of the package, sorted."""
    root = Path(urnet_core.__file__).resolve().parent
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix in (".py", ".txt", ".yaml") and "__pycache__" not in p.parts)


def computing_files() -> list[Path]:
    """The package files that compute stage artefacts (all but :data:`PRESENTATION_PATHS`)."""
    root = Path(urnet_core.__file__).resolve().parent
    return [p for p in package_files()
            if not p.relative_to(root).as_posix().startswith(PRESENTATION_PATHS)]


@functools.lru_cache(maxsize=2)
def source_digest(scope: str = "compute") -> str:
    """Hash of the package's files: ``'compute'`` (:func:`computing_files`) or ``'all'``."""
    root = Path(urnet_core.__file__).resolve().parent
    files = computing_files() if scope == "compute" else package_files()
    return stable_hash([(p.relative_to(root).as_posix(), file_hash(p)) for p in files])


def _source_digest() -> str:
    return source_digest("compute")


def code_version() -> str:
    """Version of the code that computes artefacts: ``__version__`` plus a hash of the package's
    source and resource files (all but :data:`PRESENTATION_PATHS`).

    Any edit to training, data, reweighting or pipeline code changes every stage key, so a
    cached artefact is never reused by different code (conservative: it also recomputes stages
    the edit did not touch). The file hash is taken once per process.
    """
    return f"{package_version()}+{_source_digest()}"


#: Packages whose version can change a stage's numbers.
KEYED_PACKAGES = ("torch", "torchvision", "numpy", "faiss-cpu", "scikit-learn", "cleanlab", "fasttext")


@functools.lru_cache(maxsize=1)
def runtime_fingerprint() -> dict[str, Any]:
    """What besides the code changes a result: the versions of :data:`KEYED_PACKAGES` and the
    device the trainers pick by themselves (``'auto'``: CUDA runs use bf16 autocast)."""
    import importlib.metadata

    from urnet_core.utils.devices import resolve_device

    versions = {}
    for name in KEYED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"versions": versions, "device": resolve_device("auto").type}


def stage_key(stage: str, *parts: Any) -> str:
    """Key of a stage: hash of its name, the :func:`code_version`, the :func:`runtime_fingerprint`
    and ``parts`` (the stage's inputs, settings and the backend it actually uses)."""
    return stable_hash(stage, code_version(), runtime_fingerprint(), *parts)


def stage_dir(run_dir: str | Path, stage: str, key: str) -> Path:
    return Path(run_dir) / stage / key


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

    ``compute`` writes its artefacts into ``folder`` (atomically, via :mod:`urnet_core.utils.io`)
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
    write_json(marker, {"stage": stage, "key": key, "version": code_version(),
                        "description": description or {}, "summary": summary})
    return folder, summary
