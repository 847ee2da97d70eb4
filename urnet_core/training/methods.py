"""The training-method protocol: what a method tells the harness of :func:`~urnet_core.training.loop.train`.

A method (eq. 10's weighted cross entropy and GCE in :mod:`urnet_core.training.weighted_ce`;
ELR, Co-teaching, DivideMix in :mod:`urnet_core.peers`) is a small object the harness calls, in
the shape of a Lightning ``training_step``. The harness
(:mod:`urnet_core.training.method_loop`) owns everything else: seeding, batches, one optimizer
per network, the LR schedule, AMP, checkpoint/resume, DDP, the epoch record and evaluation.

Per run the harness calls :meth:`Method.setup` once with a :class:`HarnessContext` (the
networks are built, seeded, before it; their optimizers too); per epoch
:meth:`Method.begin_epoch`, which returns the epoch's :class:`Phase` list (most methods one
phase over :func:`~urnet_core.training.loop.epoch_batches`; DivideMix one per network over its
labelled set); per batch of a phase :meth:`Method.training_step`, which returns a
:class:`StepOutput` (the loss to back-propagate, and the sums to log); at the epoch's end
:meth:`Method.end_epoch`, which turns each phase's sums into the history record's entries.
:meth:`Method.state_dict` / :meth:`Method.load_state_dict` hold what a resumed run needs beyond
the networks and optimizers (ELR's target memory); :meth:`Method.eval_model` is what
:func:`~urnet_core.training.inference.evaluate` scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from urnet_core.training.loop import TrainConfig


@dataclass
class HarnessContext:
    """What a method sees of the run (given to :meth:`Method.setup`).

    ``networks`` are the plain networks (eval, co-divide, targets); ``runners`` the same
    networks wrapped for training (DistributedDataParallel under several processes, else the
    networks themselves): a method calls ``runners[k]`` for a forward pass whose loss it
    back-propagates. ``steps_per_epoch`` and ``total_steps`` are the LR schedule's (those of
    :func:`~urnet_core.training.loop.epoch_batches`). ``shard`` cuts a global batch to this
    rank's contiguous part (the identity in one process).
    """

    config: TrainConfig
    dataset: Dataset
    labels: np.ndarray
    num_classes: int
    device: torch.device
    networks: list[nn.Module]
    runners: list[nn.Module]
    steps_per_epoch: int
    total_steps: int
    world: int = 1
    rank: int = 0
    shard: Callable[[Sequence[int]], list[int]] = list


@dataclass
class Phase:
    """A pass over fixed batches within an epoch.

    Attributes
    ----------
    batches : list of list of int
        Global batches of dataset rows (each rank trains its contiguous part of each, cut every
        ``unit`` rows; ``allow_empty``: a rank's part may be empty, else ValueError).
    seed_parts : tuple of int
        ``derive_seed(*seed_parts)`` (under several processes ``derive_seed(*seed_parts, rank)``)
        seeds torch's RNG (augmentation, dropout, permutations) and the DataLoader for the pass.
    train : tuple of int
        The networks in train mode whose optimizers step; the others are put in eval mode.
    dataset : Dataset, optional
        What the batches index (default: the training dataset); items end with ``(label, index)``.
    lr_position : callable, optional
        ``b -> step position`` of the LR schedule at the pass's batch ``b``; default
        ``epoch * steps_per_epoch + b``.
    info : dict
        Method data carried to :meth:`Method.training_step` and :meth:`Method.end_epoch`.
    """

    batches: list[list[int]]
    seed_parts: tuple[int, ...]
    train: tuple[int, ...]
    dataset: Dataset | None = None
    lr_position: Callable[[int], float] | None = None
    info: dict = field(default_factory=dict)
    unit: int = 1
    allow_empty: bool = False


class Batch(NamedTuple):
    """One batch as the harness hands it to :meth:`Method.training_step`.

    ``inputs``: the item's leading tensors on the device (one image batch, or two views);
    ``labels``: the checked table labels on the device; ``labels_cpu`` the same on the CPU;
    ``index``: the dataset rows (CPU int64); ``step``: the batch's position in its phase;
    ``global_size``: the instances of the global batch (all ranks).
    """

    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor
    labels_cpu: torch.Tensor
    index: torch.Tensor
    step: int
    global_size: int


class StepOutput(NamedTuple):
    """``loss`` to back-propagate (a mean over this rank's batch; the harness rescales it under
    DDP) and ``sums``: values to log, already multiplied by the batch size (the harness adds
    them up over the phase and divides by the instances seen)."""

    loss: torch.Tensor
    sums: dict[str, float]


class PhaseResult(NamedTuple):
    """A finished phase: its :class:`Phase`, the added ``sums`` and the instances ``seen`` (all
    ranks), and torch's CPU RNG state at its end (recorded in the checkpoint, for audits)."""

    phase: Phase
    sums: dict[str, float]
    seen: int
    torch_rng: torch.Tensor | None = None

    def means(self) -> dict[str, float]:
        return {key: value / self.seen for key, value in self.sums.items()}


class Method:
    """Base class of a training method (see the module docstring); subclasses override the hooks."""

    #: Name in logs, ``metrics.json`` and the checkpoint (a resume is refused across methods).
    name = "method"
    #: Networks the harness builds: network 0 from :func:`~urnet_core.training.loop.train`'s seed.
    num_networks = 1
    #: Whether ``train()``'s ``sample_weights`` / ``soft_targets`` are this method's to use.
    takes_weights = False
    #: Whether :meth:`training_step`'s loss is already scaled for DDP's average (else the harness does it).
    scales_for_ddp = False
    #: Whether the run writes ``model.pt`` (every network's final ``state_dict``).
    writes_model_file = True

    @property
    def log_name(self) -> str:
        """Prefix of the epoch log lines."""
        return f"{self.name} "

    def hyperparameters(self) -> dict[str, Any]:
        """The method's own settings, stored in the checkpoint (a resume with others is refused)."""
        return {}

    def checkpoint_meta(self) -> dict[str, Any]:
        """Identity of the method in the checkpoint, checked on resume."""
        return {"method": self.name, "method_hyperparameters": self.hyperparameters()}

    def build_networks(self, config: TrainConfig, num_classes: int, in_channels: int, weights_path: Any,
                       device: torch.device, world: int) -> list[nn.Module]:
        """The method's networks, seeded (default: ``num_networks`` backbones; synchronised batch
        norm under several processes)."""
        from urnet_core.training import distributed as dist_util
        from urnet_core.training.method_loop import build_network

        nets = [build_network(config, num_classes, in_channels, device, k, weights_path)
                for k in range(self.num_networks)]
        if world > 1:
            for net in nets:
                dist_util.convert_sync_batchnorm(net, device)
        return nets

    def network_state(self, optimizers: list[torch.optim.Optimizer]) -> dict[str, Any]:
        """The checkpoint's entries for the networks and optimizers (``model``/``optimizer``: network 0's)."""
        nets = self.ctx.networks
        return {"model": nets[0].state_dict(), "optimizer": optimizers[0].state_dict(),
                "networks": [net.state_dict() for net in nets], "optimizers": [opt.state_dict() for opt in optimizers]}

    def load_network_state(self, ckpt: dict, optimizers: list[torch.optim.Optimizer]) -> None:
        """Restore :meth:`network_state`."""
        for net, state in zip(self.ctx.networks, ckpt["networks"]):
            net.load_state_dict(state)
        for opt, state in zip(optimizers, ckpt["optimizers"]):
            opt.load_state_dict(state)

    def check(self, config: TrainConfig, labels: np.ndarray) -> None:
        """Raise ValueError for a config or training set the method cannot train."""
        if config.bag_branch:
            raise ValueError(f"{self.name} does not train the bag branch; use config.bag_branch=False")
        if config.loss != "ce":
            raise ValueError(f"{self.name} defines its own loss; use config.loss='ce' (got {config.loss!r})")
        if labels.size < 2:
            raise ValueError(f"{self.name} needs at least 2 training instances, got {labels.size}")

    def setup(self, ctx: HarnessContext) -> None:
        """Called once, after the networks and optimizers are built and before any resume."""
        self.ctx = ctx

    def begin_epoch(self, epoch: int) -> list[Phase]:
        """The epoch's phases; default: one pass of every network over ``epoch_batches``."""
        from urnet_core.training.loop import epoch_batches

        ctx = self.ctx
        return [Phase(epoch_batches(ctx.labels, ctx.config, epoch), (ctx.config.seed, epoch),
                      tuple(range(self.num_networks)))]

    def begin_phase(self, phase: Phase, seed: int) -> None:
        """Called inside the phase's seeded RNG block, after its DataLoader is made (``seed``: this rank's)."""

    def training_step(self, batch: Batch, phase: Phase) -> StepOutput:
        raise NotImplementedError

    def end_epoch(self, epoch: int, results: list[PhaseResult]) -> dict[str, Any]:
        """The history record's entries of the epoch (``train_loss`` first); default: the phase means."""
        record: dict[str, Any] = {}
        for result in results:
            record.update(result.means())
        return record

    def eval_model(self) -> nn.Module:
        """The model :func:`~urnet_core.training.inference.evaluate` scores (default: network 0)."""
        return self.ctx.networks[0]

    def bag_branch(self) -> nn.Module | None:
        """The bag attention branch a :class:`~urnet_core.training.loop.TrainResult` returns, if any."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Method state a resumed run needs (tensors / plain values); none by default."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
