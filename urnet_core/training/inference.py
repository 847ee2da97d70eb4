"""Inference of a trained model: class probabilities (:func:`predict`), the evaluation metrics
(:func:`evaluate`) and the shared pass both use (:func:`run_inference`, also returning features),
with optional test-time augmentation and a sharded pass under DDP.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from urnet_core.models.backbones import Backbone
from urnet_core.training import distributed as dist_util
from urnet_core.training.loop import TTA_MODES
from urnet_core.training.metrics import classification_metrics
from urnet_core.utils.devices import resolve_device
from urnet_core.utils.validation import check_option, check_positive_int

logger = logging.getLogger(__name__)


def _tta_views(tta: str | None, x: torch.Tensor) -> list[torch.Tensor]:
    """Test-time views of a batch (B, ch, H, W), the batch itself first; see :func:`predict`."""
    if tta is None:
        return [x]
    h, w = x.shape[-2:]
    if tta == "flip":
        return [x, torch.flip(x, dims=[-1])]
    if tta == "multicrop":
        s = max(1, round(min(h, w) / 14))  # 2 px at 28x28, 16 px at 224x224
        padded = F.pad(x, (s, s, s, s))
        shifts = [(-s, 0), (s, 0), (0, -s), (0, s)]
        return [x] + [padded[..., s + dy : s + dy + h, s + dx : s + dx + w] for dy, dx in shifts]
    if tta == "multiscale":
        sizes = [(max(1, round(h * f)), max(1, round(w * f))) for f in (0.875, 1.125)]
        return [x] + [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for size in sizes]
    raise ValueError(f"tta={tta!r} is not valid; choose one of {list(TTA_MODES)} or None")


PREDICTION_MODES = ("probs", "classes")


@torch.no_grad()
def run_inference(
    model: Backbone,
    dataset: Dataset,
    *,
    batch_size: int,
    device: str | torch.device,
    tta: str | None = None,
    features: bool = False,
    feature_dtype: Any = np.float32,
    progress: bool = False,
    desc: str = "predict",
    distributed: bool = False,
    predictions: str = "probs",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Return ``(pred_probs (n, C) float32, labels (n,), features (n, D) or None)`` by dataset index.

    With ``predictions="classes"`` the first array is the predicted class ids ``(n,)`` int64
    instead (each batch's argmax): ``O(n)`` memory where ``(n, C)`` probabilities would not fit
    (16M x 5000 float32 is 320 GB).

    Rows the dataset never yields get uniform probabilities (class 0 as ids), zero features and
    label -1.

    With ``distributed`` and an active process group of several ranks, every rank (all must
    call) runs a contiguous shard of the dataset's positions and rank 0 gathers the rows: rank 0
    returns the full arrays, the other ranks ``(None, None, None)``.
    """
    if tta is not None:
        check_option(tta, "tta", TTA_MODES)
    check_option(predictions, "predictions", PREDICTION_MODES)
    classes_only = predictions == "classes"
    check_positive_int(batch_size, "batch_size")
    dev = resolve_device(device)
    n = len(dataset)
    sharded = distributed and dist_util.is_active()
    source, rows = dataset, n
    if sharded:
        # Rows are kept in yield order here and put in index order on rank 0.
        lo, hi = dist_util.shard_range(n)
        source, rows = Subset(dataset, range(lo, hi)), hi - lo
        got = np.full(rows, -1, dtype=np.int64)
        pos = 0
    was_training = model.training
    model.eval()
    model_device = next(model.parameters()).device
    model.to(dev)

    def new_predictions(count: int) -> np.ndarray:
        return np.zeros(count, dtype=np.int64) if classes_only else np.zeros((count, model.num_classes), np.float32)

    probs = new_predictions(rows)
    labels = np.full(rows, -1, dtype=np.int64)
    feats = np.zeros((rows, model.feature_dim), dtype=feature_dtype) if features else None
    # An explicit generator: a DataLoader otherwise draws its worker seed from the global RNG.
    loader = DataLoader(
        source, batch_size=batch_size, shuffle=False, pin_memory=dev.type == "cuda", generator=torch.Generator()
    )
    try:
        for x, y, idx in tqdm(loader, desc=desc, disable=not progress, leave=False):
            idx_np = idx.numpy().astype(np.int64)
            if idx_np.min() < 0 or idx_np.max() >= n:
                raise ValueError(f"dataset index out of range [0, {n}): got {idx_np.min()}..{idx_np.max()}")
            dest = idx_np
            if sharded:
                dest = np.arange(pos, pos + idx_np.size)
                got[dest] = idx_np
                pos += idx_np.size
            x = x.to(dev, non_blocking=True)
            p = torch.zeros(x.shape[0], model.num_classes, device=dev)
            views = _tta_views(tta, x)
            for v, view in enumerate(views):
                f = model.encoder(view)
                p += torch.softmax(model.head(f).float(), dim=1)
                if features and v == 0:  # features of the un-augmented batch
                    feats[dest] = f.float().cpu().numpy().astype(feature_dtype)
            probs[dest] = (p.argmax(1) if classes_only else p / len(views)).cpu().numpy()
            labels[dest] = y.numpy()
    finally:
        model.to(model_device)
        model.train(was_training)
    if sharded:
        local = (got[:pos], probs[:pos], labels[:pos]) + ((feats[:pos],) if features else ())
        main = dist_util.is_main()
        probs = new_predictions(n) if main else None
        labels = np.full(n, -1, dtype=np.int64) if main else None
        feats = np.zeros((n, model.feature_dim), dtype=feature_dtype) if features and main else None

        def consume(block: tuple[np.ndarray, ...]) -> None:
            probs[block[0]] = block[1]
            labels[block[0]] = block[2]
            if features:
                feats[block[0]] = block[3]

        dist_util.gather_rows(local, consume)
        if not main:
            return None, None, None
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        # Datasets that skip unreadable images (ImageFileDataset's quarantine) never yield
        # those rows: give them uniform probabilities and zero features, and label -1.
        logger.warning("%d of %d rows were never yielded (e.g. row %d); their predictions are uniform", missing.size, n, missing[0])
        probs[missing] = 0 if classes_only else 1.0 / model.num_classes
    return probs, labels, feats


def predict(
    model: Backbone,
    dataset: Dataset,
    tta: str | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = False,
    distributed: bool = False,
) -> np.ndarray | None:
    """Predicted probabilities (n, C), rows ordered by dataset index, with optional TTA.

    Parameters
    ----------
    tta : {None, 'flip', 'multicrop', 'multiscale'}
        Test-time augmentation; the softmax outputs of the views are averaged.

        - ``'flip'``: the image and its horizontal mirror;
        - ``'multicrop'``: the image and four copies shifted by s pixels up/down/left/right
          (zero padded), s = round(min(H, W) / 14), i.e. 2 px at 28x28 (the paper's multi-crop
          test at 224 px corresponds to crops offset by ~16 px);
        - ``'multiscale'``: the image resized by 0.875, 1.0 and 1.125 and fed at that size (the
          backbones pool adaptively), the paper's multi-scale test.
    distributed : bool, default=False
        With an active process group of several ranks (torchrun): every rank must call; each
        predicts a contiguous shard and rank 0 returns all rows, the other ranks None.
    """
    probs, _, _ = run_inference(
        model, dataset, batch_size=batch_size, device=device, tta=tta, progress=progress, distributed=distributed
    )
    return probs


def evaluate(
    model: Backbone,
    dataset: Dataset,
    *,
    num_classes: int,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    tta: str | None = None,
    progress: bool = False,
    distributed: bool = False,
) -> tuple[dict, np.ndarray | None]:
    """Return ``(classification_metrics dict, pred_probs (n, C))`` of ``model`` on ``dataset``.

    The labels scored against are the ones the dataset yields (use a dataset over true labels
    to score against the truth).

    With ``distributed`` and an active process group of several ranks (torchrun), every rank must
    call: each predicts a contiguous shard, rank 0 scores all rows, every rank gets the metrics
    and rank 0 alone the probabilities (None on the other ranks).
    """
    probs, labels, _ = run_inference(
        model, dataset, batch_size=batch_size, device=device, tta=tta, progress=progress, desc="evaluate",
        distributed=distributed,
    )
    if probs is None:  # not rank 0 of a distributed evaluation
        return dist_util.broadcast_object(None), None
    seen = labels >= 0  # rows a dataset skipped (unreadable images) are not scored
    metrics = classification_metrics(labels[seen], probs[seen], num_classes=num_classes)
    if distributed and dist_util.is_active():
        metrics = dist_util.broadcast_object(metrics)
    return metrics, probs
