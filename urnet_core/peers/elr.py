"""ELR: early-learning regularisation (a peer method, trained in the study's harness).

Liu, Niles-Weed, Razavian, Fernandez-Granda, "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020 (reference code: github.com/shengliu66/ELR).

Idea: early in training a network fits the clean labels before it memorises the noisy ones,
so its own early predictions are better targets than the noisy labels. ELR keeps, for every
training instance i, a target t_i: a temporal running average of the network's predictions
on it, and adds a term that keeps the current prediction p_i close to t_i.

In words, for a batch of B instances with softmax outputs p_i (clamped to [1e-4, 1 - 1e-4]):

1. update the targets of the batch's indices with the *detached* predictions,
   ``t_i <- beta * t_i + (1 - beta) * p_i / sum_c p_ic`` (targets start at 0);
2. loss ``= CE(logits, y) + lambda * (1/B) sum_i log(1 - <p_i, t_i>)``.

Minimising ``log(1 - <p, t>)`` maximises the inner product ``<p, t>``; its gradient on the
logit ``z_c`` is ``-p_c (t_c - <p, t>) / (1 - <p, t>)``, so a descent step raises the
logits of classes where the target exceeds ``<p, t>``: p is pulled towards t. On a
mislabelled instance this counteracts the cross entropy's pull towards the wrong label.

Hyper-parameters (defaults = the paper's CIFAR-10 setting, ``config/cifar10.json`` of the
reference code): ``lam=3.0`` (lambda; CIFAR-100 uses 7), ``beta=0.7`` (the target's momentum;
CIFAR-100 uses 0.9). Everything else (network, optimizer, LR schedule, epochs, batch order,
seeds) is the study's :class:`~urnet_core.training.loop.TrainConfig`, as for every method.

Simplified / left out: ELR+ (two networks, weight averaging of the target network, mixup) is
not implemented; it roughly doubles the cost and is a different method in the paper's tables.
The target is updated with the augmented view the dataset yields (as in the reference code).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from urnet_core.training.method_loop import all_reduce_rows
from urnet_core.training.methods import Batch, HarnessContext, Method, Phase, PhaseResult, StepOutput
from urnet_core.utils.validation import check_fraction

#: Predictions are clamped to this range before the target update and the regulariser (as in the reference).
CLAMP = 1e-4


class ELRTargets:
    """The per-instance running-average targets t (n, C), initialised to zero.

    :meth:`update` applies ``t_i <- beta * t_i + (1 - beta) * p_i / sum(p_i)`` to the given
    indices (with ``p`` detached) and returns the updated rows.
    """

    def __init__(self, n: int, num_classes: int, *, beta: float = 0.7, device: str | torch.device = "cpu") -> None:
        self.beta = check_fraction(beta, "beta", low=0.0, high=1.0)
        self.targets = torch.zeros(n, num_classes, device=device)

    def update(self, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        p = probs.detach().float()
        p = p / p.sum(dim=1, keepdim=True)
        index = index.to(self.targets.device).long()
        new = self.beta * self.targets[index] + (1.0 - self.beta) * p.to(self.targets.device)
        self.targets[index] = new
        return new.to(probs.device)


def elr_regularizer(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i log(1 - <p_i, t_i>)`` over the batch (``probs`` carries the gradient, ``targets`` not)."""
    inner = (targets.detach() * probs).sum(dim=1)
    return torch.log(1.0 - inner).mean()


def elr_loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, targets: ELRTargets, *,
             lam: float = 3.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Update the batch's targets, then return ``(CE + lam * reg, CE, reg)``."""
    probs = torch.softmax(logits.float(), dim=1).clamp(CLAMP, 1.0 - CLAMP)
    t = targets.update(index, probs)
    ce = F.cross_entropy(logits.float(), labels)
    reg = elr_regularizer(probs, t)
    return ce + lam * reg, ce, reg


class ELR(Method):
    """ELR as a :class:`~urnet_core.training.methods.Method`: one network, cross entropy plus ``lam`` times
    the regulariser against :class:`ELRTargets` (``beta``), the targets kept in the checkpoint.

    Trained by ``train(dataset, ..., method=ELR(lam, beta))``: the same batches, initial weights,
    optimizer and LR schedule as plain :func:`~urnet_core.training.loop.train`. History records
    add ``ce`` and ``elr_reg`` (epoch means).
    """

    name = "ELR"

    def __init__(self, lam: float = 3.0, beta: float = 0.7) -> None:
        self.lam = check_fraction(lam, "lam", low=0.0, high=1e6)
        self.beta = check_fraction(beta, "beta", low=0.0, high=1.0)

    def hyperparameters(self) -> dict[str, Any]:
        return {"lam": self.lam, "beta": self.beta}

    def setup(self, ctx: HarnessContext) -> None:
        super().setup(ctx)
        self.targets = ELRTargets(ctx.labels.size, ctx.num_classes, beta=self.beta, device=ctx.device)
        self.touched = torch.zeros(ctx.labels.size, dtype=torch.bool)

    def training_step(self, batch: Batch, phase: Phase) -> StepOutput:
        logits = self.ctx.runners[0](batch.inputs[0])
        loss, ce, reg = elr_loss(logits, batch.labels, batch.index, self.targets, lam=self.lam)
        self.touched[batch.index] = True
        bsz = batch.index.numel()
        return StepOutput(loss, {"train_loss": float(loss.detach()) * bsz, "ce": float(ce.detach()) * bsz,
                                 "elr_reg": float(reg.detach()) * bsz})

    def end_epoch(self, epoch: int, results: list[PhaseResult]) -> dict[str, Any]:
        # Each rank updated the targets of its part of the batches; every rank needs them all.
        all_reduce_rows(self.targets.targets, self.touched.to(self.targets.targets.device))
        self.touched.zero_()
        return super().end_epoch(epoch, results)

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.targets.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.targets.targets.copy_(state["targets"])
