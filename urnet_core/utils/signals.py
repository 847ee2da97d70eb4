"""SIGTERM handled like SIGINT: raised as an exception, so the same clean-up runs.

A scheduler, ``timeout`` or ``kill PID`` stops a job with SIGTERM, whose default action ends the
process at once: kernels started by the study outlive it and a half-written notebook is left
behind. Inside :func:`sigterm_as_interrupt` SIGTERM raises :class:`Terminated`, a
:class:`KeyboardInterrupt`, so every ``finally``/``except KeyboardInterrupt`` that cleans up after
Ctrl-C (kernel shutdown, lock release, partial outputs removed) also runs for it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: Exit status of a process stopped by SIGTERM (128 + 15), as shells report it.
SIGTERM_EXIT = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (once: a second
    SIGTERM during the clean-up is ignored, so the clean-up finishes; SIGKILL still ends it).

    Outside the main thread (where Python cannot set handlers) the block runs unchanged. A
    process forked inside the block keeps SIGTERM's default action.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame) -> None:
        if os.getpid() != owner:  # a forked worker (DataLoader, pool) inherited it: die as before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
