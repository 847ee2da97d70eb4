"""Helpers shared by the file-list readers: row checks and the final instances table."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from urnet_core.data import table as T
from urnet_core.data._text import read_pairs

#: File extensions accepted by the folder readers (torchvision's list).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


#: How the errors tell users to opt out of the containment check.
OUTSIDE_HINT = "set 'allow_outside_root: true' in the manifest to allow files outside the dataset root"


class RootGuard:
    """Keeps the files named by a file list or manifest inside the dataset root.

    ``check(name, source, line)`` returns the path to store for ``name`` (relative to the
    root, POSIX; an absolute path inside the root is made relative) and raises ValueError
    naming ``source`` and ``line`` when ``name`` leaves the root: a ``..`` that climbs out,
    an absolute path elsewhere, or a symlink (of the file or of a folder on the way) that
    resolves outside. With ``allow_outside=True`` nothing is rejected (absolute paths inside
    the root are still made relative).

    Cost: the lexical checks touch no disk; symlinks are found with one ``lstat`` per file
    and one ``realpath`` per distinct folder (cached), so a 2.4M-row list costs seconds.
    Files that do not exist (yet) are checked lexically only.
    """

    def __init__(self, root: str | os.PathLike, *, allow_outside: bool = False) -> None:
        self.root = Path(root).absolute()
        self.real_root = Path(os.path.realpath(self.root))
        self.allow_outside = bool(allow_outside)
        self._dirs: dict[str, bool] = {}

    def _inside(self, real: str) -> bool:
        return real == str(self.real_root) or real.startswith(str(self.real_root).rstrip(os.sep) + os.sep)

    def check(self, name: str, source: str | os.PathLike, line: int | None) -> str:
        where = f"{source}, line {line}" if line is not None else str(source)
        p = Path(name)
        if p.is_absolute():
            for base in (self.root, self.real_root):
                try:
                    rel = p.relative_to(base)
                    break
                except ValueError:
                    continue
            else:
                real = os.path.realpath(p)
                if self._inside(real):
                    rel = Path(real).relative_to(self.real_root)
                elif self.allow_outside:
                    return str(p)
                else:
                    raise ValueError(f"{where}: {name!r} is an absolute path outside the dataset root {self.root}; "
                                     f"{OUTSIDE_HINT}")
            name = rel.as_posix()
        parts = PurePosixPath(name.replace("\\", "/")).parts
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                if self.allow_outside:
                    return name
                raise ValueError(f"{where}: {name!r} leaves the dataset root {self.root} ('..'); {OUTSIDE_HINT}")
        if not self.allow_outside:
            full = self.root / name
            parent = str(full.parent)
            ok = self._dirs.get(parent)
            if ok is None:
                ok = self._dirs[parent] = self._inside(os.path.realpath(parent))
            if ok and full.is_symlink():
                ok = self._inside(os.path.realpath(full))
            if not ok:
                raise ValueError(f"{where}: {name!r} is a symlink (or under one) that resolves outside the dataset "
                                 f"root {self.real_root}; {OUTSIDE_HINT}")
        return name


def _labelled_rows(
    path: Path, *, num_classes_total: int | None, unique_paths: bool = False, guard: RootGuard | None = None
) -> list[tuple[str, int, int]]:
    """``(name, label, line)`` rows of a ``<path> <label>`` list, checked; with ``guard``, each
    name must stay inside the dataset root (see :class:`RootGuard`)."""
    rows = read_pairs(path)
    if guard is not None:
        rows = [(guard.check(name, path, number), label, number) for name, label, number in rows]
    if not rows:
        raise ValueError(f"{path}: no instances (empty file list)")
    first_line: dict[str, int] = {}
    for name, label, number in rows:
        if label < 0:
            raise ValueError(f"{path}, line {number}: negative label {label}")
        if num_classes_total is not None and label >= num_classes_total:
            raise ValueError(f"{path}, line {number}: unknown label {label} (only {num_classes_total} classes)")
        if unique_paths:
            if name in first_line:
                raise ValueError(f"{path}, line {number}: duplicate path {name!r} (first at line {first_line[name]})")
            first_line[name] = number
    return rows


def _finish(frames: list[pd.DataFrame], class_names: list[str], *, source_name: str) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[T.PATH, T.LABEL])
    if frame.empty:
        raise ValueError(f"{source_name}: no instances found")
    tab = T.make_table(
        labels=frame[T.LABEL].to_numpy(),
        class_names=class_names,
        paths=frame[T.PATH].tolist(),
        source=frame[T.SOURCE].tolist() if T.SOURCE in frame else "clean",
        rank=frame[T.RANK].to_numpy(dtype=np.float64) if T.RANK in frame else np.nan,
        split=frame[T.SPLIT].tolist() if T.SPLIT in frame else "train",
        true_label=frame[T.TRUE_LABEL].to_numpy() if T.TRUE_LABEL in frame else None,
    )
    tab = T.validate_table(tab, num_classes=len(class_names), source_name=source_name)
    return T.sort_table(tab)
