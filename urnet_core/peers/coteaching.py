"""Co-teaching: two networks that pick each other's small-loss instances (a peer method).

Han, Yao, Yu, Niu, Xu, Hu, Tsang, Sugiyama, "Co-teaching: Robust Training of Deep Neural
Networks with Extremely Noisy Labels", NeurIPS 2018 (reference code: github.com/bhanML/Co-teaching).

Idea: networks fit clean instances first, so the instances on which a network has a small
loss are likely clean. Two networks with different initial weights see the same batches; in
every batch each network ranks the instances by its own cross entropy and keeps the
``R(T)`` fraction with the smallest loss, and the *other* network takes its gradient step on
them (cross entropy averaged over the kept instances). Exchanging the selections keeps one
network's selection errors from reinforcing themselves.

``R(T) = 1 - min(T / T_k * tau, tau)``: all instances are kept at first, then the kept share
falls linearly to ``1 - tau`` over the first ``T_k`` epochs and stays there. ``T`` is the
0-based epoch index here, so the first epoch keeps everything and ``R`` reaches ``1 - tau``
at epoch ``T_k`` (the reference code's ``linspace(0, tau, T_k)`` reaches it one epoch
earlier). A batch of B instances keeps ``floor(R(T) * B)`` (at least one), as the reference does.

Hyper-parameters:

- ``noise_rate`` (tau), default 0.2: the paper assumes the noise rate is known (it sets tau to
  the true rate, 0.2-0.5 on its benchmarks); pass an estimate when one is available.
- ``num_gradual`` (T_k): the paper uses 10 of 200 epochs. The study trains ~12 epochs, so the
  default is scaled: ``min(10, max(1, epochs // 2))`` (6 of 12 epochs), which leaves half the
  run at the full forget rate.

Everything else (network, optimizer, LR schedule, batches, seeds) is the study's
:class:`~urnet_core.training.loop.TrainConfig`. The paper's optimizer (Adam with its own
LR/momentum decay) and its 200 epochs are not used, by design. The returned model averages
the two networks' softmax outputs (:class:`~urnet_core.peers.ensemble.SoftmaxEnsemble`); the
paper reports one network, available as ``result.model.members[0]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from urnet_core.peers.ensemble import SoftmaxEnsemble
from urnet_core.training.methods import Batch, HarnessContext, Method, Phase, PhaseResult, StepOutput
from urnet_core.utils.validation import check_fraction, check_positive_int


def default_num_gradual(epochs: int) -> int:
    """The scaled T_k: the paper's 10 epochs, but at most half the run (and at least 1)."""
    return min(10, max(1, int(epochs) // 2))


def coteaching_keep_rate(epoch: int, *, noise_rate: float, num_gradual: int) -> float:
    """``R(T) = 1 - min(T / T_k * tau, tau)`` with ``T`` the 0-based epoch index."""
    check_positive_int(num_gradual, "num_gradual")
    tau = check_fraction(noise_rate, "noise_rate", low=0.0, high=1.0)
    return 1.0 - min(epoch / num_gradual * tau, tau)


def num_kept(batch_size: int, keep_rate: float) -> int:
    """``floor(keep_rate * batch_size)``, at least 1 (the tiny epsilon absorbs float error: 0.7 * 10 = 7)."""
    return max(1, min(batch_size, math.floor(keep_rate * batch_size + 1e-9)))


def small_loss_indices(losses: torch.Tensor, keep_rate: float) -> torch.Tensor:
    """Positions of the ``num_kept`` smallest losses (ties broken by position, so deterministic)."""
    order = torch.argsort(losses.detach(), stable=True)
    return order[: num_kept(losses.numel(), keep_rate)]


def coteaching_loss(
    logits_1: torch.Tensor, logits_2: torch.Tensor, labels: torch.Tensor, keep_rate: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(loss_1, loss_2, picked_by_1, picked_by_2)``.

    ``picked_by_k`` are the batch positions of network k's smallest losses; network 1's loss
    is its mean cross entropy on ``picked_by_2`` and network 2's on ``picked_by_1`` (the exchange).
    """
    ce_1 = F.cross_entropy(logits_1.float(), labels, reduction="none")
    ce_2 = F.cross_entropy(logits_2.float(), labels, reduction="none")
    picked_by_1 = small_loss_indices(ce_1, keep_rate)
    picked_by_2 = small_loss_indices(ce_2, keep_rate)
    return ce_1[picked_by_2].mean(), ce_2[picked_by_1].mean(), picked_by_1, picked_by_2


class CoTeaching(Method):
    """Co-teaching as a :class:`~urnet_core.training.methods.Method`: two networks, each trained on the
    other's ``R(T)`` small-loss share of every batch (``noise_rate`` tau, ``num_gradual`` T_k;
    None: :func:`default_num_gradual` of the run's epochs).

    Network 1 starts from :func:`~urnet_core.training.loop.train`'s initial weights, network 2
    from another seed; both see ``train()``'s batches, each with its own optimizer. The model is a
    :class:`~urnet_core.peers.ensemble.SoftmaxEnsemble` of the two; history records add
    ``keep_rate`` and ``train_loss_2`` (network 2's loss).
    """

    name = "Co-teaching"
    num_networks = 2

    def __init__(self, noise_rate: float = 0.2, num_gradual: int | None = None) -> None:
        self.noise_rate = check_fraction(noise_rate, "noise_rate", low=0.0, high=1.0)
        self.num_gradual = None if num_gradual is None else check_positive_int(num_gradual, "num_gradual")

    def hyperparameters(self) -> dict[str, Any]:
        return {"noise_rate": self.noise_rate, "num_gradual": self.num_gradual}

    def setup(self, ctx: HarnessContext) -> None:
        super().setup(ctx)
        self.t_k = default_num_gradual(ctx.config.epochs) if self.num_gradual is None else self.num_gradual
        self.ensemble = SoftmaxEnsemble(*ctx.networks)

    def begin_epoch(self, epoch: int) -> list[Phase]:
        self.keep = coteaching_keep_rate(epoch, noise_rate=self.noise_rate, num_gradual=self.t_k)
        return super().begin_epoch(epoch)

    def training_step(self, batch: Batch, phase: Phase) -> StepOutput:
        x = batch.inputs[0]
        first, second = self.ctx.runners
        loss_1, loss_2, _, _ = coteaching_loss(first(x), second(x), batch.labels, self.keep)
        bsz = batch.index.numel()
        # The two losses depend on disjoint parameters: one backward serves both.
        return StepOutput(loss_1 + loss_2, {"train_loss": float(loss_1.detach()) * bsz,
                                            "train_loss_2": float(loss_2.detach()) * bsz})

    def end_epoch(self, epoch: int, results: list[PhaseResult]) -> dict[str, Any]:
        return {"keep_rate": self.keep, **super().end_epoch(epoch, results)}

    def eval_model(self) -> nn.Module:
        return self.ensemble
