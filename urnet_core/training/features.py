"""Penultimate-layer features and predictions of a trained baseline, cached on disk.

Cluster reweighting (section 4.2) clusters the baseline's features, the confidence model (4.3)
maps them to a text space, and class/label reweighting (4.1, 4.5) use its predictions, so one
pass over the training set produces both and caches them as ``.npy`` files keyed by
:func:`~urnet_core.utils.io.stable_hash` of the model weights, the dataset identity and the dtype.

Under ``torchrun`` every rank extracts a contiguous shard of the rows and rank 0 gathers them,
writes the cache and returns the arrays (see :func:`extract_features`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from urnet_core.training import distributed as dist_util
from urnet_core.utils.guards import check_disk_space, planned_feature_bytes
from urnet_core.utils.io import load_npy, save_npy, stable_hash
from urnet_core.models.backbones import Backbone
from urnet_core.training.checkpoint import dataset_fingerprint  # noqa: F401  (re-exported: defined beside train's resume check)
from urnet_core.training.inference import run_inference
from urnet_core.utils.devices import resolve_device

logger = logging.getLogger(__name__)

FEATURE_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def model_fingerprint(model: torch.nn.Module) -> str:
    """Stable hash of a model's class and ``state_dict`` (weights and buffers)."""
    state = {
        k: (v.detach().cpu().float() if v.dtype == torch.bfloat16 else v.detach().cpu()).numpy()
        for k, v in model.state_dict().items()
    }
    return stable_hash(type(model).__name__, getattr(model, "name", ""), state)


def extract_features(
    model: Backbone,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    cache_dir: str | os.PathLike | None = None,
    cache_key: Any = None,
    dtype: Any = np.float32,
    progress: bool = False,
    distributed: bool | None = None,
    predictions: str = "probs",
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Encoder features and predicted probabilities of ``model`` on ``dataset``.

    Parameters
    ----------
    model : Backbone
        Its ``encoder`` gives the features, ``head`` + softmax the probabilities.
    dataset : Dataset
        Yields ``(image, label, index)``; rows of the outputs are ordered by ``index``, which
        must cover ``[0, n)``.
    batch_size : int, default=256
    device : str, default='auto'
    cache_dir : path, optional
        When given, results are stored as ``features_<key>.npy`` and ``pred_probs_<key>.npy``
        (written atomically) and a later call with the same key loads them memory-mapped.
    cache_key : any hashable-by-stable_hash value, optional
        Identifies the dataset in the key; defaults to :func:`dataset_fingerprint`. The model's
        weights (:func:`model_fingerprint`) and ``dtype`` are always part of the key.
    dtype : {np.float32, np.float16}, default=np.float32
        Feature dtype (float16 halves the size of large feature matrices).
    progress : bool, default=False
    distributed : bool, optional
        Shard the rows over the ranks of the process group. ``None`` (default): when torchrun
        started this process (``WORLD_SIZE > 1``; the group is then initialised here, NCCL on
        CUDA, gloo on CPU) or a group with several ranks is initialised. Every rank must call
        with the same arguments; rank 0 checks and writes the cache and returns the arrays, the
        other ranks return ``(None, None)``.
    predictions : {'probs', 'classes'}, default='probs'
        ``'classes'``: keep only the predicted class of each row, ``(n,)`` int64 - all that the
        cluster and label stages use - instead of ``(n, C)`` probabilities (320 GB at 16M x
        5000). Cached as ``pred_classes_<key>.npy``.

    Raises
    ------
    urnet_core.utils.guards.InsufficientDiskSpaceError
        With ``cache_dir``, before any inference, when its disk cannot hold the cache.

    Returns
    -------
    features : ndarray (n, D) of ``dtype``
    pred_probs : ndarray (n, C) float32, or (n,) int64 with ``predictions='classes'``
        Memory-mapped read-only arrays when loaded from the cache.
    """
    dtype = np.dtype(dtype)
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be float32 or float16, got {dtype}")
    if distributed is None:
        distributed = dist_util.env_world_size() > 1 or dist_util.is_active()
    sharded = False
    if distributed:
        dev = resolve_device(device)
        if dist_util.init_from_env(dev):
            sharded = True
            device = dist_util.local_device(dev)
    paths = None
    if cache_dir is not None:

        def lookup() -> tuple[tuple[Path, Path], bool]:
            identity = cache_key if cache_key is not None else dataset_fingerprint(dataset)
            key = stable_hash("features-v1", model_fingerprint(model), identity, dtype.str)
            folder = Path(cache_dir)
            pred_name = "pred_classes" if predictions == "classes" else "pred_probs"
            found = (folder / f"features_{key}.npy", folder / f"{pred_name}_{key}.npy")
            if all(p.exists() for p in found):
                logger.info("features cache hit: %s", found[0])
                return found, True
            # Fail before the (possibly hours-long) pass, not when the cache write hits a full disk.
            check_disk_space(
                folder, planned_feature_bytes(len(dataset), model.feature_dim, model.num_classes, dtype,
                                              predictions=predictions),
                what="feature cache",
            )
            return found, False

        # Under torchrun rank 0 alone looks at the cache; its answer (or error) reaches every rank.
        paths, hit = dist_util.run_on_main(lookup) if sharded else lookup()
        if hit:
            return (load_npy(paths[0]), load_npy(paths[1])) if dist_util.is_main() else (None, None)
    probs, _, feats = run_inference(
        model,
        dataset,
        batch_size=batch_size,
        device=device,
        features=True,
        feature_dtype=dtype,
        progress=progress and dist_util.is_main(),
        desc="features",
        distributed=sharded,
        predictions=predictions,
    )
    if probs is None:  # a rank other than 0: its rows went to rank 0
        return None, None
    if paths is not None:
        # A hit needs both files, each written atomically, so a kill between the two writes
        # leaves a cache miss, never a half entry.
        save_npy(paths[1], probs)
        save_npy(paths[0], feats)
    return feats, probs
