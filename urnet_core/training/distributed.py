"""Several processes (``torchrun``): process group set-up, sharding and small collectives.

Training (:func:`urnet_core.training.loop.train`) and feature extraction
(:func:`urnet_core.training.features.extract_features`) run unchanged in one process. Started by
``torchrun --nproc_per_node N`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``), they call :func:`init_from_env`, which initialises the
default process group (NCCL for a CUDA device, gloo on CPU) unless the caller already did, and
then

- shard the work by rank (:func:`shard_range`, :func:`shard_batch`);
- let rank 0 alone decide and write (:func:`run_on_main`, :func:`is_main`), the others waiting
  on :func:`barrier`;
- move rows back to rank 0 with :func:`gather_rows`.

Every helper here is a collective when a group with several ranks is active: **all ranks must
call it, in the same order**. With one process (or ``WORLD_SIZE`` unset) they are cheap
no-ops (``rank() == 0``, ``world_size() == 1``).

The helpers' own messages travel over a separate gloo group (:func:`aux_group`), so they use CPU
tensors whatever the default backend is, and never interleave with DDP's gradient all-reduces.

Batch normalisation: DDP normalises each rank's shard with that shard's statistics unless the
layers are synchronised. :func:`convert_sync_batchnorm` swaps every BatchNorm layer for one that
normalises with the statistics of the whole global batch (``torch.nn.SyncBatchNorm`` on CUDA,
:class:`CPUSyncBatchNorm` on CPU, which torch's layer does not support), so a DDP step equals the
single-process step; :func:`revert_sync_batchnorm` swaps them back.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes per rank per round of :func:`gather_rows` (bounds the temporary buffers).
GATHER_CHUNK_BYTES = 64 * 1024**2

_OWNS_GROUP = False  # True when init_from_env created the default group (shutdown destroys it)
_AUX_GROUP: Any = None


# --------------------------------------------------------------------------- set-up


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by torchrun), 1 when unset."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def local_rank() -> int:
    """``LOCAL_RANK`` from the environment (the process's index on its machine), 0 when unset."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_active() -> bool:
    """True when a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without an active group)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of ranks (1 without an active group)."""
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """True on rank 0, the rank that writes files; always True in a single process."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device this rank uses: ``cuda:LOCAL_RANK`` for an index-less CUDA device under torchrun.

    An explicit index (``cuda:1``) is kept. Sets the current CUDA device accordingly.
    """
    if device.type == "cuda" and device.index is None and (is_active() or env_world_size() > 1):
        device = torch.device("cuda", local_rank())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Initialise the default process group from torchrun's environment when needed.

    Does nothing when a group is already initialised (by the caller, or an earlier call) or when
    ``WORLD_SIZE`` is unset or 1. The backend is NCCL for a CUDA ``device`` and gloo otherwise.

    Returns
    -------
    bool
        :func:`is_active`: whether a group with several ranks is now active.
    """
    global _OWNS_GROUP
    if not dist.is_available():
        return False
    if not dist.is_initialized() and env_world_size() > 1:
        device = torch.device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            local_device(device)
        dist.init_process_group(backend=backend)
        _OWNS_GROUP = True
        logger.info("process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return is_active()


def shutdown(*, wait: bool = True) -> None:
    """Destroy the process group if :func:`init_from_env` created it (call once, at the end).

    ``wait`` first waits for every rank (pass False when leaving on an error: the other ranks
    may never get there).
    """
    global _OWNS_GROUP, _AUX_GROUP
    if _OWNS_GROUP and dist.is_initialized():
        if wait:
            barrier()
        dist.destroy_process_group()
    _OWNS_GROUP = False
    _AUX_GROUP = None


def run_command(fn: Callable[..., int], *args: Any) -> int:
    """Run a CLI command body and end the process group it may have started under torchrun.

    On an error the group is torn down without the final barrier (other ranks may never get
    there) and the error propagates.
    """
    try:
        code = fn(*args)
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown()
    return code


def aux_group() -> Any:
    """A gloo group over all ranks for the helpers' CPU messages (created on first use)."""
    global _AUX_GROUP
    if _AUX_GROUP is None:
        _AUX_GROUP = dist.new_group(backend="gloo")
    return _AUX_GROUP


# --------------------------------------------------------------------------- sharding


def shard_range(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Contiguous ``[lo, hi)`` of ``range(n)`` for a rank; shard sizes differ by at most one."""
    r = rank() if rank_ is None else int(rank_)
    w = world_size() if world is None else int(world)
    return n * r // w, n * (r + 1) // w


def shard_batch(batch: Sequence[int], unit: int = 1, rank_: int | None = None, world: int | None = None) -> list[int]:
    """This rank's contiguous part of a global batch, cut between groups of ``unit`` items.

    With ``unit = bag_size`` a bag (``unit`` consecutive items) is never split. A batch with fewer
    groups than ranks leaves some ranks an empty part.
    """
    if len(batch) % unit:
        raise ValueError(f"a batch of {len(batch)} items is not made of whole groups of {unit}")
    lo, hi = shard_range(len(batch) // unit, rank_, world)
    return list(batch[lo * unit : hi * unit])


# --------------------------------------------------------------------------- collectives


def barrier() -> None:
    """Wait until every rank reaches this point."""
    if is_active():
        dist.barrier(group=aux_group())


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s (picklable) ``obj`` on every rank."""
    if not is_active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src, group=aux_group())
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's (picklable) ``obj``, by rank, on every rank."""
    if not is_active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=aux_group())
    return out


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over ranks of a few numbers (in float64)."""
    if not is_active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, group=aux_group())
    return t.tolist()


def check_consistent(value: Any, what: str) -> None:
    """Raise ValueError on every rank when ``value`` differs between ranks."""
    values = all_gather_object(value)
    bad = [r for r, v in enumerate(values) if v != values[0]]
    if bad:
        raise ValueError(f"{what} differ between ranks: rank {bad[0]} disagrees with rank 0")


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    An exception raised by ``fn`` is raised on every rank (rank 0 raises the original; the others
    a copy, or a RuntimeError naming it when it cannot be pickled), so no rank is left waiting.
    """
    if not is_active():
        return fn()
    payload: Any = None
    error: BaseException | None = None
    if is_main():
        try:
            payload = ("ok", fn())
        except Exception as exc:  # re-raised below, after the other ranks have heard of it
            error = exc
            try:
                pickle.dumps(exc)
                payload = ("error", exc)
            except Exception:
                payload = ("error", RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}"))
    payload = broadcast_object(payload)
    if payload[0] == "error":
        raise error if error is not None else payload[1]
    return payload[1]


def gather_rows(arrays: Sequence[np.ndarray], consume: Callable[[tuple[np.ndarray, ...]], None]) -> None:
    """Send every rank's rows to rank 0, which calls ``consume`` on each received block.

    Parameters
    ----------
    arrays : sequence of ndarray
        This rank's arrays, all with the same number of rows; their dtypes and trailing shapes
        must be the same on every rank. Any rank may hold zero rows.
    consume : callable
        Called on rank 0 only, with a tuple of same-length row blocks (one per array), rank by
        rank and in row order; blocks are at most about :data:`GATHER_CHUNK_BYTES` per rank.
        Without an active group it is called once with ``arrays`` themselves.
    """
    arrays = [np.ascontiguousarray(a) for a in arrays]
    rows = {len(a) for a in arrays}
    if len(rows) != 1:
        raise ValueError(f"arrays must have the same number of rows, got {sorted(rows)}")
    n_local = rows.pop()
    if not is_active():
        consume(tuple(arrays))
        return
    group = aux_group()
    counts = [int(c) for c in all_gather_object(n_local)]
    row_bytes = [a.dtype.itemsize * int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays]
    width = max(sum(row_bytes), 1)
    chunk = max(1, GATHER_CHUNK_BYTES // width)
    world, me = world_size(), rank()
    for start in range(0, max(counts), chunk):
        m = max(0, min(chunk, n_local - start))
        block = np.zeros((chunk, width), dtype=np.uint8)
        if m:
            parts = [a[start : start + m].reshape(m, -1).view(np.uint8) for a in arrays]
            block[:m, : sum(row_bytes)] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        send = torch.from_numpy(block)
        recv = [torch.empty_like(send) for _ in range(world)] if me == 0 else None
        dist.gather(send, recv, dst=0, group=group)
        if me != 0:
            continue
        for r in range(world):
            k = max(0, min(chunk, counts[r] - start))
            if not k:
                continue
            raw = recv[r].numpy()[:k]
            out, off = [], 0
            for a, rb in zip(arrays, row_bytes):
                piece = np.ascontiguousarray(raw[:, off : off + rb]).view(a.dtype).reshape((k,) + a.shape[1:])
                out.append(piece)
                off += rb
            consume(tuple(out))


# --------------------------------------------------------------------------- synchronised batch norm


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks too (the loss is the sum of
    the ranks' losses, so every rank's input affects every rank's output)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over the whole global batch of all ranks, for CPU tensors (gloo).

    In training mode with an active group, the per-channel mean and (biased) variance are those
    of the concatenation of every rank's input (two-pass, summed in float64 over the
    :func:`aux_group`), the gradient flows through them to every rank, and the running statistics
    get the unbiased variance, as ``torch.nn.BatchNorm*d`` does in one process. Otherwise it is
    exactly the plain layer. Built by :func:`convert_sync_batchnorm`; same parameters and buffers
    (so the same ``state_dict``) as the layer it replaces.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_active()):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        group = aux_group()
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // max(channels, 1)], dtype=torch.float64)
        stats = _AllReduceSum.apply(torch.cat([input.sum(dims, dtype=torch.float64), count]), group)
        total = stats[-1]
        n_total = int(total.item())
        if n_total <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n_total} over all ranks")
        mean = stats[:-1] / total
        centred = input - mean.to(input.dtype).view(shape)
        var = _AllReduceSum.apply(centred.pow(2).sum(dims, dtype=torch.float64), group) / total
        out = centred * torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach().to(self.running_mean.dtype), alpha=factor)
                unbiased = var.detach() * (n_total / (n_total - 1))
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        return out


def _swap_batchnorm(module: nn.Module, make: Callable[[_BatchNorm], nn.Module | None]) -> nn.Module:
    new = make(module) if isinstance(module, _BatchNorm) else None
    if new is not None:
        new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in list(module.named_children()):
        swapped = _swap_batchnorm(child, make)
        if swapped is not child:
            setattr(module, name, swapped)
    return module


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm layer of ``module`` by a synchronised one (in place; returns it).

    ``torch.nn.SyncBatchNorm`` (default group) on CUDA, :class:`CPUSyncBatchNorm` otherwise. The
    parameters and buffers are the same tensors, so an optimizer built before still applies.
    """
    sync_types = (nn.SyncBatchNorm, CPUSyncBatchNorm)

    def make(bn: _BatchNorm) -> nn.Module | None:
        if isinstance(bn, sync_types):
            return None
        cls = nn.SyncBatchNorm if device.type == "cuda" else CPUSyncBatchNorm
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new._urnet_original_cls = type(bn)
        return new

    return _swap_batchnorm(module, make)


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_sync_batchnorm` (in place; returns ``module``)."""

    def make(bn: _BatchNorm) -> nn.Module | None:
        original = getattr(bn, "_urnet_original_cls", None)
        if original is None:
            return None
        return original(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)

    return _swap_batchnorm(module, make)
