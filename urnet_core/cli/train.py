"""``urnet train``: train a backbone on a manifest's training split, optionally reweighted.

::

    urnet train --manifest M.yaml --run-dir DIR [--config cfg.json] [--epochs N] [--model NAME]
                [--weights W.npy] [--targets WEIGHTS_DIR|T.npy|T.npz] [--init-weights PATH] [--scale smoke]
                [--no-resume] [--no-progress]

``--weights`` is an (n,) ``.npy`` of per-instance weights and ``--targets`` the soft targets (eq. 10),
both in training-table row order: a ``urnet weights`` output folder (it reads whichever targets
file the folder's ``weights.json`` index names: ``targets.npy`` below 67M values, the compact
``targets.npz`` above), or either file's path; without them the run is the plain cross-entropy baseline. ``--config`` is a JSON object of :class:`~urnet_core.training.loop.TrainConfig`
fields; ``--epochs``/``--model``/``--seed`` override it. The run directory receives
``checkpoint.pt`` and ``metrics.json`` (the per-epoch history) after every epoch (a rerun
resumes), then ``test_probs.npy`` and ``test_metrics.json``: the same run folder as every model
of ``urnet study`` (:func:`urnet_core.study.pipeline.fit_and_evaluate` writes both).

Under ``torchrun --nproc_per_node N -m urnet_core.cli train ...`` the N processes train one model
with DistributedDataParallel (``batch_size`` is the global batch; see :mod:`urnet_core.training.loop`)
and share the test evaluation; rank 0 alone writes the run directory and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from urnet_core.utils.io import load_npy, read_json, save_npy, write_json

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a backbone (baseline or reweighted URNet)")
    parser.add_argument("--manifest", required=True, help="data manifest (YAML)")
    parser.add_argument("--run-dir", required=True, help="folder for the checkpoint and metrics")
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    parser.add_argument("--epochs", type=int, help="override config epochs")
    parser.add_argument("--model", help="override config model (small_cnn, resnet18, resnet50, resnext101_32x8d)")
    parser.add_argument("--seed", type=int, help="override config seed")
    parser.add_argument("--weights", help="(n,) .npy of per-instance weights, training-table order")
    parser.add_argument("--targets", help="soft targets, training-table order: the `urnet weights` output folder "
                                          "(its weights.json names the targets file), or a (n, C) targets.npy, or the "
                                          "compact targets.npz (predicted class + beta) it writes at scale")
    parser.add_argument("--init-weights", help="local state_dict to initialise the backbone (never downloaded)")
    parser.add_argument("--scale", choices=["smoke"], default=None, help="shrink the data (see manifest docs)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=train_command)


def _config(args: argparse.Namespace):
    from urnet_core.training.loop import TrainConfig

    values = {}
    if args.config:
        values = read_json(args.config)
        if not isinstance(values, dict):
            raise ValueError(f"{args.config}: expected a JSON object of TrainConfig fields")
    config = TrainConfig.from_dict(values, source=args.config or "config")
    overrides = {k: getattr(args, k) for k in ("epochs", "model", "seed") if getattr(args, k) is not None}
    return dataclasses.replace(config, **overrides)


def train_command(args: argparse.Namespace) -> int:
    from urnet_core.training import distributed as dist_util

    # Under torchrun the process group started for this command ends with it.
    return dist_util.run_command(_train, args)


def _train(args: argparse.Namespace) -> int:
    from urnet_core.training import distributed as dist_util
    from urnet_core.data.manifest import load_dataset
    from urnet_core.study.pipeline import fit_and_evaluate

    config = _config(args)
    bundle = load_dataset(args.manifest, scale=args.scale)
    weights = load_npy(args.weights, mmap=False) if args.weights else None
    targets = None
    if args.targets:
        from urnet_core.cli.weights import resolve_targets

        targets_path = resolve_targets(args.targets)  # a `urnet weights` folder names its targets file
        if targets_path.suffix == ".npz":  # compact eq. 10 targets (LabelPairs), written at scale
            from urnet_core.training.targets import load_label_pairs

            targets = load_label_pairs(targets_path)
        else:
            targets = load_npy(targets_path, mmap=False)
    metrics, _ = fit_and_evaluate(bundle, bundle.train, config, args.run_dir, sample_weights=weights,
                                  soft_targets=targets, init_weights=args.init_weights, resume=not args.no_resume,
                                  progress=not args.no_progress, distributed=True)
    if not dist_util.is_main():
        return 0
    run_dir = Path(args.run_dir)
    print(
        f"trained {config.model} for {config.epochs} epochs on {len(bundle.train)} images: "
        f"test top1 {metrics['top1']:.4f}, top5 {metrics['top5']:.4f} -> {run_dir}"
    )
    return 0
