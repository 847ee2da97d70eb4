"""``urnet weights``: URNet per-instance weights and soft targets from baseline outputs.

::

    urnet weights --table T.parquet --features F.npy --probs P.npy
                  (--config cfg.yaml|cfg.json | --rung +label) --out DIR
                  [--split train|all] [--label-vectors V.npy] [--seed 0]

Rows of ``--features``/``--probs`` follow the rows of the table's ``--split`` (default
``train``; ``all`` = every row). Writes ``weights.npy`` (n,) float32, ``targets.npy`` (n, C)
float32 (one-hot labels when label reweighting is off), ``components.npz`` and
``weights.json`` (config, input hashes, per-component statistics), all atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from urnet_core.utils.io import atomic_path, file_hash, load_npy, read_json, save_npy, write_json

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
    parser.add_argument("--label-vectors", help="class text vectors (.npy, C x T); default: built from class names")
    parser.add_argument("--split", default="train", help="table split the arrays cover ('all' for every row)")
    parser.add_argument("--num-classes", type=int, help="default: columns of --probs, else max label + 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(func=weights_command)


def load_config(path: str | Path):
    """Read a URNetConfig from YAML/JSON, naming the file on unknown fields or bad values."""
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
    known = {f.name for f in dataclasses.fields(URNetConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown URNetConfig field(s) {unknown}; valid: {sorted(known)}")
    try:
        return URNetConfig(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    return pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)


def weights_command(args: argparse.Namespace) -> int:
    from urnet_core.reweight.compose import URNetConfig, compose_weights, use_compact_targets
    from urnet_core.reweight.label_weight import LabelPairs, label_targets, save_label_pairs

    if args.config:
        config = load_config(args.config)
    else:
        ladder = URNetConfig.ladder()
        if args.rung not in ladder:
            raise ValueError(f"--rung {args.rung!r} is not valid; choose one of {list(ladder)}")
        config = ladder[args.rung]
    table = _read_table(args.table)
    if "label" not in table.columns:
        raise KeyError(f"{args.table}: no 'label' column")
    if args.split != "all" and "split" in table.columns:
        table = table[table["split"] == args.split].reset_index(drop=True)
    labels = table["label"].to_numpy(np.int64)
    features = np.asarray(load_npy(args.features)) if args.features else None
    probs = np.asarray(load_npy(args.probs)) if args.probs else None
    for name, arr in (("--features", features), ("--probs", probs)):
        if arr is not None and arr.shape[0] != len(labels):
            raise ValueError(f"{name} has {arr.shape[0]} rows but the table's {args.split!r} rows are {len(labels)}")
    num_classes = args.num_classes or (probs.shape[1] if probs is not None and probs.ndim == 2
                                       else int(labels.max()) + 1)
    vectors = None
    if config.instance_reweight:
        if args.label_vectors:
            vectors = np.asarray(load_npy(args.label_vectors))
        else:
            from urnet_core.reweight.text import label_vectors

            names = table.groupby("label")["class_name"].first().reindex(range(num_classes))
            if names.isna().any():
                raise ValueError(
                    f"{args.table}: no class_name for label(s) {list(names.index[names.isna()])}; pass --label-vectors"
                )
            vectors = label_vectors(list(names))
    ws = compose_weights(
        config, labels=labels, num_classes=num_classes, features=features, pred_probs=probs,
        label_vectors=vectors,
        ranks=table["rank"].to_numpy(np.float64) if "rank" in table.columns else None,
        sources=table["source"].to_numpy(object) if "source" in table.columns else None,
        seed=args.seed,
    )
    targets = ws.soft_targets
    compact = use_compact_targets(len(labels), num_classes)
    if targets is None:  # one-hot of the labels, so `urnet train --targets` always has a file
        targets = LabelPairs(labels, 1.0) if compact else label_targets(labels, labels, num_classes, beta=1.0)
    out = Path(args.out)
    save_npy(out / "weights.npy", ws.sample_weights)
    if isinstance(targets, LabelPairs):  # n x C would not fit: the compact form (urnet train reads both)
        targets_path = save_label_pairs(out / "targets.npz", targets)
    else:
        targets_path = save_npy(out / "targets.npy", targets)
    with atomic_path(out / "components.npz") as tmp:
        np.savez(tmp, **ws.components)

    def stats(w: np.ndarray) -> dict:
        return {"mean": float(w.mean()), "std": float(w.std()), "min": float(w.min()), "max": float(w.max())}

    summary = {
        "config": dataclasses.asdict(config),
        "n": int(len(labels)),
        "num_classes": int(num_classes),
        "split": args.split,
        "seed": args.seed,
        "inputs": {k: file_hash(v) for k, v in
                   (("table", args.table), ("features", args.features), ("probs", args.probs),
                    ("label_vectors", args.label_vectors)) if v},  # fmt: skip
        "sample_weights": stats(ws.sample_weights),
        "components": {k: stats(v) for k, v in ws.components.items()},
        "soft_targets": ws.soft_targets is not None,
        "targets_file": Path(targets_path).name,
    }
    write_json(out / "weights.json", summary)
    print(f"wrote {out / 'weights.npy'} ({len(labels)} rows) and {targets_path}")
    return 0
