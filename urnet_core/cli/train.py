"""``urnet train``: train a backbone on a manifest's training split, optionally reweighted.

::

    urnet train --manifest M.yaml --run-dir DIR [--config cfg.yaml|cfg.json] [--epochs N] [--model NAME]
                [--sample-weights W.npy] [--targets WEIGHTS_DIR|T.npy|T.npz] [--init-weights PATH]
                [--scale smoke | --smoke] [--no-resume] [--no-progress]

Two different "weights": ``--init-weights`` is a local torchvision state dict that initialises
the backbone (``data.init_weights`` of a study config; ``weights_path`` in the first notebooks),
``--sample-weights`` the per-instance loss weights URNet computes (``urnet weights``). The old
spelling ``--weights`` of the latter still works, with a deprecation message.

``--sample-weights`` is an (n,) ``.npy`` of per-instance weights and ``--targets`` the soft targets (eq. 10),
both in training-table row order: a ``urnet weights`` output folder (it reads whichever targets
file the folder's ``weights.json`` index names: ``targets.npy`` below 67M values, the compact
``targets.npz`` above), or either file's path; without them the run is the plain cross-entropy
baseline. ``--config`` is a YAML or JSON mapping of :class:`~urnet_core.training.loop.TrainConfig`
fields (or a study config, whose ``training`` section is used); ``--epochs``/``--model``/``--seed`` override it. The run directory receives
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

from urnet_core.utils.io import load_npy

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a backbone (baseline or reweighted URNet)",
        description=__doc__.split("::")[0].strip() + "\n\nExample (the baseline at smoke scale):\n"
                    "  urnet train --manifest data_manifests/digits_web.yaml --smoke --epochs 1 --run-dir runs/b")
    parser.add_argument("--manifest", required=True, help="data manifest (YAML)")
    parser.add_argument("--run-dir", required=True, help="folder for the checkpoint and metrics (a rerun resumes)")
    parser.add_argument("--config", help="YAML or JSON file of TrainConfig fields (or a study config: its "
                                         "training section)")
    parser.add_argument("--epochs", type=int, help="override config epochs")
    parser.add_argument("--model", help="override config model (small_cnn, resnet18, resnet50, resnext101_32x8d)")
    parser.add_argument("--seed", type=int, help="override config seed")
    parser.add_argument("--sample-weights", dest="sample_weights", metavar="W.npy",
                        help="(n,) .npy of per-instance loss weights in training-table order (`urnet weights` "
                             "writes weights.npy)")
    parser.add_argument("--weights", dest="deprecated_weights", metavar="W.npy",
                        help="deprecated spelling of --sample-weights")
    parser.add_argument("--targets", help="soft targets, training-table order: the `urnet weights` output folder "
                                          "(its weights.json names the targets file), or a (n, C) targets.npy, or the "
                                          "compact targets.npz (predicted class + beta) it writes at scale")
    parser.add_argument("--init-weights", help="local torchvision state dict initialising the backbone (never "
                                               "downloaded; data.init_weights in a study config)")
    add_scale_arguments(parser)
    parser.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=train_command)


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scale smoke`` and its shorthand ``--smoke`` (the same for data, train and features)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scale", choices=["smoke"], default=None,
                       help="shrink the data to the manifest's tiny smoke subset")
    group.add_argument("--smoke", dest="scale", action="store_const", const="smoke",
                       help="shorthand for --scale smoke")


def sample_weights_path(args: argparse.Namespace) -> str | None:
    """``--sample-weights``, or the deprecated ``--weights`` with a message saying so."""
    import sys

    old = getattr(args, "deprecated_weights", None)
    if old and args.sample_weights:
        raise ValueError("pass --sample-weights only (--weights is its deprecated spelling)")
    if old:
        print("urnet train: --weights is deprecated, use --sample-weights (per-instance loss weights; "
              "--init-weights initialises the backbone)", file=sys.stderr)
        return old
    return args.sample_weights


def _config(args: argparse.Namespace):
    from urnet_core.training.loop import TrainConfig

    values = {}
    if args.config:
        values = read_config_file(args.config)
        if not isinstance(values, dict):
            raise ValueError(f"{args.config}: expected a mapping of TrainConfig fields")
        if "training" in values and isinstance(values["training"], dict):  # a study config
            values = values["training"]
    config = TrainConfig.from_dict(values, source=args.config or "config")
    overrides = {k: getattr(args, k) for k in ("epochs", "model", "seed") if getattr(args, k) is not None}
    return dataclasses.replace(config, **overrides)


def read_config_file(path: str | Path):
    """A YAML or JSON file's content (JSON by the .json suffix, YAML otherwise), or a one-line error."""
    import json

    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None


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
    weights_path = sample_weights_path(args)
    weights = load_npy(weights_path, mmap=False) if weights_path else None
    targets = None
    if args.targets:
        from urnet_core.cli.weights import resolve_targets

        targets_path = resolve_targets(args.targets)  # a `urnet weights` folder names its targets file
        if targets_path.suffix == ".npz":  # compact eq. 10 targets (LabelPairs), written at scale
            from urnet_core.data.targets import load_label_pairs

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
