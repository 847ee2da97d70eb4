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

import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from urnet_core.peers import _common
from urnet_core.training.loop import TrainConfig, TrainResult, _derive_seed, _epoch_batches, _make_optimizer, _seeded_torch
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


def train_elr(
    dataset: Dataset,
    *,
    num_classes: int,
    config: TrainConfig = TrainConfig(),
    in_channels: int = 1,
    lam: float = 3.0,
    beta: float = 0.7,
    eval_dataset: Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = False,
    weights_path: str | None = None,
) -> TrainResult:
    """Train one backbone with cross entropy plus the ELR term (see the module docstring).

    Same batches, initial weights, optimizer and LR schedule as :func:`~urnet_core.training.loop.train`
    with the same ``config``; deterministic on CPU for a fixed ``config.seed``. ``progress`` is
    accepted for the harness's signature; the peers log one line per epoch instead of a bar.
    Returns a :class:`~urnet_core.training.loop.TrainResult` whose ``model`` is the trained
    backbone (in eval mode); each history record also has ``ce`` and ``elr_reg`` (epoch means).
    """
    del progress
    labels, device = _common.prepare(dataset, num_classes, config, "ELR")
    lam = check_fraction(lam, "lam", low=0.0, high=1e6)
    run_path = _common.make_run_dir(run_dir)
    n = labels.size
    model = _common.build_network(config, num_classes, in_channels, device, 0, weights_path)
    optimizer = _make_optimizer(list(model.parameters()), config)
    steps_per_epoch = len(_epoch_batches(labels, config, 0))
    total = steps_per_epoch * config.epochs
    targets = ELRTargets(n, num_classes, beta=beta, device=device)
    labels_t = torch.from_numpy(labels)
    history: list[dict] = []
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        epoch_seed = _derive_seed(config.seed, epoch)
        batches = _epoch_batches(labels, config, epoch)
        model.train()
        sums = np.zeros(3)
        seen = 0
        with _seeded_torch(epoch_seed, device):
            for b, (x, y, idx) in enumerate(_common.epoch_loader(dataset, batches, config, device, epoch_seed)):
                _common.set_lr(optimizer, config, epoch * steps_per_epoch + b, total)
                y_dev = _common.batch_labels(y, idx, labels_t).to(device)
                logits = model(x.to(device))
                loss, ce, reg = elr_loss(logits, y_dev, idx, targets, lam=lam)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bsz = x.shape[0]
                sums += bsz * np.array([float(loss.detach()), float(ce.detach()), float(reg.detach())])
                seen += bsz
        # The LR at the epoch's end, as train() records it (the factor of the next step).
        record = {"epoch": epoch + 1, "lr": _common.lr_at(config, (epoch + 1) * steps_per_epoch, total),
                  "train_loss": float(sums[0] / seen), "ce": float(sums[1] / seen), "elr_reg": float(sums[2] / seen)}
        _common.end_epoch(history, record, epoch=epoch, config=config, eval_model=model, eval_dataset=eval_dataset,
                          num_classes=num_classes, device=device, t0=t0, run_dir=run_path, method="ELR")
    return _common.finish(model, history, run_path, [model])

