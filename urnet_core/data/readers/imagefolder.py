"""ImageFolder trees: ``root/<class>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from urnet_core.data import table as T
from urnet_core.data.readers._common import IMG_EXTENSIONS, RootGuard, _finish


def read_imagefolder(root: str | os.PathLike, *, allow_outside_root: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Read a torchvision ImageFolder-style tree: ``root/<class>/<image>``.

    When ``root`` holds any of ``train/``, ``val/``, ``test/``, each is read as that split
    (``root/train/<class>/<image>``); the classes are the sorted folder names of the first
    split present (train, then val, then test) and other splits may not add classes.
    Files are kept by extension (:data:`IMG_EXTENSIONS`, case-insensitive), sorted.
    A file or class folder that is a symlink resolving outside ``root`` raises ValueError
    naming it, unless ``allow_outside_root`` (manifest key ``allow_outside_root: true``).
    """
    root = Path(root)
    guard = RootGuard(root, allow_outside=allow_outside_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    split_dirs = [(s, root / s) for s in T.SPLITS if (root / s).is_dir()]
    if not split_dirs:
        split_dirs = [("train", root)]
    class_names = sorted(p.name for p in split_dirs[0][1].iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise ValueError(f"{split_dirs[0][1]}: no class folders")
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels, splits = [], [], []
    for split, folder in split_dirs:
        for cls in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cls.name not in index:
                raise ValueError(f"{cls}: class folder {cls.name!r} is not among the classes of {split_dirs[0][1]}")
            for file in sorted(cls.rglob("*")):
                if file.suffix.lower() in IMG_EXTENSIONS and not file.name.startswith("."):
                    paths.append(guard.check(file.relative_to(root).as_posix(), file, None))
                    labels.append(index[cls.name])
                    splits.append(split)
    frame = pd.DataFrame({T.PATH: paths, T.LABEL: labels, T.SPLIT: splits})
    frame[T.SOURCE] = "clean"
    return _finish([frame], class_names, source_name=str(root)), class_names


# --------------------------------------------------------------------------- IDX / Fashion-MNIST / digits
