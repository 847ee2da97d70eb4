"""One training entry point for the baseline, URNet (eq. 10 + bag branch) and every peer.

Notation: n training instances, C classes, B instances per batch.

The same :func:`train` trains

- the **baseline**: ``sample_weights=None`` (all ones) and ``soft_targets=None`` (one-hot of the
  observed label), i.e. plain cross entropy;
- **URNet**: ``sample_weights`` = the product of class, cluster and instance weights and
  ``soft_targets`` = the label-weighted targets, giving eq. 10's loss
  ``(1/B) sum_i w_i * sum_j -t_ij log p_ij`` (see :mod:`urnet_core.training.losses` for why the sum is
  divided by B and not by the weight sum), plus, with ``config.bag_branch``, the cross entropy of
  the bag attention branch (section 4.4) times ``config.bag_loss_weight``;
- the **GCE** peer baseline with ``config.loss="gce"``;
- a **method** object (``method=``, :class:`~urnet_core.training.methods.Method`: ELR,
  Co-teaching, DivideMix from :mod:`urnet_core.peers`), whose networks the harness of
  :mod:`urnet_core.training.method_loop` trains with this module's seeds, batches, optimizer,
  LR schedule, AMP, checkpoint/resume, DDP, history and evaluation.

Weights and targets are looked up per batch by the ``index`` each dataset item carries
(datasets yield ``(image, label, index)``), so they map to table rows.

Reproducibility: every random choice of epoch e (batch order, bags, data augmentation drawn
from torch's RNG, dropout) is seeded from ``(config.seed, e)``, inside
``torch.random.fork_rng`` so the caller's global RNG state is left as it was. A checkpoint is
written atomically after every epoch; a killed run restarted with ``resume=True`` continues from
it and, on CPU, ends bit-identical to an uninterrupted run. A checkpoint whose config (all fields
but ``eval_every``), model, data hash (weights, targets, labels, init weights) or dataset
fingerprint (image content or files, transform) differs from the current call is **refused with a
ValueError** rather than silently mixed or overwritten; pass ``resume=False`` (or a new
``run_dir``) to start over, which first removes the older run's artefacts. ``run_dir`` is checked
to be writable before the first epoch and locked for the whole call, so two runs never share it
(see :mod:`urnet_core.training.checkpoint` and :mod:`urnet_core.utils.locks`).

Layout: a training method is a :class:`~urnet_core.training.methods.Method` (eq. 10's loss:
:class:`~urnet_core.training.weighted_ce.WeightedCrossEntropy`, the default; the peers:
:mod:`urnet_core.peers`); :mod:`urnet_core.training.method_loop` is the one harness that trains
any of them (per epoch: the method's phases, evaluate when due, checkpoint); this module holds
the config, the shared pieces (seeds, batches, optimizer, LR schedule, input checks), the entry
point :func:`train`; inference (:func:`~urnet_core.training.inference.evaluate`,
:func:`~urnet_core.training.inference.predict`) is :mod:`urnet_core.training.inference`.

Several processes: under ``torchrun --nproc_per_node N`` (see :mod:`urnet_core.training.distributed`) the
model and bag branch are wrapped in DistributedDataParallel with synchronised batch norm.
``config.batch_size`` stays the *global* batch: every epoch's batches are exactly the
single-process ones, and each rank trains on a contiguous part of every batch (cut between bags
with the bag branch), so about ``batch_size / N`` instances. Each rank's loss is its sum of
``w_i * CE_i`` divided by the global batch size and multiplied by N (likewise the bag loss over the
global number of bags), so DDP's gradient average is the single-process gradient; the result
matches a one-process run up to float rounding (exactly the same data order; random data
augmentation and dropout are drawn per rank, so they differ). Rank 0 alone writes the
checkpoint and ``metrics.json`` and the others wait on a barrier; resuming works the same way
(rank 0 reads and checks the checkpoint and sends it to the others).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from urnet_core.training import distributed as dist_util
from urnet_core.utils.validation import as_labels, check_fraction, check_option, check_positive_int
from urnet_core.utils.devices import resolve_device
from urnet_core.utils.typecheck import check_dataclass_types
from urnet_core.utils.locks import FolderLock
from urnet_core.training.checkpoint import (
    CHECKPOINT_NAME,
    check_resumable,
    clear_run_artefacts,
    load_checkpoint,
    prepare_run_dir,
    training_fingerprint,
)
from urnet_core.models.backbones import MODEL_NAMES, Backbone, build_model
from urnet_core.models.bag import BagAttentionBranch, BagBatchSampler
from urnet_core.data.targets import LabelPairs

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
LOSSES = ("ce", "gce")
TTA_MODES = ("flip", "multicrop", "multiscale")


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (frozen; stored in every checkpoint as ``asdict(config)``).

    Attributes
    ----------
    model : {'small_cnn', 'resnet18', 'resnet50', 'resnext101_32x8d'}
    epochs : int
    batch_size : int
        Instances per batch; with the bag branch, ``batch_size // bag_size`` bags per batch.
    optimizer : {'sgd', 'adamw'}
        SGD uses ``momentum``; both use decoupled/L2 ``weight_decay`` as torch defines it.
    lr : float
        Peak learning rate (0.05 suits SGD on small_cnn; use ~1e-3 with AdamW).
    momentum, weight_decay : float
    schedule : {'cosine', 'step', 'constant'}
        Per-step cosine decay to 0; 'step' divides by 10 at 50% and 75% of the steps.
    loss : {'ce', 'gce'}
        'ce' is eq. 10's weighted soft cross entropy; 'gce' the generalized cross entropy peer.
    gce_q : float
    bag_branch : bool
        Add the bag attention branch (section 4.4).
    bag_size : int
        Instances per bag (paper: 3).
    bag_loss_weight : float
    amp : bool
        Mixed precision (bf16 where supported, else fp16 with loss scaling); CUDA only.
    num_workers : int
        DataLoader worker processes.
    seed : int
    device : str
        'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ...
    eval_every : int
        Evaluate ``eval_dataset`` every this many epochs and always after the last.
    """

    model: str = "small_cnn"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    loss: str = "ce"
    gce_q: float = 0.7
    bag_branch: bool = False
    bag_size: int = 3
    bag_loss_weight: float = 1.0
    amp: bool = True
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1

    def __post_init__(self) -> None:
        check_dataclass_types(self)  # "false" from a config file is an error, not a truthy string
        check_option(self.model, "model", MODEL_NAMES)
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_option(self.optimizer, "optimizer", OPTIMIZERS)
        check_option(self.schedule, "schedule", SCHEDULES)
        check_option(self.loss, "loss", LOSSES)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        check_fraction(self.momentum, "momentum", low=0.0, high=1.0)
        check_fraction(self.weight_decay, "weight_decay", low=0.0, high=1.0)
        check_fraction(self.gce_q, "gce_q", low=1e-6, high=1.0)
        check_positive_int(self.bag_size, "bag_size")
        check_fraction(self.bag_loss_weight, "bag_loss_weight", low=0.0, high=1e6)
        check_positive_int(self.num_workers, "num_workers", minimum=0)
        check_positive_int(self.seed, "seed", minimum=0)
        check_positive_int(self.eval_every, "eval_every")
        if self.bag_branch and self.batch_size < self.bag_size:
            raise ValueError(f"batch_size={self.batch_size} must be >= bag_size={self.bag_size} with the bag branch")

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "config") -> "TrainConfig":
        """Build a config from a dict (e.g. a JSON file), naming unknown keys in the error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown TrainConfig key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : Backbone
        The trained network (on the training device, in eval mode).
    history : list of dict
        One record per epoch: ``epoch`` (1-based), ``lr`` (at the epoch's end), ``train_loss``,
        ``bag_loss`` (bag branch only), ``seconds`` and ``eval`` (metrics dict or None).
    final_metrics : dict
        The last evaluation's metrics (empty without ``eval_dataset``) plus ``train_loss``.
    run_dir : Path or None
    bag_branch : BagAttentionBranch or None
    """

    model: Backbone
    history: list[dict]
    final_metrics: dict
    run_dir: Path | None
    bag_branch: BagAttentionBranch | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with torch's RNG seeded to ``seed``, restoring the caller's state after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Observed labels of a dataset, indexed like its items' ``index``.

    Reads ``dataset.labels`` or ``dataset.targets`` or ``dataset.table['label']``; otherwise
    iterates the dataset once (slow for image files; a warning says so).
    """
    for attr in ("labels", "targets"):
        value = getattr(dataset, attr, None)
        if value is not None:
            return as_labels(np.asarray(value), name=f"dataset.{attr}")
    table = getattr(dataset, "table", None)
    if table is not None and "label" in getattr(table, "columns", ()):
        return as_labels(table["label"].to_numpy(), name="dataset.table['label']")
    logger.warning("%s has no .labels/.targets/.table; reading every item to find labels", type(dataset).__name__)
    labels = np.empty(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        _, y, idx = dataset[i]
        labels[int(idx)] = int(y)
    return labels


def check_batch_labels(y: torch.Tensor, idx: torch.Tensor, labels_t: torch.Tensor) -> torch.Tensor:
    """The table labels (CPU, int64) of a batch's dataset ``idx``, checked against the labels ``y`` it yields."""
    idx = idx.long()
    n = labels_t.numel()
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"dataset index out of range [0, {n}): got {int(idx.min())}..{int(idx.max())}")
    y_idx = labels_t[idx]
    if not torch.equal(y.long(), y_idx):
        raise ValueError("labels yielded by the dataset disagree with its .labels/.table at the same index")
    return y_idx


def _check_weights_targets(
    sample_weights: Any, soft_targets: Any, n: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray | LabelPairs | None]:
    if sample_weights is None:
        weights = np.ones(n, dtype=np.float32)
    else:
        weights = np.array(sample_weights, dtype=np.float32)
        if weights.shape != (n,):
            raise ValueError(f"sample_weights must have shape ({n},), got {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any():
            bad = np.flatnonzero(~np.isfinite(weights) | (weights < 0))
            raise ValueError(f"sample_weights must be finite and >= 0; {bad.size} bad value(s), first at row {bad[0]}")
    targets = None
    if isinstance(soft_targets, LabelPairs):
        pred = np.asarray(soft_targets.predicted, dtype=np.int64)
        if pred.shape != (n,):
            raise ValueError(f"soft_targets (LabelPairs) predicted must have shape ({n},), got {pred.shape}")
        if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
            bad = np.flatnonzero((pred < 0) | (pred >= num_classes))
            raise ValueError(f"soft_targets (LabelPairs) predicted classes must be in [0, {num_classes}); "
                             f"{bad.size} bad value(s), first at row {bad[0]}")
        targets = LabelPairs(pred, soft_targets.beta)
    elif soft_targets is not None:
        targets = np.array(soft_targets, dtype=np.float32)
        if targets.shape != (n, num_classes):
            raise ValueError(f"soft_targets must have shape ({n}, {num_classes}), got {targets.shape}")
        sums = targets.sum(axis=1)
        if not np.isfinite(targets).all() or (targets < 0).any() or np.abs(sums - 1).max() > 1e-3:
            raise ValueError("soft_targets rows must be non-negative and sum to 1")
    return weights, targets


def _check_train_inputs(
    dataset: Dataset, num_classes: int, config: "TrainConfig", sample_weights: Any, soft_targets: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | LabelPairs | None]:
    """``(labels, weights, targets)`` of a :func:`train` call, checked; labels a writable int64 copy."""
    check_positive_int(num_classes, "num_classes")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    n = len(dataset)
    if n == 0:
        raise ValueError("train_dataset is empty")
    labels = np.array(dataset_labels(dataset), dtype=np.int64)  # a writable copy for torch
    if labels.size != n:
        raise ValueError(f"train_dataset has {n} items but {labels.size} labels")
    as_labels(labels, num_classes=num_classes, name="train labels")
    weights, targets = _check_weights_targets(sample_weights, soft_targets, n, num_classes)
    if config.loss == "gce" and targets is not None:
        raise ValueError("loss='gce' trains on hard labels; soft_targets is only used with loss='ce'")
    return labels, weights, targets


def lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    if schedule == "step":
        return 0.1 ** sum(step >= m for m in (0.5 * total, 0.75 * total))
    return 1.0


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def epoch_batches(
    labels: np.ndarray, config: TrainConfig, epoch: int
) -> list[list[int]]:
    n = labels.size
    if config.bag_branch:
        sampler = BagBatchSampler(
            labels, bag_size=config.bag_size, bags_per_batch=max(1, config.batch_size // config.bag_size), seed=config.seed
        )
        sampler.set_epoch(epoch)
        return list(sampler)
    perm = np.random.default_rng([config.seed, epoch]).permutation(n)
    batches = [perm[i : i + config.batch_size].tolist() for i in range(0, n, config.batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        # BatchNorm cannot train on one instance: fold a lone last instance into the previous batch.
        batches[-2].extend(batches.pop())
    return batches


#: The name ``make_optimizer`` had; ``urnet_core.benchmarks`` still imports it.
_make_optimizer = make_optimizer


def load_checkpoint_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Backbone:
    """Rebuild the trained :class:`Backbone` stored in a :func:`train` checkpoint, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_name"], ckpt["num_classes"], in_channels=ckpt["in_channels"])
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval()


# ---------------------------------------------------------------------------------------------
# training


@contextlib.contextmanager
def _claim_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for a run: rank 0 checks that it is writable, then locks it until the end.

    Failures (unwritable folder, lock held by another process) are raised on every rank.
    """
    lock = FolderLock(run_dir, what="run folder")

    def claim() -> None:
        prepare_run_dir(run_dir)  # before the lock file: a read-only folder gets the clearer error
        lock.acquire()

    dist_util.run_on_main(claim)
    try:
        yield
    finally:
        lock.release()  # a no-op on the other ranks


def _process_group(config: TrainConfig, distributed: bool | None) -> tuple[torch.device, int, int]:
    """``(device, world size, rank)``, initialising the process group under torchrun (see :func:`train`)."""
    device = resolve_device(config.device)
    if distributed is None:
        distributed = dist_util.env_world_size() > 1 or dist_util.is_active()
    if distributed and dist_util.init_from_env(device):
        return dist_util.local_device(device), dist_util.world_size(), dist_util.rank()
    return device, 1, 0


def _start_or_resume(
    run_dir: Path | None, resume: bool, dataset: Dataset, **check: Any
) -> tuple[dict | None, str | None]:
    """``(checkpoint to resume or None, dataset fingerprint)``, read and checked on rank 0.

    A run that starts over (``resume=False`` or no checkpoint) first removes the older run's
    artefacts from ``run_dir``.
    """
    if run_dir is None:
        return None, None
    ckpt_path = run_dir / CHECKPOINT_NAME

    def read() -> tuple[dict | None, str]:
        fingerprint = training_fingerprint(dataset)
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            check_resumable(ckpt, ckpt_path, fingerprint=fingerprint, **check)
            return ckpt, fingerprint
        clear_run_artefacts(run_dir)
        return None, fingerprint

    # Rank 0 reads and checks the checkpoint and sends it to the other ranks.
    return dist_util.run_on_main(read)


def train(
    train_dataset: Dataset,
    *,
    num_classes: int,
    config: TrainConfig = TrainConfig(),
    in_channels: int = 1,
    sample_weights: np.ndarray | None = None,
    soft_targets: np.ndarray | LabelPairs | None = None,
    eval_dataset: Dataset | None = None,
    run_dir: str | os.PathLike | None = None,
    resume: bool = True,
    weights_path: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    distributed: bool | None = None,
    method: Any = None,
) -> TrainResult:
    """Train a backbone (and optionally the bag branch) with per-instance weights and soft targets.

    With ``method`` (a :class:`~urnet_core.training.methods.Method`, e.g. a peer of
    :mod:`urnet_core.peers`) the method's networks are trained instead, by the same harness
    (:mod:`urnet_core.training.method_loop`: seeds, batches, optimizers, LR schedule, AMP,
    checkpoint/resume, DDP, history and evaluation as below); it takes no ``sample_weights`` or
    ``soft_targets``.

    Parameters
    ----------
    train_dataset : Dataset
        Yields ``(image (in_channels, H, W), label, index)`` with index in ``[0, n)``; labels are
        read from ``.labels``/``.targets``/``.table`` (see :func:`dataset_labels`).
    num_classes : int
        C.
    config : TrainConfig
    in_channels : int, default=1
    sample_weights : array (n,), optional
        Per-instance weights w_i >= 0 (eq. 10's wI * wG * wC); all ones when omitted.
    soft_targets : array (n, C) or LabelPairs, optional
        Soft targets (section 4.5); one-hot of the observed labels when omitted. Dense rows, or
        eq. 10's two-hot targets in compact form
        (:class:`~urnet_core.data.targets.LabelPairs`: ``O(n)`` memory, the form to use
        at WebVision scale; same loss up to float rounding). Not used with ``loss='gce'``,
        which takes hard labels.
    eval_dataset : Dataset, optional
        Evaluated with :func:`evaluate` every ``config.eval_every`` epochs and after the last.
    run_dir : path, optional
        Where ``checkpoint.pt`` (after every epoch) and ``metrics.json`` are written atomically.
        It is checked to be writable before the first epoch and locked (``run_dir/.lock``) for
        the whole call: a second ``train`` on the same folder fails with
        :class:`~urnet_core.utils.locks.FolderLockedError` naming the holder's PID.
    resume : bool, default=True
        Continue from ``run_dir/checkpoint.pt`` when it exists (ValueError if it belongs to a
        different run: config, labels/weights/targets or the training images differ).
        ``False``, or no checkpoint, starts over: the previous run's checkpoint, metrics and
        final artefacts (:data:`~urnet_core.training.checkpoint.RUN_ARTEFACTS`) are removed first.
    weights_path : path, optional
        Local initial weights for the backbone (see :func:`~urnet_core.models.build_model`).
    progress : bool, default=True
        Show a tqdm bar per epoch.
    on_epoch_end : callable, optional
        Called with each epoch's history record after its checkpoint is written (on every rank).
    distributed : bool, optional
        Train with DistributedDataParallel over the ranks of the process group (see the module
        docstring). ``None`` (default): when torchrun started this process (``WORLD_SIZE > 1``,
        the group is then initialised here: NCCL on CUDA, gloo on CPU) or a group with several
        ranks is initialised. Every rank must call :func:`train` with the same arguments; each
        returns the same model and history.

    Returns
    -------
    TrainResult
    """
    from urnet_core.training.method_loop import fit_method  # they build on this module
    from urnet_core.training.weighted_ce import WeightedCrossEntropy

    return fit_method(WeightedCrossEntropy() if method is None else method, train_dataset, num_classes=num_classes,
                      config=config, in_channels=in_channels, sample_weights=sample_weights,
                      soft_targets=soft_targets, eval_dataset=eval_dataset, run_dir=run_dir, resume=resume,
                      weights_path=weights_path, progress=progress, on_epoch_end=on_epoch_end,
                      distributed=distributed)
