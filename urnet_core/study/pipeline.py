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

#: Files of a baseline stage (:func:`baseline`), read back with :func:`load_baseline`.
BASELINE_FILES = {"features": "features.npy", "train_probs": "train_probs.npy"}
TEST_METRICS = "test_metrics.json"
TEST_PROBS = "test_probs.npy"
#: Label targets of eq. 10 in a weights stage: dense ``(n, C)`` rows, or compact pairs at scale.
DENSE_TARGETS, COMPACT_TARGETS = "label_targets.npy", "label_targets.npz"


# --------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=8)
def _load_bundle_cached(manifest: str, manifest_digest: str, scale: str | None, draw: int | None):
    from urnet_core.data.manifest import load_dataset, load_manifest

    return load_dataset(load_manifest(manifest), scale=scale, benchmark_seed=draw)


def benchmark_draw(study: StudyConfig, seed: int | None) -> int | None:
    """The benchmark seed run seed ``seed`` trains on: the manifest's seed + ``seed`` when
    ``run.draw_per_seed`` and the manifest generates a benchmark; None = the manifest's own draw."""
    from urnet_core.data.manifest import load_manifest

    if seed is None or not study.run.draw_per_seed:
        return None
    bench = load_manifest(study.data.manifest).benchmark
    if bench is None:
        return None
    return int(bench.get("seed", 0)) + int(seed)


def load_bundle(study: StudyConfig, seed: int | None = None):
    """Load the dataset run seed ``seed`` trains on (:func:`benchmark_draw`; the first seed's
    draw when None), memoised per process and keyed by the manifest's content."""
    path = Path(study.data.manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    draw = benchmark_draw(study, study.run.seeds[0] if seed is None else seed)
    return _load_bundle_cached(str(path), file_hash(path), study.data.scale, draw)


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
                     progress: bool = False, distributed: bool = False, method=None,
                     validation_table: pd.DataFrame | None = None):
    """Train on ``table``, evaluate on the bundle's test split and write the run folder.

    With ``validation_table`` (the noisy validation rows a selection scores) the model also
    predicts those rows: ``validation_probs.npy`` and ``validation_metrics.json`` (against
    their observed labels).

    ``method`` (a :class:`~urnet_core.training.methods.Method`, or a peer's name for
    :func:`urnet_core.peers.make_method` with its defaults) trains that method in
    :func:`urnet_core.training.loop.train`'s harness instead of weighted cross entropy; it takes
    no ``sample_weights`` or ``soft_targets`` (ValueError). Under torchrun (``distributed``)
    every rank trains and evaluates its shard; rank 0 alone writes. Returns ``(test_metrics, model)``.
    """
    from urnet_core.training import distributed as dist_util
    from urnet_core.training.inference import evaluate
    from urnet_core.training.loop import train

    if isinstance(method, str):
        from urnet_core.peers import make_method

        method = make_method(method)
    run_dir = Path(run_dir)
    result = train(make_dataset(bundle, table, train=True, model=config.model), num_classes=bundle.num_classes,
                   config=config, in_channels=bundle.in_channels, sample_weights=sample_weights,
                   soft_targets=soft_targets, eval_dataset=None, run_dir=run_dir, resume=resume,
                   weights_path=init_weights, progress=progress, method=method)
    device = next(result.model.parameters()).device
    splits = {"test": bundle.test} if validation_table is None else {"validation": validation_table,
                                                                        "test": bundle.test}
    for split, split_table in splits.items():
        metrics, probs = evaluate(result.model, make_dataset(bundle, split_table, train=False, model=config.model),
                                  num_classes=bundle.num_classes, batch_size=max(config.batch_size, 256),
                                  device=device, progress=progress and dist_util.is_main(), distributed=distributed)
        if dist_util.is_main():
            save_npy(run_dir / f"{split}_probs.npy", np.asarray(probs, dtype=np.float32))
            write_json(run_dir / f"{split}_metrics.json",
                       {**metrics, "train_loss": result.final_metrics.get("train_loss")})
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

    bundle = load_bundle(study, seed)
    config = study.train_config(seed)
    key = stage_key("baseline", data_key(bundle), config, study.data.init_weights)

    def compute(folder: Path) -> dict:
        metrics, model = fit_and_evaluate(bundle, bundle.train, config, folder, init_weights=study.data.init_weights)
        features, probs = extract_features(model, make_dataset(bundle, bundle.train, train=False, model=config.model),
                                           batch_size=512, device=next(model.parameters()).device)
        save_npy(folder / BASELINE_FILES["features"], np.asarray(features, dtype=np.float32))
        save_npy(folder / BASELINE_FILES["train_probs"], np.asarray(probs, dtype=np.float32))
        return _summary(metrics, len(bundle.train))

    folder, _ = run_stage(study.run.run_dir, "baseline", key, compute, force=force,
                          description={"seed": seed, "model": config.model})
    return folder


def selection_baseline(study: StudyConfig, seed: int, *, force: bool = False) -> Path:
    """The baseline of a selection seed: plain cross entropy on the training rows minus the
    noisy validation split (:func:`validation_mask`), so the candidates fine-tuned from it
    (``run.protocol='finetune'``) never saw the rows they are scored on."""
    bundle = load_bundle(study, seed)
    config = study.train_config(seed)
    key = stage_key("selection_baseline", data_key(bundle), config, study.data.init_weights,
                    study.run.validation_fraction)

    def compute(folder: Path) -> dict:
        val = validation_mask(study, bundle.train["label"].to_numpy(), seed)
        rest = bundle.train.loc[~val].reset_index(drop=True)
        metrics, _ = fit_and_evaluate(bundle, rest, config, folder, init_weights=study.data.init_weights,
                                      validation_table=bundle.train.loc[val].reset_index(drop=True))
        return _summary(metrics, len(rest))

    folder, _ = run_stage(study.run.run_dir, "selection_baseline", key, compute, force=force,
                          description={"seed": seed})
    return folder


def load_baseline(folder: str | Path, name: str) -> np.ndarray:
    """One array of a baseline stage folder: ``"features"`` (n, D) or ``"train_probs"`` (n, C)."""
    if name not in BASELINE_FILES:
        raise KeyError(f"baseline array {name!r}: one of {sorted(BASELINE_FILES)}")
    return load_npy(Path(folder) / BASELINE_FILES[name], mmap=False)


def load_test_metrics(folder: str | Path) -> dict:
    """The test metrics of a run folder."""
    return read_json(Path(folder) / TEST_METRICS)


# --------------------------------------------------------------------------- weights
def label_vectors(study: StudyConfig, bundle) -> np.ndarray:
    """fastText vectors of the class names (a real ``.bin`` when given, else the shipped corpus)."""
    from urnet_core.reweight.text import label_vectors as _label_vectors

    return _label_vectors(bundle.class_names, model_path=study.data.text_model_path,
                          cache_dir=Path(study.run.run_dir) / "text")


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id in ``[0, k)`` of every row, stratified by label (each class split evenly), seeded."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7919]))
    folds = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        folds[rng.permutation(rows)] = np.arange(rows.size) % k
    return folds


def validation_mask(study: StudyConfig, labels: np.ndarray, seed: int) -> np.ndarray:
    """The noisy validation rows: ``run.validation_fraction`` of the training rows, stratified
    by (observed) label and seeded, on which configurations are selected (never the test split)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 104729]))
    mask = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        take = int(round(rows.size * study.run.validation_fraction))
        mask[rng.choice(rows, size=min(take, rows.size - 1), replace=False)] = True
    return mask


def cross_fit(study: StudyConfig, seed: int, *, force: bool = False) -> Path:
    """K-fold cross-fitting of the baseline: out-of-sample signals for every training row.

    The training rows are split into ``run.cross_fit_folds`` folds (stratified, seeded); for
    each fold a baseline (same config, its own seed) trains on the other folds and predicts the
    held-out rows. Artefacts: ``oof_probs.npy`` (n, C), ``oof_features.npy`` (n, D; each row in
    the feature space of the fold model that held it out, so compare rows within a fold only)
    and ``folds.npy`` (n,). cleanlab asks for such out-of-sample probabilities; a network's
    in-sample predictions have fitted the very labels they are meant to judge.
    """
    from urnet_core.training.features import extract_features

    bundle = load_bundle(study, seed)
    k = study.run.cross_fit_folds
    config = study.train_config(seed)
    key = stage_key("cross_fit", data_key(bundle), config, k, study.data.init_weights)

    def compute(folder: Path) -> dict:
        table = bundle.train
        folds = stratified_folds(table["label"].to_numpy(), k, seed)
        probs = features = None
        fold_metrics = []
        for f in range(k):
            held = folds == f
            fold_config = dataclasses.replace(config, seed=int(np.random.SeedSequence([seed, f, 31]).generate_state(1)[0] % 2**31))
            metrics, model = fit_and_evaluate(bundle, table.loc[~held].reset_index(drop=True), fold_config,
                                              folder / f"fold{f}", init_weights=study.data.init_weights)
            feats, p = extract_features(model, make_dataset(bundle, table.loc[held].reset_index(drop=True), train=False,
                                                            model=config.model),
                                        batch_size=512, device=next(model.parameters()).device)
            if probs is None:
                probs = np.zeros((len(table), p.shape[1]), dtype=np.float32)
                features = np.zeros((len(table), feats.shape[1]), dtype=np.float32)
            probs[held], features[held] = p, feats
            fold_metrics.append(metrics["top1"])
        save_npy(folder / "oof_probs.npy", probs)
        save_npy(folder / "oof_features.npy", features)
        save_npy(folder / "folds.npy", folds)
        labels = table["label"].to_numpy()
        return {"folds": k, "fold_test_top1": fold_metrics,
                "oof_agreement": float((probs.argmax(1) == labels).mean())}

    folder, _ = run_stage(study.run.run_dir, "cross_fit", key, compute, force=force, description={"seed": seed})
    return folder


def every_strategy(study: StudyConfig):
    """``study.urnet`` with every strategy on (the top rung of ``URNetConfig.ladder()``): the
    weights stage computes them all once, and the ablation's rows pick which to combine."""
    fields = {f.name: getattr(study.urnet, f.name) for f in dataclasses.fields(study.urnet)}  # shallow
    return type(study.urnet).full(**fields)


SIGNALS = ("in_sample", "cross_fit")
#: Bumped when the weights stage writes other files (in its cache key: an older folder is not reused).
WEIGHTS_FORMAT = 2


def weight_components(study: StudyConfig, seed: int, *, signals: str = "in_sample", force: bool = False) -> Path:
    """Compute every URNet strategy's per-instance weights once per seed.

    ``signals="in_sample"`` (the paper): the predictions, features and confidences come from
    the baseline trained on all training rows. ``"cross_fit"``: from :func:`cross_fit`: the
    confusion matrix and label targets use out-of-sample predictions, and cluster and instance
    weights are computed fold by fold on the held-out rows in the feature space of the model
    that never saw them; the extra component ``instance_combined`` mixes the paper's
    image-text confidence with the out-of-sample confidence of the label
    (:func:`~urnet_core.reweight.instance_weight.combined_instance_weights`).

    The hyperparameters are ``study.urnet``'s (alpha, class_scheme, top_k, n_clusters,
    cluster_count, top_r, instance_epochs, beta, kmeans_backend). Artefacts:
    ``class_balanced.npy`` (wC of each instance's label with ``study.urnet.class_scheme``;
    the name is kept for the default scheme), ``class_literal.npy`` (eq. 3 as printed),
    ``cluster.npy`` (wG with ``study.urnet.cluster_count``), ``cluster_own_class.npy`` (wG
    counting the class's own instances only), ``instance.npy`` (wI), ``self_confidence.npy``
    (the probability the signal's baseline gives each observed label), with cross-fitted
    signals also ``oof_margin.npy`` (that probability minus the strongest other class's),
    ``oof_predicted.npy`` (the fold model's class) and URNet+'s ``clean_probability.npy``
    (:mod:`urnet_core.reweight.clean_probability`), and the eq. 10 targets
    (``label_targets.npy`` dense, or ``label_targets.npz`` compact above
    :data:`~urnet_core.reweight.compose.DENSE_TARGET_LIMIT` values; read them with
    :func:`load_label_targets`). The summary records the k-means backend actually used.
    """
    from urnet_core.reweight.class_weight import class_weights
    from urnet_core.reweight.clean_probability import clean_probability_from_signals, study_signals
    from urnet_core.reweight.compose import compose_weights, use_compact_targets
    from urnet_core.reweight.instance_weight import combined_instance_weights
    from urnet_core.reweight.kmeans import resolve_backend
    from urnet_core.reweight.label_weight import label_pairs
    from urnet_core.data.targets import save_label_pairs

    if signals not in SIGNALS:
        raise ValueError(f"signals must be one of {SIGNALS}, got {signals!r}")
    bundle = load_bundle(study, seed)
    source = baseline(study, seed) if signals == "in_sample" else cross_fit(study, seed)
    cfg = every_strategy(study)
    backend = resolve_backend(cfg.kmeans_backend, batched=True)
    compact = use_compact_targets(len(bundle.train), bundle.num_classes)
    sources = [read_json(source / "stage.json")["key"]]
    if signals == "cross_fit":  # URNet+'s clean probability also reads the in-sample baseline
        sources.append(read_json(baseline(study, seed) / "stage.json")["key"])
    key = stage_key("weights", WEIGHTS_FORMAT, sources, signals, cfg, backend, compact,
                    study.data.text_model_path)

    def compute(folder: Path) -> dict:
        table = bundle.train
        labels = table["label"].to_numpy()
        n, num_classes = len(table), bundle.num_classes
        vectors = label_vectors(study, bundle)
        if signals == "in_sample":
            features = load_npy(source / "features.npy", mmap=False)
            probs = load_npy(source / "train_probs.npy", mmap=False)
            folds = np.zeros(n, dtype=np.int64)
        else:
            features = load_npy(source / "oof_features.npy", mmap=False)
            probs = load_npy(source / "oof_probs.npy", mmap=False)
            folds = load_npy(source / "folds.npy", mmap=False)
            in_sample_probs = load_npy(baseline(study, seed) / "train_probs.npy", mmap=False)
        predicted = probs.argmax(1)
        comps = {name: np.zeros(n, dtype=np.float32) for name in ("class", "cluster", "instance", "cluster_own_class")}
        for f in np.unique(folds):
            rows = np.flatnonzero(folds == f)
            # Both counts of eq. 7 (the study's and the class's own) from one clustering per fold.
            ws = compose_weights(dataclasses.replace(cfg, label_reweight=False), labels=labels[rows],
                                 num_classes=num_classes, features=features[rows], pred_probs=predicted[rows],
                                 label_vectors=vectors, ranks=table["rank"].to_numpy()[rows],
                                 sources=table["source"].to_numpy()[rows], seed=seed, cluster_counts=("class",))
            for name in ("class", "cluster", "instance"):
                comps[name][rows] = ws.components[name]
            comps["cluster_own_class"][rows] = ws.cluster_by_count["class"]
        # Class weights from the whole table (folds are stratified, so per fold they agree anyway).
        scheme_cfg = dataclasses.replace(cfg, cluster_reweight=False, instance_reweight=False, label_reweight=False)
        comps["class"] = compose_weights(scheme_cfg, labels=labels, num_classes=num_classes).components["class"]
        comps["class_literal"] = class_weights(labels, num_classes, alpha=cfg.alpha, scheme="literal")[labels]
        confidence = probs[np.arange(n), labels].astype(np.float64)
        comps["self_confidence"] = confidence.astype(np.float32)
        if signals == "cross_fit":
            comps["instance_combined"] = combined_instance_weights(np.clip(comps["instance"], 0, 1),
                                                                   np.clip(confidence, 0, 1)).astype(np.float32)
            fused_inputs = study_signals(labels, probs, in_sample_probs, comps["instance"], comps["cluster_own_class"])
            comps["oof_margin"] = fused_inputs["oof_margin"].astype(np.float32)
            comps["clean_probability"] = clean_probability_from_signals(fused_inputs, labels, seed=seed)
            comps["oof_predicted"] = predicted.astype(np.float32)
        for name, values in comps.items():
            save_npy(folder / f"{COMPONENT_FILES[name]}.npy", values)
        pairs = label_pairs(labels, predicted, num_classes, beta=cfg.beta)
        if compact:
            save_label_pairs(folder / COMPACT_TARGETS, pairs)
        else:
            save_npy(folder / DENSE_TARGETS, pairs.expand(labels, num_classes))
        stats = {name: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                 for name, v in comps.items()}
        return {"components": stats, "signals": signals, "kmeans_backend": backend, "alpha": cfg.alpha,
                "compact_targets": compact}

    folder, _ = run_stage(study.run.run_dir, "weights", key, compute, force=force,
                          description={"seed": seed, "signals": signals})
    return folder


#: Strategy name of an ablation row -> file written by :func:`weight_components`.
COMPONENT_FILES = {"class": "class_balanced", "class_literal": "class_literal", "cluster": "cluster",
                   "cluster_own_class": "cluster_own_class", "instance": "instance",
                   "instance_combined": "instance_combined", "self_confidence": "self_confidence",
                   "oof_margin": "oof_margin", "clean_probability": "clean_probability",
                   "oof_predicted": "oof_predicted"}


def load_component(folder: str | Path, name: str) -> np.ndarray:
    """One strategy's per-instance weights from a weights stage folder."""
    return load_npy(Path(folder) / f"{COMPONENT_FILES[name]}.npy", mmap=False)


def load_label_targets(folder: str | Path):
    """Eq. 10 targets of a weights stage (dense ``(n, C)`` array or compact ``LabelPairs``)."""
    from urnet_core.data.targets import load_label_pairs

    folder = Path(folder)
    if (folder / COMPACT_TARGETS).is_file():
        return load_label_pairs(folder / COMPACT_TARGETS)
    return load_npy(folder / DENSE_TARGETS, mmap=False)


def subset_targets(targets, keep: np.ndarray):
    """Rows ``keep`` (bool mask) of dense or compact targets."""
    from urnet_core.data.targets import LabelPairs

    if targets is None:
        return None
    if isinstance(targets, LabelPairs):
        return LabelPairs(np.asarray(targets.predicted)[keep], targets.beta)
    return targets[keep]


def describe(study: StudyConfig, bundle) -> dict[str, Any]:
    """A short description of the data a study ran on (for the report), with the classes the
    training split cannot teach (:func:`urnet_core.data.coverage.class_coverage`)."""
    from urnet_core.data.coverage import class_coverage

    train = bundle.train
    counts = np.bincount(train["label"].to_numpy(), minlength=bundle.num_classes)
    nonzero = counts[counts > 0]
    out = {"name": bundle.name, "manifest": Path(study.data.manifest).name, "scale": study.data.scale,
           "train_rows": int(len(train)), "test_rows": int(len(bundle.test)), "classes": int(bundle.num_classes),
           "imbalance_ratio": float(nonzero.max() / nonzero.min()) if nonzero.size else float("nan"),
           "ground_truth": has_ground_truth(train), "seeds": list(study.run.seeds)}
    # The same numbers as `urnet data describe` and notebook 00 (one function computes them).
    out["class_coverage"] = class_coverage(bundle).to_dict()
    if has_ground_truth(train):
        out["noise_mix"] = {str(k): float(v) for k, v in train["noise_type"].value_counts(normalize=True).items()}
    return out
