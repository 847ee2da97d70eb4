"""Score the URNet steps against the truth: weights as clean/noisy detectors, label changes,
cluster groups, bag saliency, per-class and per-size accuracy, and the tables the step pages show.

Pure functions from arrays (and the instances table) to numbers, as
:mod:`urnet_core.study.analysis` (which measures the five challenges of the data); the
notebooks call these and :mod:`urnet_core.study.plots_weights` draws them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from urnet_core.study.analysis import (
    NOISE_TYPE_ORDER, SIZE_GROUPS, _as_1d, _require_columns, noisy_mask, size_groups,
)
from urnet_core.utils.validation import as_features, as_labels, check_positive_int


# --------------------------------------------------------------------------- weights vs truth
def weight_auroc(weights: Any, is_noisy: Any) -> float:
    """AUROC of a weight as a detector of clean instances (clean should weigh more).

    1 = every clean instance outweighs every noisy one; 0.5 = no better than chance; below
    0.5 = the weight favours noisy instances. Computed with ``sklearn.metrics.roc_auc_score``
    with clean as the positive class.

    Parameters
    ----------
    weights : array of float, shape (n,)
    is_noisy : array of bool, shape (n,)
    """
    from sklearn.metrics import roc_auc_score

    w = _as_1d(weights, "weights").astype(np.float64)
    noisy = _as_1d(is_noisy, "is_noisy", w.shape[0])
    if noisy.dtype != bool:
        if not np.isin(noisy, (0, 1)).all():
            raise ValueError("is_noisy must be boolean (or 0/1)")
        noisy = noisy.astype(bool)
    if not np.isfinite(w).all():
        raise ValueError("weights contain NaN or inf")
    if noisy.all() or not noisy.any():
        raise ValueError("weight_auroc needs both clean and noisy instances")
    return float(roc_auc_score(~noisy, w))


def weights_by_noise_type(weights: Any, noise_type: Any) -> pd.DataFrame:
    """Summary of a weight within each noise type.

    Returns
    -------
    DataFrame, one row per noise type present (in :data:`NOISE_TYPE_ORDER`): ``noise_type``,
    ``n``, ``mean``, ``median``, ``std``, ``q10``, ``q90``.
    """
    w = _as_1d(weights, "weights").astype(np.float64)
    kinds = _as_1d(noise_type, "noise_type", w.shape[0]).astype(str)
    df = pd.DataFrame({"noise_type": kinds, "w": w})
    agg = df.groupby("noise_type").agg(n=("w", "size"), mean=("w", "mean"), median=("w", "median"),
                                       std=("w", "std"), q10=("w", lambda s: s.quantile(0.1)),
                                       q90=("w", lambda s: s.quantile(0.9)))
    order = [t for t in NOISE_TYPE_ORDER if t in agg.index] + sorted(t for t in agg.index if t not in NOISE_TYPE_ORDER)
    return agg.reindex(order).reset_index()


def weight_report(weights: Mapping[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """AUROC (clean vs wrong label) and per-noise-type means of several weights.

    Returns one row per weight name: ``weight``, ``auroc``, and ``mean_<type>`` per noise type.
    """
    noisy = noisy_mask(table)
    rows = []
    for name, w in weights.items():
        row: dict[str, Any] = {"weight": name, "auroc": weight_auroc(w, noisy)}
        if "noise_type" in table.columns:
            by = weights_by_noise_type(w, table["noise_type"].to_numpy())
            row.update({f"mean_{t}": m for t, m in zip(by["noise_type"], by["mean"])})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- label reweight
def label_change_summary(labels: Any, targets: Any, table: pd.DataFrame | None = None) -> dict:
    """What label reweighting (eq. 10) changes: how many targets, and whether rightly.

    Parameters
    ----------
    labels : array of int, shape (n,)
    targets : array, shape (n, C), or LabelPairs
        Soft targets (a row differs from one-hot of its label where the baseline disagrees), or
        their compact form (:class:`~urnet_core.data.targets.LabelPairs`, any size).
    table : instances table, optional
        With ground truth, the changed share among noisy and clean instances and how often the
        mixed-in class is the true one.

    Returns
    -------
    dict with ``n``, ``changed`` (count), ``changed_share``, ``mixed_class`` ((n,) the class mixed
    in, -1 where unchanged) and, with ground truth, ``changed_share_noisy``,
    ``changed_share_clean``, ``changed_noisy_share`` (precision: share of changed that are
    noisy) and ``mixed_is_true_share`` (share of changed whose mixed-in class is the true label).
    """
    from urnet_core.data.targets import LabelPairs

    if isinstance(targets, LabelPairs):
        labels = np.asarray(labels, dtype=np.int64)
        predicted = np.asarray(targets.predicted, dtype=np.int64)
        n = labels.shape[0]
        if predicted.shape[0] != n:
            raise ValueError(f"targets has {predicted.shape[0]} rows but labels has {n}")
        changed = (predicted != labels) & (targets.beta < 1.0)
        mixed = np.where(changed, predicted, -1)
    else:
        t = as_features(targets, name="targets").astype(np.float64, copy=False)
        labels = as_labels(labels, num_classes=t.shape[1])
        n = labels.shape[0]
        if t.shape[0] != n:
            raise ValueError(f"targets has {t.shape[0]} rows but labels has {n}")
        on_label = t[np.arange(n), labels]
        changed = on_label < 1.0 - 1e-6
        rest = t.copy()
        rest[np.arange(n), labels] = -np.inf
        mixed = np.where(changed, rest.argmax(1), -1)
    out: dict[str, Any] = {"n": int(n), "changed": int(changed.sum()),
                           "changed_share": float(changed.mean()) if n else float("nan"), "mixed_class": mixed}
    if table is not None and ("noise_type" in table.columns or "true_label" in table.columns):
        if len(table) != n:
            raise ValueError(f"table has {len(table)} rows but labels has {n}")
        noisy = noisy_mask(table)
        out["changed_share_noisy"] = float(changed[noisy].mean()) if noisy.any() else float("nan")
        out["changed_share_clean"] = float(changed[~noisy].mean()) if (~noisy).any() else float("nan")
        out["changed_noisy_share"] = float(noisy[changed].mean()) if changed.any() else float("nan")
        if "true_label" in table.columns:
            truth = table["true_label"].to_numpy()
            out["mixed_is_true_share"] = float((mixed[changed] == truth[changed]).mean()) if changed.any() else float("nan")
    return out


# --------------------------------------------------------------------------- cluster reweight
def cluster_group_table(details: Any, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One class's k-means groups (a ``ClassClusters`` from ``cluster_weights(return_details=True)``).

    Returns one row per group: ``group``, ``size`` (all pooled instances, ``N_Gjl``),
    ``own`` (instances of the class itself), ``weight`` (the weight the group gives the
    class's instances) and one column per pooled class with its count.
    """
    if details is None:
        raise ValueError("no clustering for this class (it has no instances)")
    classes = np.asarray(details.classes)
    names = [class_names[c] if class_names is not None else str(c) for c in classes]
    comp = np.asarray(details.composition)
    df = pd.DataFrame(comp, columns=names)
    df.insert(0, "weight", np.asarray(details.group_weights))
    df.insert(0, "own", comp[:, 0])
    df.insert(0, "size", comp.sum(1))
    df.insert(0, "group", np.arange(comp.shape[0]))
    return df


# --------------------------------------------------------------------------- C4 bag attention
def sample_bags(labels: Any, *, classes: Sequence[int], bags_per_class: int = 2, bag_size: int = 3,
                seed: int = 0) -> np.ndarray:
    """Random same-label bags (rows of indices) for showing the bag branch's saliency.

    Returns int64 (len(classes) * bags_per_class, bag_size); classes with fewer than
    ``bag_size`` instances are skipped.
    """
    labels = as_labels(labels)
    bag_size = check_positive_int(bag_size, "bag_size")
    bags_per_class = check_positive_int(bags_per_class, "bags_per_class")
    rng = np.random.default_rng(seed)
    bags = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if idx.size < bag_size:
            continue
        for _ in range(bags_per_class):
            bags.append(rng.choice(idx, size=bag_size, replace=False))
    if not bags:
        raise ValueError(f"no class among {list(classes)} has {bag_size} instances")
    return np.stack(bags).astype(np.int64)


def bag_saliency(branch: Any, features: Any, bags: Any) -> np.ndarray:
    """Softmax saliency of every instance of every bag under a bag attention branch.

    Parameters
    ----------
    branch : BagAttentionBranch
        ``forward(bag_features (B, Nb, D)) -> (logits, saliency)``.
    features : array, shape (n, D)
        Instance features (e.g. the model's penultimate features).
    bags : int array, shape (B, Nb)

    Returns
    -------
    ndarray of float64, shape (B, Nb), rows summing to 1.
    """
    import torch

    x = as_features(features).astype(np.float32, copy=False)
    bags = np.asarray(bags, dtype=np.int64)
    if bags.ndim != 2:
        raise ValueError(f"bags must be 2-D (B, Nb), got shape {bags.shape}")
    if bags.size and (bags.min() < 0 or bags.max() >= x.shape[0]):
        raise ValueError(f"bags hold indices outside [0, {x.shape[0]})")
    was_training = branch.training
    branch.eval()
    try:
        with torch.no_grad():
            _, sal = branch(torch.from_numpy(x[bags]))
    finally:
        branch.train(was_training)
    return sal.double().numpy()


def per_class_accuracy_table(per_class_accuracy: Sequence[Sequence[float]], counts: Any,
                             class_names: Sequence[str] | None = None, test_counts: Any | None = None) -> pd.DataFrame:
    """Per-class test accuracy over seeds beside the class's training size.

    Parameters
    ----------
    per_class_accuracy : sequence (seeds) of sequences (C,)
    counts : array, shape (C,)
        Training instances per class.

    test_counts : array, shape (C,), optional
        Test images per class: adds ``low``/``high``, the 95% Wilson interval of the class's
        accuracy over its test predictions pooled over seeds (inside [0, 1], unlike mean ± sd).

    Returns one row per class: ``class``, ``name``, ``count``, ``group`` (head/medium/tail),
    ``accuracy`` (mean over seeds), ``accuracy_std`` (and ``low``, ``high`` with ``test_counts``).
    """
    acc = np.asarray(per_class_accuracy, dtype=np.float64)
    if acc.ndim == 1:
        acc = acc[None, :]
    counts = _as_1d(counts, "counts", acc.shape[1])
    c = acc.shape[1]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(acc, axis=0) if np.isfinite(acc).any() else np.full(c, np.nan)
        std = np.nanstd(acc, axis=0) if acc.shape[0] > 1 else np.zeros(c)
    out = pd.DataFrame({
        "class": np.arange(c),
        "name": list(class_names) if class_names is not None else [str(i) for i in range(c)],
        "count": counts.astype(np.int64), "group": size_groups(counts) if c >= 3 else "head",
        "accuracy": mean, "accuracy_std": std,
    })
    if test_counts is not None:
        from urnet_core.study.stats import wilson_interval

        n = _as_1d(test_counts, "test_counts", c).astype(np.float64) * acc.shape[0]
        out["low"], out["high"] = wilson_interval(np.round(np.nan_to_num(mean) * n), n)
    return out


def accuracy_by_size(results: pd.DataFrame, class_counts: Any, test_counts: Any) -> pd.DataFrame:
    """Test accuracy of each method on the head / medium / tail thirds of the classes (by training
    size, :func:`size_groups`), with the 95% Wilson interval of a proportion (always inside [0, 1]).

    ``accuracy`` is the share of the group's test images classified correctly, pooled over the
    seeds (equal to the mean per-class accuracy when every class has as many test images);
    ``low``/``high`` its Wilson interval over those predictions. ``results``: rows with
    ``method`` and ``per_class_accuracy`` (one list per seed).

    Returns ``method``, ``group``, ``accuracy``, ``low``, ``high``, ``test_images`` (per seed).
    """
    from urnet_core.study.stats import wilson_interval

    counts = _as_1d(class_counts, "class_counts")
    tests = _as_1d(test_counts, "test_counts", counts.shape[0]).astype(np.float64)
    groups = size_groups(counts) if counts.shape[0] >= 3 else np.full(counts.shape[0], "head")
    rows = []
    for method, df in results.groupby("method", sort=False):
        acc = np.asarray([np.asarray(v, dtype=np.float64) for v in df["per_class_accuracy"]])
        for name in SIZE_GROUPS:
            members = groups == name
            if not members.any():
                continue
            hits = float(np.nansum(acc[:, members] * tests[members]))
            trials = float(tests[members].sum() * acc.shape[0])
            low, high = wilson_interval(round(hits), trials)
            rows.append({"method": method, "group": name, "accuracy": hits / trials if trials else np.nan,
                         "low": float(low), "high": float(high), "test_images": int(tests[members].sum())})
    return pd.DataFrame(rows)


def saliency_by_noise_type(bags: Any, saliency: Any, noise_type: Any) -> pd.DataFrame:
    """Does the bag branch attend to clean instances? Saliency of each noise type within bags.

    Parameters
    ----------
    bags : int array, shape (B, Nb)
    saliency : array, shape (B, Nb)
        Softmax saliency (rows sum to 1; uniform = ``1 / Nb``).
    noise_type : array of str, shape (n,)
        Ground truth of every instance.

    Returns
    -------
    DataFrame, one row per noise type present: ``noise_type``, ``n`` (instance slots),
    ``mean_saliency``, ``top_share`` (share of its slots that are the bag's most salient),
    ``uniform`` (``1 / Nb``, the reference).
    """
    bags = np.asarray(bags, dtype=np.int64)
    sal = np.asarray(saliency, dtype=np.float64)
    if bags.ndim != 2 or bags.shape != sal.shape:
        raise ValueError(f"bags {bags.shape} and saliency {sal.shape} must be 2-D of the same shape")
    kinds = _as_1d(noise_type, "noise_type").astype(str)
    if bags.size and (bags.min() < 0 or bags.max() >= kinds.shape[0]):
        raise ValueError(f"bags hold indices outside [0, {kinds.shape[0]})")
    top = np.zeros_like(sal, dtype=bool)
    top[np.arange(sal.shape[0]), sal.argmax(1)] = True
    df = pd.DataFrame({"noise_type": kinds[bags].ravel(), "s": sal.ravel(), "top": top.ravel().astype(float)})
    agg = df.groupby("noise_type").agg(n=("s", "size"), mean_saliency=("s", "mean"), top_share=("top", "mean"))
    order = [t for t in NOISE_TYPE_ORDER if t in agg.index] + sorted(t for t in agg.index if t not in NOISE_TYPE_ORDER)
    out = agg.reindex(order).reset_index()
    out["uniform"] = 1.0 / bags.shape[1]
    return out


def clean_counts(table: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """Representative (clean) instances per class (challenge C4).

    Returns one row per class: ``class``, ``n`` (observed), ``clean`` (ground truth clean),
    ``clean_share``, ``group`` (head/medium/tail by observed size); sorted largest first.
    """
    _require_columns(table, ["label", "noise_type"], "clean_counts")
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(table["label"].to_numpy(), num_classes=num_classes)
    n = np.bincount(labels, minlength=num_classes)
    clean = np.bincount(labels, weights=(table["noise_type"].to_numpy() == "clean").astype(float),
                        minlength=num_classes).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n > 0, clean / np.maximum(n, 1), np.nan)
    df = pd.DataFrame({"class": np.arange(num_classes), "n": n, "clean": clean, "clean_share": share,
                       "group": size_groups(n) if num_classes >= 3 else "head"})
    return df.sort_values(["n", "class"], ascending=[False, True]).reset_index(drop=True)


def soft_target_examples(labels: Any, targets: Any, table: pd.DataFrame | None = None, *, n: int = 8,
                         class_names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """A random sample of instances whose target label reweighting changed.

    Returns one row per example: ``row``, ``label``, ``mixed`` (class mixed in),
    ``target_label`` and ``target_mixed`` (their target mass), and ``true_label``/``noise_type``
    when the table has them. Class columns hold names when ``class_names`` is given.
    """
    from urnet_core.data.targets import LabelPairs

    summary = label_change_summary(labels, targets)
    labels = np.asarray(labels, dtype=np.int64)
    changed = np.flatnonzero(summary["mixed_class"] >= 0)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(changed, size=min(check_positive_int(n, "n"), changed.size), replace=False))
    mixed = summary["mixed_class"][rows]
    name = (lambda c: (class_names[c] if c >= 0 else "open-set") if class_names is not None else int(c))
    if isinstance(targets, LabelPairs):
        on_label, on_mixed = np.full(rows.size, targets.beta), np.full(rows.size, 1.0 - targets.beta)
    else:
        t = np.asarray(targets)
        on_label, on_mixed = t[rows, labels[rows]].astype(float), t[rows, mixed].astype(float)
    df = pd.DataFrame({"row": rows, "label": [name(int(c)) for c in labels[rows]],
                       "mixed": [name(int(c)) for c in mixed], "target_label": on_label, "target_mixed": on_mixed})
    if table is not None:
        if "true_label" in table.columns:
            df["true_label"] = [name(int(c)) for c in table["true_label"].to_numpy()[rows]]
        if "noise_type" in table.columns:
            df["noise_type"] = table["noise_type"].to_numpy()[rows]
    return df


def auroc_by_noise_type(weights: Mapping[str, Any], table: pd.DataFrame) -> pd.DataFrame:
    """AUROC of each weight as a detector of clean rows, overall and per noise type.

    One row per weight; column ``all`` is clean vs every wrongly labelled row
    (:func:`noisy_mask`), and one column per noise type present (``asym`` flips between
    look-alike classes, ``sym`` random flips, ``flip`` derived from a ``true_label``, ``open``
    open-set images, ``ambiguous`` blended images) compares the clean rows with that type only.
    """
    _require_columns(table, ["noise_type"], "auroc_by_noise_type")
    kinds = table["noise_type"].to_numpy().astype(str)
    clean = kinds == "clean"
    present = [k for k in NOISE_TYPE_ORDER if k != "clean" and (kinds == k).any()]
    rows = []
    for name, w in weights.items():
        w = _as_1d(w, name, len(table)).astype(np.float64)
        row: dict[str, Any] = {"weight": name, "all": weight_auroc(w, noisy_mask(table))}
        for kind in present:
            both = clean | (kinds == kind)
            row[kind] = weight_auroc(w[both], (kinds == kind)[both]) if clean.any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def parameters_table(params: Mapping[str, Any]) -> pd.DataFrame:
    """A nested mapping (e.g. the benchmark's parameters) as a two-column table of dotted keys and
    values, for display instead of a raw JSON dump."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            rows.append((prefix, str(value)))

    walk("", dict(params or {}))
    return pd.DataFrame(rows, columns=["parameter", "value"])
