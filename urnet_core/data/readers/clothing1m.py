"""Clothing1M: its key-label lists and clean/noisy splits."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from urnet_core.data import table as T
from urnet_core.data._text import iter_lines
from urnet_core.data.readers._common import RootGuard, _finish, _labelled_rows


def read_clothing1m(
    root: str | os.PathLike, *, include_clean_train: bool = False, allow_outside_root: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Read a Clothing1M tree.

    Layout (relative to ``root``)::

        category_names_eng.txt     14 class names, one a line (line i = class i)
        noisy_label_kv.txt         <path> <label>  noisy labels (~1M)
        clean_label_kv.txt         <path> <label>  clean labels (~72k)
        noisy_train_key_list.txt   <path>          train split (noisy labels)
        clean_val_key_list.txt     <path>          val split (clean labels)
        clean_test_key_list.txt    <path>          test split (clean labels)
        clean_train_key_list.txt   <path>          optional, with ``include_clean_train``

    Train rows carry the noisy label, source ``"noisy"``, and ``true_label`` = the clean
    label where one is known (``-2``, :data:`~urnet_core.data.table.UNKNOWN_TRUTH`, otherwise). Val/test rows carry the clean label, source
    ``"clean"``. A key without a label raises ValueError naming the key file and line.
    Keys may name only files inside ``root`` (see :class:`~urnet_core.data.readers._common.RootGuard`)
    unless ``allow_outside_root``.
    """
    root = Path(root)
    guard = RootGuard(root, allow_outside=allow_outside_root)
    class_names = [text.strip() for _, text in iter_lines(root / "category_names_eng.txt")]
    if not class_names:
        raise ValueError(f"{root / 'category_names_eng.txt'}: no class names")
    C = len(class_names)
    noisy = _kv(root / "noisy_label_kv.txt", C, guard)
    clean = _kv(root / "clean_label_kv.txt", C, guard)
    frames = []
    lists = [("noisy_train_key_list.txt", "train", noisy, "noisy")]
    if include_clean_train:
        lists.append(("clean_train_key_list.txt", "train", clean, "clean"))
    lists += [("clean_val_key_list.txt", "val", clean, "clean"), ("clean_test_key_list.txt", "test", clean, "clean")]
    for name, split, labels, source in lists:
        keys = []
        for number, text in iter_lines(root / name):
            if len(text.split()) != 1:
                raise ValueError(f"{root / name}, line {number}: expected one path, got {text[:80]!r}")
            guard.check(text, root / name, number)
            if text not in labels:
                raise ValueError(f"{root / name}, line {number}: {text!r} has no label in the {source} label file")
            keys.append(text)
        frame = pd.DataFrame({T.PATH: keys, T.LABEL: [labels[k] for k in keys]})
        frame[T.SOURCE] = source
        frame[T.SPLIT] = split
        frame[T.TRUE_LABEL] = [clean.get(k, T.UNKNOWN_TRUTH) for k in keys]
        frames.append(frame)
    return _finish(frames, class_names, source_name=str(root)), class_names


def _kv(path: Path, num_classes: int, guard: RootGuard) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, label, number in _labelled_rows(path, num_classes_total=num_classes):
        guard.check(key, path, number)
        if key in out and out[key] != label:
            raise ValueError(f"{path}, line {number}: {key!r} appears twice with different labels")
        out[key] = label
    return out


# --------------------------------------------------------------------------- CIFAR-N


#: Keys of the CIFAR-10N / CIFAR-100N label files (``CIFAR-10_human.pt``).
