"""``urnet features``: penultimate features and predictions of a trained checkpoint.

::

    urnet features --manifest M.yaml --checkpoint RUN/checkpoint.pt --out DIR
                   [--splits train test] [--dtype float32|float16] [--predictions probs|classes]
                   [--scale smoke] [--batch-size N]

For each split writes ``<split>_features.npy`` (n, D) and ``<split>_pred_probs.npy`` (n, C) in
table row order (with ``--predictions classes``, ``<split>_pred_classes.npy`` (n,) instead: the
predicted class ids, all the weighting stages need, for WebVision-sized n x C), and
``<split>_table.parquet``, the rows' instances table (input of ``urnet weights --table``) (test-time transforms, no augmentation), and ``features.json`` recording the key
(checkpoint hash, dataset fingerprint, dtype) of each; a rerun with the same key skips the split.

Under ``torchrun --nproc_per_node N -m urnet_core.cli features ...`` each process extracts a
shard of the rows; rank 0 gathers them, writes the files and prints.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from urnet_core.utils.io import atomic_path, file_hash, read_json, save_npy, stable_hash, write_json

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("features", help="extract features and predictions of a checkpoint")
    parser.add_argument("--manifest", required=True, help="data manifest (YAML)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by `urnet train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test", "val"])
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="feature dtype")
    parser.add_argument("--predictions", choices=["probs", "classes"], default="probs",
                        help="write (n, C) probabilities, or only the (n,) predicted classes (at scale)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scale", choices=["smoke"], default=None, help="shrink the data (see manifest docs)")
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
    index_path = out / "features.json"
    index = dist_util.run_on_main(lambda: read_json(index_path) if index_path.exists() else {})
    ckpt_hash = file_hash(args.checkpoint)
    for split in args.splits:
        table = getattr(bundle, split)
        if table is None or len(table) == 0:
            logger.warning("split %r is empty in %s; skipped", split, args.manifest)
            continue
        dataset = bundle.dataset(table, transform)
        key = stable_hash(ckpt_hash, dataset_fingerprint(dataset), args.dtype, args.predictions)
        pred_name = "pred_classes" if args.predictions == "classes" else "pred_probs"
        paths = {"features": out / f"{split}_features.npy", "pred_probs": out / f"{split}_{pred_name}.npy"}
        up_to_date = index.get(split, {}).get("key") == key and dist_util.run_on_main(
            lambda: all(p.exists() for p in paths.values())
        )
        if up_to_date:
            if main:
                print(f"{split}: up to date ({paths['features']})")
            continue
        feats, probs = extract_features(
            model, dataset, batch_size=args.batch_size, device=device, dtype=np.dtype(args.dtype),
            progress=not args.no_progress, distributed=sharded, predictions=args.predictions,
        )
        if not main:
            continue
        save_npy(paths["pred_probs"], probs)
        save_npy(paths["features"], feats)
        # The rows' table beside them (labels, class names, source, rank): `urnet weights --table`.
        with atomic_path(out / f"{split}_table.parquet") as tmp:
            table.reset_index(drop=True).to_parquet(tmp, index=False)
        index[split] = {"key": key, "n": int(len(table)), "feature_dim": int(feats.shape[1]),
                        "checkpoint": str(args.checkpoint), "dtype": args.dtype,
                        "predictions": args.predictions}  # fmt: skip
        write_json(index_path, index)
        print(f"{split}: wrote {paths['features']} {feats.shape} and {paths['pred_probs']} {probs.shape}")
    return 0
