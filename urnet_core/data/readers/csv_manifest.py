"""Plain CSV manifests: ``path,label[,source,rank,split,true_label,class_name]``."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from urnet_core.data import table as T
from urnet_core.data._text import iter_lines, parse_int
from urnet_core.data.readers._common import RootGuard, _finish


CSV_COLUMNS = ("path", "label", "source", "rank", "split", "true_label", "class_name")


def read_csv_manifest(
    path: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Read a plain CSV manifest.

    The header is required. Columns: ``path,label`` required; ``source`` (default
    ``"clean"``), ``rank`` (empty = unknown), ``split`` (default ``"train"``),
    ``true_label`` and ``class_name`` optional; other columns are rejected (a typo would
    otherwise be silently ignored).

    Class names: ``class_names`` when given; else from the ``class_name`` column (one name
    per label, checked consistent; classes never seen are named ``class_<i>``); else
    ``class_<i>`` for ``i < max(label) + 1``.

    ``root``: when given, every path must name a file inside it: absolute paths inside are
    made relative, while a ``..`` that climbs out, an absolute path elsewhere or a symlink
    resolving outside raises (see :class:`~urnet_core.data.readers._common.RootGuard`),
    unless ``allow_outside_root`` (manifest key ``allow_outside_root: true``). Without
    ``root`` the paths are relative to an unknown base and are not checked. Errors name
    the file and line.
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
    guard = RootGuard(root, allow_outside=allow_outside_root) if root is not None else None
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
        if guard is not None:
            rec["path"] = guard.check(rec["path"], path, number)
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
