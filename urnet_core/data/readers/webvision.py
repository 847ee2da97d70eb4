"""WebVision 1.0/2.0 and mini-WebVision: file lists, synsets, query maps and per-image JSON ranks."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from urnet_core.utils.validation import check_option, check_positive_int
from urnet_core.data import table as T
from urnet_core.data._text import iter_lines, parse_int, read_pairs, read_utf8
from urnet_core.data.readers._common import IMG_EXTENSIONS, RootGuard, _finish, _labelled_rows

logger = logging.getLogger(__name__)


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
    """Read ``info/queries_synsets_map.txt``: ``<query_id> <class_id>`` lines, both 1-based.

    In the published WebVision 1.0/2.0 files query ``q0001`` is line ``1 1``: query ids and
    class ids count from 1 (the public loaders subtract 1), while the file lists' labels and
    the synsets' line numbers count from 0. Returns ``{query_id: label}`` with 0-based labels
    (``class_id - 1``). A file that holds a class id 0 is clearly 0-based already and is
    taken as is (logged).
    """
    out: dict[int, int] = {}
    for query, class_id, number in read_pairs(path, what="class id"):
        qid = parse_int(query, path, number, "query id")
        if qid in out:
            raise ValueError(f"{path}, line {number}: query id {qid} appears twice")
        out[qid] = class_id
    if out and min(out.values()) == 0:
        logger.info("%s: holds class id 0, so it is read as 0-based (the published file is 1-based)", path)
        return out
    return {q: c - 1 for q, c in out.items()}


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
    allow_outside_root: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a WebVision 1.0 / 2.0 tree.

    Layout (relative to ``root``)::

        info/train_filelist_google.txt   <relative_path> <label>   e.g. google/q0001/xxx.jpg 0
        info/train_filelist_flickr.txt   <relative_path> <label>
        info/val_filelist.txt            <name> <label>            bare file name, e.g.
                                                                   ILSVRC2012_val_00000001.JPEG 0,
                                                                   image at val_images_256/<name>
        info/synsets.txt                 nXXXXXXXX words, words    (line i = class i)
        info/queries_synsets_map.txt     <query_id> <class_id>     (both 1-based: q0001 -> "1 1"; optional)
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
    allow_outside_root : bool
        File lists may name only files inside ``root`` (no ``..`` climbing out, no absolute
        path elsewhere, no symlink resolving outside): a ValueError names the list and line.
        ``True`` (manifest key ``allow_outside_root: true``) lifts this.

    Returns
    -------
    table : pandas.DataFrame
        Sorted instances table; ``source`` is the file list's source.
    class_names : list of str
    """
    root = Path(root)
    guard = RootGuard(root, allow_outside=allow_outside_root)
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
        rows = _labelled_rows(filelist, num_classes_total=total, unique_paths=True, guard=guard)
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
        # Bare file names (``ILSVRC2012_val_00000001.JPEG 0``) under val_images_256/.
        paths = [guard.check(f"val_images_256/{r[0]}", val_list, r[2]) for r in rows]
        frame = pd.DataFrame({T.PATH: paths, T.LABEL: [r[1] for r in rows]})
        frame[T.SOURCE] = "clean"
        frame[T.SPLIT] = "val"
        frame[T.RANK] = np.nan
        frames.append(frame)
    return _finish(frames, class_names, source_name=str(root)), class_names


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


def read_mini_webvision(
    root: str | os.PathLike, num_classes: int = 50, *, rank_from: str = "meta", allow_outside_root: bool = False
) -> tuple[pd.DataFrame, list[str]]:
    """Read mini-WebVision: the first ``num_classes`` classes of the Google subset.

    Train rows come from ``info/train_filelist_google.txt`` only, val rows from
    ``info/val_filelist.txt``, both filtered by ``label < num_classes``. When
    ``imagenet/val/<c>/`` folders exist (ILSVRC12 val re-organised by WebVision class
    index, as in DivideMix), their images are added as split ``"test"``.
    """
    table, class_names = read_webvision(root, sources=("google",), num_classes=num_classes, rank_from=rank_from,
                                        allow_outside_root=allow_outside_root)
    imagenet = Path(root) / "imagenet" / "val"
    guard = RootGuard(root, allow_outside=allow_outside_root)
    if imagenet.is_dir():
        paths, labels = [], []
        for c in range(len(class_names)):
            folder = imagenet / str(c)
            if folder.is_dir():
                files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
                paths += [guard.check(p.relative_to(root).as_posix(), p, None) for p in files]
                labels += [c] * len(files)
        if paths:
            test = T.make_table(labels=labels, class_names=class_names, paths=paths, split="test")
            table = T.sort_table(T.validate_table(pd.concat([table, test], ignore_index=True), num_classes=len(class_names), source_name=str(root)))
    return table, class_names


# --------------------------------------------------------------------------- Clothing1M
