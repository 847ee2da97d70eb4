"""The URNet pipeline as cached stages: data -> baseline -> weights -> a trained method.

This module is the composition root: it alone builds datasets, trains, evaluates and writes
the artefacts of a run (the CLI's ``urnet train``, the notebooks and the ablation call it).
Every function takes the one :class:`~urnet_core.config.StudyConfig` and caches its artefacts
with :func:`urnet_core.study.stages.run_stage`, so notebooks can call them in any order and a
rerun skips finished work (see ``docs/DESIGN.md``, section 4).

Artefacts of one trained model (a *run folder*), whoever trains it:

- ``checkpoint.pt``: the trainer's checkpoint (model, optimizer, epoch; resumable);
- ``metrics.json``: the trainer's per-epoch history;
- ``test_metrics.json``: metrics on the test split (:func:`urnet_core.training.metrics.classification_metrics`);
- ``test_probs.npy``: ``(n_test, C)`` predicted probabilities.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urnet_core.config import StudyConfig
from urnet_core.study.stages import run_stage, stage_key
from urnet_core.utils.io import file_hash, load_npy, read_json, save_npy, stable_hash, write_json

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
TEST_METRICS = "test_metrics.json"
TEST_PROBS = "test_probs.npy"
#: Label targets of eq. 10 in a weights stage: dense ``(n, C)`` rows, or compact pairs at scale.
DENSE_TARGETS, COMPACT_TARGETS = "label_targets.npy", "label_targets.npz"


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _load_bundle_cached(manifest: str, manifest_digest: str, scale: str | None):
    from urnet_core.data.manifest import load_dataset, load_manifest

    return load_dataset(load_manifest(manifest), scale=scale)


def load_bundle(study: StudyConfig):
    """Load the manifest's dataset (memoised per process, keyed by the manifest's content)."""
    path = Path(study.data.manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return _load_bundle_cached(str(path), file_hash(path), study.data.scale)


def has_ground_truth(table: pd.DataFrame) -> bool:
    """Whether the training table says which rows are noisy (a ``noise_type`` column, given or
    derived from ``true_label``); real web data usually has none."""
    return "noise_type" in table.columns


def data_key(bundle) -> str:
    """Hash of the data a study trains and tests on (tables and in-memory images), memoised on the bundle."""
    key = getattr(bundle, "_urnet_data_key", None)
    if key is None:
        images = bundle.images if bundle.images is not None else str(bundle.root)
        key = stable_hash(bundle.train, bundle.test, images)
        bundle._urnet_data_key = key
    return key


def make_dataset(bundle, table: pd.DataFrame, *, train: bool, model: str = "small_cnn"):
    """Torch dataset over ``table`` with the bundle's images and ``model``'s default transforms
    (``train=True`` adds the augmentation)."""
    from urnet_core.data.datasets import default_transforms

    transform = default_transforms(model, train=train, in_channels=bundle.in_channels, image_size=bundle.image_size)
    return bundle.dataset(table, transform)


# --------------------------------------------------------------------------- one trained model
def fit_and_evaluate(bundle, table: pd.DataFrame, config, run_dir: str | Path, *, sample_weights=None,
                     soft_targets=None, init_weights: str | None = None, resume: bool = True,
                     progress: bool = False, distributed: bool = False, trainer=None):
    """Train on ``table``, evaluate on the bundle's test split and write the run folder.

    ``trainer`` (default :func:`urnet_core.training.loop.train`) may be a peer's training
    function with the same signature. Under torchrun (``distributed``) every rank trains and
    evaluates its shard; rank 0 alone writes. Returns ``(test_metrics, model)``.
    """
    from urnet_core.training import distributed as dist_util
    from urnet_core.training.loop import evaluate, train

    trainer = trainer or train
    run_dir = Path(run_dir)
    result = trainer(make_dataset(bundle, table, train=True, model=config.model), num_classes=bundle.num_classes,
                     config=config, in_channels=bundle.in_channels, sample_weights=sample_weights,
                     soft_targets=soft_targets, eval_dataset=None, run_dir=run_dir, resume=resume,
                     weights_path=init_weights, progress=progress)
    test_ds = make_dataset(bundle, bundle.test, train=False, model=config.model)
    device = next(result.model.parameters()).device
    metrics, test_probs = evaluate(result.model, test_ds, num_classes=bundle.num_classes,
                                   batch_size=max(config.batch_size, 256), device=device,
                                   progress=progress and dist_util.is_main(), distributed=distributed)
    if dist_util.is_main():
        save_npy(run_dir / TEST_PROBS, np.asarray(test_probs, dtype=np.float32))
        write_json(run_dir / TEST_METRICS, {**metrics, "train_loss": result.final_metrics.get("train_loss")})
    return metrics, result.model


def _summary(metrics: dict, n_train: int) -> dict:
    return {"metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))}, "n_train": int(n_train)}


# --------------------------------------------------------------------------- baseline
def baseline(study: StudyConfig, seed: int, *, force: bool = False) -> Path:
    """Train the baseline (plain cross entropy) and extract its train features and predictions.

    Artefacts: the run folder's (see the module docstring), ``features.npy`` (n, D) and
    ``train_probs.npy`` (n, C) on the training table (no augmentation).
    """
    from urnet_core.training.features import extract_features

    bundle = load_bundle(study)
    config = study.train_config(seed)
    key = stage_key("baseline", data_key(bundle), config, study.data.init_weights)

    def compute(folder: Path) -> dict:
        metrics, model = fit_and_evaluate(bundle, bundle.train, config, folder, init_weights=study.data.init_weights)
        features, probs = extract_features(model, make_dataset(bundle, bundle.train, train=False, model=config.model),
                                           batch_size=512, device=next(model.parameters()).device)
        save_npy(folder / "features.npy", np.asarray(features, dtype=np.float32))
        save_npy(folder / "train_probs.npy", np.asarray(probs, dtype=np.float32))
        return _summary(metrics, len(bundle.train))

    folder, _ = run_stage(study.run.run_dir, "baseline", key, compute, force=force,
                          description={"seed": seed, "model": config.model})
    return folder


def load_test_metrics(folder: str | Path) -> dict:
    """The test metrics of a run folder."""
    return read_json(Path(folder) / TEST_METRICS)


# --------------------------------------------------------------------------- weights
def label_vectors(study: StudyConfig, bundle) -> np.ndarray:
    """fastText vectors of the class names (a real ``.bin`` when given, else the shipped corpus)."""
    from urnet_core.reweight.text import label_vectors as _label_vectors

    return _label_vectors(bundle.class_names, model_path=study.data.text_model_path,
                          cache_dir=Path(study.run.run_dir) / "text")


def every_strategy(study: StudyConfig):
    """``study.urnet`` with every strategy on: the weights stage computes them all once, and the
    ablation's rows pick which to combine."""
    return dataclasses.replace(study.urnet, class_reweight=True, cluster_reweight=True, instance_reweight=True,
                               label_reweight=True, bag_branch=True)


def weight_components(study: StudyConfig, seed: int, *, force: bool = False) -> Path:
    """Compute every URNet strategy's per-instance weights once per seed (from the baseline).

    The hyperparameters are ``study.urnet``'s (alpha, class_scheme, top_k, n_clusters,
    cluster_count, top_r, instance_epochs, beta, kmeans_backend). Artefacts:
    ``class_balanced.npy`` (wC of each instance's label with ``study.urnet.class_scheme``;
    the name is kept for the default scheme), ``class_literal.npy`` (eq. 3 as printed),
    ``cluster.npy`` (wG with ``study.urnet.cluster_count``), ``cluster_own_class.npy`` (wG
    counting the class's own instances only), ``instance.npy`` (wI) and the eq. 10 targets
    (``label_targets.npy`` dense, or ``label_targets.npz`` compact above
    :data:`~urnet_core.reweight.compose.DENSE_TARGET_LIMIT` values; read them with
    :func:`load_label_targets`). The summary records the k-means backend actually used.
    """
    from urnet_core.reweight.class_weight import class_weights
    from urnet_core.reweight.compose import compose_weights, use_compact_targets
    from urnet_core.reweight.kmeans import resolve_backend
    from urnet_core.training.targets import LabelPairs, save_label_pairs

    bundle = load_bundle(study)
    base = baseline(study, seed)
    cfg = every_strategy(study)
    own_class_cfg = dataclasses.replace(cfg, class_reweight=False, instance_reweight=False, label_reweight=False,
                                        cluster_count="class")
    backend = resolve_backend(cfg.kmeans_backend, batched=True)
    compact = use_compact_targets(len(bundle.train), bundle.num_classes)
    key = stage_key("weights", read_json(base / "stage.json")["key"], cfg, backend, compact, study.data.text_model_path)

    def compute(folder: Path) -> dict:
        table = bundle.train
        vectors = label_vectors(study, bundle)
        features = load_npy(base / "features.npy", mmap=False)
        probs = load_npy(base / "train_probs.npy", mmap=False)
        labels = table["label"].to_numpy()
        ws = compose_weights(cfg, labels=labels, num_classes=bundle.num_classes, features=features,
                             pred_probs=probs, label_vectors=vectors, ranks=table["rank"].to_numpy(),
                             sources=table["source"].to_numpy(), seed=seed)
        comps = dict(ws.components)
        comps["class_literal"] = class_weights(labels, bundle.num_classes, alpha=cfg.alpha, scheme="literal")[labels]
        comps["cluster_own_class"] = compose_weights(own_class_cfg, labels=labels, num_classes=bundle.num_classes,
                                                     features=features, pred_probs=probs, seed=seed).components["cluster"]
        for name, file in COMPONENT_FILES.items():
            save_npy(folder / f"{file}.npy", comps[name])
        if isinstance(ws.soft_targets, LabelPairs):
            save_label_pairs(folder / COMPACT_TARGETS, ws.soft_targets)
        else:
            save_npy(folder / DENSE_TARGETS, ws.soft_targets)
        stats = {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                 for name, v in comps.items()}
        return {"components": stats, "kmeans_backend": backend, "alpha": cfg.alpha,
                "compact_targets": isinstance(ws.soft_targets, LabelPairs)}

    folder, _ = run_stage(study.run.run_dir, "weights", key, compute, force=force, description={"seed": seed})
    return folder


#: Strategy name of an ablation row -> file written by :func:`weight_components`.
COMPONENT_FILES = {"class": "class_balanced", "class_literal": "class_literal", "cluster": "cluster",
                   "cluster_own_class": "cluster_own_class", "instance": "instance"}


def load_component(folder: str | Path, name: str) -> np.ndarray:
    """One strategy's per-instance weights from a weights stage folder."""
    return load_npy(Path(folder) / f"{COMPONENT_FILES[name]}.npy", mmap=False)


def load_label_targets(folder: str | Path):
    """Eq. 10 targets of a weights stage (dense ``(n, C)`` array or compact ``LabelPairs``)."""
    from urnet_core.training.targets import load_label_pairs

    folder = Path(folder)
    if (folder / COMPACT_TARGETS).is_file():
        return load_label_pairs(folder / COMPACT_TARGETS)
    return load_npy(folder / DENSE_TARGETS, mmap=False)


def subset_targets(targets, keep: np.ndarray):
    """Rows ``keep`` (bool mask) of dense or compact targets."""
    from urnet_core.training.targets import LabelPairs

    if targets is None:
        return None
    if isinstance(targets, LabelPairs):
        return LabelPairs(np.asarray(targets.predicted)[keep], targets.beta)
    return targets[keep]


def dense_label_targets(targets, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Dense ``(n, C)`` rows of either target form (for small tables and figures)."""
    from urnet_core.training.targets import LabelPairs

    return targets.expand(labels, num_classes) if isinstance(targets, LabelPairs) else np.asarray(targets)


def describe(study: StudyConfig, bundle) -> dict[str, Any]:
    """A short description of the data a study ran on (for the report)."""
    train = bundle.train
    counts = np.bincount(train["label"].to_numpy(), minlength=bundle.num_classes)
    nonzero = counts[counts > 0]
    out = {"name": bundle.name, "manifest": Path(study.data.manifest).name, "scale": study.data.scale,
           "train_rows": int(len(train)), "test_rows": int(len(bundle.test)), "classes": int(bundle.num_classes),
           "imbalance_ratio": float(nonzero.max() / nonzero.min()) if nonzero.size else float("nan"),
           "ground_truth": has_ground_truth(train), "seeds": list(study.run.seeds)}
    if has_ground_truth(train):
        out["noise_mix"] = {str(k): float(v) for k, v in train["noise_type"].value_counts(normalize=True).items()}
    return out
