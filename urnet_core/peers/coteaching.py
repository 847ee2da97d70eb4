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
the two networks' softmax outputs (:class:`~urnet_core.peers._common.SoftmaxEnsemble`); the
paper reports one network, available as ``result.model.members[0]``.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from urnet_core.peers import _common
from urnet_core.training.loop import TrainConfig, TrainResult, _derive_seed, _epoch_batches, _make_optimizer, _seeded_torch
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


def train_coteaching(
    dataset: Dataset,
    *,
    num_classes: int,
    config: TrainConfig = TrainConfig(),
    in_channels: int = 1,
    noise_rate: float = 0.2,
    num_gradual: int | None = None,
    eval_dataset: Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = False,
    weights_path: str | None = None,
) -> TrainResult:
    """Train two backbones with Co-teaching (see the module docstring).

    Network 1 starts from :func:`~urnet_core.training.loop.train`'s initial weights, network 2
    from another seed; both see ``train()``'s batches and each has its own optimizer and LR
    schedule from ``config``. ``num_gradual=None`` uses :func:`default_num_gradual`.
    Deterministic on CPU for a fixed ``config.seed``; ``progress`` is accepted for the
    harness's signature (one log line per epoch).

    Returns a :class:`~urnet_core.training.loop.TrainResult` whose ``model`` is a
    :class:`~urnet_core.peers._common.SoftmaxEnsemble` of the two networks (usable by
    ``evaluate``/``predict``); history records add ``keep_rate`` and both networks' losses.
    """
    del progress
    labels, device = _common.prepare(dataset, num_classes, config, "Co-teaching")
    check_fraction(noise_rate, "noise_rate", low=0.0, high=1.0)
    t_k = default_num_gradual(config.epochs) if num_gradual is None else check_positive_int(num_gradual, "num_gradual")
    run_path = _common.make_run_dir(run_dir)
    nets = [_common.build_network(config, num_classes, in_channels, device, k, weights_path) for k in (0, 1)]
    optimizers = [_make_optimizer(list(net.parameters()), config) for net in nets]
    ensemble = _common.SoftmaxEnsemble(*nets)
    steps_per_epoch = len(_epoch_batches(labels, config, 0))
    total = steps_per_epoch * config.epochs
    labels_t = torch.from_numpy(labels)
    history: list[dict] = []
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        keep = coteaching_keep_rate(epoch, noise_rate=noise_rate, num_gradual=t_k)
        epoch_seed = _derive_seed(config.seed, epoch)
        batches = _epoch_batches(labels, config, epoch)
        for net in nets:
            net.train()
        sums = np.zeros(2)
        seen = 0
        with _seeded_torch(epoch_seed, device):
            for b, (x, y, idx) in enumerate(_common.epoch_loader(dataset, batches, config, device, epoch_seed)):
                for opt in optimizers:
                    _common.set_lr(opt, config, epoch * steps_per_epoch + b, total)
                y_dev = _common.batch_labels(y, idx, labels_t).to(device)
                x = x.to(device)
                loss_1, loss_2, _, _ = coteaching_loss(nets[0](x), nets[1](x), y_dev, keep)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                # The two losses depend on disjoint parameters: one backward serves both.
                (loss_1 + loss_2).backward()
                for opt in optimizers:
                    opt.step()
                bsz = x.shape[0]
                sums += bsz * np.array([float(loss_1.detach()), float(loss_2.detach())])
                seen += bsz
        record = {"epoch": epoch + 1, "lr": _common.lr_at(config, (epoch + 1) * steps_per_epoch, total),
                  "keep_rate": keep, "train_loss": float(sums[0] / seen), "train_loss_2": float(sums[1] / seen)}
        _common.end_epoch(history, record, epoch=epoch, config=config, eval_model=ensemble, eval_dataset=eval_dataset,
                          num_classes=num_classes, device=device, t0=t0, run_dir=run_path, method="Co-teaching")
    return _common.finish(ensemble, history, run_path, nets)
