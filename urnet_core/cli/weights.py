"""``urnet weights``: URNet per-instance weights and soft targets from baseline outputs.

::

    urnet weights --table T.parquet --features F.npy --probs P.npy
                  (--config cfg.yaml|cfg.json | --rung +label) --out DIR
                  [--split train|all] [--label-vectors V.npy] [--seed 0]

Rows of ``--features``/``--probs`` follow the rows of the table's ``--split`` (default
``train``; ``all`` = every row). The output folder ``DIR`` receives:

* ``weights.npy`` (n,) float32 per-instance weights;
* the soft targets (one-hot labels when label reweighting is off), in one of two formats by
  size: ``targets.npy`` (n, C) float32 while n x C stays below
  :data:`~urnet_core.reweight.compose.DENSE_TARGET_LIMIT` (67M values), else the compact
  ``targets.npz`` (predicted class + beta, eq. 10). Pass the folder itself to
  ``urnet train --targets DIR``: it reads whichever file ``weights.json`` names (a path to
  either file works too);
* ``components.npz`` (per-component weights);
* ``weights.json``, the index: config, input hashes, per-component statistics,
  ``targets_file``, the set's ``key``, every file with its size and ``timings``: the seconds
  of each stage (those :func:`~urnet_core.reweight.compose.compose_weights` fills, such as
  ``validate_features``, ``cluster``, ``instance``, plus ``file_hash``, hashing the inputs (the
  features file is hashed in ``validate_features``, during the NaN/inf pass that reads it), and
  ``import_torch``, importing PyTorch before the stages that use it);
  ``urnet bench`` reads them.

The four files are one artefact set (:func:`urnet_core.utils.artefacts.artefact_set`): they are
written into a temporary folder next to ``DIR`` and renamed into place as a whole, so an
interrupted run (a kill, a full disk) leaves the previous complete set, never new weights
beside old targets. ``DIR`` is therefore replaced as a whole and must not hold other files.
Write access and free space are checked before the computation starts.

A config with an ``urnet_plus:`` section computes URNet+ instead (the study's recommended row;
:mod:`urnet_core.cli.weights_plus`): then ``--features``/``--probs`` are out-of-sample arrays,
``--in-sample-probs`` is required and ``--folds`` names the fold model of each row.

Config values are type-checked strictly (:mod:`urnet_core.utils.typecheck`): ``"false"`` is
not a bool and ``"0.5"`` not a number; errors name the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from urnet_core.utils.io import file_hash, load_npy, npy_digest, read_json, save_npy, stable_hash

if TYPE_CHECKING:
    import pandas as pd

#: The index of a weights output folder.
INDEX_NAME = "weights.json"
#: The files an output folder may hold (the set replaces the folder as a whole).
OUTPUT_FILES = ("weights.npy", "targets.npy", "targets.npz", "components.npz", INDEX_NAME)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("weights", help="compute URNet instance weights and soft targets")
    parser.add_argument("--table", required=True, help="instances table (.parquet or .csv)")
    parser.add_argument("--features", help="baseline features (.npy, n x D)")
    parser.add_argument("--probs", help="baseline predicted probabilities (.npy, n x C) or predicted class ids "
                                        "(.npy, n; `urnet features --predictions classes`)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="URNetConfig fields as YAML or JSON")
    group.add_argument("--rung", help="a rung of URNetConfig.ladder(), e.g. +cluster")
    parser.add_argument("--in-sample-probs", help="URNet+ only: probabilities of the baseline trained on every row "
                                                  "(.npy, n x C; the study's train_probs.npy)")
    parser.add_argument("--folds", help="URNet+ only: fold id of the model behind each row of --features/--probs "
                                        "(.npy, n; the study's folds.npy); default: one model")
    parser.add_argument("--label-vectors", help="class text vectors (.npy, C x T); default: built from class names")
    parser.add_argument("--split", default="train", help="table split the arrays cover ('all' for every row)")
    parser.add_argument("--num-classes", type=int, help="default: columns of --probs, else max label + 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True,
                        help="output folder of its own, replaced as a whole: weights.npy, targets.npy or (at scale) "
                             "targets.npz, components.npz, weights.json; pass it to `urnet train --targets`")
    parser.set_defaults(func=weights_command)


def load_config(path: str | Path):
    """Read a URNetConfig from YAML/JSON, naming the file on unknown fields or bad values."""
    return read_config(path)[0]


def read_config(path: str | Path):
    """``(URNetConfig, URNet+ settings or None)`` from a YAML/JSON file: URNetConfig fields, and
    optionally an ``urnet_plus:`` section (:func:`urnet_core.cli.weights_plus.plus_settings`)."""
    from urnet_core.cli.weights_plus import SECTION, plus_settings
    from urnet_core.reweight.compose import URNetConfig

    path = Path(path)
    if path.suffix.lower() == ".json":
        data = read_json(path)
    else:
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of URNetConfig fields")
    data = dict(data)
    plus = plus_settings(data.pop(SECTION), source=str(path)) if SECTION in data else None
    known = {f.name for f in dataclasses.fields(URNetConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown URNetConfig field(s) {unknown}; valid: {sorted(known)}")
    from urnet_core.utils.typecheck import check_dataclass_types

    try:
        # Types first: "false" would pass as truthy and "0.5" fail deep inside arithmetic.
        # (an unvalidated instance holding the file's values over the defaults, checked field by field)
        config = URNetConfig.__new__(URNetConfig)
        for f in dataclasses.fields(URNetConfig):
            default = f.default_factory() if f.default is dataclasses.MISSING and \
                f.default_factory is not dataclasses.MISSING else f.default
            object.__setattr__(config, f.name, data.get(f.name, default))
        check_dataclass_types(config)
        return URNetConfig(**data), plus
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def resolve_targets(path: str | Path) -> Path:
    """The targets file behind ``urnet train --targets``: a ``targets.npy``/``targets.npz`` path,
    or a ``urnet weights`` output folder, whose complete index names the file."""
    from urnet_core.utils.artefacts import read_index

    path = Path(path)
    if not path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"--targets {path}: not found")
        return path
    index = read_index(path, index_name=INDEX_NAME)
    if index is None or not index.get("targets_file"):
        raise ValueError(f"--targets {path}: not a complete `urnet weights` output (no valid {INDEX_NAME} naming "
                         "its files); rerun `urnet weights` or pass the targets file itself")
    return path / index["targets_file"]


def _read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)


def _load_inputs(args: argparse.Namespace, plus: dict | None
                 ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None, np.ndarray | None, int]:
    """The table's rows of ``--split`` and the arrays beside it, checked against each other:
    ``(table, labels, features or None, probs or None, num_classes)``."""
    table = _read_table(args.table)
    if "label" not in table.columns:
        raise KeyError(f"{args.table}: no 'label' column")
    if args.split != "all" and "split" in table.columns:
        table = table[table["split"] == args.split].reset_index(drop=True)
    labels = table["label"].to_numpy(np.int64)
    features = np.asarray(load_npy(args.features)) if args.features else None
    probs = np.asarray(load_npy(args.probs)) if args.probs else None
    if plus is None and (args.in_sample_probs or args.folds):
        raise ValueError("--in-sample-probs and --folds are for URNet+ only (a config with an urnet_plus: section)")
    if plus is not None:
        missing = [flag for flag, v in (("--features", args.features), ("--probs", args.probs),
                                        ("--in-sample-probs", args.in_sample_probs)) if not v]
        if missing:
            raise ValueError(f"{args.config}: URNet+ needs {', '.join(missing)}")
        if probs.ndim != 2:
            raise ValueError(f"--probs {args.probs}: URNet+ needs probabilities (n x C), not class ids")
    for name, arr in (("--features", features), ("--probs", probs)):
        if arr is not None and arr.shape[0] != len(labels):
            raise ValueError(f"{name} has {arr.shape[0]} rows but the table's {args.split!r} rows are {len(labels)}")
    if args.num_classes is not None and probs is not None and probs.ndim == 2 and probs.shape[1] != args.num_classes:
        raise ValueError(f"--probs {args.probs}: {probs.shape[1]} columns but --num-classes is {args.num_classes}")
    num_classes = args.num_classes or (probs.shape[1] if probs is not None and probs.ndim == 2
                                       else int(labels.max()) + 1)
    return table, labels, features, probs, num_classes


def _label_vectors(args: argparse.Namespace, table: pd.DataFrame, num_classes: int) -> np.ndarray:
    """``--label-vectors``, or fastText vectors of the table's class names (one per label)."""
    if args.label_vectors:
        return np.asarray(load_npy(args.label_vectors))
    else:
        from urnet_core.reweight.text import label_vectors

        names = table.groupby("label")["class_name"].first().reindex(range(num_classes))
        if names.isna().any():
            raise ValueError(
                f"{args.table}: no class_name for label(s) {list(names.index[names.isna()])}; pass --label-vectors"
            )
        return label_vectors(list(names))


def _write_set(args: argparse.Namespace, out: Path, *, config: Any, plus: dict | None, labels: np.ndarray,
               num_classes: int, sample_weights: np.ndarray, components: dict[str, np.ndarray], targets: Any,
               soft: bool, timings: dict[str, float], known_hashes: dict[str, str] | None = None) -> None:
    """Write weights, targets and components as one artefact set keyed by the config and the inputs' hashes.

    ``known_hashes``: inputs already hashed (the features, during their NaN/inf pass)."""
    from urnet_core.data.targets import LabelPairs, save_label_pairs
    from urnet_core.utils.artefacts import artefact_set

    targets_name = "targets.npz" if isinstance(targets, LabelPairs) else "targets.npy"

    def stats(w: np.ndarray) -> dict:
        return {"mean": float(w.mean()), "std": float(w.std()), "min": float(w.min()), "max": float(w.max())}

    t_hash = time.perf_counter()
    known = known_hashes or {}
    inputs = {k: known[k] if k in known else file_hash(v) for k, v in
              (("table", args.table), ("features", args.features), ("probs", args.probs),
               ("in_sample_probs", args.in_sample_probs), ("folds", args.folds),
               ("label_vectors", args.label_vectors)) if v}  # fmt: skip
    timings["file_hash"] = time.perf_counter() - t_hash
    summary = {
        "config": dataclasses.asdict(config),
        "urnet_plus": plus,
        "n": int(len(labels)),
        "num_classes": int(num_classes),
        "split": args.split,
        "seed": args.seed,
        "inputs": inputs,
        "sample_weights": stats(sample_weights),
        "components": {k: stats(v) for k, v in components.items()},
        "soft_targets": soft,
        "targets_file": targets_name,
        # not part of the key: how long this run took, per stage (what `urnet bench` reads)
        "timings": {k: int(v) if isinstance(v, (int, np.integer)) else float(v) for k, v in timings.items()},
    }
    key = stable_hash("weights-v2", summary["config"], plus, inputs, args.split, args.seed, int(num_classes))
    # One artefact set: built next to --out and renamed into place whole (never new weights beside old targets).
    with artefact_set(out, key=key, meta=summary, index_name=INDEX_NAME) as tmp:
        save_npy(tmp / "weights.npy", sample_weights)
        if isinstance(targets, LabelPairs):  # n x C would not fit: the compact form (urnet train reads both)
            save_label_pairs(tmp / targets_name, targets)
        else:
            save_npy(tmp / targets_name, targets)
        with open(tmp / "components.npz", "wb") as fh:
            np.savez(fh, **components)


def weights_command(args: argparse.Namespace) -> int:
    from urnet_core.reweight.compose import URNetConfig, compose_weights, use_compact_targets
    from urnet_core.reweight.label_weight import LabelPairs, label_targets

    plus = None
    if args.config:
        config, plus = read_config(args.config)
    else:
        ladder = URNetConfig.ladder()
        if args.rung not in ladder:
            raise ValueError(f"--rung {args.rung!r} is not valid; choose one of {list(ladder)}")
        config = ladder[args.rung]
    table, labels, features, probs, num_classes = _load_inputs(args, plus)
    out = Path(args.out)
    compact = use_compact_targets(len(labels), num_classes)
    _preflight(out, len(labels), num_classes, compact)
    vectors = _label_vectors(args, table, num_classes) if config.instance_reweight or plus is not None else None
    ranks = table["rank"].to_numpy(np.float64) if "rank" in table.columns else None
    sources = table["source"].to_numpy(object) if "source" in table.columns else None
    timings: dict[str, float] = {}  # seconds per stage (compose_weights fills it), written to weights.json
    known_hashes: dict[str, str] = {}
    if config.cluster_reweight or config.instance_reweight or plus is not None:
        # Imported here, timed on its own: a fixed cost (seconds) that the first stage using torch
        # would otherwise carry, and that a projection in N must not scale.
        t_import = time.perf_counter()
        import torch  # noqa: F401

        timings["import_torch"] = time.perf_counter() - t_import
    if plus is not None:
        from urnet_core.cli.weights_plus import urnet_plus_arrays

        in_sample = np.asarray(load_npy(args.in_sample_probs))
        folds = np.asarray(load_npy(args.folds)) if args.folds else None
        sample_weights, new_labels, components = urnet_plus_arrays(
            config, plus, labels=labels, num_classes=num_classes, features=features, oof_probs=probs,
            in_sample_probs=in_sample, label_vectors=vectors, folds=folds, ranks=ranks, sources=sources,
            seed=args.seed)
        targets, targets_labels = None, (labels if new_labels is None else new_labels)
        soft = new_labels is not None
    else:
        # The features' NaN/inf pass also hashes their file (one read of it, not two).
        digest = npy_digest(args.features, features) if features is not None else None
        ws = compose_weights(config, labels=labels, num_classes=num_classes, features=features, pred_probs=probs,
                             label_vectors=vectors, ranks=ranks, sources=sources, seed=args.seed, timings=timings,
                             features_digest=digest)
        if digest is not None and digest.complete:
            known_hashes["features"] = digest.hexdigest()
        sample_weights, components, targets, targets_labels = ws.sample_weights, ws.components, ws.soft_targets, labels
        soft = targets is not None
    if targets is None:  # one-hot (of the new labels for URNet+'s relabel), so `urnet train --targets` always has a file
        targets = (LabelPairs(targets_labels, 1.0) if compact
                   else label_targets(targets_labels, targets_labels, num_classes, beta=1.0))
    targets_name = "targets.npz" if isinstance(targets, LabelPairs) else "targets.npy"
    _write_set(args, out, config=config, plus=plus, labels=labels, num_classes=num_classes,
               sample_weights=sample_weights, components=components, targets=targets, soft=soft, timings=timings,
               known_hashes=known_hashes)
    print(f"wrote {out / 'weights.npy'} ({len(labels)} rows) and {out / targets_name}; "
          f"`urnet train --weights {out / 'weights.npy'} --targets {out}` reads them")
    return 0


def _preflight(out: Path, n: int, num_classes: int, compact: bool) -> None:
    """Fail before the computation, not after it: the folder must be writable, ours to replace,
    and its disk must hold the new set beside the old one."""
    from urnet_core.utils.artefacts import check_replaceable, check_writable
    from urnet_core.utils.guards import check_disk_space

    check_writable(out.parent if not out.exists() else out)
    check_writable(out.absolute().parent)  # the new set is built next to it and renamed in
    check_replaceable(out, OUTPUT_FILES, index_name=INDEX_NAME)
    targets_bytes = n * 8 if compact else n * num_classes * 4
    check_disk_space(out.absolute().parent, n * 4 * 5 + targets_bytes, what="weights")
