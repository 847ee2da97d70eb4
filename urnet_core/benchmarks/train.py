"""Section ``train`` of ``urnet bench``: URNet's training step against plain cross entropy.

URNet's step (sample weights, soft targets, bag branch) and plain cross entropy run on the same
backbone and batch, repeated (median and spread of the ratio); then
:func:`urnet_core.training.loop.train` itself on in-memory images.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np


def optimizer(params: list, config: Any):
    """The optimiser ``train`` builds for ``config`` (SGD with momentum, or AdamW)."""
    import torch

    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class TensorDataset:
    """In-memory ``(image, label, index)`` items, so :func:`urnet_core.training.loop.train` times compute, not decoding."""

    def __init__(self, images: "torch.Tensor", labels: np.ndarray) -> None:  # noqa: F821
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.size)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), int(i)


def train_step_section(*, num_classes: int = 5000, batch_size: int = 128, steps: int = 30, warmup: int = 5,
                       epochs: int = 3, seed: int = 0, device: str = "cpu", model_name: str = "small_cnn",
                       image_size: int = 28, train_loop: bool = True, reps: int = 5) -> list[dict[str, Any]]:
    """Median step time of URNet vs plain cross entropy (one backbone, image size and batch size).

    ``small_cnn`` at 28x28 grey is the default study's backbone; ``resnet18`` at 64x64 RGB
    stands for a WebVision-like backbone whose compute dominates the C-sized heads.

    Two measurements:

    - ``step``: the body of :func:`urnet_core.training.loop.train`'s loop, with the project's model,
      optimiser, loss and :class:`~urnet_core.models.bag.BagAttentionBranch`; URNet's loss is
      ``train``'s own :class:`~urnet_core.training.loop.TrainLoss` (the batch's weights and its
      eq. 10 targets in compact form, :class:`~urnet_core.reweight.label_weight.LabelPairs`), plain
      CE is ``F.cross_entropy``. The variants alternate step by step (same input batch: ``batch_size``
      rounded down to whole bags of 3, as ``train`` forms URNet batches), ``warmup`` steps
      untimed, the median of ``steps`` timed steps.
    - ``train()`` (with ``train_loop``): :func:`urnet_core.training.loop.train` itself for ``epochs`` epochs on in-memory
      images (baseline: no weights/targets; URNet: weights, compact soft targets, bag branch);
      seconds per instance from each epoch's record, median over epochs.

    With ``device="cuda"`` both run on the GPU under bf16 autocast (AMP, as ``train`` does
    there), and each timed step ends with ``torch.cuda.synchronize()``.

    Its length is the two timed steps built side by side (the baseline's and URNet's, as closures
    over the same tensors) and their interleaved timing; keeping them in one place is what makes the
    ratio fair.
    """
    import contextlib

    import torch
    import torch.nn.functional as F

    from urnet_core.models.backbones import build_model
    from urnet_core.models.bag import BagAttentionBranch
    from urnet_core.reweight.label_weight import LabelPairs
    from urnet_core.training.loop import TrainConfig, train
    from urnet_core.training.weighted_ce import TrainLoss

    bag_size = 3
    b = (batch_size // bag_size) * bag_size
    rng = np.random.default_rng(seed)
    n_pool = b * 8
    labels = np.repeat(rng.integers(0, num_classes, n_pool // bag_size), bag_size)
    predicted = np.where(rng.random(n_pool) < 0.7, labels, rng.integers(0, num_classes, n_pool))
    weights = rng.uniform(0.2, 2.0, n_pool).astype(np.float32)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    channels = 1 if model_name == "small_cnn" else 3
    images_cpu = torch.from_numpy(rng.standard_normal((n_pool, channels, image_size, image_size), dtype=np.float32))
    images = images_cpu.to(dev)
    labels_t = torch.from_numpy(labels).to(dev)
    beta = 0.8
    cfg = TrainConfig(model=model_name, batch_size=batch_size, device=device, amp=cuda, bag_branch=True,
                      bag_size=bag_size)
    # URNet's loss is train()'s own: weights and eq. 10's compact targets looked up by dataset index
    urnet_loss = TrainLoss(cfg, weights, LabelPairs(predicted, beta))

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    def make(urnet: bool):
        torch.manual_seed(seed)
        model = build_model(model_name, num_classes, in_channels=channels).to(dev)
        bag = BagAttentionBranch(model.feature_dim, num_classes).to(dev) if urnet else None
        params = list(model.parameters()) + (list(bag.parameters()) if bag is not None else [])
        model.train()
        return model, bag, optimizer(params, cfg)

    def step(state, idx: np.ndarray, urnet: bool) -> None:
        model, bag, opt = state
        idx_cpu = torch.from_numpy(idx)
        idx_t = idx_cpu.to(dev)
        x = images[idx_t]
        y = labels_t[idx_t]
        with autocast():
            feats = model.encoder(x)  # train()'s forward: one encoder pass feeds the head and the bag branch
            logits = model.head(feats)
            if urnet:
                bag_logits, _ = bag(feats.float().reshape(-1, bag_size, feats.shape[1]))
                loss = urnet_loss(logits, bag_logits, y, idx_cpu, idx.size).total
            else:
                loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    states = {"ce": make(False), "urnet": make(True)}
    rep_ce, rep_ur, ratios = [], [], []
    for rep in range(reps):  # each repetition: warm-up, then `steps` interleaved timed steps
        times: dict[str, list[float]] = {"ce": [], "urnet": []}
        for i in range((warmup if rep == 0 else 1) + steps):
            idx = np.arange((i * b) % n_pool, (i * b) % n_pool + b)
            for name in (("ce", "urnet") if i % 2 == 0 else ("urnet", "ce")):
                sync()
                t0 = time.perf_counter()
                step(states[name], idx, name == "urnet")
                sync()
                if i >= (warmup if rep == 0 else 1):
                    times[name].append(time.perf_counter() - t0)
        rep_ce.append(float(np.median(times["ce"])))
        rep_ur.append(float(np.median(times["urnet"])))
        ratios.append(rep_ur[-1] / rep_ce[-1])
    ce = float(np.median(rep_ce))
    ur = float(np.median(rep_ur))
    ratio = float(np.median(ratios))
    spread = f"ratio median {ratio:.3f} [min {min(ratios):.3f}, max {max(ratios):.3f}] over {reps} repetitions"
    where = (f"{torch.cuda.get_device_name(dev)}, bf16 autocast" if cuda
             else f"{torch.get_num_threads()} torch threads")
    rows = [
        {"section": "train", "item": f"step: plain CE [{model_name}]", "C": num_classes, "seconds": ce,
         "note": f"median over {reps} repetitions of the median of {steps} steps (after {warmup} warm-up); "
                 f"{model_name} {image_size}x{image_size}, batch {b}; {where}; seconds min {min(rep_ce):.4g} max {max(rep_ce):.4g}"},
        {"section": "train", "item": f"step: URNet (weights + soft targets + bag) [{model_name}]", "C": num_classes, "seconds": ur,
         "ratio_vs_ce": ratio, "ratio_min": min(ratios), "ratio_max": max(ratios),
         "note": f"{spread}; interleaved with CE; batch {b} = {b // bag_size} bags"},
    ]
    if not train_loop:
        return rows
    # The real training loop, end to end (in-memory images; DataLoader with 0 workers).
    n_train = b * 6
    ds = TensorDataset(images_cpu[:n_train], labels[:n_train])
    targets = LabelPairs(predicted[:n_train], beta)
    per_instance = {}
    variants = (
        ("ce", {}, TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, device=device, seed=seed,
                               amp=cuda)),
        ("urnet", {"sample_weights": weights[:n_train], "soft_targets": targets},
         TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, device=device, seed=seed, amp=cuda,
                     bag_branch=True, bag_size=bag_size)),
    )
    train_logger = logging.getLogger("urnet_core.training.loop")
    old_level = train_logger.level
    train_logger.setLevel(logging.WARNING)  # no per-epoch lines in the benchmark output
    try:
        for name, kwargs, config in variants:
            res = train(ds, num_classes=num_classes, config=config, progress=False, in_channels=channels, **kwargs)
            per_instance[name] = float(np.median([h["seconds"] / n_train for h in res.history]))
    finally:
        train_logger.setLevel(old_level)
    rows += [
        {"section": "train", "item": f"train(): baseline (one-hot CE) [{model_name}]", "C": num_classes,
         "seconds": per_instance["ce"] * batch_size,
         "note": f"train() {epochs} epochs x {n_train} in-memory images; seconds per {batch_size} instances, median epoch"},
        {"section": "train", "item": f"train(): URNet (weights + soft targets + bag) [{model_name}]", "C": num_classes,
         "seconds": per_instance["urnet"] * batch_size, "ratio_vs_ce": per_instance["urnet"] / per_instance["ce"],
         "note": "ratio of seconds per instance (URNet batches hold 126 = 42 bags x 3)"},
    ]
    return rows
