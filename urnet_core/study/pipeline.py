"""The URNet pipeline as cached stages: data -> baseline -> weights -> final training.

Each function here is one stage of DESIGN.md section 4 and caches its artefacts with
:func:`urnet_core.study.stages.run_stage`, so notebooks can call them in any order and a rerun skips
finished work. ``StudySettings`` holds everything a study run depends on.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urnet_core.utils.io import file_hash, load_npy, read_json, save_npy, stable_hash, write_json
from urnet_core.study.stages import run_stage, stage_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySettings:
    """Parameters of one study run (the notebooks' ``parameters`` cell maps onto these).

    ``scale="smoke"`` shrinks the data (see the manifest loader); ``epochs`` is the training
    length of every model (baseline and final), as in a fair ablation.
    """

    manifest: str = "data_manifests/fashion_mnist_web.yaml"
    scale: str | None = None
    run_dir: str = "runs/default"
    seeds: tuple[int, ...] = (0, 1, 2)
    model: str = "small_cnn"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    kmeans_backend: str = "auto"
    top_r: int = 30
    text_model_path: str | None = None
    weights_path: str | None = None
    n_jobs: int = 2

    @classmethod
    def from_parameters(cls, params: dict[str, Any]) -> "StudySettings":
        """Build settings from a notebook's parameters (e.g. ``globals()``); unknown names are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in params.items() if k in names}
        if "seeds" in values:
            values["seeds"] = tuple(int(s) for s in values["seeds"])
        return cls(**values)

    def with_overrides(self, **kwargs: Any) -> "StudySettings":
        return dataclasses.replace(self, **{k: v for k, v in kwargs.items() if v is not None})


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _load_bundle_cached(manifest: str, manifest_digest: str, scale: str | None):
    from urnet_core.data.manifest import load_dataset, load_manifest

    return load_dataset(load_manifest(manifest), scale=scale)


def load_bundle(settings: StudySettings):
    """Load the manifest's dataset (memoised per process, keyed by the manifest's content)."""
    path = Path(settings.manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    return _load_bundle_cached(str(path), file_hash(path), settings.scale)


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


def train_config(settings: StudySettings, seed: int, **overrides: Any):
    from urnet_core.training.loop import TrainConfig

    return TrainConfig(model=settings.model, epochs=settings.epochs, batch_size=settings.batch_size,
                       lr=settings.lr, weight_decay=settings.weight_decay, seed=seed,
                       eval_every=settings.epochs, **overrides)


def _train_and_save(bundle, settings: StudySettings, folder: Path, table: pd.DataFrame, config, *,
                    sample_weights=None, soft_targets=None) -> dict:
    """Train on ``table``, evaluate on the bundle's test split, save metrics/probs/model."""
    import torch

    from urnet_core.training.loop import evaluate, train

    result = train(make_dataset(bundle, table, train=True, model=settings.model), num_classes=bundle.num_classes, config=config,
                   in_channels=bundle.in_channels, sample_weights=sample_weights, soft_targets=soft_targets,
                   eval_dataset=None, run_dir=folder / "train", resume=True,
                   weights_path=settings.weights_path, progress=False)
    test_ds = make_dataset(bundle, bundle.test, train=False, model=settings.model)
    metrics, test_probs = evaluate(result.model, test_ds, num_classes=bundle.num_classes,
                                   batch_size=512, device="cpu")
    save_npy(folder / "test_probs.npy", np.asarray(test_probs, dtype=np.float32))
    from urnet_core.utils.io import atomic_path

    with atomic_path(folder / "model.pt") as tmp:
        torch.save(result.model.state_dict(), tmp)
    write_json(folder / "metrics.json", metrics)
    return {"metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
            "n_train": int(len(table))}


# --------------------------------------------------------------------------- baseline
def baseline(settings: StudySettings, seed: int, *, force: bool = False) -> Path:
    """Train the baseline (plain cross entropy) and extract its train features and predictions.

    Artefacts: ``test_probs.npy``, ``metrics.json``, ``model.pt``, ``features.npy`` (n, D) and
    ``train_probs.npy`` (n, C) on the training table (no augmentation).
    """
    bundle = load_bundle(settings)
    config = train_config(settings, seed)
    key = stage_key("baseline", data_key(bundle), config, settings.weights_path)

    def compute(folder: Path) -> dict:
        from urnet_core.training.features import extract_features
        from urnet_core.models.backbones import build_model
        import torch

        summary = _train_and_save(bundle, settings, folder, bundle.train, config)
        model = build_model(settings.model, bundle.num_classes, in_channels=bundle.in_channels)
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        features, probs = extract_features(model, make_dataset(bundle, bundle.train, train=False, model=settings.model),
                                           batch_size=512, device="cpu")
        save_npy(folder / "features.npy", np.asarray(features, dtype=np.float32))
        save_npy(folder / "train_probs.npy", np.asarray(probs, dtype=np.float32))
        return summary

    folder, _ = run_stage(settings.run_dir, "baseline", key, compute, force=force,
                          description={"seed": seed, "model": settings.model})
    return folder


def load_metrics(folder: Path) -> dict:
    return read_json(Path(folder) / "metrics.json")


# --------------------------------------------------------------------------- weights
def label_vectors(settings: StudySettings, bundle) -> np.ndarray:
    """fastText vectors of the class names (a real ``.bin`` when given, else the shipped corpus)."""
    from urnet_core.reweight.text import label_vectors as _label_vectors

    return _label_vectors(bundle.class_names, model_path=settings.text_model_path,
                          cache_dir=Path(settings.run_dir) / "text")


def weight_components(settings: StudySettings, seed: int, *, force: bool = False) -> Path:
    """Compute every URNet strategy's per-instance weights once per seed (from the baseline).

    Artefacts: ``class_balanced.npy``, ``class_literal.npy`` (wC of each instance's label),
    ``cluster.npy`` (wG, ``N_Gjl`` counting every pooled instance as in the paper),
    ``cluster_own_class.npy`` (wG counting the class's own instances only),
    ``instance.npy`` (wI), ``label_targets.npy`` (n, C soft targets, eq. 10).
    Rungs of the ablation combine these with :func:`urnet_core.reweight.compose.combine_components`.
    """
    from urnet_core.reweight.class_weight import class_weights
    from urnet_core.reweight.compose import URNetConfig, compose_weights

    bundle = load_bundle(settings)
    base = baseline(settings, seed)
    cfg = dataclasses.replace(URNetConfig.full(), kmeans_backend=settings.kmeans_backend, top_r=settings.top_r)
    own_class_cfg = URNetConfig(cluster_reweight=True, cluster_count="class", kmeans_backend=settings.kmeans_backend)
    key = stage_key("weights", read_json(base / "stage.json")["key"], cfg, own_class_cfg, settings.text_model_path)

    def compute(folder: Path) -> dict:
        table = bundle.train
        vectors = label_vectors(settings, bundle)
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
        save_npy(folder / "class_balanced.npy", comps["class"])
        save_npy(folder / "class_literal.npy", comps["class_literal"])
        save_npy(folder / "cluster.npy", comps["cluster"])
        save_npy(folder / "cluster_own_class.npy", comps["cluster_own_class"])
        save_npy(folder / "instance.npy", comps["instance"])
        save_npy(folder / "label_targets.npy", ws.soft_targets)
        return {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                for name, v in comps.items()}

    folder, _ = run_stage(settings.run_dir, "weights", key, compute, force=force, description={"seed": seed})
    return folder
