"""An exclusive, non-blocking lock per folder, so two jobs never write the same run folder.

:class:`FolderLock` takes an ``fcntl.flock`` on ``<folder>/.lock`` and writes the holder's PID
into that file. A second holder (another process, or another open of the same folder in this
process) fails at once with :class:`FolderLockedError` naming the holder's PID instead of
waiting. The lock is released when the ``with`` block ends, exceptions included, and by the
operating system when the process dies (even on SIGKILL), so a lock file left behind by a dead
process never blocks: only a live ``flock`` does.

POSIX only (``fcntl``). On network filesystems ``flock`` is only as reliable as the server makes
it; the folder is meant to be local or on a filesystem with working locks.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class FolderLockedError(OSError, ValueError):
    """The folder's lock is held by another process (or another holder in this process).

    An :class:`OSError` (``errno`` is ``EWOULDBLOCK``) and, like
    :class:`~urnet_core.utils.guards.InsufficientDiskSpaceError`, a :class:`ValueError`, so the
    ``urnet`` command line reports it as one line instead of a traceback.
    """

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 11]" prefix
        return str(self.strerror)


def _read_holder(path: Path) -> str:
    """The PID recorded in a lock file, or 'unknown' (it may be mid-write or unreadable)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text.split()[0] if text else "unknown"


class FolderLock:
    """Exclusive lock on ``folder`` through ``folder/.lock`` (created with the folder if needed).

    Use as a context manager, or call :meth:`acquire` and :meth:`release`::

        with FolderLock(run_dir, what="run folder"):
            ...  # only one holder at a time gets here

    Parameters
    ----------
    folder : path
    what : str, default='folder'
        How the folder is named in the error message.
    """

    def __init__(self, folder: str | os.PathLike, *, what: str = "folder") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        """Take the lock without waiting; raise :class:`FolderLockedError` naming the holder's PID."""
        if fcntl is None:  # pragma: no cover
            raise OSError("FolderLock needs fcntl (POSIX)")
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the holder's PID must stay readable for the error below.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(self.path)
            raise FolderLockedError(
                errno.EWOULDBLOCK,
                f"{self.what} {self.folder} is in use by process {holder} (lock file {self.path}); "
                "wait for that process to finish or use another folder",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)  # closing releases the flock
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (a no-op when not held). The file stays: unlinking it would let a
        waiter lock the old inode while a newcomer locks a new file, both "holding" the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # no stale PID for the next reader
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its object, not at exit only
        try:
            self.release()
        except Exception:
            pass
