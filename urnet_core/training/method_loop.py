"""The one training harness: :func:`~urnet_core.training.loop.train` runs every method here.

Eq. 10's weighted cross entropy (:class:`~urnet_core.training.weighted_ce.WeightedCrossEntropy`,
``train()``'s default), GCE and the peers (``train(..., method=...)``) all run here with the
same input checks, backbones and seeds (network 0 starts from ``train()``'s initial weights,
network k from ``derive_seed(seed, 2**31, k)``), one optimizer per network
(``make_optimizer``), the per-step LR schedule (``lr_factor``, set before every step at the
phase's position, so fractional positions work), AMP (autocast and one grad scaler for all
optimizers), the run-folder lock, a checkpoint after every epoch (every network, every
optimizer, the scaler and :meth:`~urnet_core.training.methods.Method.state_dict`) and resume,
evaluation every ``eval_every`` epochs and the history record.

Reproducibility: every phase reseeds torch's RNG from its own seed inside
``torch.random.fork_rng`` and every method derives its other draws from ``(seed, epoch)``, so a
run resumed from an epoch's checkpoint repeats the remaining epochs exactly: on CPU it ends
bit-identical to an uninterrupted run.

Several processes (torchrun): every network gets synchronised batch norm and a
DistributedDataParallel wrapper (the method's ``runners``); each rank trains the contiguous
part of every global batch (``shard_batch``) and its loss, a mean over its part, is multiplied
by ``world * local / global`` so DDP's average is the global batch's mean (eq. 10's loss scales
itself, see :class:`~urnet_core.training.weighted_ce.TrainLoss`). Operations a method does
*within* a batch (co-teaching's small-loss selection, DivideMix's mixup permutation) then act on
each rank's part, so a run matches one process up to those and float rounding. Every global
batch must give each rank at least one instance (ValueError), unless the phase allows an empty
part (eq. 10's loss, whose batches are cut between bags: the rank joins the collective step with
zero instances). Rank 0 alone writes the checkpoint, ``metrics.json`` and ``model.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate
from tqdm.auto import tqdm

from urnet_core.models.backbones import Backbone, build_model
from urnet_core.training import distributed as dist_util
from urnet_core.training.checkpoint import CHECKPOINT_NAME, data_hash as compute_data_hash
from urnet_core.training.checkpoint import save_checkpoint
from urnet_core.training.loop import (
    TrainConfig,
    TrainResult,
    _check_train_inputs,
    _claim_run_dir,
    _process_group,
    _start_or_resume,
    check_batch_labels,
    derive_seed,
    epoch_batches,
    lr_factor,
    make_optimizer,
    seeded_torch,
)
from urnet_core.training.inference import evaluate
from urnet_core.training.methods import Batch, HarnessContext, Method, Phase, PhaseResult
from urnet_core.utils.io import atomic_path

logger = logging.getLogger(__name__)

#: The final ``state_dict`` of every network, a list, written under ``run_dir`` at the end.
MODEL_NAME = "model.pt"  # one of checkpoint.RUN_ARTEFACTS


def build_network(config: TrainConfig, num_classes: int, in_channels: int, device: torch.device, member: int,
                  weights_path: Any = None) -> Backbone:
    """Network ``member`` of a method, seeded; member 0 starts from ``train()``'s initial weights."""
    seed = derive_seed(config.seed, 2**31) if member == 0 else derive_seed(config.seed, 2**31, member)
    with seeded_torch(seed, device):
        model = build_model(config.model, num_classes, in_channels=in_channels, weights_path=weights_path)
    return model.to(device)


def lr_at(config: TrainConfig, position: float, total: float) -> float:
    """``config.lr * lr_factor(schedule, position, total)``; ``train()``'s LambdaLR at integer steps."""
    return config.lr * lr_factor(config.schedule, position, total)  # type: ignore[arg-type]  # floats work too


def _collate_or_none(items: list) -> Any:
    """``default_collate``, or None for an empty batch (a rank's empty part of a short batch)."""
    return default_collate(items) if items else None


def epoch_loader(dataset: Dataset, batches: list[list[int]], config: TrainConfig, device: torch.device,
                 seed: int, *, empty_as_none: bool = False) -> DataLoader:
    """``train()``'s DataLoader over fixed batches; call inside ``seeded_torch(seed, ...)``.

    An explicit generator: a DataLoader otherwise draws its worker seed from the global RNG.
    ``empty_as_none``: an empty batch is yielded as None (a rank's empty part under DDP).
    """
    return DataLoader(dataset, batch_sampler=[list(b) for b in batches], num_workers=config.num_workers,
                      pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed),
                      **({"collate_fn": _collate_or_none} if empty_as_none else {}))


def all_reduce_rows(table: torch.Tensor, touched: torch.Tensor) -> None:
    """Under several processes, give every rank the rows of ``table`` another rank wrote.

    ``touched`` (n,) bool marks the rows this rank wrote since the last call; each row must be
    written by at most one rank (true of rows indexed by one epoch's batches), so the sum over
    ranks of the written rows is exactly the writer's value.
    """
    if not dist_util.is_active() or dist_util.world_size() == 1:
        return
    mask = touched.to(table.dtype)
    rows = table * mask.reshape(-1, *([1] * (table.ndim - 1)))
    torch.distributed.all_reduce(rows)
    torch.distributed.all_reduce(mask)
    written = mask > 0
    table[written] = rows[written]


class _Harness:
    """One run's state: networks, runners, optimizers, scaler, the method's context."""

    def __init__(self, method: Method, dataset: Dataset, labels: np.ndarray, *, num_classes: int, config: TrainConfig,
                 in_channels: int, weights_path: Any, device: torch.device, world: int, rank: int) -> None:
        self.method, self.config, self.device, self.world, self.rank = method, config, device, world, rank
        self.nets = method.build_networks(config, num_classes, in_channels, weights_path, device, world)
        self.optimizers = [make_optimizer(list(net.parameters()), config) for net in self.nets]
        use_amp = config.amp and device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if use_amp else None
        # Loss scaling is needed for float16 only; bf16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        steps = len(epoch_batches(labels, config, 0))
        self.ctx = HarnessContext(config=config, dataset=dataset, labels=labels, num_classes=num_classes,
                                  device=device, networks=self.nets, runners=list(self.nets), steps_per_epoch=steps,
                                  total_steps=steps * config.epochs, world=world, rank=rank, shard=self.shard)
        self.labels_t = torch.from_numpy(labels)

    def shard(self, batch: list[int], unit: int = 1) -> list[int]:
        return dist_util.shard_batch(batch, unit, self.rank, self.world) if self.world > 1 else list(batch)

    def wrap_for_ddp(self) -> None:
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ctx.runners[:] = [nn.parallel.DistributedDataParallel(net, device_ids=ids) for net in self.nets]

    def state(self) -> dict[str, Any]:
        state = self.method.network_state(self.optimizers)
        method_state = self.method.state_dict()
        return {**state, "method_state": method_state} if method_state else state

    def restore(self, ckpt: dict) -> tuple[int, list[dict]]:
        self.method.load_network_state(ckpt, self.optimizers)
        self.scaler.load_state_dict(ckpt["scaler"])
        if "method_state" in ckpt:
            self.method.load_state_dict(ckpt["method_state"])
        return int(ckpt["epoch"]), list(ckpt["history"])

    def set_lr(self, optimizers: list[torch.optim.Optimizer], position: float) -> None:
        lr = lr_at(self.config, position, self.ctx.total_steps)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def run_phase(self, phase: Phase, epoch: int, progress: bool) -> PhaseResult:
        """Train the phase's networks over its batches (every rank must call)."""
        config, device, ctx = self.config, self.device, self.ctx
        seed = derive_seed(*phase.seed_parts) if self.world == 1 else derive_seed(*phase.seed_parts, self.rank)
        batches = [self.shard(b, phase.unit) for b in phase.batches]
        if not phase.allow_empty and any(not b for b in batches):
            raise ValueError(f"{self.method.name}: a batch has fewer instances than the {self.world} processes")
        dataset = phase.dataset or ctx.dataset
        for k, net in enumerate(self.nets):
            net.train(k in phase.train)
        steppers = [self.optimizers[k] for k in phase.train]
        sums: dict[str, float] = {}
        seen = 0
        with seeded_torch(seed, device):
            loader = epoch_loader(dataset, batches, config, device, seed, empty_as_none=self.world > 1)
            self.method.begin_phase(phase, seed)
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False)
            template = None
            for b, item in enumerate(bar):
                if item is None:
                    # This rank's part of a short batch is empty: it still joins the collective
                    # forward/backward, with zero instances.
                    if template is None:
                        template = default_collate([dataset[phase.batches[b][0]]])[:-2]
                    empty = torch.zeros(0, dtype=torch.long)
                    item = (*(t[:0] for t in template), empty, empty)
                *inputs, y, idx = item
                template = inputs
                self.set_lr(steppers, phase.lr_position(b) if phase.lr_position else epoch * ctx.steps_per_epoch + b)
                y_idx = check_batch_labels(y, idx, self.labels_t)
                batch = Batch(tuple(x.to(device, non_blocking=True) for x in inputs),
                              y_idx.to(device, non_blocking=True), y_idx, idx.long(), b, len(phase.batches[b]))
                with torch.autocast(device_type=device.type, dtype=self.amp_dtype or torch.float16,
                                    enabled=self.amp_dtype is not None):
                    out = self.method.training_step(batch, phase)
                loss = out.loss
                if self.world > 1 and not self.method.scales_for_ddp:
                    # DDP averages over ranks: weigh each rank's mean by its share of the batch.
                    loss = loss * (self.world * len(batches[b]) / len(phase.batches[b]))
                for opt in steppers:
                    opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                for opt in steppers:
                    self.scaler.step(opt)
                self.scaler.update()
                for key, value in out.sums.items():
                    sums[key] = sums.get(key, 0.0) + value
                seen += len(idx)
                if "train_loss" in sums:
                    bar.set_postfix(loss=f"{sums['train_loss'] / max(seen, 1):.4f}")
            torch_rng = torch.get_rng_state()
        if self.world > 1:
            keys = sorted(sums)
            *values, seen = dist_util.all_reduce_sum([sums[k] for k in keys] + [seen])
            sums, seen = dict(zip(keys, values)), int(seen)
        return PhaseResult(phase, sums, seen, torch_rng)


def fit_method(
    method: Method,
    train_dataset: Dataset,
    *,
    num_classes: int,
    config: TrainConfig,
    in_channels: int = 1,
    sample_weights: Any = None,
    soft_targets: Any = None,
    eval_dataset: Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    weights_path: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    distributed: bool | None = None,
) -> TrainResult:
    """Train ``method``; the arguments are :func:`~urnet_core.training.loop.train`'s (see the module docstring).

    Returns a :class:`~urnet_core.training.loop.TrainResult` whose ``model`` is
    :meth:`~urnet_core.training.methods.Method.eval_model` in eval mode; with ``run_dir`` and
    ``method.writes_model_file``, ``model.pt`` holds the final ``state_dict`` of every network.
    """
    if not isinstance(method, Method):
        raise TypeError(f"method must be a urnet_core.training.methods.Method, got {type(method).__name__}")
    if not method.takes_weights and (sample_weights is not None or soft_targets is not None):
        raise ValueError(f"{method.name} takes no sample_weights or soft_targets")
    labels, weights, targets = _check_train_inputs(train_dataset, num_classes, config, sample_weights, soft_targets)
    if method.takes_weights:
        method.set_tables(weights, targets)
    method.check(config, labels)
    device, world, rank = _process_group(config, distributed)
    main = rank == 0
    run_dir = Path(run_dir) if run_dir is not None else None
    data_hash = compute_data_hash(labels, weights, targets, weights_path)
    meta = {"model_name": config.model, "num_classes": num_classes, "in_channels": in_channels,
            **method.checkpoint_meta()}
    if world > 1:
        dist_util.check_consistent((asdict(config), data_hash, labels.size, meta), "training inputs")
    with contextlib.ExitStack() as stack:
        if run_dir is not None:
            stack.enter_context(_claim_run_dir(run_dir))
        h = _Harness(method, train_dataset, labels, num_classes=num_classes, config=config, in_channels=in_channels,
                     weights_path=weights_path, device=device, world=world, rank=rank)
        method.setup(h.ctx)
        ckpt, fingerprint = _start_or_resume(run_dir, resume, train_dataset, config=asdict(config), meta=meta,
                                             data_hash=data_hash)
        start_epoch, history = h.restore(ckpt) if ckpt is not None else (0, [])
        if ckpt is not None and main:
            logger.info("resuming %s from epoch %d/%d", run_dir, start_epoch, config.epochs)
        del ckpt
        h.wrap_for_ddp()
        for epoch in range(start_epoch, config.epochs):
            record, rng = _train_epoch(h, epoch, eval_dataset, progress=progress and main)
            history.append(record)
            if run_dir is not None and main:
                save_checkpoint(run_dir / CHECKPOINT_NAME, epoch=epoch + 1, config=asdict(config), meta=meta,
                                data_hash=data_hash, fingerprint=fingerprint, scaler=h.scaler, history=history,
                                rng=rng, state=h.state())
            dist_util.barrier()  # the other ranks wait for rank 0's checkpoint
            if on_epoch_end is not None:
                on_epoch_end(record)
    return _finish(h, history, run_dir, main)


def _train_epoch(h: _Harness, epoch: int, eval_dataset: Dataset | None, *,
                 progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train epoch ``epoch``'s phases, evaluate when due; return its history record and RNG record."""
    config, ctx = h.config, h.ctx
    t0 = time.perf_counter()
    results = [h.run_phase(phase, epoch, progress) for phase in h.method.begin_epoch(epoch)]
    # The LR at the epoch's end, as train() records it (the factor of the next step).
    record: dict[str, Any] = {"epoch": epoch + 1, "lr": lr_at(config, (epoch + 1) * ctx.steps_per_epoch,
                                                               ctx.total_steps)}
    record.update(h.method.end_epoch(epoch, results))
    record["eval"] = None
    if eval_dataset is not None and (epoch + 1 == config.epochs or (epoch + 1) % config.eval_every == 0):
        record["eval"], _ = evaluate(h.method.eval_model(), eval_dataset, num_classes=ctx.num_classes,
                                     batch_size=max(config.batch_size, 256), device=h.device,
                                     progress=progress, distributed=h.world > 1)
    record["seconds"] = time.perf_counter() - t0
    if h.world > 1:
        record["seconds"] = dist_util.broadcast_object(record["seconds"])  # the same history on every rank
    if h.rank == 0:
        logger.info("%sepoch %d/%d loss %.4f%s (%.1fs)", h.method.log_name, epoch + 1, config.epochs,
                    record["train_loss"], f" top1 {record['eval']['top1']:.4f}" if record["eval"] else "",
                    record["seconds"])
    # Each epoch reseeds from (seed, epoch), so resuming does not need the RNG states; they
    # record where the RNGs stood, for audits.
    rng = {"torch": results[-1].torch_rng if results else None,
           "numpy": np.random.default_rng([config.seed, epoch]).bit_generator.state}
    return record, rng


def _finish(h: _Harness, history: list[dict], run_dir: Path | None, main: bool) -> TrainResult:
    """Eval mode everywhere, plain batch norm again, ``model.pt`` under ``run_dir``; the TrainResult."""
    for net in h.nets:
        net.eval()
        if h.world > 1:
            dist_util.revert_sync_batchnorm(net)
    model = h.method.eval_model().eval()
    if run_dir is not None and h.method.writes_model_file:
        if main:
            with atomic_path(run_dir / MODEL_NAME) as tmp:
                torch.save([net.state_dict() for net in h.nets], tmp)
        dist_util.barrier()
    final = dict(history[-1]["eval"] or {}) if history else {}
    if history:
        final["train_loss"] = history[-1]["train_loss"]
    return TrainResult(model=model, history=history, final_metrics=final, run_dir=run_dir,  # type: ignore[arg-type]
                       bag_branch=h.method.bag_branch())
