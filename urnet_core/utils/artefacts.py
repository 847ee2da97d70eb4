"""Artefact sets: files that are only meaningful together, written so readers never mix them.

One rule for every set of files that belong together (features + predictions of one split,
weights + targets + components of one ``urnet weights`` run):

* **Whole-folder sets** (:func:`artefact_set`): the files are written into a temporary folder
  next to the target, an index listing every file with its size (and the set's key) is
  written last into it, and the folder is renamed into place as a whole (``os.replace`` of a
  directory; an existing target is renamed away first, the new one renamed in, the old one
  deleted). A kill or a full disk at any point leaves either the old complete set or the
  new complete set under the target name (plus a hidden temporary folder that the next
  run cleans up), never a mixture.
* **Entries of a shared folder** (:func:`indexed_entry`): when several independent sets share
  one folder and one index (the splits of ``urnet features``), the set's entry is removed
  from the index *first*, its files are staged in a temporary folder inside the target and
  moved in one by one, and the entry (files, sizes, key) is written *last*.

A reader trusts nothing without a complete, matching index: :func:`read_index` and
:func:`read_entry` return ``None`` unless the index exists, its key matches the one asked for,
and every file it lists exists with the recorded size.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from urnet_core.utils.io import read_json, write_json

logger = logging.getLogger(__name__)

#: Prefix of the hidden temporary folders; a later run deletes stale ones it finds.
TMP_PREFIX = ".artefacts-"


def _file_sizes(folder: Path, names: Iterable[str]) -> dict[str, int]:
    return {name: int((folder / name).stat().st_size) for name in sorted(names)}


def _files_ok(folder: Path, files: Any) -> bool:
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        path = folder / name
        try:
            if not path.is_file() or path.stat().st_size != int(size):
                logger.info("%s: missing or of another size than its index records; not trusted", path)
                return False
        except (OSError, TypeError, ValueError):
            return False
    return True


def _read_json_or_none(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def clean_stale(parent: Path, name: str) -> None:
    """Delete temporary folders a killed run left for target ``parent/name``."""
    if not parent.is_dir():
        return
    for p in parent.glob(f"{TMP_PREFIX}{name}.*"):
        shutil.rmtree(p, ignore_errors=True)


def check_writable(folder: str | os.PathLike) -> Path:
    """Raise ``PermissionError`` (an OSError) unless ``folder`` (or, when it does not exist yet,
    its nearest existing parent) is a folder this process can create files in."""
    folder = Path(folder).expanduser().absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{probe}: not a folder (output {folder})")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{probe}: no write permission (output {folder})")
    try:  # access() can lie (read-only mounts, ACLs): really create a file
        fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise type(exc)(exc.errno, f"{probe}: cannot write there ({exc.strerror}); output {folder}") from None
    return folder


def check_replaceable(folder: str | os.PathLike, owned: Iterable[str], *, index_name: str) -> None:
    """Raise ValueError when ``folder`` holds anything :func:`artefact_set` would delete that is
    not one of its own files (``owned``, the index, or files the index lists), so an output
    folder shared with other data is refused before any work starts."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.exists():
            raise ValueError(f"{folder}: exists and is not a folder")
        return
    allowed = set(owned) | {index_name}
    index = _read_json_or_none(folder / index_name)
    if isinstance(index, dict) and isinstance(index.get("files"), dict):
        allowed |= set(index["files"])
    foreign = sorted(p.name for p in folder.iterdir() if p.name not in allowed and not p.name.startswith("."))
    if foreign:
        raise ValueError(
            f"{folder}: holds other files ({foreign[:5]}{' ...' if len(foreign) > 5 else ''}); this output is "
            "replaced as a whole, so give it a folder of its own"
        )


@contextlib.contextmanager
def artefact_set(
    folder: str | os.PathLike, *, key: Any = None, meta: dict | None = None, index_name: str = "index.json"
) -> Iterator[Path]:
    """Yield a temporary folder next to ``folder``; on success index it and rename it into place.

    Write every file of the set into the yielded folder. When the block succeeds, the index
    ``index_name`` (``meta`` plus ``"key"`` and ``"files"``: every file's name and size) is
    written last inside it and the folder replaces ``folder`` as a whole. When the block
    raises (or the process dies), ``folder`` keeps its previous complete set untouched and
    the temporary folder is removed (or left hidden, for the next run to clean up).
    """
    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists():  # killed between "old away" and "new in": the old complete set comes back
        for old in sorted(folder.parent.glob(f"{TMP_PREFIX}{folder.name}.old.*")):
            os.replace(old, folder)
            break
    clean_stale(folder.parent, folder.name)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}.new.", dir=folder.parent))
    try:
        yield tmp
        names = [p.name for p in tmp.iterdir() if p.name != index_name]
        for p in tmp.iterdir():
            if not p.is_file():
                raise ValueError(f"artefact set {folder}: {p.name} is not a plain file")
        index = {**(meta or {}), "key": key, "files": _file_sizes(tmp, names)}
        write_json(tmp / index_name, index)
        os.chmod(tmp, 0o777 & ~_umask())
        commit(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def commit(tmp: Path, folder: Path) -> None:
    """Rename the finished folder ``tmp`` onto ``folder``: old one away, new one in, old one deleted."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{folder.name}.old.", dir=folder.parent))
        os.rmdir(old)
        os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        if old is not None and not folder.exists():
            os.replace(old, folder)  # put the old complete set back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_index(folder: str | os.PathLike, *, index_name: str = "index.json", key: Any = None) -> dict | None:
    """The index of a whole-folder set when it is complete and matches, else ``None``.

    Complete: the index exists, is valid JSON, and every file it lists exists with its
    recorded size. Matching: ``key`` is ``None`` or equals the recorded key.
    """
    folder = Path(folder)
    index = _read_json_or_none(folder / index_name)
    if not isinstance(index, dict):
        return None
    if key is not None and index.get("key") != key:
        return None
    return index if _files_ok(folder, index.get("files")) else None


# --------------------------------------------------------------------------- shared-folder entries


def read_entries(folder: str | os.PathLike, index_name: str) -> dict:
    """The raw index of a shared folder (``{}`` when absent or unreadable)."""
    index = _read_json_or_none(Path(folder) / index_name)
    return index if isinstance(index, dict) else {}


def read_entry(folder: str | os.PathLike, entry: str, *, index_name: str, key: Any = None) -> dict | None:
    """One entry of a shared folder's index when it is complete and matches, else ``None``."""
    folder = Path(folder)
    record = read_entries(folder, index_name).get(entry)
    if not isinstance(record, dict):
        return None
    if key is not None and record.get("key") != key:
        return None
    return record if _files_ok(folder, record.get("files")) else None


@contextlib.contextmanager
def indexed_entry(
    folder: str | os.PathLike, entry: str, *, index_name: str, key: Any, meta: dict | None = None
) -> Iterator[Path]:
    """Write the files of one ``entry`` of a shared folder: entry removed first, written last.

    Removes ``entry`` from ``folder/index_name`` before anything else, then yields a hidden
    staging folder inside ``folder``. When the block succeeds, each staged file is renamed
    into ``folder`` (same filesystem: atomic per file) and the entry - ``meta`` plus ``key``
    and ``files`` (names and sizes) - is written last. When it raises, the staging folder
    is deleted and the entry stays absent, so readers see a miss, never a mixed set.
    """
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale(folder, entry)
    index = read_entries(folder, index_name)
    if entry in index:
        del index[entry]
        write_json(folder / index_name, index)
    stage = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{entry}.", dir=folder))
    try:
        yield stage
        names = sorted(p.name for p in stage.iterdir())
        for p in stage.iterdir():
            if not p.is_file():
                raise ValueError(f"{folder} [{entry}]: {p.name} is not a plain file")
        files = _file_sizes(stage, names)
        for name in names:
            os.chmod(stage / name, 0o666 & ~_umask())
            os.replace(stage / name, folder / name)
        index = read_entries(folder, index_name)
        index[entry] = {**(meta or {}), "key": key, "files": files}
        write_json(folder / index_name, index)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
