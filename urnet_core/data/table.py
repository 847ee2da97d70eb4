"""The instances table: one row per training/evaluation instance.

Every stage of the pipeline reads and extends one pandas DataFrame with a RangeIndex. The
row position is the instance index that datasets yield, so per-instance weights and
targets map back to rows.

Required columns (see :data:`REQUIRED_COLUMNS`):

- ``path`` (str or None): image path relative to the dataset root; None for in-memory data.
- ``image_index`` (int64): row into an in-memory uint8 image array; -1 for file-based data.
- ``label`` (int64): observed (possibly noisy) label in ``[0, C)``.
- ``class_name`` (str): name of ``label``.
- ``source`` (str): where the instance came from, e.g. ``"google"``, ``"flickr"``, ``"clean"``.
- ``rank`` (float64): search rank within (label, source), 0 = top; NaN when unknown.
- ``split`` (str): ``"train"``, ``"val"`` or ``"test"``.

Optional ground truth (see :data:`OPTIONAL_COLUMNS`):

- ``true_label`` (int64): the true class, -1 for open-set images, -2 where the truth is unknown
  (e.g. Clothing1M rows outside its clean subset).
- ``noise_type`` (str): one of :data:`NOISE_TYPES`; derived from ``true_label`` when only that is
  given (:func:`derive_noise_type`).
- ``second_label`` (int64): the other class of a blended ambiguous image, -1 otherwise.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from urnet_core.utils.validation import check_positive_int

PATH = "path"
IMAGE_INDEX = "image_index"
LABEL = "label"
CLASS_NAME = "class_name"
SOURCE = "source"
RANK = "rank"
SPLIT = "split"
TRUE_LABEL = "true_label"
NOISE_TYPE = "noise_type"
SECOND_LABEL = "second_label"

#: Required columns and their dtypes ("object" = Python str / None).
REQUIRED_COLUMNS: dict[str, str] = {
    PATH: "object",
    IMAGE_INDEX: "int64",
    LABEL: "int64",
    CLASS_NAME: "object",
    SOURCE: "object",
    RANK: "float64",
    SPLIT: "object",
}
#: Optional ground-truth columns and their dtypes.
OPTIONAL_COLUMNS: dict[str, str] = {
    TRUE_LABEL: "int64",
    NOISE_TYPE: "object",
    SECOND_LABEL: "int64",
}
SPLITS = ("train", "val", "test")
#: ``true_label`` of a row whose truth is not known (-1 is an open-set image: known to be in no class).
UNKNOWN_TRUTH = -2
NOISE_TYPES = ("clean", "asym", "sym", "flip", "open", "ambiguous")


def derive_noise_type(label: np.ndarray, true_label: np.ndarray) -> np.ndarray:
    """``noise_type`` from a ``true_label`` column (CIFAR-N style, or a hand-audited subset).

    ``'clean'`` where the true label equals the observed one, ``'open'`` where it is -1 (the
    image belongs to no class of the label set), otherwise ``'flip'`` (a wrong in-set label;
    the benchmark's finer ``asym``/``sym`` split is not knowable from the truth alone).
    """
    label = np.asarray(label, dtype=np.int64)
    true_label = np.asarray(true_label, dtype=np.int64)
    return np.where(true_label == label, "clean", np.where(true_label == -1, "open", "flip")).astype(object)


def make_table(
    *,
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    paths: Sequence[str | None] | None = None,
    image_index: Sequence[int] | np.ndarray | None = None,
    source: str | Sequence[str] = "clean",
    rank: float | Sequence[float] | np.ndarray = np.nan,
    split: str | Sequence[str] = "train",
    true_label: Sequence[int] | np.ndarray | None = None,
    noise_type: str | Sequence[str] | None = None,
    second_label: Sequence[int] | np.ndarray | None = None,
) -> pd.DataFrame:
    """Build an instances table with the canonical columns and dtypes.

    Parameters
    ----------
    labels : array-like of int, shape (n,)
        Observed labels.
    class_names : sequence of str, length C
        Class names; ``class_name`` is looked up from ``labels``.
    paths : sequence of str, optional
        Relative image paths (file-based data). None gives a column of None.
    image_index : array-like of int, optional
        Rows into an in-memory image array. Default: ``arange(n)`` when ``paths`` is None,
        else -1 (file-based).
    source, rank, split : scalar or sequence
        Broadcast when scalar.
    true_label, noise_type, second_label : optional ground truth
        Added only when given.

    Returns
    -------
    pandas.DataFrame
        A table with RangeIndex, not validated (call :func:`validate_table`).
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = labels.size
    names = list(class_names)
    if n and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must lie in [0, {len(names)}) to look up class_names")
    if image_index is None:
        image_index = np.arange(n, dtype=np.int64) if paths is None else np.full(n, -1, dtype=np.int64)
    data: dict[str, Any] = {
        PATH: pd.Series(list(paths) if paths is not None else [None] * n, dtype="object"),
        IMAGE_INDEX: np.asarray(image_index, dtype=np.int64).reshape(-1),
        LABEL: labels,
        CLASS_NAME: pd.Series(np.asarray(names, dtype=object)[labels] if n else [], dtype="object"),
        SOURCE: _broadcast(source, n, "object"),
        RANK: np.broadcast_to(np.asarray(rank, dtype=np.float64), (n,)).copy(),
        SPLIT: _broadcast(split, n, "object"),
    }
    if true_label is not None:
        data[TRUE_LABEL] = np.asarray(true_label, dtype=np.int64).reshape(-1)
    if noise_type is not None:
        data[NOISE_TYPE] = _broadcast(noise_type, n, "object")
    if second_label is not None:
        data[SECOND_LABEL] = np.asarray(second_label, dtype=np.int64).reshape(-1)
    for key, value in data.items():
        if len(value) != n:
            raise ValueError(f"column {key!r} has {len(value)} values but labels has {n}")
    return pd.DataFrame({k: (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in data.items()}).astype(
        {k: _dtype(k) for k in data}
    )


def _broadcast(value: Any, n: int, dtype: str) -> pd.Series:
    if isinstance(value, str) or value is None:
        return pd.Series([value] * n, dtype=dtype)
    return pd.Series(list(value), dtype=dtype)


def _dtype(column: str) -> str:
    return {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}[column]


def coerce_table(table: pd.DataFrame) -> pd.DataFrame:
    """Return a copy with canonical dtypes and a fresh RangeIndex (e.g. after reading parquet)."""
    out = table.reset_index(drop=True).copy()
    for column, dtype in {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}.items():
        if column in out.columns:
            if dtype == "object":
                out[column] = out[column].astype(object).where(out[column].notna(), None)
            else:
                out[column] = out[column].astype(dtype)
    return out


def validate_table(table: Any, *, num_classes: int, source_name: str = "table") -> pd.DataFrame:
    """Check an instances table and return it with canonical dtypes.

    Parameters
    ----------
    table : pandas.DataFrame
        The instances table.
    num_classes : int
        C; labels must lie in ``[0, C)``.
    source_name : str
        Named in error messages (e.g. the manifest file the table came from).

    Raises
    ------
    TypeError
        ``table`` is not a DataFrame, or a column has the wrong kind of values.
    ValueError
        A required column is missing; a label is negative, >= C or missing; a path is
        duplicated within a split; a split or noise type is unknown; an image index is
        duplicated or negative for in-memory data.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{source_name}: the instances table must be a pandas DataFrame, got {type(table).__name__}")
    num_classes = check_positive_int(num_classes, "num_classes")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{source_name}: instances table is missing column(s) {missing}; required: {list(REQUIRED_COLUMNS)}"
        )
    for column in (LABEL, IMAGE_INDEX, *(c for c in (TRUE_LABEL, SECOND_LABEL) if c in table.columns)):
        values = table[column]
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise ValueError(f"{source_name}: column {column!r} is missing a value at row {row}")
        if not (pd.api.types.is_integer_dtype(values) or _is_integral_float(values)):
            raise TypeError(f"{source_name}: column {column!r} must hold integers, got dtype {values.dtype}")
    out = coerce_table(table)
    labels = out[LABEL].to_numpy()
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row = int(bad[0])
        kind = "negative" if labels[row] < 0 else f"unknown (>= num_classes={num_classes})"
        raise ValueError(
            f"{source_name}: {bad.size} {('label is' if bad.size == 1 else 'labels are')} outside [0, {num_classes}); "
            f"first at row {row}: label {int(labels[row])} is {kind}"
        )
    for column in (TRUE_LABEL, SECOND_LABEL):
        if column in out.columns:
            values = out[column].to_numpy()
            low = UNKNOWN_TRUTH if column == TRUE_LABEL else -1
            bad = np.flatnonzero((values < low) | (values >= num_classes))
            if bad.size:
                raise ValueError(
                    f"{source_name}: column {column!r} must lie in [{low}, {num_classes}); row {int(bad[0])} "
                    f"holds {int(values[bad[0]])}"
                )
    unknown_splits = sorted(set(out[SPLIT].dropna().unique()) - set(SPLITS)) + (
        ["<missing>"] if out[SPLIT].isna().any() else []
    )
    if unknown_splits:
        raise ValueError(f"{source_name}: unknown split value(s) {unknown_splits}; expected one of {list(SPLITS)}")
    if NOISE_TYPE in out.columns:
        unknown = sorted(set(map(str, out[NOISE_TYPE].unique())) - set(NOISE_TYPES))
        if unknown:
            raise ValueError(f"{source_name}: unknown noise_type value(s) {unknown}; expected {list(NOISE_TYPES)}")
    if TRUE_LABEL in out.columns and NOISE_TYPE not in out.columns and not (out[TRUE_LABEL] == UNKNOWN_TRUTH).any():
        # Only a complete truth makes a noise type: a partial one (Clothing1M) would call every
        # unknown row noisy.
        out[NOISE_TYPE] = derive_noise_type(out[LABEL].to_numpy(), out[TRUE_LABEL].to_numpy())
    file_rows = out[PATH].notna().to_numpy()
    if file_rows.any():
        dup = out.loc[file_rows].duplicated(subset=[SPLIT, PATH], keep="first")
        if dup.any():
            row = int(dup.index[dup.to_numpy()][0])
            raise ValueError(
                f"{source_name}: duplicate path {out.at[row, PATH]!r} in split {out.at[row, SPLIT]!r} "
                f"(row {row}; {int(dup.sum())} duplicate(s) in all)"
            )
    mem = out.loc[~file_rows, IMAGE_INDEX].to_numpy()
    if mem.size and mem.min() < 0:
        row = int(np.flatnonzero(~file_rows)[int(np.argmin(mem))])
        raise ValueError(f"{source_name}: row {row} has neither a path nor an image_index >= 0")
    return out


def _is_integral_float(values: pd.Series) -> bool:
    if not pd.api.types.is_float_dtype(values):
        return False
    arr = values.to_numpy()
    return bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))


def class_counts(table: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Return the number of instances per observed label, shape (C,)."""
    return np.bincount(table[LABEL].to_numpy(dtype=np.int64), minlength=num_classes)


def sort_table(table: pd.DataFrame) -> pd.DataFrame:
    """Sort deterministically by split, label, source, rank, path and reset the index."""
    keys = [c for c in (SPLIT, LABEL, SOURCE, RANK, PATH, IMAGE_INDEX) if c in table.columns]
    return table.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)
