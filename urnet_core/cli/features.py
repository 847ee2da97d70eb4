"""``urnet features``: penultimate features and predictions of a trained checkpoint.

::

    urnet features --manifest M.yaml --checkpoint RUN/checkpoint.pt --out DIR
                   [--splits train test] [--dtype float32|float16] [--predictions probs|classes]
                   [--scale smoke] [--batch-size N]

For each split writes ``<split>_features.npy`` (n, D) and ``<split>_pred_probs.npy`` (n, C) in
table row order (with ``--predictions classes``, ``<split>_pred_classes.npy`` (n,) instead: the
predicted class ids, all the weighting stages need, for WebVision-sized n x C), and
``<split>_table.parquet``, the rows' instances table (input of ``urnet weights --table``)
(test-time transforms, no augmentation), and ``features.json``, the index: per split its key
(checkpoint hash, dataset fingerprint - for image files each file's path, size and mtime -,
dtype, predictions) and every file with its size.

Each split is one artefact set (:func:`urnet_core.utils.artefacts.indexed_entry`): its entry is
removed from ``features.json`` before its files are written and added back last, so a kill
or a full disk never leaves one checkpoint's features beside another's probabilities under
a valid entry. A rerun skips a split only when its entry matches the key and every listed
file is present with its recorded size; finished splits are kept. The output folder is
checked for write access and free space before any inference.

Under ``torchrun --nproc_per_node N -m urnet_core.cli features ...`` each process extracts a
shard of the rows; rank 0 gathers them, writes the files and prints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from urnet_core.utils.io import file_hash, save_npy, stable_hash

#: The index of the output folder (one entry per split).
INDEX_NAME = "features.json"

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from urnet_core.cli.train import add_scale_arguments

    parser = subparsers.add_parser(
        "features", help="extract features and predictions of a checkpoint",
        description=__doc__.split("Under ``torchrun")[0].strip())
    parser.add_argument("--manifest", required=True, help="data manifest (YAML)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `urnet train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test", "val"],
                        help="splits of the manifest to process")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="feature dtype")
    parser.add_argument("--predictions", choices=["probs", "classes"], default="probs",
                        help="write (n, C) probabilities, or only the (n,) predicted classes (at scale)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per inference batch")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (a GPU when there is one)")
    add_scale_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=features_command)


def features_command(args: argparse.Namespace) -> int:
    from urnet_core.training import distributed as dist_util

    # Under torchrun the process group started for this command ends with it.
    return dist_util.run_command(_features, args)


def _features(args: argparse.Namespace) -> int:
    from urnet_core.training import distributed as dist_util
    from urnet_core.data.datasets import default_transforms
    from urnet_core.data.manifest import load_dataset
    from urnet_core.training.features import dataset_fingerprint, extract_features
    from urnet_core.training.loop import load_checkpoint_model, resolve_device
    from urnet_core.utils.artefacts import check_writable, indexed_entry, read_entry
    from urnet_core.utils.guards import check_disk_space, planned_feature_bytes

    device = resolve_device(args.device)
    sharded = dist_util.init_from_env(device)  # under torchrun: every rank takes a shard of the rows
    if sharded:
        device = dist_util.local_device(device)
    main = dist_util.is_main()
    model = load_checkpoint_model(args.checkpoint)
    bundle = load_dataset(args.manifest, scale=args.scale)
    if model.num_classes != bundle.num_classes:
        raise ValueError(
            f"{args.checkpoint}: model has {model.num_classes} classes but {args.manifest} has {bundle.num_classes}"
        )
    transform = default_transforms(model.name, False, in_channels=bundle.in_channels, image_size=bundle.image_size)
    out = Path(args.out)
    ckpt_hash = file_hash(args.checkpoint)
    pred_name = "pred_classes" if args.predictions == "classes" else "pred_probs"
    todo = []
    for split in args.splits:
        table = getattr(bundle, split)
        if table is None or len(table) == 0:
            logger.warning("split %r is empty in %s; skipped", split, args.manifest)
            continue
        dataset = bundle.dataset(table, transform)
        key = stable_hash("features-v2", ckpt_hash, dataset_fingerprint(dataset), args.dtype, args.predictions)
        names = {"features": f"{split}_features.npy", "pred_probs": f"{split}_{pred_name}.npy",
                 "table": f"{split}_table.parquet"}  # fmt: skip
        # Trusted only with a complete entry: matching key, every listed file present at its size.
        up_to_date = dist_util.run_on_main(lambda: read_entry(out, split, index_name=INDEX_NAME, key=key) is not None)
        if up_to_date:
            if main:
                print(f"{split}: up to date ({out / names['features']})")
            continue
        todo.append((split, table, dataset, key, names))
    if not todo:
        return 0

    def preflight() -> None:
        # A read-only or full output folder fails now, not after the inference pass.
        check_writable(out)
        planned = sum(planned_feature_bytes(len(t), model.feature_dim, model.num_classes, np.dtype(args.dtype),
                                            predictions=args.predictions) for _, t, *_ in todo)
        check_disk_space(out, planned, what="features")

    dist_util.run_on_main(preflight)
    for split, table, dataset, key, names in todo:
        feats, probs = extract_features(
            model, dataset, batch_size=args.batch_size, device=device, dtype=np.dtype(args.dtype),
            progress=not args.no_progress, distributed=sharded, predictions=args.predictions,
        )
        if not main:
            continue
        meta = {"n": int(len(table)), "feature_dim": int(feats.shape[1]), "checkpoint": str(args.checkpoint),
                "dtype": args.dtype, "predictions": args.predictions}  # fmt: skip
        with indexed_entry(out, split, index_name=INDEX_NAME, key=key, meta=meta) as stage:
            save_npy(stage / names["pred_probs"], probs)
            save_npy(stage / names["features"], feats)
            # The rows' table beside them (labels, class names, source, rank): `urnet weights --table`.
            table.reset_index(drop=True).to_parquet(stage / names["table"], index=False)
        print(f"{split}: wrote {out / names['features']} {feats.shape} and {out / names['pred_probs']} {probs.shape}")
    return 0
