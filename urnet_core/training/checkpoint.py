"""Run folders and checkpoints of :func:`urnet_core.training.loop.train`.

A run folder holds ``checkpoint.pt`` (written atomically after every epoch), ``metrics.json``
(the history so far) and, from the ``urnet train`` command, the final ``test_metrics.json`` (``final_metrics.json`` before) and
``test_probs.npy``. This module

- identifies the training data: :func:`data_hash` (labels, weights, targets, initial weights)
  and :func:`dataset_fingerprint` (the images: their content for in-memory arrays, path, size and
  modification time for image files, and the transform, so a new image size counts);
- saves and restores the training state (:func:`save_checkpoint`, :func:`restore_checkpoint`)
  and refuses a checkpoint that belongs to another run (:func:`check_resumable`);
- prepares the folder: :func:`prepare_run_dir` checks that it is writable before any epoch
  runs, :func:`clear_run_artefacts` removes an older run's files when a run starts over.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from urnet_core.data.targets import LabelPairs
from urnet_core.utils.io import atomic_path, file_hash, stable_hash, write_json

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
CHECKPOINT_FORMAT = 1
#: Files of a finished or interrupted run (``train`` and ``urnet train`` write them; ``model.pt``: the
#: networks of a method's run); a run that starts over removes them first so an old run's results
#: never sit beside a new checkpoint.
RUN_ARTEFACTS = (CHECKPOINT_NAME, METRICS_NAME, "test_metrics.json", "final_metrics.json", "test_probs.npy",
                 "history.json", "model.pt")
#: Config fields that do not change the trained weights, so a resume may differ in them.
RESUME_FREE_FIELDS = ("eval_every",)
_PROBE_NAME = ".write-probe"


class RunDirNotWritableError(PermissionError, ValueError):
    """The run folder cannot be created or written (``errno`` is the underlying error's).

    A :class:`PermissionError` and a :class:`ValueError`, so the ``urnet`` command line reports
    it as one line.
    """

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]" prefix
        return str(self.strerror)


# --------------------------------------------------------------------------- data identity


def _stable_repr(obj: Any) -> str:
    # Reprs of lambdas and plain objects carry a memory address that changes every process.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


def _file_stats(root: Any, paths: Sequence[str]) -> np.ndarray:
    """(n, 2) int64 of (size, mtime_ns) per file, (-1, -1) for a missing one: a cheap stand-in
    for the bytes of the images (one ``stat`` per file, no reads)."""
    base = Path(root) if root is not None else Path()
    out = np.full((len(paths), 2), -1, dtype=np.int64)
    for i, p in enumerate(paths):
        try:
            st = os.stat(base / p)
        except OSError:
            continue
        out[i] = (st.st_size, st.st_mtime_ns)
    return out


def dataset_fingerprint(dataset: Dataset) -> str:
    """Stable hash of what identifies a dataset: table, images, files, row mapping, root and transform.

    Uses whichever of ``.table``, ``.images`` (hashed by content), ``.image_index``, ``.paths``
    (with each file's size and modification time under ``.root``), ``.labels``, ``.root`` and
    ``.transform`` (its repr, so a new image size or normalisation counts) the dataset has.
    Raises ValueError when it has none of ``.table``/``.images``/``.paths``; pass an explicit
    ``cache_key`` to :func:`~urnet_core.training.features.extract_features` for such datasets.

    Why a stat per file and not a content hash: hashing the bytes of WebVision's 2.4M images
    (~100 GB) would take about as long as the inference pass the feature cache is there to
    skip, whereas one ``stat`` per file costs seconds. Replacing, rewriting or truncating an
    image changes its mtime (and usually its size), so the key changes; the only miss is a
    same-size rewrite that also restores the old nanosecond mtime on purpose (``touch -d`` or
    ``rsync -t`` of different bytes), which we accept. A missing file is recorded as
    ``(-1, -1)``, so one that appears later also changes the key.
    """
    attrs = {name: getattr(dataset, name, None) for name in ("table", "images", "image_index", "paths", "labels")}
    if all(attrs[name] is None for name in ("table", "images", "paths")):
        raise ValueError(
            f"cannot identify a {type(dataset).__name__} for caching (no .table, .images or .paths); pass cache_key="
        )
    parts = {k: np.asarray(v) if k != "table" and v is not None else v for k, v in attrs.items() if v is not None}
    if attrs["paths"] is not None:
        # Paths alone miss an image replaced in place (a rerun of a benchmark writer).
        parts["file_stats"] = _file_stats(getattr(dataset, "root", None), list(attrs["paths"]))
    return stable_hash(
        type(dataset).__name__,
        len(dataset),
        parts,
        str(getattr(dataset, "root", None)),
        _stable_repr(getattr(dataset, "transform", None)),
    )


def training_fingerprint(dataset: Dataset) -> str:
    """:func:`dataset_fingerprint`, extended to wrappers, for the resume check of ``train``.

    A dataset that :func:`dataset_fingerprint` cannot identify is looked through when it wraps
    others (``.dataset``/``.ds`` with ``.indices`` as :class:`torch.utils.data.Subset` has, or
    ``.datasets``); otherwise only its type and length are recorded (a debug message says so),
    since reading items would draw random augmentations.
    """
    try:
        return dataset_fingerprint(dataset)
    except ValueError:
        pass
    inner: Any = getattr(dataset, "datasets", None)
    if not (isinstance(inner, (list, tuple)) and inner and all(isinstance(d, Dataset) for d in inner)):
        inner = next((getattr(dataset, a) for a in ("dataset", "ds") if isinstance(getattr(dataset, a, None), Dataset)),
                     None)
        inner = [inner] if inner is not None else None
    if inner is None:
        logger.debug("%s exposes no images (.images/.paths/.table): the resume check covers labels, weights "
                     "and targets only", type(dataset).__name__)
        return stable_hash("unidentified", type(dataset).__name__, len(dataset))
    indices = getattr(dataset, "indices", None)
    return stable_hash(
        "wrapper",
        type(dataset).__name__,
        len(dataset),
        [training_fingerprint(d) for d in inner],
        np.asarray(indices) if indices is not None else None,
        _stable_repr(getattr(dataset, "transform", None)),
    )


def data_hash(labels: np.ndarray, weights: np.ndarray, targets: np.ndarray | LabelPairs | None,
              weights_path: Any) -> str:
    """Hash of the labels, per-instance weights, targets and initial backbone weights of a run."""
    init = file_hash(weights_path) if weights_path is not None else None
    if isinstance(targets, LabelPairs):
        return stable_hash(labels, weights, f"pairs beta={targets.beta!r}", targets.predicted, init)
    return stable_hash(labels, weights, "onehot" if targets is None else targets, init)


# --------------------------------------------------------------------------- run folder


def prepare_run_dir(run_dir: str | os.PathLike) -> Path:
    """Create ``run_dir`` and check that a file can be written there (before any epoch runs).

    Raises
    ------
    RunDirNotWritableError
        Naming the folder, when it cannot be created or written.
    """
    folder = Path(run_dir)
    probe = folder / f"{_PROBE_NAME}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as fh:
            fh.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunDirNotWritableError(
            exc.errno, f"run folder {folder} is not writable ({exc.strerror or exc}); checkpoints could not be "
                       "saved there: fix its permissions or choose another run_dir"
        ) from exc
    return folder


def clear_run_artefacts(run_dir: str | os.PathLike) -> list[Path]:
    """Remove :data:`RUN_ARTEFACTS` of an older run from ``run_dir``; return the removed paths."""
    removed = []
    for name in RUN_ARTEFACTS:
        path = Path(run_dir) / name
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
    if removed:
        logger.info("starting over in %s: removed the previous run's %s", run_dir, ", ".join(p.name for p in removed))
    return removed


# --------------------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a training checkpoint (on CPU); ValueError naming the file when it is not one."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a urnet training checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def config_diff(saved: dict, current: dict) -> list[str]:
    """``'field: old -> new'`` for every config field that differs, but :data:`RESUME_FREE_FIELDS`."""
    keys = sorted((set(saved) | set(current)) - set(RESUME_FREE_FIELDS))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def check_resumable(ckpt: dict, path: Path, *, config: dict, meta: dict, data_hash: str,
                    fingerprint: str | None) -> None:
    """Raise ValueError (naming ``path`` and every difference) when ``ckpt`` is not this run's."""
    diff = config_diff(ckpt["config"], config)
    diff += [f"{k}: {ckpt[k]!r} -> {v!r}" for k, v in meta.items() if ckpt[k] != v]
    if ckpt["data_hash"] != data_hash:
        diff.append("weights/targets/labels/init weights differ (data hash)")
    saved_fp = ckpt.get("dataset_fingerprint")
    if saved_fp is None:
        # Checkpoints written before fingerprints existed: nothing to compare against.
        logger.warning("%s records no dataset fingerprint; the training images cannot be checked", path)
    elif fingerprint is not None and saved_fp != fingerprint:
        diff.append(f"training dataset differs (images, files, image size/transform; fingerprint "
                    f"{saved_fp} -> {fingerprint})")
    if diff:
        raise ValueError(
            f"{path} belongs to a different run ({'; '.join(diff)}); use another run_dir, or start over in "
            f"{path.parent} with resume=False (`urnet train --no-resume`)"
        )


def save_checkpoint(
    path: Path,
    *,
    epoch: int,
    config: dict,
    meta: dict,
    data_hash: str,
    fingerprint: str | None,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any,
    bag: nn.Module | None = None,
    history: list[dict],
    rng: dict,
    state: dict | None = None,
) -> None:
    """Write the training state after ``epoch`` epochs atomically, and ``metrics.json`` beside it.

    ``state`` (a method's run: every network and optimizer, the method's own state) is stored
    as given, in place of ``model``/``optimizer``/``scheduler``/``bag``.
    """
    if state is None:  # the key order of train()'s checkpoints (the bytes of the file stay as they were)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "bag_branch": bag.state_dict() if bag is not None else None}
    else:
        state = {**state, "scaler": scaler.state_dict()}
    state = {
        "format": CHECKPOINT_FORMAT,
        **meta,
        "epoch": epoch,
        "config": config,
        "data_hash": data_hash,
        "dataset_fingerprint": fingerprint,
        **state,
        "history": history,
        "rng": rng,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    method = {"method": meta["method"]} if "method" in meta else {}
    write_json(path.parent / METRICS_NAME, {**method, "config": config, "data_hash": data_hash, "history": history})


def restore_checkpoint(
    ckpt: dict,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    bag: nn.Module | None,
) -> tuple[int, list[dict]]:
    """Load a checkpoint's state into the given objects; return ``(epochs done, history)``."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    if bag is not None:
        bag.load_state_dict(ckpt["bag_branch"])
    return int(ckpt["epoch"]), list(ckpt["history"])
