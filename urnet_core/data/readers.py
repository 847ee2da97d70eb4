"""Readers for the dataset layouts the study uses.

File-based readers return ``(table, class_names)``: an instances table (see
:mod:`urnet_core.data.table`) with paths relative to the dataset root, sorted
deterministically, and the list of class names. In-memory readers (Fashion-MNIST, digits)
return :class:`ArraySplits`.

None of the web datasets can be downloaded here; the tests fabricate tiny trees in the
exact layouts described in each docstring.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from urnet_core._validation import check_option, check_positive_int
from urnet_core.data import table as T
from urnet_core.data._text import iter_lines, parse_int, read_pairs, read_utf8

logger = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
#: File extensions accepted by :func:`read_imagefolder` (torchvision's list).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ArraySplits:
    """In-memory train/test images with labels.

    Attributes
    ----------
    train_images : uint8 array, shape (n_train, H, W) or (n_train, H, W, 3)
    train_labels : int64 array, shape (n_train,)
    test_images : uint8 array, shape (n_test, H, W) or (n_test, H, W, 3)
    test_labels : int64 array, shape (n_test,)
    class_names : list of str, length C
    train_true_labels : int64 array, shape (n_train,), optional
        Ground truth when ``train_labels`` are noisy (e.g. CIFAR-N human labels); None when
        the train labels are the clean ones.
    train_source : str
        ``source`` column value of the train rows.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    train_true_labels: np.ndarray | None = None
    train_source: str = "clean"


# --------------------------------------------------------------------------- WebVision


def read_synsets(path: str | os.PathLike) -> list[str]:
    """Read WebVision ``info/synsets.txt``: line i is ``nXXXXXXXX words, words`` for class i.

    Returns the words part (e.g. ``"tench, Tinca tinca"``); a line without words keeps its wnid.
    """
    names = []
    for number, text in iter_lines(path):
        parts = text.split(maxsplit=1)
        if not re.fullmatch(r"n\d{8}", parts[0]):
            raise ValueError(f"{path}, line {number}: expected a WordNet id like 'n01440764', got {parts[0]!r}")
        names.append(parts[1].strip() if len(parts) > 1 else parts[0])
    if not names:
        raise ValueError(f"{path}: no classes found (empty synsets file)")
    return names


def read_queries_map(path: str | os.PathLike) -> dict[int, int]:
    """Read ``info/queries_synsets_map.txt``: ``<query_id> <class_id>`` lines, 1-based query ids."""
    out: dict[int, int] = {}
    for query, class_id, number in read_pairs(path, what="class id"):
        qid = parse_int(query, path, number, "query id")
        if qid in out:
            raise ValueError(f"{path}, line {number}: query id {qid} appears twice")
        out[qid] = class_id
    return out


#: JSON keys tried, in order, for an image's id and its search rank in WebVision metadata.
META_ID_KEYS = ("id", "image_id", "file_name", "filename", "file", "name")
META_RANK_KEYS = ("rank", "search_rank", "position", "index")


def _read_meta_ranks(path: Path) -> dict[str, float]:
    """Map image id (file stem) -> search rank from one WebVision metadata json.

    Accepted forms (tolerant, because the published files differ between sources and
    versions): a JSON list of records, a dict ``{"images"|"data"|"results": [records]}``,
    or a dict ``{image_id: record}``. A record is a dict with an id under one of
    :data:`META_ID_KEYS` (compared by file stem, so ``"abc.jpg"`` matches ``abc``) and a
    rank under one of :data:`META_RANK_KEYS`; a record without a rank key gets its position
    in the list. Also accepted: a JSON-lines file (one record per line).
    """
    text = read_utf8(path)
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        try:  # JSON lines
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"{path}, line {exc.lineno}: malformed JSON: {exc.msg}") from None
    if isinstance(data, dict):
        for key in ("images", "data", "results"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [dict(rec, id=key) if isinstance(rec, dict) else {"id": key, "rank": rec} for key, rec in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of image records, got {type(data).__name__}")
    ranks: dict[str, float] = {}
    for position, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}: record {position} is a {type(rec).__name__}, expected an object")
        image_id = next((rec[k] for k in META_ID_KEYS if rec.get(k) is not None), None)
        if image_id is None:
            raise ValueError(f"{path}: record {position} has none of the id keys {list(META_ID_KEYS)}")
        rank = next((rec[k] for k in META_RANK_KEYS if rec.get(k) is not None), position)
        try:
            rank = float(rank)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: record {position} has a non-numeric rank {rank!r}") from None
        ranks.setdefault(Path(str(image_id)).stem, rank)
    return ranks


def _meta_rank_column(root: Path, frame: pd.DataFrame) -> np.ndarray:
    """Search rank from ``meta/<source>/<query>.json`` for each row (NaN where not found)."""
    out = np.full(len(frame), np.nan)
    cache: dict[Path, dict[str, float]] = {}
    for i, (path, source) in enumerate(zip(frame[T.PATH], frame[T.SOURCE])):
        parts = Path(path).parts
        if len(parts) < 2:
            continue
        meta = root / "meta" / source / f"{parts[-2]}.json"
        if meta not in cache:
            cache[meta] = _read_meta_ranks(meta) if meta.is_file() else {}
        out[i] = cache[meta].get(Path(path).stem, np.nan)
    return out


def _rank_within(frame: pd.DataFrame, key: np.ndarray) -> np.ndarray:
    """0-based position within (label, source) when sorted by ``key`` (ties: file order)."""
    order = pd.DataFrame(
        {"label": frame[T.LABEL].to_numpy(), "source": frame[T.SOURCE].to_numpy(), "key": key, "pos": np.arange(len(frame))}
    )
    order = order.sort_values(["label", "source", "key", "pos"], kind="mergesort", na_position="last")
    ranks = order.groupby(["label", "source"], sort=False).cumcount().to_numpy(dtype=np.float64)
    out = np.empty(len(frame))
    out[order["pos"].to_numpy()] = ranks
    out[np.isnan(key)] = np.nan
    return out


def read_webvision(
    root: str | os.PathLike,
    *,
    version: int = 1,
    sources: Sequence[str] = ("google", "flickr"),
    num_classes: int | None = None,
    rank_from: str = "meta",
    include_val: bool = True,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a WebVision 1.0 / 2.0 tree.

    Layout (relative to ``root``)::

        info/train_filelist_google.txt   <relative_path> <label>   e.g. google/q0001/xxx.jpg 0
        info/train_filelist_flickr.txt   <relative_path> <label>
        info/val_filelist.txt            <name> <label>            image at val_images_256/<name>
        info/synsets.txt                 nXXXXXXXX words, words    (line i = class i)
        info/queries_synsets_map.txt     <query_id> <class_id>     (1-based query ids; optional)
        meta/google/q0001.json           search metadata per query (optional, see below)

    Parameters
    ----------
    root : path
        Dataset root.
    version : {1, 2}
        WebVision version (1: 1000 classes, 2: 5000 classes). Both share this layout; a
        synsets file of another size is logged, not rejected.
    sources : sequence of {"google", "flickr"}
        Which training file lists to read.
    num_classes : int, optional
        Keep only classes ``< num_classes`` (train and val), as mini-WebVision does.
    rank_from : {"meta", "order"}
        ``"meta"``: the search rank from ``meta/<source>/<query>.json`` (query = the
        image's parent folder; see :func:`_read_meta_ranks` for accepted forms), re-numbered
        0.. within (label, source) by ascending meta rank. Rows missing from the metadata,
        or all rows when ``meta/`` is absent, fall back to the file-list order.
        ``"order"``: the position in the file list within (label, source).
    include_val : bool
        Add ``info/val_filelist.txt`` rows as split ``"val"`` (source ``"clean"``).

    Returns
    -------
    table : pandas.DataFrame
        Sorted instances table; ``source`` is the file list's source.
    class_names : list of str
    """
    root = Path(root)
    check_option(version, "version", (1, 2))
    check_option(rank_from, "rank_from", ("meta", "order"))
    if isinstance(sources, str):
        sources = (sources,)
    for s in sources:
        check_option(s, "source", ("google", "flickr"))
    info = root / "info"
    class_names = read_synsets(info / "synsets.txt")
    total = len(class_names)  # labels must name a synset even when num_classes keeps fewer
    expected = {1: 1000, 2: 5000}[version]
    if len(class_names) != expected:
        logger.info("%s: %d classes (WebVision %d.0 has %d)", info / "synsets.txt", len(class_names), version, expected)
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes")
        if num_classes > len(class_names):
            raise ValueError(f"num_classes={num_classes} but {info / 'synsets.txt'} lists {len(class_names)} classes")
        class_names = class_names[:num_classes]
    C = len(class_names)
    queries_file = info / "queries_synsets_map.txt"
    queries = read_queries_map(queries_file) if queries_file.is_file() else {}

    frames = []
    for source in sources:
        filelist = info / f"train_filelist_{source}.txt"
        rows = _labelled_rows(filelist, num_classes_total=total, unique_paths=True)
        rows = [r for r in rows if r[1] < C]
        frame = pd.DataFrame({T.PATH: [r[0] for r in rows], T.LABEL: [r[1] for r in rows]})
        frame[T.SOURCE] = source
        frame[T.SPLIT] = "train"
        _check_queries(frame, queries, filelist)
        key = np.arange(len(frame), dtype=np.float64)
        if rank_from == "meta" and (root / "meta" / source).is_dir():
            meta = _meta_rank_column(root, frame)
            missing = int(np.isnan(meta).sum())
            if missing:
                logger.warning("%s: %d of %d images have no metadata rank; using file order", filelist, missing, len(frame))
            # Missing rows go after every ranked row of their class, in file order.
            big = (np.nanmax(meta) + 1.0) if missing < len(meta) else 0.0
            key = np.where(np.isnan(meta), big + key, meta)
        frame[T.RANK] = _rank_within(frame, key)
        frames.append(frame)
    if include_val:
        val_list = info / "val_filelist.txt"
        rows = [r for r in _labelled_rows(val_list, num_classes_total=total, unique_paths=True) if r[1] < C]
        frame = pd.DataFrame({T.PATH: [f"val_images_256/{r[0]}" for r in rows], T.LABEL: [r[1] for r in rows]})
        frame[T.SOURCE] = "clean"
        frame[T.SPLIT] = "val"
        frame[T.RANK] = np.nan
        frames.append(frame)
    return _finish(frames, class_names, source_name=str(root)), class_names


def _labelled_rows(
    path: Path, *, num_classes_total: int | None, unique_paths: bool = False
) -> list[tuple[str, int, int]]:
    rows = read_pairs(path)
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


def _check_queries(frame: pd.DataFrame, queries: dict[int, int], filelist: Path) -> None:
    """Log (not raise) rows whose query folder maps to another class: a hint of a wrong root."""
    if not queries:
        return
    qids = frame[T.PATH].str.extract(r"(?:^|/)q(\d+)/", expand=False)
    known = qids.notna()
    mapped = qids[known].astype(int).map(queries)
    bad = mapped.notna() & (mapped != frame.loc[known, T.LABEL])
    if bad.any():
        logger.warning("%s: %d rows whose query folder maps to another class in queries_synsets_map.txt", filelist, int(bad.sum()))


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


def read_mini_webvision(
    root: str | os.PathLike, num_classes: int = 50, *, rank_from: str = "meta"
) -> tuple[pd.DataFrame, list[str]]:
    """Read mini-WebVision: the first ``num_classes`` classes of the Google subset.

    Train rows come from ``info/train_filelist_google.txt`` only, val rows from
    ``info/val_filelist.txt``, both filtered by ``label < num_classes``. When
    ``imagenet/val/<c>/`` folders exist (ILSVRC12 val re-organised by WebVision class
    index, as in DivideMix), their images are added as split ``"test"``.
    """
    table, class_names = read_webvision(root, sources=("google",), num_classes=num_classes, rank_from=rank_from)
    imagenet = Path(root) / "imagenet" / "val"
    if imagenet.is_dir():
        paths, labels = [], []
        for c in range(len(class_names)):
            folder = imagenet / str(c)
            if folder.is_dir():
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
                paths += [p.relative_to(root).as_posix() for p in files]
                labels += [c] * len(files)
        if paths:
            test = T.make_table(labels=labels, class_names=class_names, paths=paths, split="test")
            table = T.sort_table(T.validate_table(pd.concat([table, test], ignore_index=True), num_classes=len(class_names), source_name=str(root)))
    return table, class_names


# --------------------------------------------------------------------------- Clothing1M


def read_clothing1m(root: str | os.PathLike, *, include_clean_train: bool = False) -> tuple[pd.DataFrame, list[str]]:
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
    label where one is known (-1 otherwise). Val/test rows carry the clean label, source
    ``"clean"``. A key without a label raises ValueError naming the key file and line.
    """
    root = Path(root)
    class_names = [text.strip() for _, text in iter_lines(root / "category_names_eng.txt")]
    if not class_names:
        raise ValueError(f"{root / 'category_names_eng.txt'}: no class names")
    C = len(class_names)
    noisy = _kv(root / "noisy_label_kv.txt", C)
    clean = _kv(root / "clean_label_kv.txt", C)
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
            if text not in labels:
                raise ValueError(f"{root / name}, line {number}: {text!r} has no label in the {source} label file")
            keys.append(text)
        frame = pd.DataFrame({T.PATH: keys, T.LABEL: [labels[k] for k in keys]})
        frame[T.SOURCE] = source
        frame[T.SPLIT] = split
        frame[T.TRUE_LABEL] = [clean.get(k, -1) for k in keys]
        frames.append(frame)
    return _finish(frames, class_names, source_name=str(root)), class_names


def _kv(path: Path, num_classes: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, label, number in _labelled_rows(path, num_classes_total=num_classes):
        if key in out and out[key] != label:
            raise ValueError(f"{path}, line {number}: {key!r} appears twice with different labels")
        out[key] = label
    return out


# --------------------------------------------------------------------------- CIFAR-N


#: Keys of the CIFAR-10N / CIFAR-100N label files (``CIFAR-10_human.pt``).
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

CSV_COLUMNS = ("path", "label", "source", "rank", "split", "true_label", "class_name")


def read_csv_manifest(
    path: str | os.PathLike, *, root: str | os.PathLike | None = None, class_names: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Read a plain CSV manifest.

    The header is required. Columns: ``path,label`` required; ``source`` (default
    ``"clean"``), ``rank`` (empty = unknown), ``split`` (default ``"train"``),
    ``true_label`` and ``class_name`` optional; other columns are rejected (a typo would
    otherwise be silently ignored).

    Class names: ``class_names`` when given; else from the ``class_name`` column (one name
    per label, checked consistent; classes never seen are named ``class_<i>``); else
    ``class_<i>`` for ``i < max(label) + 1``.

    ``root``: when given, absolute paths are made relative to it (an absolute path outside
    ``root`` raises). Errors name the file and line.
    """
    path = Path(path)
    lines = iter_lines(path)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"{path}: empty manifest (expected a header with at least 'path,label')")
    header = [h.strip() for h in next(csv.reader([first[1]]))]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        raise ValueError(f"{path}, line {first[0]}: unknown column(s) {unknown}; allowed: {list(CSV_COLUMNS)}")
    for need in ("path", "label"):
        if need not in header:
            raise ValueError(f"{path}, line {first[0]}: missing column {need!r} in header {header}")
    if len(set(header)) != len(header):
        raise ValueError(f"{path}, line {first[0]}: duplicate column names in header {header}")
    rows: dict[str, list] = {h: [] for h in header}
    numbers = []
    root_path = Path(root).resolve() if root is not None else None
    for number, text in lines:
        fields = next(csv.reader([text]))
        if len(fields) != len(header):
            raise ValueError(f"{path}, line {number}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}")
        rec = dict(zip(header, (f.strip() for f in fields)))
        label = parse_int(rec["label"], path, number)
        if label < 0:
            raise ValueError(f"{path}, line {number}: negative label {label}")
        if class_names is not None and label >= len(class_names):
            raise ValueError(f"{path}, line {number}: unknown label {label} (only {len(class_names)} classes)")
        rec["label"] = label
        if not rec["path"]:
            raise ValueError(f"{path}, line {number}: empty path")
        p = Path(rec["path"])
        if p.is_absolute() and root_path is not None:
            try:
                rec["path"] = p.resolve().relative_to(root_path).as_posix()
            except ValueError:
                raise ValueError(f"{path}, line {number}: {p} is outside root {root_path}") from None
        if "rank" in rec:
            try:
                rec["rank"] = float(rec["rank"]) if rec["rank"] else np.nan
            except ValueError:
                raise ValueError(f"{path}, line {number}: rank {rec['rank']!r} is not a number") from None
        if "true_label" in rec:
            rec["true_label"] = parse_int(rec["true_label"], path, number, "true_label") if rec["true_label"] else -1
        if "split" in rec and rec["split"] not in T.SPLITS:
            raise ValueError(f"{path}, line {number}: split {rec['split']!r} is not one of {list(T.SPLITS)}")
        for h in header:
            rows[h].append(rec[h])
        numbers.append(number)
    if not numbers:
        raise ValueError(f"{path}: empty manifest (a header but no rows)")
    labels = np.asarray(rows["label"], dtype=np.int64)
    if class_names is not None:
        names = list(class_names)
    else:
        names = [f"class_{i}" for i in range(int(labels.max()) + 1)]
        if "class_name" in rows:
            seen: dict[int, str] = {}
            for label, name, number in zip(labels, rows["class_name"], numbers):
                if seen.setdefault(int(label), name) != name:
                    raise ValueError(
                        f"{path}, line {number}: label {label} named {name!r} but earlier {seen[int(label)]!r}"
                    )
            for label, name in seen.items():
                names[label] = name
    frame = pd.DataFrame({T.PATH: rows["path"], T.LABEL: labels})
    frame[T.SOURCE] = rows.get("source", "clean")
    frame[T.SPLIT] = rows.get("split", "train")
    frame[T.RANK] = np.asarray(rows["rank"], dtype=np.float64) if "rank" in rows else np.nan
    if "true_label" in rows:
        frame[T.TRUE_LABEL] = rows["true_label"]
    dup = frame.duplicated(subset=[T.SPLIT, T.PATH])
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{path}, line {numbers[i]}: duplicate path {frame.at[i, T.PATH]!r}")
    return _finish([frame], names, source_name=str(path)), names


def read_imagefolder(root: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """Read a torchvision ImageFolder-style tree: ``root/<class>/<image>``.

    When ``root`` holds any of ``train/``, ``val/``, ``test/``, each is read as that split
    (``root/train/<class>/<image>``); the classes are the sorted folder names of the first
    split present (train, then val, then test) and other splits may not add classes.
    Files are kept by extension (:data:`IMG_EXTENSIONS`, case-insensitive), sorted.
    """
    root = Path(root)
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
                    paths.append(file.relative_to(root).as_posix())
                    labels.append(index[cls.name])
                    splits.append(split)
    frame = pd.DataFrame({T.PATH: paths, T.LABEL: labels, T.SPLIT: splits})
    frame[T.SOURCE] = "clean"
    return _finish([frame], class_names, source_name=str(root)), class_names


# --------------------------------------------------------------------------- IDX / Fashion-MNIST / digits


def _open_maybe_gzip(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
    return data


def _read_idx_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: IDX file not found")
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes or ndim == 0:
        raise ValueError(f"{path}: unsupported IDX type code 0x{dtype_code:02x} / ndim {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX shape {shape} needs {expected} bytes of data, found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def read_idx(images_path: str | os.PathLike, labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST/Fashion-MNIST IDX image file and label file (gzip or raw).

    Returns
    -------
    images : uint8 array, shape (n, 28, 28)
    labels : int64 array, shape (n,)
    """
    images = _read_idx_array(Path(images_path))
    labels = _read_idx_array(Path(labels_path))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected a 3-D uint8 IDX image array, got {images.ndim}-D {images.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected a 1-D IDX label array, got {labels.ndim}-D")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels")
    return np.array(images), labels.astype(np.int64)


def fashion_mnist_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$URNET_DATA/fashion-mnist`` or ``$URNET_DATA``, else Debian's install path."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("URNET_DATA")
    if env:
        env_path = Path(env).expanduser()
        return env_path / "fashion-mnist" if (env_path / "fashion-mnist").is_dir() else env_path
    return Path(DEFAULT_FASHION_MNIST_ROOT)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}: run `apt-get install dataset-fashion-mnist` "
        "(installs /usr/share/datasets/fashion-mnist) or set URNET_DATA to a folder holding the IDX files"
    )


def read_fashion_mnist(root: str | os.PathLike | None = None) -> ArraySplits:
    """Read Fashion-MNIST train (60k) and t10k (10k) from IDX files.

    ``root`` defaults to ``$URNET_DATA`` (or its ``fashion-mnist/`` sub-folder) and then to
    ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    """
    folder = fashion_mnist_root(root)
    train = read_idx(_idx_file(folder, "train-images-idx3-ubyte"), _idx_file(folder, "train-labels-idx1-ubyte"))
    test = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"), _idx_file(folder, "t10k-labels-idx1-ubyte"))
    for name, labels in (("train", train[1]), ("t10k", test[1])):
        if labels.size and (labels.min() < 0 or labels.max() >= 10):
            raise ValueError(f"{folder}: {name} labels outside 0..9")
    return ArraySplits(train[0], train[1], test[0], test[1], list(FASHION_MNIST_CLASSES))


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images (n, H, W[, 3]) to (n, size, size[, 3]) with PIL bilinear filtering."""
    from PIL import Image

    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images.astype(np.uint8, copy=True)
    out = np.empty((images.shape[0], size, size, *images.shape[3:]), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img.astype(np.uint8)).resize((size, size), Image.Resampling.BILINEAR))
    return out


def read_digits(*, size: int = 28, test_fraction: float = 0.4, seed: int = 0) -> ArraySplits:
    """scikit-learn's bundled ``load_digits`` (1797 images, 10 classes) as uint8 images.

    The 8x8 images (values 0..16) are scaled to 0..255 and resized to ``size`` x ``size``
    (``size=8`` keeps them raw), then split into train/test by a seeded stratified split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    images = resize_images(images, size) if size != 8 else images
    labels = digits.target.astype(np.int64)
    idx = np.arange(labels.size)
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    names = [str(i) for i in range(10)]
    return ArraySplits(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], names)
