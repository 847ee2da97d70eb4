"""DivideMix: noisy labels as semi-supervised learning, with two networks (a peer method).

Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning",
ICLR 2020 (reference code: github.com/LiJunnan1992/DivideMix).

In words, with two networks A and B (different initial weights):

1. **Warm-up**: both train with plain cross entropy for ``warmup_epochs`` epochs.
2. **Co-divide** (every later epoch, before either network trains): each network, in eval
   mode, gives the per-instance cross entropy on every training instance; the losses are
   min-max normalised and a two-component 1-D Gaussian mixture is fitted to them
   (``sklearn.mixture.GaussianMixture``, ``reg_covar=5e-4, max_iter=10, tol=1e-2`` as in the
   reference). ``w_i`` = the posterior of the component with the smaller mean (the clean
   probability). Instances with ``w_i > p_threshold`` form the labelled set X, the others the
   unlabelled set U. Network A trains on **B's** division and B on A's, so a network's own
   selection errors do not confirm themselves.
3. **MixMatch** for the network being trained (the other one is fixed, eval mode), one pass
   over its labelled set per epoch, each labelled batch with an unlabelled batch alongside,
   each instance seen under two augmentations:

   - *label co-refinement* (labelled): ``p = w * y + (1 - w) * mean of the network's
     softmax over the two views``, then sharpened;
   - *label co-guessing* (unlabelled): the mean of **both** networks' softmax over the two
     views (four predictions), then sharpened;
   - *sharpening*: ``p_c^(1/T) / sum_k p_k^(1/T)``;
   - *mixup*: ``l ~ Beta(alpha, alpha)``, ``l = max(l, 1 - l)``; the labelled and unlabelled
     inputs (and targets) are mixed with a random permutation of themselves,
     ``l * a + (1 - l) * a[perm]``;
   - loss ``L_x + lambda_u(t) * L_u + L_reg``: ``L_x`` = cross entropy of the mixed labelled
     part against its mixed targets, ``L_u`` = mean squared error between the softmax and the
     mixed targets of the unlabelled part, ``lambda_u(t)`` ramps linearly from 0 to
     ``lambda_u`` over ``rampup_epochs`` after the warm-up, and ``L_reg = sum_c pi_c
     log(pi_c / mean_batch p_c)`` with the uniform prior ``pi_c = 1/C`` keeps the network
     from putting every (mixed) instance in one class.

4. The test prediction averages the two networks' softmax outputs (as the paper does): the
   returned model is a :class:`~urnet_core.peers.ensemble.SoftmaxEnsemble`.

Hyper-parameters and defaults (``p_threshold=0.5``, ``temperature=0.5`` everywhere in the
paper):

- ``alpha=0.5`` and ``lambda_u=0``: the paper's (mini-)WebVision and Clothing1M setting, the
  real web-noise benchmarks this study imitates. The CIFAR-10 setting is ``alpha=4`` with
  ``lambda_u`` by noise level (0 for 20%, 25 for 50%, 50 for 80%, 150 for 90% symmetric, 0 for
  40% asymmetric). On a 4k-image Fashion-MNIST check (30% symmetric noise, 10 epochs, small
  CNN, seed 0) the WebVision setting reached 75.4% test top-1 and ``alpha=4, lambda_u=25``
  73.5%, both below plain cross entropy (79.2%), although the co-divide was accurate (labelled
  sets ~98% clean, holding ~76% of the clean instances): in runs this short, the MixMatch stage
  costs more fitting than the cleaner labels gain. With ``lambda_u=0`` the unlabelled
  instances still enter through mixup (inputs and co-guessed targets) and the prior term.
- ``warmup_epochs``: the paper warms up 10 of 300 epochs on CIFAR-10 and 1 of 100 on
  WebVision; default ``max(1, min(10, epochs // 5))`` (2 of the study's 12 epochs).
- ``rampup_epochs``: the reference ramps lambda_u over 16 epochs; default
  ``min(16, max(1, (epochs - warmup) // 2))`` for short runs.

Simplified / left out here:

- The datasets yield one augmented view per ``__getitem__``; the two views are two calls of
  ``__getitem__`` (the augmentation is random, so they differ; a dataset without random
  augmentation yields two identical views).
- Cost: the reference feeds *both* views of every labelled and unlabelled instance to the
  gradient step (4 inputs per instance pair). Here both views feed the refinement and
  co-guessing, but the gradient step mixes **one** view of each (view 1), which halves the
  training forward/backward.
- The reference draws an unlabelled batch as large as the labelled one and restarts U when it
  runs out, so with |U| < |X| every unlabelled instance is co-guessed (4 forward passes)
  |X|/|U| times per epoch. Here each epoch uses ``min(|U|, |X|)`` unlabelled instances, split
  evenly over the labelled batches (so each is seen once when U is the smaller set, and the
  batches match the reference's when it is the larger). With these two savings a DivideMix
  epoch costs about 4-5x a plain cross-entropy epoch in CPU time (two networks, the co-divide
  pass, the no-grad views; 5.0x over 12 epochs with 2 warm-up epochs on 10k Fashion-MNIST
  images); counted the same way, the reference's scheme would cost roughly twice as much.
- The co-divide losses come from the training dataset as given (its train-time augmentation,
  drawn from a seeded RNG), not from a separate un-augmented copy as in the reference.
- The reference's extras for some settings are not implemented: the warm-up confidence
  penalty for asymmetric noise, and averaging the losses over the last 5 epochs at 90% noise.
- One network per optimizer and the study's optimizer/LR schedule (:class:`TrainConfig`), not the
  paper's SGD lr 0.02 and step decay. The LR schedule runs over the epochs' fractional
  progress, since the number of DivideMix iterations depends on the labelled set's size.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from urnet_core.peers.ensemble import SoftmaxEnsemble
from urnet_core.training.loop import check_batch_labels, derive_seed, seeded_torch
from urnet_core.training.method_loop import epoch_loader
from urnet_core.training.methods import Batch, HarnessContext, Method, Phase, PhaseResult, StepOutput
from urnet_core.utils.validation import check_fraction, check_positive_int

logger = logging.getLogger(__name__)

#: GaussianMixture settings of the reference code.
GMM_KWARGS = dict(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)


# ------------------------------------------------------------------------------ the pieces
def clean_probability(losses: Any, *, random_state: int = 0) -> np.ndarray:
    """p(clean) per instance: the posterior of the low-mean component of a 2-GMM on the normalised losses.

    Losses are min-max normalised to [0, 1] first (as in the reference). When all losses are
    equal there is nothing to separate and every instance gets p = 1.
    """
    from sklearn.mixture import GaussianMixture

    loss = np.asarray(losses, dtype=np.float64).reshape(-1)
    if loss.size < 2 or not np.isfinite(loss).all():
        raise ValueError(f"clean_probability needs >= 2 finite losses, got {loss.size} ({np.isfinite(loss).sum()} finite)")
    span = loss.max() - loss.min()
    if span <= 0:
        return np.ones(loss.size)
    x = ((loss - loss.min()) / span).reshape(-1, 1)
    gmm = GaussianMixture(random_state=random_state, **GMM_KWARGS)
    with warnings.catch_warnings():
        # max_iter=10 is the reference's choice; sklearn warns that it did not converge.
        warnings.simplefilter("ignore")
        gmm.fit(x)
    return gmm.predict_proba(x)[:, int(np.argmin(gmm.means_.reshape(-1)))]


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sharpening ``p^(1/T) / sum p^(1/T)`` along the last dimension."""
    p = probs.pow(1.0 / temperature)
    return p / p.sum(dim=-1, keepdim=True)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * a + (1 - lam) * a[perm]`` for the inputs and the targets alike."""
    return lam * inputs + (1.0 - lam) * inputs[perm], lam * targets + (1.0 - lam) * targets[perm]


def mixup_lambda(rng: np.random.Generator, alpha: float) -> float:
    """``l ~ Beta(alpha, alpha)``, then ``max(l, 1 - l)`` so the mix stays closer to its first input."""
    lam = float(rng.beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """``sum_c pi_c log(pi_c / mean_i p_ic)`` with ``pi_c = 1/C`` (the KL from the uniform prior)."""
    num_classes = logits.shape[1]
    prior = torch.full((num_classes,), 1.0 / num_classes, device=logits.device)
    mean = torch.softmax(logits.float(), dim=1).mean(0)
    return (prior * torch.log(prior / mean)).sum()


def linear_rampup(progress: float, warmup: float, length: float) -> float:
    """``clip((progress - warmup) / length, 0, 1)``: lambda_u's factor at (fractional) epoch ``progress``."""
    return float(np.clip((progress - warmup) / max(length, 1e-12), 0.0, 1.0))


def mixmatch_loss(
    net: torch.nn.Module,
    peer: torch.nn.Module,
    x_views: tuple[torch.Tensor, torch.Tensor],
    y_onehot: torch.Tensor,
    w: torch.Tensor,
    u_views: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    temperature: float,
    lam: float,
    lambda_u: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One DivideMix step's loss for ``net`` (train mode) with ``peer`` fixed (eval mode).

    ``x_views``/``u_views``: two augmented views of the labelled / unlabelled batch (``u_views``
    None when U is empty); ``y_onehot`` (B, C) the observed labels; ``w`` (B,) their clean
    probabilities. Returns ``(loss, parts)``; the random permutation comes from torch's RNG.
    """
    bx = x_views[0].shape[0]
    with torch.no_grad():
        # Label co-refinement of the labelled batch: the clean probability blends the label
        # with the network's own prediction, averaged over the two views.
        px = (torch.softmax(net(x_views[0]).float(), 1) + torch.softmax(net(x_views[1]).float(), 1)) / 2
        px = w[:, None] * y_onehot + (1.0 - w[:, None]) * px
        targets_x = sharpen(px, temperature)
        inputs, targets = [x_views[0]], [targets_x]
        if u_views is not None:
            # Label co-guessing of the unlabelled batch: both networks, both views.
            pu = sum(torch.softmax(m(v).float(), 1) for m in (net, peer) for v in u_views) / 4
            inputs.append(u_views[0])
            targets.append(sharpen(pu, temperature))
    all_inputs, all_targets = torch.cat(inputs), torch.cat(targets)
    perm = torch.randperm(all_inputs.shape[0]).to(all_inputs.device)
    mixed_x, mixed_t = mixup(all_inputs, all_targets, lam, perm)
    logits = net(mixed_x).float()
    loss_x = -(F.log_softmax(logits[:bx], dim=1) * mixed_t[:bx]).sum(dim=1).mean()
    if u_views is not None:
        loss_u = ((torch.softmax(logits[bx:], dim=1) - mixed_t[bx:]) ** 2).mean()
    else:
        loss_u = logits.new_zeros(())
    penalty = uniform_prior_penalty(logits)
    loss = loss_x + lambda_u * loss_u + penalty
    return loss, {"loss_x": float(loss_x.detach()), "loss_u": float(loss_u.detach()), "penalty": float(penalty.detach())}


class TwoViews(Dataset):
    """``(view_1, view_2, label, index)``: two calls of the wrapped dataset's ``__getitem__``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, Any, int, int]:
        x1, y, idx = self.dataset[i]
        x2, _, _ = self.dataset[i]
        return x1, x2, y, idx


@torch.no_grad()
def per_instance_losses(models: Sequence[torch.nn.Module], dataset: Dataset, labels: np.ndarray, *,
                        batch_size: int, device: torch.device) -> np.ndarray:
    """Cross entropy of every training instance under each model in eval mode: ``(len(models), n)``.

    One pass over the data for all models (loading and augmenting the images is a large part of
    the cost on CPU). Rows are by the index the dataset yields; rows it never yields (skipped
    unreadable images) get the largest loss, so they count as noisy.
    """
    n = labels.size
    losses = np.full((len(models), n), np.nan)
    labels_t = torch.from_numpy(labels)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    # An explicit generator: a DataLoader otherwise draws its worker seed from the global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator())
    try:
        for x, y, idx in loader:
            y_idx = check_batch_labels(y, idx, labels_t)
            x, y_dev = x.to(device), y_idx.to(device)
            for k, m in enumerate(models):
                losses[k, idx.numpy()] = F.cross_entropy(m(x).float(), y_dev, reduction="none").cpu().numpy()
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)
    missing = np.isnan(losses)
    if missing.any():
        losses[missing] = np.nanmax(losses) if (~missing).any() else 0.0
    return losses


def default_warmup_epochs(epochs: int) -> int:
    return max(1, min(10, int(epochs) // 5))


def default_rampup_epochs(epochs: int, warmup: int) -> int:
    return min(16, max(1, (int(epochs) - int(warmup)) // 2))


def _split_batches(positions: np.ndarray, batch_size: int) -> list[list[int]]:
    batches = [positions[i : i + batch_size].tolist() for i in range(0, positions.size, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2].extend(batches.pop())  # BatchNorm cannot train on one instance
    return batches


def _unlabeled_batches(unlabeled: np.ndarray, num_labeled: int, num_batches: int,
                       rng: np.random.Generator) -> list[list[int]]:
    """One unlabelled batch per labelled batch: ``min(|U|, |X|)`` instances of a permutation of U
    in near-equal parts (parts may be empty when U is tiny).

    When U is the smaller set every unlabelled instance is seen once per epoch (the reference
    instead cycles U at the labelled batch size, |X|/|U| visits, which would make co-guessing,
    4 forward passes per instance, the bulk of the cost); when U is the larger set the batches
    match the labelled ones in size, as in the reference.
    """
    chosen = rng.permutation(unlabeled)[: min(unlabeled.size, num_labeled)]
    return [part.tolist() for part in np.array_split(chosen, num_batches)]


# ------------------------------------------------------------------------------ training
class DivideMix(Method):
    """DivideMix as a :class:`~urnet_core.training.methods.Method` (see the module docstring for the
    method and the defaults; ``None`` epochs take :func:`default_warmup_epochs` /
    :func:`default_rampup_epochs` of the run's epochs).

    Network A starts from :func:`~urnet_core.training.loop.train`'s initial weights, B from
    another seed; warm-up epochs are one phase over ``train()``'s batches, a DivideMix epoch is
    the co-divide (in :meth:`begin_epoch`) then one phase per network over its labelled set.
    Every per-epoch draw is seeded from ``(seed, epoch)``, so a resumed run needs no RNG state.

    The model is a :class:`~urnet_core.peers.ensemble.SoftmaxEnsemble` of A and B. History
    records of the DivideMix epochs add, per network k (1, 2), ``labeled_fraction_k`` (the share
    of the training set in its labelled set), ``loss_x_k``, ``loss_u_k``, ``penalty_k`` and
    ``lambda_u``.
    """

    name = "DivideMix"
    num_networks = 2

    def __init__(self, warmup_epochs: int | None = None, p_threshold: float = 0.5, temperature: float = 0.5,
                 alpha: float = 0.5, lambda_u: float = 0.0, rampup_epochs: int | None = None) -> None:
        self.warmup_epochs = None if warmup_epochs is None else check_positive_int(warmup_epochs, "warmup_epochs",
                                                                                   minimum=0)
        self.rampup_epochs = None if rampup_epochs is None else check_positive_int(rampup_epochs, "rampup_epochs")
        self.p_threshold = check_fraction(p_threshold, "p_threshold")
        self.temperature = check_fraction(temperature, "temperature", low=1e-3, high=1.0)
        self.alpha = check_fraction(alpha, "alpha", low=1e-6, high=1e6)
        self.lambda_u = check_fraction(lambda_u, "lambda_u", low=0.0, high=1e6)

    def hyperparameters(self) -> dict[str, Any]:
        return {"warmup_epochs": self.warmup_epochs, "p_threshold": self.p_threshold, "temperature": self.temperature,
                "alpha": self.alpha, "lambda_u": self.lambda_u, "rampup_epochs": self.rampup_epochs}

    def setup(self, ctx: HarnessContext) -> None:
        super().setup(ctx)
        epochs = ctx.config.epochs
        self.warmup = default_warmup_epochs(epochs) if self.warmup_epochs is None else self.warmup_epochs
        self.rampup = default_rampup_epochs(epochs, self.warmup) if self.rampup_epochs is None else self.rampup_epochs
        if self.warmup >= epochs:
            logger.warning("DivideMix: warmup_epochs=%d >= epochs=%d, so this is plain cross entropy on two networks",
                           self.warmup, epochs)
        self.ensemble = SoftmaxEnsemble(*ctx.networks)
        self.onehot = torch.eye(ctx.num_classes)
        self.two_views = TwoViews(ctx.dataset)

    def begin_epoch(self, epoch: int) -> list[Phase]:
        self.skipped: dict[int, dict] = {}
        if epoch < self.warmup:  # plain cross entropy on train()'s batches, both networks on the same batch
            return super().begin_epoch(epoch)
        ctx, seed = self.ctx, self.ctx.config.seed
        # Co-divide: both divisions come from the networks as they stand before this epoch.
        with seeded_torch(derive_seed(seed, epoch, 1000), ctx.device):
            losses = per_instance_losses(ctx.networks, ctx.dataset, ctx.labels,
                                         batch_size=max(ctx.config.batch_size, 256), device=ctx.device)
        probs_clean = [clean_probability(losses[k], random_state=derive_seed(seed, epoch, k) % 2**32) for k in (0, 1)]
        # Network k trains on the other network's division.
        phases = [self._mixmatch_phase(epoch, k, probs_clean[1 - k]) for k in (0, 1)]
        return [phase for phase in phases if phase is not None]

    def _mixmatch_phase(self, epoch: int, member: int, prob: np.ndarray) -> Phase | None:
        """Network ``member``'s pass over its labelled set (``prob > p_threshold``), unlabelled batches alongside."""
        labeled = np.flatnonzero(prob > self.p_threshold)
        unlabeled = np.flatnonzero(prob <= self.p_threshold)
        info: dict[str, Any] = {"member": member, "labeled_fraction": labeled.size / prob.size}
        if labeled.size < 2:  # BatchNorm cannot train on a single instance
            logger.warning("DivideMix epoch %d: network %d has %d labelled instance(s); it skips this epoch",
                           epoch + 1, member + 1, labeled.size)
            self.skipped[member] = info
            return None
        config, steps = self.ctx.config, self.ctx.steps_per_epoch
        rng = np.random.default_rng([config.seed, epoch, member, 7])
        x_batches = _split_batches(rng.permutation(labeled), config.batch_size)
        iters = len(x_batches)
        info.update(epoch=epoch, iters=iters, rng=rng, prob=torch.from_numpy(prob.astype(np.float32)),
                    u_batches=_unlabeled_batches(unlabeled, labeled.size, iters, rng))
        return Phase(x_batches, (config.seed, epoch, member + 1), (member,), dataset=self.two_views,
                     lr_position=lambda b: (epoch + b / iters) * steps, info=info)

    def begin_phase(self, phase: Phase, seed: int) -> None:
        if "u_batches" not in phase.info:
            return
        local = [self.ctx.shard(batch) for batch in phase.info["u_batches"]]
        nonempty = [batch for batch in local if batch]
        phase.info["u_local"] = local
        phase.info["u_iter"] = (iter(epoch_loader(self.two_views, nonempty, self.ctx.config, self.ctx.device, seed + 1))
                                if nonempty else None)

    def training_step(self, batch: Batch, phase: Phase) -> StepOutput:
        bsz = batch.index.numel()
        if "u_batches" not in phase.info:  # warm-up
            x = batch.inputs[0]
            losses = [F.cross_entropy(net(x).float(), batch.labels) for net in self.ctx.runners]
            # Disjoint parameters: one backward for both.
            return StepOutput(sum(losses), {"train_loss": float(losses[0].detach()) * bsz})
        info, device, b = phase.info, self.ctx.device, batch.step
        member = info["member"]
        u_views = None
        if info["u_local"][b]:
            u1, u2, _, _ = next(info["u_iter"])
            u_views = (u1.to(device), u2.to(device))
        w = info["prob"][batch.index].to(device)
        lam = mixup_lambda(info["rng"], self.alpha)
        lam_u = self.lambda_u * linear_rampup(info["epoch"] + b / info["iters"], self.warmup, self.rampup)
        loss, part = mixmatch_loss(self.ctx.runners[member], self.ctx.networks[1 - member], batch.inputs,
                                   self.onehot[batch.labels_cpu].to(device), w, u_views,
                                   temperature=self.temperature, lam=lam, lambda_u=lam_u)
        return StepOutput(loss, {"loss": float(loss.detach()) * bsz, **{k: v * bsz for k, v in part.items()}})

    def end_epoch(self, epoch: int, results: list[PhaseResult]) -> dict[str, Any]:
        if epoch < self.warmup:
            return super().end_epoch(epoch, results)
        nan = float("nan")
        parts = {member: {"labeled_fraction": info["labeled_fraction"], "loss": nan, "loss_x": nan, "loss_u": nan,
                          "penalty": nan} for member, info in self.skipped.items()}
        for result in results:
            parts[result.phase.info["member"]] = {"labeled_fraction": result.phase.info["labeled_fraction"],
                                                  **result.means()}
        record: dict[str, Any] = {}
        for member in (0, 1):
            for key, value in parts[member].items():
                record[f"{key}_{member + 1}"] = value
        record = {"train_loss": record.pop("loss_1"), "train_loss_2": record.pop("loss_2"), **record}
        record["lambda_u"] = self.lambda_u * linear_rampup(epoch + 1, self.warmup, self.rampup)
        return record

    def eval_model(self) -> nn.Module:
        return self.ensemble
