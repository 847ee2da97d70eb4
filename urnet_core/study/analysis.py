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
- C4 few representative instances: the bag branch's saliency (:mod:`~urnet_core.study.scoring`).
- C5 ambiguous labels: :func:`ambiguity` (margin and entropy of the baseline's predictions).

C4's bag saliency (:func:`~urnet_core.study.scoring.bag_saliency`) and the scoring of the weights
against the truth (:func:`~urnet_core.study.scoring.weight_auroc`: how well a weight separates
clean from noisy instances) are in :mod:`urnet_core.study.scoring`.
"""

from __future__ import annotations

from typing import Any, Sequence

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
