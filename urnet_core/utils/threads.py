"""A thread pool whose workers run PyTorch on one thread each: the passes over feature rows.

Chunks of a pass (the cluster step's training and assignment, the instance scoring) run on one
thread per core, each single-threaded, instead of one chunk at a time on every core: their matrix
products are small, and two OpenMP threads sharing one wait on each other (measured on 2 cores);
torch, numpy and faiss release the GIL, so the workers run in parallel.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator


@contextlib.contextmanager
def single_threaded_pool(workers: int | None = None, tasks: int | None = None) -> Iterator[ThreadPoolExecutor]:
    """A :class:`~concurrent.futures.ThreadPoolExecutor` of ``workers`` threads (default: one per
    core, at most ``tasks``), each running torch on one thread; the calling thread too while the
    pool is open, so a task run inline behaves the same.

    OpenMP's thread count is per thread, so each worker sets it once when it starts; torch's count
    in the caller is restored on exit. On exit, tasks not yet started are dropped (an error in the
    caller's loop need not wait for the rest of the pass).
    """
    import torch

    n = max(1, workers or os.cpu_count() or 1)
    if tasks is not None:
        n = max(1, min(n, tasks))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=n, initializer=torch.set_num_threads, initargs=(1,))
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(old)
