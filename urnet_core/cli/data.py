"""``urnet data``: describe a dataset manifest, or materialise its benchmark to disk.

- ``urnet data describe MANIFEST [--scale smoke]`` prints warnings for classes with no or
  fewer than 5 training images (:mod:`urnet_core.data.coverage`), the class counts (the long tail)
  and, for benchmark data with ground truth, the realised noise per class, overall, by
  source and by search rank.
- ``urnet data make-benchmark MANIFEST --out DIR [--scale smoke]`` writes
  ``table.parquet``, ``images.npy``, ``class_names.json`` and ``benchmark.json`` to DIR,
  each atomically.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import pandas as pd

from urnet_core.data import table as T
from urnet_core.data.coverage import class_coverage
from urnet_core.data.manifest import load_dataset, save_bundle
from urnet_core.data.webnoise import noise_rate_by_rank, realised_noise_rates

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from urnet_core.cli.train import add_scale_arguments

    parser = subparsers.add_parser("data", help="describe datasets and build web-noise benchmarks",
                                   description=__doc__.strip())
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    describe = sub.add_parser("describe", help="print class counts and realised noise rates of a manifest",
                              description="Print the class counts (the long tail) of a manifest's training split "
                                          "and, with ground truth, the realised noise per class, overall, by source "
                                          "and by search rank.")
    describe.add_argument("manifest", help="path to a data manifest (YAML)")
    add_scale_arguments(describe)
    describe.set_defaults(func=describe_command)
    make = sub.add_parser("make-benchmark", help="write a manifest's tables and images to a folder",
                          description="Write table.parquet, images.npy, class_names.json and benchmark.json of a "
                                      "manifest's data to a folder, each atomically.")
    make.add_argument("manifest", help="path to a data manifest (YAML)")
    make.add_argument("--out", required=True, help="output folder")
    add_scale_arguments(make)
    make.set_defaults(func=make_benchmark_command)


def describe_text(bundle) -> str:
    """The text ``urnet data describe`` prints for a :class:`DatasetBundle`."""
    train = bundle.train
    counts = np.bincount(train[T.LABEL].to_numpy(), minlength=bundle.num_classes)
    lines = [
        f"dataset {bundle.name}: {bundle.num_classes} classes, {len(train)} train rows, {len(bundle.test)} test rows"
        + (f", {len(bundle.val)} val rows" if bundle.val is not None else "")
        + (f", {len(bundle.extra_test)} extra test rows" if bundle.extra_test is not None else ""),
        f"images: {bundle.image_size}x{bundle.image_size}, {bundle.in_channels} channel(s), "
        + ("in memory" if bundle.images is not None else f"files under {bundle.root}"),
    ]
    # Said first: a class the training split cannot teach drags every mean over classes.
    lines += [f"warning: {message}" for message in class_coverage(bundle).messages()]
    lines += [
        "",
        f"train class counts (observed labels; largest/smallest = {counts.max() / max(counts.min(), 1):.1f}):",
    ]
    frame = pd.DataFrame({"class_name": bundle.class_names, "n": counts}).sort_values("n", ascending=False, kind="stable")
    lines.append(frame.to_string())
    sources = train[T.SOURCE].value_counts().sort_index()
    lines += ["", "train rows by source:", sources.to_string()]
    if T.NOISE_TYPE in train.columns:
        fmt = {"float_format": lambda x: f"{x:.3f}"}
        lines += ["", "realised noise per class (noise_rate = asym + sym + open):"]
        lines.append(realised_noise_rates(train, by="label").to_string(**fmt))
        lines += ["", "overall:", realised_noise_rates(train, by=None).to_string(**fmt)]
        lines += ["", "by source:", realised_noise_rates(train, by="source").to_string(**fmt)]
        if np.isfinite(train[T.RANK].to_numpy(dtype=float)).any():
            lines += ["", "noise rate by search rank:", noise_rate_by_rank(train).to_string(index=False, **fmt)]
    elif T.TRUE_LABEL in train.columns:  # e.g. Clothing1M / CIFAR-N: a clean label for some rows
        known = train[train[T.TRUE_LABEL] >= 0]
        if len(known):
            wrong = (known[T.LABEL] != known[T.TRUE_LABEL]).mean()
            lines += ["", f"noise rate among the {len(known)} train rows with a known true label: {wrong:.3f}"]
    return "\n".join(lines)


def describe_command(args: argparse.Namespace) -> int:
    bundle = load_dataset(args.manifest, scale=args.scale)
    print(describe_text(bundle))
    return 0


def make_benchmark_command(args: argparse.Namespace) -> int:
    bundle = load_dataset(args.manifest, scale=args.scale)
    paths = save_bundle(bundle, args.out)
    for kind, path in sorted(paths.items()):
        print(f"wrote {kind}: {path}")
    return 0
