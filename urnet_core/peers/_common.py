"""Harness shared by the trained peer methods (ELR, Co-teaching, DivideMix).

Each method trains in the same harness as :func:`urnet_core.training.loop.train`: the same
backbones, :class:`~urnet_core.training.loop.TrainConfig`, optimizer, LR schedule, batch
order and seeds, reused by import. What they share beyond that lives here:

- :func:`prepare` checks the inputs and returns the observed labels and the device;
- :func:`build_network` builds member ``k`` of a method's networks, member 0 from the same
  seed (hence the same initial weights) as ``train()``'s baseline;
- :func:`set_lr` applies ``_lr_factor`` at a (possibly fractional) step position, for loops
  whose number of steps per epoch varies (DivideMix);
- :func:`epoch_loader` is ``train()``'s DataLoader for one epoch's batches;
- :class:`SoftmaxEnsemble` wraps two networks for :func:`~urnet_core.training.loop.evaluate`;
- :func:`end_epoch` and :func:`finish` keep the history and write ``metrics.json``.

Not supported by the peers (ValueError): ``config.bag_branch``, ``config.loss != 'ce'`` and
several processes. They train in float32 (``config.amp`` is ignored) and do not checkpoint or
resume; with ``run_dir`` they write ``metrics.json`` after every epoch and ``model.pt`` (the
final ``state_dict`` of each network) at the end.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from urnet_core.models.backbones import Backbone, build_model
from urnet_core.training.loop import (
    METRICS_NAME,
    TrainConfig,
    TrainResult,
    _derive_seed,
    _lr_factor,
    _seeded_torch,
    dataset_labels,
    evaluate,
)
from urnet_core.utils.devices import resolve_device
from urnet_core.utils.io import atomic_path, write_json
from urnet_core.utils.validation import as_labels, check_positive_int

logger = logging.getLogger(__name__)

MODEL_NAME = "model.pt"


def prepare(dataset: Dataset, num_classes: int, config: TrainConfig, method: str) -> tuple[np.ndarray, torch.device]:
    """Check a peer's inputs; return ``(observed labels (n,) int64, device)``."""
    check_positive_int(num_classes, "num_classes")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.bag_branch:
        raise ValueError(f"{method} does not train the bag branch; use config.bag_branch=False")
    if config.loss != "ce":
        raise ValueError(f"{method} defines its own loss; use config.loss='ce' (got {config.loss!r})")
    n = len(dataset)
    if n < 2:
        raise ValueError(f"{method} needs at least 2 training instances, got {n}")
    labels = np.array(dataset_labels(dataset), dtype=np.int64)  # a writable copy for torch
    if labels.size != n:
        raise ValueError(f"train dataset has {n} items but {labels.size} labels")
    as_labels(labels, num_classes=num_classes, name="train labels")
    return labels, resolve_device(config.device)


def build_network(config: TrainConfig, num_classes: int, in_channels: int, device: torch.device, member: int,
                  weights_path: str | None = None) -> Backbone:
    """Network ``member`` of a method, seeded; member 0 starts from ``train()``'s initial weights
    (``weights_path``: a local pretrained state dict for the backbone, as ``train()`` takes)."""
    seed = _derive_seed(config.seed, 2**31) if member == 0 else _derive_seed(config.seed, 2**31, member)
    with _seeded_torch(seed, device):
        model = build_model(config.model, num_classes, in_channels=in_channels, weights_path=weights_path)
    return model.to(device)


def lr_at(config: TrainConfig, position: float, total: float) -> float:
    """``config.lr * _lr_factor(schedule, position, total)``; ``train()``'s LambdaLR at integer steps."""
    return config.lr * _lr_factor(config.schedule, position, total)  # type: ignore[arg-type]  # floats work too


def set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, position: float, total: float) -> float:
    """Set every parameter group's LR to :func:`lr_at` and return it."""
    lr = lr_at(config, position, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def epoch_loader(dataset: Dataset, batches: Sequence[Sequence[int]], config: TrainConfig, device: torch.device,
                 epoch_seed: int) -> DataLoader:
    """``train()``'s DataLoader over fixed batches; call inside ``_seeded_torch(epoch_seed, ...)``."""
    return DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=config.num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(epoch_seed),
    )


def batch_labels(y: torch.Tensor, idx: torch.Tensor, labels_t: torch.Tensor) -> torch.Tensor:
    """The table labels of a batch's indices, checked against the labels the dataset yields."""
    idx = idx.long()
    n = labels_t.numel()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"dataset index out of range [0, {n}): got {int(idx.min())}..{int(idx.max())}")
    y_idx = labels_t[idx]
    if not torch.equal(y.long(), y_idx):
        raise ValueError("labels yielded by the dataset disagree with its .labels/.table at the same index")
    return y_idx


class _PairEncoder(nn.Module):
    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first.encoder(x), self.second.encoder(x)], dim=1)


class _PairHead(nn.Module):
    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        # Not registered as submodules: the encoder owns the two networks (no duplicate parameters).
        self._nets = (first, second)
        self._split = first.feature_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        first, second = self._nets
        a = torch.log_softmax(first.head(feats[:, : self._split]).float(), dim=1)
        b = torch.log_softmax(second.head(feats[:, self._split :]).float(), dim=1)
        # log((p1 + p2) / 2): its softmax is exactly the mean of the two softmax outputs.
        return torch.logsumexp(torch.stack([a, b]), dim=0) - math.log(2.0)


class SoftmaxEnsemble(nn.Module):
    """Two backbones whose softmax outputs are averaged, with a :class:`Backbone`'s interface.

    ``encoder(x)`` concatenates both networks' features (``feature_dim`` = the sum) and
    ``head(features)`` returns ``log((softmax_1 + softmax_2) / 2)``, so ``softmax(forward(x))``
    is the average prediction, which is what :func:`~urnet_core.training.loop.evaluate` and
    :func:`~urnet_core.training.loop.predict` compute (they call ``encoder`` then ``head``).
    The networks themselves are ``members``.
    """

    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        if first.num_classes != second.num_classes:
            raise ValueError("both networks must have the same number of classes")
        self.encoder = _PairEncoder(first, second)
        self.head = _PairHead(first, second)
        self.num_classes = first.num_classes
        self.feature_dim = first.feature_dim + second.feature_dim
        self.name = f"ensemble({first.name},{second.name})"

    @property
    def members(self) -> tuple[Backbone, Backbone]:
        return self.encoder.first, self.encoder.second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        return feats, self.head(feats)


def end_epoch(
    history: list[dict],
    record: dict[str, Any],
    *,
    epoch: int,
    config: TrainConfig,
    eval_model: nn.Module,
    eval_dataset: Dataset | None,
    num_classes: int,
    device: torch.device,
    t0: float,
    run_dir: Path | None,
    method: str,
) -> None:
    """Evaluate (every ``eval_every`` epochs and after the last), log, append and write ``metrics.json``."""
    record["eval"] = None
    last = epoch + 1 == config.epochs
    if eval_dataset is not None and (last or (epoch + 1) % config.eval_every == 0):
        record["eval"], _ = evaluate(eval_model, eval_dataset, num_classes=num_classes,
                                     batch_size=max(config.batch_size, 256), device=device)
    record["seconds"] = time.perf_counter() - t0
    history.append(record)
    logger.info("%s epoch %d/%d loss %.4f%s (%.1fs)", method, epoch + 1, config.epochs, record["train_loss"],
                f" top1 {record['eval']['top1']:.4f}" if record["eval"] else "", record["seconds"])
    if run_dir is not None:
        write_json(run_dir / METRICS_NAME, {"method": method, "config": asdict(config), "history": history})


def finish(model: nn.Module, history: list[dict], run_dir: Path | None, networks: Sequence[nn.Module]) -> TrainResult:
    """Put everything in eval mode, write ``model.pt`` under ``run_dir`` and build the TrainResult."""
    for net in networks:
        net.eval()
    model.eval()
    if run_dir is not None:
        with atomic_path(run_dir / MODEL_NAME) as tmp:
            torch.save([net.state_dict() for net in networks], tmp)
    final = dict(history[-1]["eval"] or {}) if history else {}
    if history:
        final["train_loss"] = history[-1]["train_loss"]
    return TrainResult(model=model, history=history, final_metrics=final, run_dir=run_dir)  # type: ignore[arg-type]


def make_run_dir(run_dir: str | os.PathLike | None) -> Path | None:
    if run_dir is None:
        return None
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path
