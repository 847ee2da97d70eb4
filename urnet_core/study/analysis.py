"""Measure the five challenges of web data (DESIGN.md section 1) and score weights against truth.

Pure functions from arrays (and the instances table) to numbers: dicts of scalars or pandas
DataFrames, one row per class / group / instance. The study's notebooks call these and
:mod:`urnet_core.study.plots` draws them; no measurement lives only in a notebook.

Notation: ``n`` instances, ``C`` classes, ``D`` feature dimension. ``pred_probs`` are the
baseline's predicted probabilities (n, C); ``features`` its penultimate features (n, D).

Challenges and their measurements:

- C1 long tail: :func:`class_size_profile` (imbalance ratio, Gini, head share).
- C2 intra-class diversity / inter-class similarity: :func:`most_confused_pairs` and
  :func:`feature_spread` (class spread vs distance to the nearest other class).
- C3 imprecise instances: :func:`estimated_noise_rates` (per class, vs the truth when the
  benchmark has it) and :func:`noise_by_rank` (noise by search-rank quantile per source).
- C4 few representative instances: the bag branch's saliency (:func:`bag_saliency`).
- C5 ambiguous labels: :func:`ambiguity` (margin and entropy of the baseline's predictions).

Weights are scored with :func:`weight_auroc` (how well a weight separates clean from noisy
instances) and :func:`weights_by_noise_type`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from urnet_core.utils.validation import as_features, as_labels, check_option, check_positive_int, check_probabilities

#: Order of the benchmark's noise types in every table and figure.
NOISE_TYPE_ORDER = ("clean", "asym", "sym", "flip", "open", "ambiguous")
#: Noise types whose observed label is wrong (ambiguous images keep one of their two true classes).
WRONG_LABEL_TYPES = ("asym", "sym", "flip", "open")
SIZE_GROUPS = ("head", "medium", "tail")


# --------------------------------------------------------------------------- helpers
def _as_1d(values: Any, name: str, n_rows: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {n_rows} were expected")
    return arr


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{what} needs an instances table (pandas DataFrame), got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} needs the column(s) {missing} in the instances table; it has {list(table.columns)}")


def size_groups(counts: Sequence[int], groups: Sequence[str] = SIZE_GROUPS) -> np.ndarray:
    """Name of the size group of every class (largest third "head", then "medium", "tail").

    Classes are sorted by count (largest first, ties by class id) and cut with
    ``np.array_split``, the same split as :func:`urnet_core.training.metrics.accuracy_by_class_size`.

    Returns
    -------
    ndarray of str, shape (C,)
    """
    counts = _as_1d(counts, "counts")
    if len(groups) == 0 or len(groups) > counts.size:
        raise ValueError(f"need between 1 and {counts.size} groups, got {len(groups)}")
    order = np.lexsort((np.arange(counts.size), -counts))
    out = np.empty(counts.size, dtype=object)
    for name, members in zip(groups, np.array_split(order, len(groups))):
        out[members] = name
    return out.astype(str)


def noisy_mask(table: pd.DataFrame, *, include_ambiguous: bool = False) -> np.ndarray:
    """Boolean (n,) mask of instances whose observed label is wrong (benchmark ground truth).

    Uses ``noise_type`` when present (asym/sym/open, plus ambiguous with
    ``include_ambiguous``), else ``true_label != label`` (open-set rows have ``true_label=-1``).
    """
    if "noise_type" in table.columns:
        kinds = WRONG_LABEL_TYPES + (("ambiguous",) if include_ambiguous else ())
        return table["noise_type"].isin(kinds).to_numpy()
    _require_columns(table, ["label", "true_label"], "noisy_mask")
    return (table["true_label"].to_numpy() != table["label"].to_numpy())


def self_confidence(labels: Any, pred_probs: Any) -> np.ndarray:
    """Predicted probability of each instance's observed label, shape (n,) (cleanlab's score)."""
    probs = check_probabilities(pred_probs)
    labels = as_labels(labels, num_classes=probs.shape[1])
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but pred_probs has {probs.shape[0]} rows")
    return probs[np.arange(labels.shape[0]), labels]


# --------------------------------------------------------------------------- C1 long tail
def gini(values: Any) -> float:
    """Gini coefficient of non-negative ``values`` (0 = all equal, -> 1 = one holds everything)."""
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        raise ValueError("gini needs at least one value")
    if (x < 0).any() or not np.isfinite(x).all():
        raise ValueError("gini needs finite non-negative values")
    total = x.sum()
    if total == 0:
        return 0.0
    i = np.arange(1, x.size + 1)
    return float(((2 * i - x.size - 1) * x).sum() / (x.size * total))


def class_size_profile(labels: Any, num_classes: int) -> dict:
    """How long-tailed the class sizes are (challenge C1).

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels.
    num_classes : int
        ``C``.

    Returns
    -------
    dict
        - ``counts``: int64 (C,) instances per class (class order);
        - ``order``: class ids sorted by decreasing count; ``sorted_counts``: counts in that order;
        - ``imbalance_ratio``: largest / smallest count over non-empty classes;
        - ``gini``: Gini coefficient of the counts;
        - ``top20_share``: share of all instances held by the largest 20% of classes
          (at least one class);
        - ``empty_classes``: number of classes without instances;
        - ``groups``: str (C,) head/medium/tail of each class (:func:`size_groups`);
        - ``n``, ``num_classes``.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    if labels.size == 0:
        raise ValueError("class_size_profile needs at least one label")
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    order = np.lexsort((np.arange(num_classes), -counts))
    nonempty = counts[counts > 0]
    n_top = max(1, int(round(0.2 * num_classes)))
    return {
        "counts": counts,
        "order": order,
        "sorted_counts": counts[order],
        "imbalance_ratio": float(nonempty.max() / nonempty.min()),
        "gini": gini(counts),
        "top20_share": float(counts[order[:n_top]].sum() / counts.sum()),
        "empty_classes": int((counts == 0).sum()),
        "groups": size_groups(counts) if num_classes >= 3 else np.array(["head"] * num_classes),
        "n": int(labels.size),
        "num_classes": num_classes,
    }


def class_weight_table(labels: Any, num_classes: int, *, alpha: float = 0.5,
                       class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Class weights of both schemes (eq. 2-4) per class and their effect on the training mass.

    Returns
    -------
    DataFrame, one row per class (largest first)
        ``class``, ``name``, ``count``, ``weight_balanced``, ``weight_literal``, and the share of
        the total training weight each class gets: ``share_plain`` (no weighting, = count / n),
        ``share_balanced``, ``share_literal``.
    """
    from urnet_core.reweight.class_weight import class_weights

    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    wb = class_weights(labels, num_classes, alpha=alpha, scheme="balanced")
    wl = class_weights(labels, num_classes, alpha=alpha, scheme="literal")
    df = pd.DataFrame({
        "class": np.arange(num_classes),
        "name": list(class_names) if class_names is not None else [str(c) for c in range(num_classes)],
        "count": counts.astype(np.int64),
        "weight_balanced": wb,
        "weight_literal": wl,
        "share_plain": counts / counts.sum(),
        "share_balanced": counts * wb / (counts * wb).sum(),
        "share_literal": counts * wl / (counts * wl).sum(),
    })
    return df.sort_values(["count", "class"], ascending=[False, True]).reset_index(drop=True)


# --------------------------------------------------------------------------- C2 similarity
def most_confused_pairs(confusion: Any, class_names: Sequence[str] | None = None, top: int = 10) -> pd.DataFrame:
    """The ``top`` largest off-diagonal cells of a confusion matrix.

    Parameters
    ----------
    confusion : array, shape (C, C)
        ``M[j, k]`` = instances labelled ``j`` predicted as ``k``.
    class_names : sequence of str, optional
    top : int, default=10

    Returns
    -------
    DataFrame with columns ``label``, ``predicted``, ``label_name``, ``predicted_name``,
    ``count``, ``rate`` (count / instances labelled ``label``) and ``reverse_count``
    (``M[k, j]``), sorted by decreasing count.
    """
    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.number) or (m < 0).any():
        raise ValueError("confusion must hold non-negative counts")
    top = check_positive_int(top, "top")
    c = m.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"class_names has {len(names)} entries but confusion is {c}x{c}")
    j, k = np.where(~np.eye(c, dtype=bool))
    counts = m[j, k]
    order = np.lexsort((k, j, -counts))[:top]
    rows = m.sum(1)
    j, k = j[order], k[order]
    return pd.DataFrame({
        "label": j, "predicted": k,
        "label_name": [names[a] for a in j], "predicted_name": [names[b] for b in k],
        "count": m[j, k], "rate": m[j, k] / np.maximum(rows[j], 1), "reverse_count": m[k, j],
    })


def feature_spread(features: Any, labels: Any, num_classes: int) -> pd.DataFrame:
    """Intra-class spread vs inter-class distance in feature space (challenge C2).

    For each class: ``intra`` = mean Euclidean distance of its instances to the class centroid;
    ``inter`` = distance from its centroid to the nearest other class's centroid; ``ratio`` =
    intra / inter. A ratio near or above 1 means the class is as wide as the gap to its
    neighbour, so the two overlap.

    Parameters
    ----------
    features : array, shape (n, D)
    labels : array of int, shape (n,)
    num_classes : int

    Returns
    -------
    DataFrame, one row per non-empty class: ``class``, ``n``, ``intra``, ``inter``,
    ``nearest_class``, ``ratio``.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    x = as_features(features, n_rows=labels.shape[0]).astype(np.float64, copy=False)
    counts = np.bincount(labels, minlength=num_classes)
    present = np.flatnonzero(counts)
    if present.size < 2:
        raise ValueError("feature_spread needs instances of at least two classes")
    sums = np.zeros((num_classes, x.shape[1]))
    np.add.at(sums, labels, x)
    centroids = sums[present] / counts[present, None]
    pos = np.full(num_classes, -1)
    pos[present] = np.arange(present.size)
    dist = np.linalg.norm(x - centroids[pos[labels]], axis=1)
    intra = np.bincount(labels, weights=dist, minlength=num_classes)[present] / counts[present]
    cd = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    np.fill_diagonal(cd, np.inf)
    nearest = cd.argmin(1)
    inter = cd[np.arange(present.size), nearest]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(inter > 0, intra / inter, np.inf)
    return pd.DataFrame({"class": present, "n": counts[present], "intra": intra, "inter": inter,
                         "nearest_class": present[nearest], "ratio": ratio})


# --------------------------------------------------------------------------- C3 noise
NOISE_ESTIMATORS = ("disagreement", "cleanlab")


def estimated_noise_rates(labels: Any, pred_probs: Any, true_labels: Any | None = None, *,
                          method: str = "disagreement") -> pd.DataFrame:
    """Per-class label-noise rate estimated from the baseline, and the true rate when known.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Observed labels.
    pred_probs : array, shape (n, C)
        Baseline predicted probabilities (in-sample here, which underestimates noise a
        network has memorised).
    true_labels : array of int, shape (n,), optional
        Ground truth (-1 = open-set image, counted as noisy).
    method : {'disagreement', 'cleanlab'}, default='disagreement'
        - ``'disagreement'``: share of the class's instances whose predicted class differs
          from the label;
        - ``'cleanlab'``: ``1 - Q[j, j] / sum_k Q[j, k]`` of cleanlab's calibrated confident
          joint ``Q`` (``cleanlab.count.estimate_joint``; rows = given label).

    Returns
    -------
    DataFrame, one row per class: ``class``, ``n``, ``estimated`` and, with ``true_labels``,
    ``true`` (share with ``true_label != label``) and ``error`` (estimated - true).
    """
    check_option(method, "method", NOISE_ESTIMATORS)
    probs = check_probabilities(pred_probs)
    c = probs.shape[1]
    labels = as_labels(labels, num_classes=c)
    if labels.shape[0] != probs.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but pred_probs has {probs.shape[0]} rows")
    counts = np.bincount(labels, minlength=c)
    if method == "disagreement":
        wrong = (probs.argmax(1) != labels).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = np.bincount(labels, weights=wrong, minlength=c) / counts
    else:
        from cleanlab.count import estimate_joint

        joint = estimate_joint(labels, probs)
        rows = joint.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            est = 1.0 - np.diag(joint) / rows
    df = pd.DataFrame({"class": np.arange(c), "n": counts, "estimated": est})
    if true_labels is not None:
        truth = _as_1d(true_labels, "true_labels", labels.shape[0]).astype(np.int64)
        with np.errstate(invalid="ignore", divide="ignore"):
            true_rate = np.bincount(labels, weights=(truth != labels).astype(np.float64), minlength=c) / counts
        df["true"] = true_rate
        df["error"] = df["estimated"] - df["true"]
    return df[df["n"] > 0].reset_index(drop=True)


def noise_by_rank(table: pd.DataFrame, bins: int = 5) -> pd.DataFrame:
    """True label-noise rate by search-rank quantile, per source (are top ranks cleaner?).

    Ranks are cut into ``bins`` quantiles within each source (fewer when ranks repeat); rows
    without a rank are left out. Noisy = the observed label is wrong (:func:`noisy_mask`).

    Returns
    -------
    DataFrame: ``source``, ``bin`` (0 = top ranks), ``rank_low``, ``rank_high``, ``n``,
    ``noise_rate``, and per wrong-label noise type its share ``share_<type>`` when the table
    has ``noise_type``.
    """
    _require_columns(table, ["rank", "source", "label"], "noise_by_rank")
    bins = check_positive_int(bins, "bins")
    df = pd.DataFrame({"source": table["source"].to_numpy(), "rank": table["rank"].to_numpy(dtype=np.float64),
                       "noisy": noisy_mask(table).astype(np.float64)})
    has_type = "noise_type" in table.columns
    if has_type:
        for t in WRONG_LABEL_TYPES:
            df[f"share_{t}"] = (table["noise_type"].to_numpy() == t).astype(np.float64)
    df = df[np.isfinite(df["rank"])]
    if df.empty:
        raise ValueError("noise_by_rank: no instance has a search rank (the rank column is all NaN)")
    out = []
    for source, sub in df.groupby("source", sort=True):
        q = pd.qcut(sub["rank"].rank(method="first"), q=min(bins, len(sub)), labels=False, duplicates="drop")
        for b, part in sub.groupby(q.to_numpy(), sort=True):
            row = {"source": source, "bin": int(b), "rank_low": float(part["rank"].min()),
                   "rank_high": float(part["rank"].max()), "n": int(len(part)),
                   "noise_rate": float(part["noisy"].mean())}
            if has_type:
                row.update({f"share_{t}": float(part[f"share_{t}"].mean()) for t in WRONG_LABEL_TYPES})
            out.append(row)
    return pd.DataFrame(out)


def noise_type_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Instances and share of each noise type (ground truth), in :data:`NOISE_TYPE_ORDER`."""
    _require_columns(table, ["noise_type"], "noise_type_counts")
    counts = table["noise_type"].value_counts()
    kinds = [t for t in NOISE_TYPE_ORDER if t in counts.index] + [t for t in counts.index if t not in NOISE_TYPE_ORDER]
    n = counts.reindex(kinds).to_numpy()
    return pd.DataFrame({"noise_type": kinds, "n": n, "share": n / n.sum()})


# --------------------------------------------------------------------------- C5 ambiguity
def ambiguity(pred_probs: Any, labels: Any, noise_type: Any | None = None, *,
              low_margin: float = 0.2) -> dict:
    """How undecided the baseline is between classes (challenge C5).

    Parameters
    ----------
    pred_probs : array, shape (n, C)
    labels : array of int, shape (n,)
    noise_type : array of str, shape (n,), optional
        Ground-truth noise type; the table by group then compares ``ambiguous`` with the rest.
    low_margin : float, default=0.2
        An instance is *low-margin* when its top-1 minus top-2 probability is below this.

    Returns
    -------
    dict
        - ``margin``: (n,) top-1 minus top-2 probability;
        - ``label_margin``: (n,) probability of the label minus the largest other probability
          (negative when the baseline prefers another class);
        - ``entropy``: (n,) entropy of the prediction in nats;
        - ``low_margin_share``: share of low-margin instances;
        - ``by_group``: DataFrame ``group``, ``n``, ``mean_margin``, ``mean_entropy``,
          ``low_margin_share`` (groups ``ambiguous``/``other`` with ``noise_type``, else ``all``).
    """
    probs = check_probabilities(pred_probs)
    n, c = probs.shape
    if c < 2:
        raise ValueError("ambiguity needs at least two classes")
    labels = as_labels(labels, num_classes=c)
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries but pred_probs has {n} rows")
    top2 = -np.partition(-probs, 1, axis=1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    others = probs.copy()
    others[np.arange(n), labels] = -np.inf
    label_margin = probs[np.arange(n), labels] - others.max(1)
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(probs * np.log(p)).sum(1)
    low = margin < low_margin
    if noise_type is not None:
        kinds = _as_1d(noise_type, "noise_type", n).astype(str)
        group = np.where(kinds == "ambiguous", "ambiguous", "other")
    else:
        group = np.full(n, "all")
    frame = pd.DataFrame({"group": group, "margin": margin, "entropy": entropy, "low": low.astype(np.float64)})
    by_group = (frame.groupby("group", sort=True)
                .agg(n=("margin", "size"), mean_margin=("margin", "mean"), mean_entropy=("entropy", "mean"),
                     low_margin_share=("low", "mean")).reset_index())
    return {"margin": margin, "label_margin": label_margin, "entropy": entropy,
            "low_margin_share": float(low.mean()) if n else float("nan"), "by_group": by_group}


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
        their compact form (:class:`~urnet_core.training.targets.LabelPairs`, any size).
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
    from urnet_core.training.targets import LabelPairs

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
def cluster_problems(labels: Any, confusion: Any, *, top_k: int = 4) -> list[np.ndarray]:
    """Row indices of each class's k-means problem (the class plus its ``top_k`` most confused).

    The same problems :func:`urnet_core.reweight.cluster_weight.cluster_weights` solves, for
    timing the k-means backends on this data.
    """
    from urnet_core.reweight.cluster_weight import most_confused

    m = np.asarray(confusion)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be square (C, C), got shape {m.shape}")
    labels = as_labels(labels, num_classes=m.shape[0])
    partners = most_confused(m, top_k)
    by_class = [np.flatnonzero(labels == j) for j in range(m.shape[0])]
    return [np.sort(np.concatenate([by_class[t] for t in np.concatenate([[j], partners[j]])]))
            for j in range(m.shape[0]) if by_class[j].size]


def available_kmeans_backends() -> list[str]:
    """Concrete k-means backends usable on this machine (cuML only with CUDA)."""
    from urnet_core.reweight.kmeans import BACKENDS, resolve_backend

    out = []
    for name in BACKENDS:
        if name == "auto":
            continue
        try:
            resolve_backend(name, batched=True)
        except ValueError:
            continue
        out.append(name)
    return out


def time_kmeans_backends(features: Any, problems: Sequence[np.ndarray], n_clusters: int = 5, *,
                         backends: Sequence[str] | None = None, repeats: int = 3, seed: int = 0,
                         n_jobs: int | None = None, timer: Callable[[], float] = time.perf_counter) -> pd.DataFrame:
    """Wall-clock time of :func:`urnet_core.reweight.kmeans.batched_kmeans` per backend on ``problems``.

    Each backend runs once untimed (warm-up: imports, CUDA context), then ``repeats`` timed
    runs; the table reports the median and the minimum, and the mean inertia (to check the
    backends solve the problem equally well).

    Returns
    -------
    DataFrame: ``backend``, ``seconds`` (median), ``min_seconds``, ``problems``, ``rows``
    (total rows over problems), ``mean_inertia``.
    """
    from urnet_core.reweight.kmeans import batched_kmeans

    x = as_features(features)
    repeats = check_positive_int(repeats, "repeats")
    names = list(backends) if backends is not None else available_kmeans_backends()
    rows = []
    for name in names:
        batched_kmeans(x, problems, n_clusters, backend=name, seed=seed, n_jobs=n_jobs)
        times = []
        for _ in range(repeats):
            t0 = timer()
            res = batched_kmeans(x, problems, n_clusters, backend=name, seed=seed, n_jobs=n_jobs)
            times.append(timer() - t0)
        rows.append({"backend": name, "seconds": float(np.median(times)), "min_seconds": float(np.min(times)),
                     "problems": len(problems), "rows": int(sum(len(p) for p in problems)),
                     "mean_inertia": float(np.mean([r.inertia for r in res])) if res else float("nan")})
    return pd.DataFrame(rows)


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
                             class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class test accuracy over seeds beside the class's training size.

    Parameters
    ----------
    per_class_accuracy : sequence (seeds) of sequences (C,)
    counts : array, shape (C,)
        Training instances per class.

    Returns one row per class: ``class``, ``name``, ``count``, ``group`` (head/medium/tail),
    ``accuracy`` (mean over seeds), ``accuracy_std``.
    """
    acc = np.asarray(per_class_accuracy, dtype=np.float64)
    if acc.ndim == 1:
        acc = acc[None, :]
    counts = _as_1d(counts, "counts", acc.shape[1])
    c = acc.shape[1]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(acc, axis=0) if np.isfinite(acc).any() else np.full(c, np.nan)
        std = np.nanstd(acc, axis=0) if acc.shape[0] > 1 else np.zeros(c)
    return pd.DataFrame({
        "class": np.arange(c),
        "name": list(class_names) if class_names is not None else [str(i) for i in range(c)],
        "count": counts.astype(np.int64), "group": size_groups(counts) if c >= 3 else "head",
        "accuracy": mean, "accuracy_std": std,
    })


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


def bag_branch_from_checkpoint(path: Any) -> Any:
    """The trained :class:`~urnet_core.models.bag.BagAttentionBranch` stored in a training checkpoint.

    Raises ``ValueError`` when the checkpoint was trained without the bag branch.
    """
    from pathlib import Path

    from urnet_core.models.bag import BagAttentionBranch
    from urnet_core.training.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = load_checkpoint(path).get("bag_branch")  # the one loader: checks the format
    if not state:
        raise ValueError(f"{path}: the checkpoint holds no bag branch (trained without bag_branch=True)")
    feature_dim = state["fc2.weight"].shape[1]
    hidden = state["fc2.weight"].shape[0]
    num_classes = state["fc4.weight"].shape[0]
    branch = BagAttentionBranch(feature_dim, num_classes, hidden=hidden)
    branch.load_state_dict(state)
    return branch.eval()


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
    from urnet_core.training.targets import LabelPairs

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


# --------------------------------------------------------------------------- findings: the conclusion of each notebook
# Each ``findings_*`` function turns a notebook's own numbers into the sentences its "What this
# shows" cell prints. The wording is chosen by the numbers (thresholds below), never written by
# hand next to a result that may change, and negative results are stated as plainly as
# positive ones.

#: |AUROC - 0.5| below this is "no better than chance" for a weight separating clean from noisy.
AUROC_CHANCE = 0.03
#: Two AUROCs closer than this are "about the same".
AUROC_TIE = 0.01
#: A mean saliency within this relative distance of uniform is "practically uniform".
SALIENCY_TIE = 0.05


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _auroc_words(auroc: float) -> str:
    if not np.isfinite(auroc):
        return "cannot be scored (one of the two groups is empty)"
    if abs(auroc - 0.5) < AUROC_CHANCE:
        return f"is {auroc:.3f}, no better than chance (0.5) at telling clean from wrongly labelled instances"
    if auroc < 0.5:
        return f"is {auroc:.3f}, below chance: it gives wrongly labelled instances more weight than clean ones"
    return f"is {auroc:.3f}: it gives clean instances more weight than wrongly labelled ones"


def findings_data(profile: Mapping[str, Any], noise: pd.DataFrame | None = None,
                  by_source: pd.DataFrame | None = None, coverage: Any = None) -> str:
    """00_data: how long-tailed and how noisy the training set is.

    ``profile``: :func:`class_size_profile`; ``noise`` / ``by_source``: realised noise rates
    overall and by source (``urnet_core.data.webnoise.realised_noise_rates``), None without truth;
    ``coverage``: :func:`urnet_core.data.coverage.class_coverage`, whose warnings come first.
    """
    warnings = [f"Warning: {m}" for m in coverage.messages()] if coverage is not None else []
    parts = warnings + [f"The training set has {profile['n']} images in {profile['num_classes']} classes; the largest class is "
             f"{profile['imbalance_ratio']:.1f} times the smallest (Gini {profile['gini']:.2f}), and the largest 20% of "
             f"the classes hold {_pct(profile['top20_share'])} of the images."]
    if noise is None or not len(noise):
        parts.append("This data has no ground truth, so how many labels are wrong cannot be measured here.")
        return " ".join(parts)
    row = noise.iloc[0]
    kinds = [f"{k} {_pct(float(row[f'share_{k}']))}" for k in ("asym", "sym", "flip", "open")
             if f"share_{k}" in row and float(row[f"share_{k}"]) > 0]
    text = f"{_pct(float(row['noise_rate']))} of the training labels are wrong"
    if kinds:
        text += f" ({', '.join(kinds)})"
    if "share_ambiguous" in row and float(row["share_ambiguous"]) > 0:
        text += f", and {_pct(float(row['share_ambiguous']))} of the images are ambiguous blends of two classes"
    parts.append(text + ".")
    if by_source is not None and len(by_source) > 1 and "noise_rate" in by_source:
        src = by_source.reset_index()
        name_col = "source" if "source" in src.columns else src.columns[0]
        src = src.sort_values("noise_rate")
        clean, noisy = src.iloc[0], src.iloc[-1]
        parts.append(f"Source {clean[name_col]} is the cleaner one ({_pct(float(clean['noise_rate']))} wrong labels "
                     f"against {_pct(float(noisy['noise_rate']))} for {noisy[name_col]}).")
    return " ".join(parts)


def findings_challenges(profile: Mapping[str, Any], spread: pd.DataFrame, *, wrong_share: float | None = None,
                        noise_error: float | None = None, low_margin_share: float | None = None,
                        fewest_clean: tuple[str, int] | None = None) -> str:
    """01_challenges: one sentence per challenge, from the measurements of the notebook."""
    wide = int((spread["ratio"] >= 1).sum())
    parts = [f"C1: the class sizes span a factor of {profile['imbalance_ratio']:.1f} (Gini {profile['gini']:.2f}).",
             f"C2: {wide} of {len(spread)} classes are wider in feature space than the distance to their nearest "
             f"neighbour class (median spread/gap ratio {spread['ratio'].median():.2f})"
             + (", so their instances overlap another class." if wide else "; the classes are well separated.")]
    if wrong_share is not None:
        text = f"C3: {_pct(wrong_share)} of the labels are wrong"
        if noise_error is not None:
            text += f"; the baseline's per-class estimate of the noise is off by {_pct(noise_error)} on average"
        parts.append(text + ".")
    else:
        parts.append("C3: without ground truth the share of wrong labels is not measured.")
    if fewest_clean is not None:
        parts.append(f"C4: the class with the fewest clean images ({fewest_clean[0]}) has {fewest_clean[1]}.")
    if low_margin_share is not None:
        parts.append(f"C5: the baseline is undecided (top-1 minus top-2 probability below 0.2) on "
                     f"{_pct(low_margin_share)} of the training images.")
    return " ".join(parts)


def findings_baseline(summary_row: Mapping[str, Any], by_size: pd.DataFrame | None = None) -> str:
    """02_baseline: the baseline's accuracy and what the long tail costs it.

    ``summary_row``: the baseline's row of ``ablation.summary_table`` (``top1_mean/_low/_high``);
    ``by_size``: ``ablation.accuracy_by_class_size`` for the baseline.
    """
    m, lo, hi = (float(summary_row[f"top1_{k}"]) for k in ("mean", "low", "high"))
    seeds = int(summary_row.get("seeds", 1))
    text = f"The baseline reaches {_pct(m)} test top-1"
    text += (f" (95% interval {_pct(lo)} to {_pct(hi)} over {seeds} seeds)." if seeds > 1 else " (one seed, no interval).")
    if by_size is not None and len(by_size):
        acc = by_size.set_index("group")
        if {"head", "tail"} <= set(acc.index):
            head, tail = acc.loc["head"], acc.loc["tail"]
            gap = float(head["accuracy"]) - float(tail["accuracy"])
            separated = float(tail["high"]) < float(head["low"]) or float(head["high"]) < float(tail["low"])
            if gap > 0 and separated:
                text += (f" The long tail costs accuracy: the smallest third of the classes averages "
                         f"{_pct(float(tail['accuracy']))} against {_pct(float(head['accuracy']))} on the largest third "
                         f"({100 * gap:.1f} points, intervals apart).")
            elif gap > 0:
                text += (f" The smallest third of the classes averages {_pct(float(tail['accuracy']))} against "
                         f"{_pct(float(head['accuracy']))} on the largest third, but the intervals overlap: the seeds "
                         f"cannot show that the tail costs accuracy.")
            else:
                text += (f" The smallest classes are not worse: {_pct(float(tail['accuracy']))} against "
                         f"{_pct(float(head['accuracy']))} on the largest third.")
    return text


def findings_class(weights: pd.DataFrame, alpha: float, scheme: str = "balanced") -> str:
    """03_class_reweight: how much each scheme moves the training weight towards the small classes.

    ``weights``: :func:`class_weight_table` (classes largest first).
    """
    tail = weights.tail(max(1, len(weights) // 3))
    lit = weights["weight_literal"]
    bal = weights["weight_balanced"]
    parts = [f"With alpha = {alpha}, the literal eq. 3 weights range from {lit.min():.3f} to {lit.max():.3f} "
             f"(ratio {lit.max() / lit.min():.2f}); the balanced ones from {bal.min():.3f} to {bal.max():.3f} "
             f"(ratio {bal.max() / bal.min():.2f})."]
    plain, s_lit, s_bal = (float(tail[c].sum()) for c in ("share_plain", "share_literal", "share_balanced"))
    lit_words = "barely moves it" if abs(s_lit - plain) < 0.1 * max(plain, 1e-12) else "moves it"
    parts.append(f"The smallest third of the classes holds {_pct(plain)} of the unweighted training signal; the literal "
                 f"form {lit_words} (to {_pct(s_lit)}), the balanced form gives it {_pct(s_bal)}.")
    parts.append(f"The study trains with the {scheme} scheme; whether that helps test accuracy is the "
                 f"+class step of the ablation (08).")
    return " ".join(parts)


def findings_cluster(auroc: float | None, by_type: pd.DataFrame | None = None,
                     timing: pd.DataFrame | None = None) -> str:
    """04_cluster_reweight: does the cluster weight separate clean from noisy, and how fast is k-means."""
    parts = []
    if auroc is None:
        parts.append("Without ground truth the cluster weight cannot be scored against the truth.")
    else:
        parts.append(f"The cluster weight's AUROC for clean against wrongly labelled instances {_auroc_words(auroc)}.")
        if by_type is not None and len(by_type):
            means = by_type.set_index("noise_type")["mean"]
            parts.append("Mean weight by noise type: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()) + ".")
    if timing is not None and len(timing):
        fastest = timing.sort_values("seconds").iloc[0]
        parts.append(f"The fastest k-means backend here is {fastest['backend']} ({fastest['seconds']:.3g} s for every "
                     f"cluster problem of this data).")
    return " ".join(parts)


def findings_instance(auroc_instance: float, auroc_self_confidence: float,
                      auroc_open: float | None = None, auroc_combined: float | None = None,
                      target: float = 0.90) -> str:
    """05_instance_reweight: does the instance weight earn its cost against the free baseline score?

    The bar the notebook sets: the instance weight (text model, confidence model) earns its
    cost only if it separates clean from wrongly labelled instances better than the baseline's
    self-confidence, which needs neither.
    """
    parts = [f"The instance weight's AUROC {_auroc_words(auroc_instance)}; the baseline's self-confidence scores "
             f"{auroc_self_confidence:.3f}."]
    diff = auroc_instance - auroc_self_confidence
    if not (np.isfinite(auroc_instance) and np.isfinite(auroc_self_confidence)):
        parts.append("The comparison is undefined on this data.")
    elif diff > AUROC_TIE:
        parts.append(f"It beats the free score by {diff:.3f}, so it earns its cost on this data.")
    elif diff < -AUROC_TIE:
        parts.append(f"It does not earn its cost: the baseline's own confidence, which needs no text or confidence "
                     f"model, separates clean from noisy instances better (by {-diff:.3f}).")
    else:
        parts.append("The two are about equal, so the instance weight adds nothing the baseline's own confidence does "
                     "not already give.")
    if auroc_open is not None and np.isfinite(auroc_open):
        parts.append(f"Against open-set images alone (clean vs images from outside the label set) its AUROC is "
                     f"{auroc_open:.3f}.")
    if auroc_combined is not None and np.isfinite(auroc_combined):
        change = auroc_combined - auroc_instance
        verb = "raises" if change > AUROC_TIE else ("lowers" if change < -AUROC_TIE else "leaves")
        parts.append(f"The combined instance weight (image-text confidence x out-of-sample label confidence) "
                     f"{verb} the AUROC {'to' if verb != 'leaves' else 'at'} {auroc_combined:.3f}, "
                     + (f"meeting the {target:.2f} target." if auroc_combined >= target
                        else f"short of the {target:.2f} target."))
    return " ".join(parts)


def findings_bag(table: pd.DataFrame) -> str:
    """06_bag_attention: does the bag branch attend to clean instances more than uniform?

    ``table``: :func:`saliency_by_noise_type`.
    """
    by = table.set_index("noise_type")
    if "clean" not in by.index:
        return "No clean instance was sampled into a bag, so the saliency cannot be compared with the truth."
    uniform = float(by["uniform"].iloc[0])
    clean = float(by.loc["clean", "mean_saliency"])
    rel = (clean - uniform) / uniform
    text = f"Clean instances get a mean saliency of {clean:.3f} against {uniform:.3f} for uniform attention"
    if abs(rel) < SALIENCY_TIE:
        text += (f" ({100 * rel:+.1f}%): practically uniform. The branch does not pick out the representative "
                 f"instances of a bag on this data.")
    elif rel > 0:
        text += f" ({100 * rel:+.1f}%): the branch prefers clean instances."
    else:
        text += f" ({100 * rel:+.1f}%): the branch attends less to clean instances than to the others."
    noisy = [k for k in by.index if k in WRONG_LABEL_TYPES]
    if noisy:
        n = by.loc[noisy, "n"].to_numpy(dtype=float)
        mean_noisy = float(np.average(by.loc[noisy, "mean_saliency"].to_numpy(dtype=float), weights=n))
        text += f" Wrongly labelled instances get {mean_noisy:.3f} on average."
    return text


def findings_label(change: Mapping[str, Any]) -> str:
    """07_label_reweight: are the targets it changes the wrong ones, and towards the truth?

    ``change``: :func:`label_change_summary` (with the table for the truth-based shares).
    """
    text = f"Label reweighting changed {change['changed']} of {change['n']} targets ({_pct(change['changed_share'])})."
    if "changed_share_noisy" not in change:
        return text + " Without ground truth it cannot be said whether the changed targets were wrong."
    noisy_share = change.get("changed_noisy_share", float("nan"))
    true_share = change.get("mixed_is_true_share", float("nan"))
    text += (f" It changed {_pct(change['changed_share_noisy'])} of the wrongly labelled instances and "
             f"{_pct(change['changed_share_clean'])} of the correctly labelled ones.")
    if change["changed"] and np.isfinite(noisy_share):
        text += f" Of the changed targets, {_pct(noisy_share)} belong to wrongly labelled instances"
        if np.isfinite(true_share):
            text += f" and {_pct(true_share)} mix in the true class"
        text += "."
        helpful = true_share if np.isfinite(true_share) else noisy_share
        harmful = 1.0 - noisy_share
        if helpful > harmful:
            text += " More changes point at the truth than damage a correct label: the step should help."
        else:
            text += (" At least as many changes damage a correct label as point at the truth: the step is not "
                     "expected to help.")
    return text


# --------------------------------------------------------------------------- the study's verdict
#: What each ablation group stands for (the index's legend). Groups not listed are described
#: by their members.
GROUP_DESCRIPTIONS = {
    "ladder": "the paper's incremental ladder: the baseline (plain cross entropy), then one URNet step added per "
              "row (class, cluster, instance, bag, label; DESIGN.md section 5.1)",
    "ladder (cross-fitted)": "the ladder with weights computed out-of-fold (each row's weights come from a baseline "
                             "that did not train on it)",
    "selected": "the URNet configuration chosen on a noisy validation split carved from the training rows, "
                "never on the test split (DESIGN.md section 5.6)",
    "alone": "each URNet step on its own on top of the baseline, and the paper's literal class weight "
             "(DESIGN.md section 5.2)",
    "peer": "other methods for noisy or imbalanced labels, in the same harness (DESIGN.md section 5.3)",
    "oracle": "trained on the truly clean rows only, which needs ground truth: the reference for the gap closed "
              "(DESIGN.md section 5.4)",
    "variant": "the top rungs with the study's own-class cluster count (DESIGN.md section 5.2)",
    "trick": "the paper's tricks on top of full URNet, e.g. keeping only top-ranked Flickr images "
             "(DESIGN.md section 5.2)",
}

#: The row that is full URNet in the ladder.
FULL_URNET = "+label"


def group_legend(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per group present in ``summary`` (in order of appearance): ``group``, ``rows``
    (its methods), ``meaning``."""
    rows = []
    for group, df in summary.groupby("group", sort=False):
        methods = list(dict.fromkeys(df["method"]))
        rows.append({"group": group, "rows": ", ".join(methods),
                     "meaning": GROUP_DESCRIPTIONS.get(group, f"rows of the '{group}' group")})
    return pd.DataFrame(rows)


def _by_seed(results: pd.DataFrame, method: str, metric: str) -> pd.Series:
    return results[results["method"] == method].groupby("seed")[metric].mean().sort_index()


def paired_interval(results: pd.DataFrame, a: str, b: str, metric: str = "top1"):
    """:class:`~urnet_core.study.stats.Interval` of ``b - a`` paired by seed (seeds both ran)."""
    from urnet_core.study.stats import paired_difference

    va, vb = _by_seed(results, a, metric), _by_seed(results, b, metric)
    seeds = va.index.intersection(vb.index)
    return paired_difference(va[seeds].to_numpy(), vb[seeds].to_numpy())


def _level(summary: pd.DataFrame, method: str, metric: str) -> str:
    row = summary.set_index("method").loc[method]
    m, lo, hi = (100 * float(row[f"{metric}_{k}"]) for k in ("mean", "low", "high"))
    if int(row.get("seeds", 1)) < 2:
        return f"{m:.1f}%"
    return f"{m:.1f}% (95% interval {lo:.1f} to {hi:.1f})"


def _diff(ci, *, paired: bool = True) -> str:
    m, lo, hi = 100 * ci.mean, 100 * ci.low, 100 * ci.high
    if ci.n < 2:
        return f"{m:+.1f} points"
    return f"{m:+.1f} points (95% interval {lo:+.1f} to {hi:+.1f}{', paired by seed' if paired else ''})"


def _compare(ci) -> str:
    """'better' / 'worse' / 'tie' for an interval of a paired difference (tie also with one seed)."""
    if ci.n < 2 or not np.isfinite(ci.mean):
        return "tie"
    if ci.low > 0:
        return "better"
    if ci.high < 0:
        return "worse"
    return "tie"


def _best(summary: pd.DataFrame, group: str, metric: str) -> str | None:
    df = summary[summary["group"] == group]
    if not len(df):
        return None
    return str(df.loc[df[f"{metric}_mean"].idxmax(), "method"])


def study_verdict(tables: Mapping[str, Any], *, metric: str = "top1") -> list[str]:
    """The index's verdict: does URNet work on this data, and which step helps. Sentences, in order.

    ``tables``: :func:`urnet_core.study.ablation.read_tables` (``results``, ``summary``,
    ``ladder_differences``, ``gap_closed``, ``data``). Every statement comes from these numbers:
    a step "helps" or "hurts" only when its 95% paired interval excludes zero; full URNet
    (``+label``) and the selected configuration (group ``selected``, when present) are set
    against the baseline, the best peer and (with ground truth) the best oracle.
    """
    results, summary = tables.get("results"), tables.get("summary")
    data = tables.get("data") or {}
    if results is None or summary is None or not len(summary):
        return ["The ablation has not run yet, so there is no verdict."]
    methods = set(summary["method"])
    n_seeds = int(results["seed"].nunique())
    name = metric.replace("top1", "top-1").replace("_", " ")
    out: list[str] = []
    base = "baseline" if "baseline" in methods else None
    full = FULL_URNET if FULL_URNET in methods else None
    peer = _best(summary, "peer", metric)
    oracle = _best(summary, "oracle", metric) if data.get("ground_truth", True) else None
    selected = _best(summary, "selected", metric)

    # A run where nothing was learned says nothing about the method: say so first.
    classes = data.get("classes")
    if classes and f"{metric}_mean" in summary and metric in ("top1", "balanced_accuracy"):
        chance = 1.0 / float(classes)
        best = float(summary[f"{metric}_mean"].max())
        if best <= chance + 0.02:
            out.append(f"Every model is at chance level ({name} at most {100 * best:.1f}% with {classes} classes, "
                       f"chance {100 * chance:.1f}%): nothing was learned, so this run says nothing about URNet "
                       f"(too few epochs or images, as in a smoke run); read what follows as a check of the "
                       f"machinery only.")

    # Headline: full URNet against the baseline and the best peer.
    if full and base:
        vs_base = paired_interval(results, base, full, metric)
        vs_peer = paired_interval(results, peer, full, metric) if peer else None
        b, p = _compare(vs_base), _compare(vs_peer) if vs_peer is not None else None
        if n_seeds < 2:
            head = (f"With a single seed no interval can be computed, so nothing below is called significant: full "
                    f"URNet ({full}) differs from the baseline by {_diff(vs_base)}")
        elif b == "better" and p in (None, "better"):
            head = "URNet works on this data: full URNet (+label) beats the baseline" + (
                f" and the best peer, {peer}" if peer else "")
        elif b == "better" and p == "tie":
            head = (f"Full URNet (+label) beats the baseline, but not the best peer ({peer}): the seeds cannot tell "
                    f"them apart, so URNet's extra machinery buys nothing over the simpler method here")
        elif b == "better":
            head = (f"Full URNet (+label) beats the baseline, but the best peer ({peer}) is significantly better "
                    f"than URNet")
        elif b == "tie":
            head = "Full URNet (+label) does not significantly beat the baseline on this data"
        else:
            head = "Full URNet (+label) is significantly worse than the baseline on this data"
        out.append(head + f" ({name}, {n_seeds} seed{'s' if n_seeds != 1 else ''}).")
        text = (f"Full URNet reaches {_level(summary, full, metric)} against {_level(summary, base, metric)} for the "
                f"baseline, a difference of {_diff(vs_base)}")
        if peer:
            text += (f"; the best peer, {peer}, reaches {_level(summary, peer, metric)}, and URNet minus that peer is "
                     f"{_diff(vs_peer)}")
        out.append(text + ".")

    # The ladder: which step helps.
    ladder = tables.get("ladder_differences")
    if ladder is not None and len(ladder) and n_seeds < 2:
        steps = [f"{str(r['step']).split('->')[-1].strip()} {float(r['diff_pp']):+.1f} points"
                 for _, r in ladder.iterrows()]
        out.append(f"Step by step (one seed, so no step can be called significant): {_join(steps)}.")
    elif ladder is not None and len(ladder):
        helps, hurts, unclear = [], [], []
        for _, r in ladder.iterrows():
            step = str(r["step"]).split("->")[-1].strip()
            desc = f"{step} ({float(r['diff_pp']):+.1f} points, {float(r['low_pp']):+.1f} to {float(r['high_pp']):+.1f})"
            if float(r["low_pp"]) > 0:
                helps.append(desc)
            elif float(r["high_pp"]) < 0:
                hurts.append(desc)
            else:
                unclear.append(step)
        parts = []
        if helps:
            parts.append(f"{_join(helps)} help{'s' if len(helps) == 1 else ''} significantly")
        if hurts:
            parts.append(f"{_join(hurts)} hurt{'s' if len(hurts) == 1 else ''} significantly")
        if unclear:
            parts.append(f"{_join(unclear)} change{'s' if len(unclear) == 1 else ''} {name} by less than the seeds "
                         f"can resolve (the 95% interval includes zero)")
        if not helps:
            parts.insert(0, "no step of the ladder helps significantly")
        out.append(f"Step by step (each rung against the previous one, paired by seed): {'; '.join(parts)}.")

    # The selected configuration, when the study has one.
    if selected:
        text = f"The configuration selected on the noisy validation split, {selected}, reaches {_level(summary, selected, metric)}"
        comps = []
        if base:
            comps.append(f"{_diff(paired_interval(results, base, selected, metric), paired=False)} against the baseline")
        if peer:
            comps.append(f"{_diff(paired_interval(results, peer, selected, metric), paired=False)} against {peer}")
        out.append(text + (": " + ", ".join(comps) if comps else "") + ".")

    # The oracle and the gap closed, or why they are missing.
    if not data.get("ground_truth", True):
        out.append("This data has no ground truth (no true labels), so there is no oracle trained on the clean rows "
                   "and no gap closed; the comparisons above need no truth.")
    elif oracle and base:
        text = f"The best oracle, {oracle}, trained on the truly clean rows only, reaches {_level(summary, oracle, metric)}"
        gap = tables.get("gap_closed")
        g = gap.set_index("method") if gap is not None and len(gap) else None
        closed = []
        for method in [m for m in (full, selected, peer) if m]:
            if g is not None and method in g.index and np.isfinite(float(g.loc[method, "gap_closed"])):
                r = g.loc[method]
                closed.append(f"{method} closes {_num(r['gap_closed'])} of the baseline-to-oracle gap "
                              f"({_num(r['low'])} to {_num(r['high'])})")
        if closed:
            text += "; " + "; ".join(closed) + " (0 = baseline, 1 = oracle)"
        elif g is not None:
            text += "; it is not better than the baseline, so the gap closed is undefined"
        out.append(text + ".")
    coverage = coverage_sentence(data)
    if coverage:
        out.append(coverage)
    return out


def coverage_sentence(data: Mapping[str, Any]) -> str | None:
    """The verdict's warning about classes the training split cannot teach (None when every
    class has enough images), from ``data['class_coverage']``
    (:meth:`urnet_core.data.coverage.ClassCoverage.to_dict`)."""
    cov = data.get("class_coverage") or {}
    n = int(cov.get("n_flagged") or 0)
    if not n:
        return None
    classes = data.get("classes")
    text = (f"Caution: {n}{f' of the {classes}' if classes else ''} class{'es' if n != 1 else ''} "
            f"{'have' if n != 1 else 'has'} no or fewer than {cov.get('min_train_images', 5)} training images")
    test_only = len(cov.get("test_only") or [])
    if test_only:
        text += (f", {test_only} of them in the test split but absent from training (scoring 0 by construction, "
                 "which lowers every mean over classes)")
    return text + "; the data section names them."


def _num(value: Any, digits: int = 2) -> str:
    """``value`` rounded, without a minus sign on zero."""
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def interval_coverage(data: Mapping[str, Any]) -> str:
    """What a 95% interval of the study covers: the seeds, and what a seed varies."""
    seeds = data.get("seeds") or []
    what = "model initialisation, batch order, augmentation, bags, k-means and the confidence model"
    if data.get("draw_per_seed"):
        what = "the benchmark draw (which labels are corrupted) and " + what
    else:
        what += "; the benchmark draw is the same for every seed"
    return (f"Intervals are 95% Student-t intervals over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
            f"({', '.join(str(s) for s in seeds)}); a seed fixes the {what}. `low` and `high` are the bounds of the "
            f"interval.")


def balanced_test_note(test_class_counts: Sequence[int] | None, summary: pd.DataFrame | None = None) -> str | None:
    """Why ``top1`` equals ``balanced_accuracy``, when the test split has as many images in every class
    (the mean of per-class accuracies is then the overall accuracy). None otherwise."""
    if test_class_counts is not None:
        counts = np.asarray(test_class_counts)
        counts = counts[counts > 0]
        if counts.size and counts.min() == counts.max():
            return (f"The test split has {int(counts[0])} images in every class, so top-1 accuracy equals balanced "
                    f"accuracy (the mean of the per-class accuracies): the two columns are identical by construction.")
        return None
    if summary is not None and {"top1_mean", "balanced_accuracy_mean"} <= set(summary.columns) and len(summary):
        if np.allclose(summary["top1_mean"], summary["balanced_accuracy_mean"], atol=1e-9):
            return ("top-1 accuracy equals balanced accuracy in every row, as it does when the test split has as many "
                    "images in every class.")
    return None


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
