"""Eq. 10's weighted cross entropy (and GCE): the default :class:`~urnet_core.training.methods.Method`.

What :func:`~urnet_core.training.loop.train` trains without ``method=``: the backbone (and, with
``config.bag_branch``, the bag attention branch of section 4.4) as one network, a
:class:`_TrainStep`, with :class:`TrainLoss`:
``(1/B) sum_i w_i * sum_j -t_ij log p_ij`` (eq. 10; plain cross entropy with all-one weights and
one-hot targets, the generalized cross entropy with ``config.loss='gce'``), plus
``config.bag_loss_weight`` times the bag loss. Under DDP the loss scales itself (sums over the
rank's part times ``world / global batch``, see ``TrainLoss``), and a rank's part of a short last
batch may be empty (cut between bags). Its checkpoint keeps the layout ``train()`` always wrote
(``model``, ``optimizer``, ``bag_branch``), so older checkpoints resume and
:func:`~urnet_core.training.loop.load_checkpoint_model` reads them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from urnet_core.models.backbones import Backbone, build_model
from urnet_core.models.bag import BagAttentionBranch
from urnet_core.training import distributed as dist_util
from urnet_core.training.loop import TrainConfig, derive_seed, seeded_torch
from urnet_core.training.losses import (
    generalized_cross_entropy,
    weighted_label_pair_cross_entropy,
    weighted_soft_cross_entropy,
)
from urnet_core.training.methods import Batch, HarnessContext, Method, Phase, PhaseResult, StepOutput
from urnet_core.data.targets import LabelPairs


class LossTerms(NamedTuple):
    """What :class:`TrainLoss` returns for one batch.

    ``total`` is the objective to back-propagate. ``loss`` and ``bag_loss`` (None without the bag
    branch) are the unscaled terms for the history: batch means in one process, this rank's sums
    under DDP.
    """

    total: torch.Tensor
    loss: torch.Tensor
    bag_loss: torch.Tensor | None


class TrainLoss:
    """Eq. 10's loss of a batch, its form chosen once from the config and the run's tables.

    The per-instance term, times ``w_i`` looked up by each item's dataset index, is

    - ``'pairs'``: cross entropy on the observed label, or on eq. 10's two-hot targets given
      compactly as :class:`LabelPairs` (:func:`weighted_label_pair_cross_entropy`; no ``(B, C)``
      target tensor);
    - ``'soft'``: cross entropy on dense soft targets ``(n, C)`` (:func:`weighted_soft_cross_entropy`);
    - ``'gce'``: the generalized cross entropy on the observed label (``config.loss='gce'``).

    With the bag branch, ``config.bag_loss_weight`` times the cross entropy of each bag's logits
    against the bag's label (a bag holds one class) is added.

    One process: both terms are batch means. Several (``world > 1``): each rank sums over its part
    and scales by ``world / global batch size`` (bags: ``world * bag_size / global batch size``),
    because DDP averages the ranks' gradients; the result is the one-process gradient.
    """

    def __init__(self, config: TrainConfig, weights: np.ndarray, targets: np.ndarray | LabelPairs | None,
                 *, world: int = 1) -> None:
        self.world = world
        self.reduction = "mean" if world == 1 else "sum"
        self.gce_q = config.gce_q
        self.bag_size = config.bag_size
        self.bag_loss_weight = config.bag_loss_weight
        self.kind = "gce" if config.loss == "gce" else "soft" if isinstance(targets, np.ndarray) else "pairs"
        # The tables stay on the CPU (O(n), up to 16M rows); each batch's rows go to the device.
        self.weights = torch.from_numpy(weights)
        self.targets = torch.from_numpy(targets) if isinstance(targets, np.ndarray) else None
        self.predicted = torch.from_numpy(targets.predicted) if isinstance(targets, LabelPairs) else None
        self.beta = targets.beta if isinstance(targets, LabelPairs) else 1.0

    def __call__(self, logits: torch.Tensor, bag_logits: torch.Tensor | None, labels: torch.Tensor,
                 idx: torch.Tensor, global_batch_size: int) -> LossTerms:
        """Loss of a batch: ``labels`` on the logits' device, ``idx`` the items' dataset rows (CPU)."""
        device, reduction = logits.device, self.reduction
        w = self.weights[idx].to(device, non_blocking=True)
        if self.kind == "gce":
            loss = generalized_cross_entropy(logits, labels, q=self.gce_q, weights=w, reduction=reduction)
        elif self.kind == "soft":
            t = self.targets[idx].to(device, non_blocking=True)
            loss = weighted_soft_cross_entropy(logits, t, w, reduction=reduction)
        else:
            yhat = self.predicted[idx].to(device, non_blocking=True) if self.predicted is not None else None
            loss = weighted_label_pair_cross_entropy(logits, labels, yhat, w, beta=self.beta, reduction=reduction)
        logged = loss
        if self.world > 1:
            loss = loss * (self.world / global_batch_size)
        if bag_logits is None:
            return LossTerms(loss, logged, None)
        y_bags = labels.reshape(-1, self.bag_size)[:, 0]
        bag_loss = F.cross_entropy(bag_logits.float(), y_bags, reduction=reduction)
        bag_logged = bag_loss
        if self.world > 1:
            bag_loss = bag_loss * (self.world * self.bag_size / global_batch_size)
        return LossTerms(loss + self.bag_loss_weight * bag_loss, logged, bag_logged)


class _TrainStep(nn.Module):
    """One forward pass of the backbone and, optionally, the bag branch (what DDP wraps).

    Returns ``(logits (B, C), bag_logits (B / bag_size, C) or None)``; bags are consecutive runs
    of ``bag_size`` items (:class:`BagBatchSampler`), and the bag loss back-propagates through the
    same encoder pass.
    """

    def __init__(self, model: Backbone, bag: BagAttentionBranch | None, bag_size: int) -> None:
        super().__init__()
        self.model = model
        self.bag = bag
        self.bag_size = bag_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        feats = self.model.encoder(x)
        logits = self.model.head(feats)
        bag_logits = None
        if self.bag is not None:
            bag_logits, _ = self.bag(feats.float().reshape(-1, self.bag_size, feats.shape[1]))
        return logits, bag_logits


def _build_model(config: TrainConfig, num_classes: int, in_channels: int, weights_path: Any,
                 device: torch.device, world: int) -> tuple[Backbone, BagAttentionBranch | None]:
    """The backbone (and bag branch), seeded from the config, on ``device``."""
    with seeded_torch(derive_seed(config.seed, 2**31), device):
        model = build_model(config.model, num_classes, in_channels=in_channels, weights_path=weights_path)
        bag = BagAttentionBranch(model.feature_dim, num_classes) if config.bag_branch else None
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor cores
    if bag is not None:
        bag.to(device)
    if world > 1:
        # Normalise with the statistics of the whole global batch, as the single process does.
        dist_util.convert_sync_batchnorm(model, device)
    return model, bag


class WeightedCrossEntropy(Method):
    """Eq. 10's loss on one network (the backbone and the optional bag branch); see the module docstring."""

    name = "CE"
    log_name = ""  # train()'s log lines keep their old form
    takes_weights = True
    scales_for_ddp = True
    writes_model_file = False

    def set_tables(self, weights: np.ndarray, targets: np.ndarray | LabelPairs | None) -> None:
        """The run's checked per-instance weights (n,) and targets (given by ``train()``)."""
        self.weights, self.targets = weights, targets

    def checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def check(self, config: TrainConfig, labels: np.ndarray) -> None:
        pass  # train()'s input checks cover the weights, targets and loss

    def build_networks(self, config: TrainConfig, num_classes: int, in_channels: int, weights_path: Any,
                       device: torch.device, world: int) -> list[nn.Module]:
        model, bag = _build_model(config, num_classes, in_channels, weights_path, device, world)
        self.model, self.bag = model, bag
        return [_TrainStep(model, bag, config.bag_size)]

    def setup(self, ctx: HarnessContext) -> None:
        super().setup(ctx)
        self.criterion = TrainLoss(ctx.config, self.weights, self.targets, world=ctx.world)
        self.channels_last = ctx.device.type == "cuda"

    def begin_epoch(self, epoch: int) -> list[Phase]:
        phase = super().begin_epoch(epoch)[0]
        phase.unit = self.ctx.config.bag_size if self.ctx.config.bag_branch else 1  # cut between bags
        phase.allow_empty = True
        return [phase]

    def training_step(self, batch: Batch, phase: Phase) -> StepOutput:
        x = batch.inputs[0]
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        logits, bag_logits = self.ctx.runners[0](x)
        terms = self.criterion(logits, bag_logits, batch.labels, batch.index, batch.global_size)
        bsz = x.shape[0]
        if self.ctx.world == 1:  # batch means
            sums = {"train_loss": float(terms.loss.detach()) * bsz}
            if terms.bag_loss is not None:
                sums["bag_loss"] = float(terms.bag_loss.detach()) * bsz
        else:  # sums of this rank's instances (and bags)
            sums = {"train_loss": float(terms.loss.detach())}
            if terms.bag_loss is not None:
                sums["bag_loss"] = float(terms.bag_loss.detach()) * self.ctx.config.bag_size
        return StepOutput(terms.total, sums)

    def end_epoch(self, epoch: int, results: list[PhaseResult]) -> dict[str, Any]:
        sums, seen = results[0].sums, max(results[0].seen, 1)
        record = {"train_loss": sums.get("train_loss", 0.0) / seen}
        if self.bag is not None:
            record["bag_loss"] = sums.get("bag_loss", 0.0) / seen
        return record

    def eval_model(self) -> Backbone:
        return self.model

    def bag_branch(self) -> BagAttentionBranch | None:
        return self.bag

    def network_state(self, optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": optimizers[0].state_dict(),
                "bag_branch": self.bag.state_dict() if self.bag is not None else None}

    def load_network_state(self, ckpt: dict, optimizers: list[torch.optim.Optimizer]) -> None:
        self.model.load_state_dict(ckpt["model"])
        optimizers[0].load_state_dict(ckpt["optimizer"])
        if self.bag is not None:
            self.bag.load_state_dict(ckpt["bag_branch"])
