"""CIFAR-10N/100N label files and the official CIFAR python-pickle folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from urnet_core.data import table as T
from urnet_core.data._text import iter_lines, parse_int
from urnet_core.data.readers.arrays import CIFAR10_CLASSES, ArraySplits


CIFAR_N_KEYS = ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3", "noisy_label", "clean_label")


def read_cifar_n(
    label_file: str | os.PathLike,
    clean_labels: Sequence[int] | np.ndarray | None = None,
    *,
    key: str = "worse_label",
    class_names: Sequence[str] | None = None,
    allow_pickle: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read CIFAR-10N/100N-style human noisy labels for the CIFAR train set (in order).

    Supported files:

    - ``.csv`` with a header and columns ``index`` and ``label`` (or a column named ``key``);
      optional ``clean_label``. ``index`` must be a permutation of 0..n-1.
    - ``.npz`` with arrays under :data:`CIFAR_N_KEYS` (e.g. ``worse_label``, ``clean_label``).
    - ``.npy``: a plain integer array of noisy labels, or (``allow_pickle=True``) a saved dict.
    - ``.pt``: the published ``CIFAR-10_human.pt`` dict; needs ``allow_pickle=True`` because
      it stores numpy arrays (only for files you trust).

    The table has ``image_index`` = CIFAR train index (``path`` None), split ``"train"``,
    source ``"human"``, and ``true_label`` when clean labels are given or in the file.
    Class names: ``class_names``, else CIFAR-10's for 10 classes, else ``class_<i>``.
    """
    path = Path(label_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    suffix = path.suffix.lower()
    arrays: dict[str, np.ndarray]
    if suffix == ".csv":
        arrays = _cifar_csv(path, key)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    elif suffix == ".npy":
        try:
            obj = np.load(path, allow_pickle=allow_pickle)
        except ValueError:
            raise ValueError(f"{path}: holds pickled objects (a dict?); pass allow_pickle=True if you trust it") from None
        arrays = obj.item() if obj.dtype == object and obj.ndim == 0 else {key: obj}
    elif suffix in (".pt", ".pth"):
        import pickle

        import torch

        try:
            arrays = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
        except pickle.UnpicklingError:
            raise ValueError(f"{path}: stores numpy arrays; pass allow_pickle=True if you trust the file") from None
    else:
        raise ValueError(f"{path}: unsupported label file type {suffix!r}; use .csv, .npz, .npy or .pt")
    if not isinstance(arrays, dict) or key not in arrays:
        found = sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__
        raise ValueError(f"{path}: no {key!r} labels; found {found}")
    noisy = np.asarray(arrays[key]).reshape(-1)
    if noisy.size == 0:
        raise ValueError(f"{path}: no labels")
    noisy = _int_labels(noisy, f"{path} [{key}]")
    if clean_labels is None and "clean_label" in arrays and key != "clean_label":
        clean_labels = arrays["clean_label"]
    true = None
    if clean_labels is not None:
        true = _int_labels(np.asarray(clean_labels).reshape(-1), f"{path} [clean labels]")
        if true.size != noisy.size:
            raise ValueError(f"{path}: {noisy.size} noisy labels but {true.size} clean labels")
    C = int(max(noisy.max(), true.max() if true is not None else 0)) + 1
    if class_names is not None:
        names = list(class_names)
    elif C == 10:
        names = list(CIFAR10_CLASSES)
    else:
        names = [f"class_{i}" for i in range(C)]
    if C > len(names):
        raise ValueError(f"{path}: label {C - 1} is unknown; only {len(names)} class names")
    tab = T.make_table(labels=noisy, class_names=names, source="human", true_label=true)
    return T.validate_table(tab, num_classes=len(names), source_name=str(path)), names


def read_cifar_python(folder: str | os.PathLike) -> ArraySplits:
    """Read the official CIFAR-10/100 "python version" folder, as downloaded and untarred.

    ``cifar-10-batches-py``: ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
    ``batches.meta``; ``cifar-100-python``: ``train``, ``test`` and ``meta`` (fine labels).
    These files are Python pickles, so only read folders you trust. Images come back as
    uint8 ``(n, 32, 32, 3)`` in the files' order, which is the order CIFAR-N label files use.
    """
    import pickle

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: CIFAR folder not found (expected cifar-10-batches-py or cifar-100-python)")
    if (folder / "data_batch_1").is_file():
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta_file, label_key, names_key = folder / "test_batch", folder / "batches.meta", b"labels", b"label_names"
    elif (folder / "train").is_file():
        train_files = [folder / "train"]
        test_file, meta_file, label_key, names_key = folder / "test", folder / "meta", b"fine_labels", b"fine_label_names"
    else:
        raise FileNotFoundError(f"{folder}: neither data_batch_1 (CIFAR-10) nor train (CIFAR-100) found")

    def load(path: Path) -> dict:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: CIFAR file missing")
        try:
            with open(path, "rb") as fh:
                obj = pickle.load(fh, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable CIFAR pickle ({exc})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
        return obj

    def images_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
        batch = load(path)
        if b"data" not in batch or label_key not in batch:
            raise ValueError(f"{path}: no {label_key.decode()!r}/'data' entries; found {sorted(k.decode() for k in batch)}")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: data has shape {data.shape}, expected (n, 3072)")
        labels = _int_labels(np.asarray(batch[label_key]), f"{path} [{label_key.decode()}]")
        if labels.size != data.shape[0]:
            raise ValueError(f"{path}: {data.shape[0]} images but {labels.size} labels")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels

    parts = [images_labels(f) for f in train_files]
    train_images = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_images, test_labels = images_labels(test_file)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in load(meta_file).get(names_key, [])]
    if not names:
        raise ValueError(f"{meta_file}: no {names_key.decode()!r} class names")
    top = int(max(train_labels.max(), test_labels.max()))
    if top >= len(names):
        raise ValueError(f"{folder}: label {top} is unknown; only {len(names)} class names in {meta_file.name}")
    return ArraySplits(train_images, train_labels, test_images, test_labels, names)


def _int_labels(arr: np.ndarray, name: str) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name}: labels must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise ValueError(f"{name}: negative label {int(arr.min())} at position {int(np.argmin(arr))}")
    return arr


def _cifar_csv(path: Path, key: str) -> dict[str, np.ndarray]:
    lines = iter_lines(path)
    header_line = next(lines, None)
    if header_line is None:
        raise ValueError(f"{path}: empty file (expected a header 'index,label')")
    header = [h.strip() for h in header_line[1].split(",")]
    label_col = "label" if "label" in header else key
    for need in ("index", label_col):
        if need not in header:
            raise ValueError(f"{path}, line {header_line[0]}: missing column {need!r} in header {header}")
    cols = {name: [] for name in header}
    for number, text in lines:
        fields = [f.strip() for f in text.split(",")]
        if len(fields) != len(header):
            raise ValueError(f"{path}, line {number}: expected {len(header)} fields, got {len(fields)}")
        for name, value in zip(header, fields):
            cols[name].append(parse_int(value, path, number, name) if name in ("index", label_col, "clean_label") else value)
    index = np.asarray(cols["index"], dtype=np.int64)
    if index.size == 0:
        raise ValueError(f"{path}: no rows")
    if not np.array_equal(np.sort(index), np.arange(index.size)):
        raise ValueError(f"{path}: column 'index' must be a permutation of 0..{index.size - 1}")
    order = np.argsort(index)
    out = {key: np.asarray(cols[label_col], dtype=np.int64)[order]}
    if "clean_label" in cols:
        out["clean_label"] = np.asarray(cols["clean_label"], dtype=np.int64)[order]
    return out


# --------------------------------------------------------------------------- CSV manifest / ImageFolder
