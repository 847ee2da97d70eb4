"""Helpers shared by the file-list readers: row checks and the final instances table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from urnet_core.data import table as T
from urnet_core.data._text import read_pairs

#: File extensions accepted by the folder readers (torchvision's list).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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
