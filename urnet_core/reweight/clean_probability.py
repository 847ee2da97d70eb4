"""URNet+: one estimate of P(clean | row) fused from the per-row signals, without ground truth.

URNet multiplies raw signals (the image-text cosine of eq. 8-9, the cluster fraction of eq. 7);
each is a noisy detector of mislabelled rows on its own and their scales differ. URNet+
(docs/DESIGN.md section 5.7) puts every signal on one scale and fuses them:

1. each signal ``s`` becomes a normal score ``z = Phi^-1((rank(s) + 0.5) / n)`` (higher = more
   likely clean) twice: ranked among all rows, and ranked among the rows of the same observed
   class. Ranks make the signals comparable whatever their scale, and the normal scores keep
   the tails apart, which averaging raw ranks would flatten. The within-class score compares a
   row with its own class: a clean row of a hard class (look-alike classes, where the models
   are unsure of every row) is not mistaken for noise because its class is hard, which is
   what an asymmetric flip between look-alike classes needs; the score over all rows keeps
   the difference between a clean class and a noisy one;
2. the fused score is the mean of these normal scores (no weights to tune: a signal that
   carries no information adds noise, not bias);
3. a two-component Gaussian mixture on the fused score, as DivideMix fits one on the loss (Li
   et al. 2020, section 3.1), gives ``P(clean | row)``: the posterior of the component with the
   higher mean.

The signals the study fuses (:func:`urnet_core.study.pipeline.weight_components`): from the
cross-fitted baseline, fold by fold, the fold model's probability of the observed label and its
margin over the strongest other class, the image-text confidence ``wI`` and the own-class
cluster weight; and the in-sample baseline's probability of the observed label (it has seen
the row, but at the study's epochs it has not memorised the noise, and it is a second model).
Measured on the default benchmark (clean vs noisy AUROC, mean of 8 seeds): 0.901, 0.876, 0.824,
0.847 and 0.919 alone; fused over all rows only 0.924 (asymmetric flips 0.872), fused over all
rows and within class 0.938 (asymmetric flips 0.902; docs/DESIGN.md section 5.7). Everything is ``O(n)`` after the signals exist (a sort
per signal and a one-dimensional mixture fitted on at most ``max_fit_rows`` rows), so it runs at
WebVision scale.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from urnet_core.utils.validation import as_labels

#: Signals :func:`fused_clean_score` expects from the study, all "higher = more likely clean".
SIGNALS = ("oof_confidence", "oof_margin", "instance", "cluster_own_class", "in_sample_confidence")


def normal_scores(values: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """``Phi^-1((rank + 0.5) / n)`` of ``values`` (ties get their mean rank; NaN is an error).

    With ``groups`` (one non-negative int per row, e.g. the observed class), each row is ranked
    among the rows of its own group and ``n`` is that group's size; one sort for all groups, so
    it stays ``O(n log n)`` with 5000 classes.
    """
    from scipy.special import ndtri
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"a signal must be a non-empty 1-d array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("a signal holds NaN or inf values")
    if groups is None:
        ranks = rankdata(values, method="average") - 1.0
        return ndtri((ranks + 0.5) / values.size)
    groups = as_labels(groups)
    if groups.shape != values.shape:
        raise ValueError(f"groups {groups.shape} must give one group per value {values.shape}")
    # Rank the pairs (group, value): the joint average rank minus the rows of lower groups is the
    # average rank within the group (ties within a group share it, as above).
    dense = rankdata(values, method="dense").astype(np.int64)
    joint = rankdata(groups.astype(np.int64) * (int(dense.max()) + 1) + dense, method="average") - 1.0
    sizes = np.bincount(groups)
    starts = np.cumsum(sizes) - sizes
    return ndtri((joint - starts[groups] + 0.5) / sizes[groups])


def label_margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``p(y | x) - max_{k != y} p(k | x)`` of every row (in [-1, 1]; > 0 when the label is the argmax)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = as_labels(labels, num_classes=probs.shape[1])
    rows = np.arange(labels.size)
    own = probs[rows, labels]
    others = probs.copy()
    others[rows, labels] = -np.inf
    return own - others.max(axis=1)


def fused_clean_score(signals: Mapping[str, np.ndarray], labels: np.ndarray | None = None) -> np.ndarray:
    """The mean of the signals' :func:`normal_scores` (each signal: one value per row, higher = cleaner).

    With ``labels`` (the observed class of every row) each signal is scored twice, over all rows
    and within its observed class, and the mean runs over both (module docstring, step 1).
    """
    if not signals:
        raise ValueError("no signals to fuse")
    lengths = {name: np.asarray(v).shape for name, v in signals.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"signals must have one value per row each, got shapes {lengths}")
    scores = [normal_scores(v) for v in signals.values()]
    if labels is not None:
        scores += [normal_scores(v, labels) for v in signals.values()]
    return np.mean(scores, axis=0)


def clean_probability(score: np.ndarray, *, seed: int = 0, max_fit_rows: int = 200_000) -> np.ndarray:
    """``P(clean | row)``: posterior of the higher-mean component of a 2-component Gaussian
    mixture fitted on ``score`` (a random ``max_fit_rows`` subsample at scale; seeded)."""
    from sklearn.mixture import GaussianMixture

    score = np.asarray(score, dtype=np.float64).reshape(-1, 1)
    if score.shape[0] < 4:
        raise ValueError(f"need at least 4 rows to fit the mixture, got {score.shape[0]}")
    rng = np.random.default_rng(seed)
    fit_rows = score if score.shape[0] <= max_fit_rows else score[rng.choice(score.shape[0], max_fit_rows,
                                                                              replace=False)]
    gmm = GaussianMixture(n_components=2, max_iter=100, tol=1e-4, reg_covar=1e-4, random_state=seed).fit(fit_rows)
    clean = int(np.argmax(gmm.means_.ravel()))
    return gmm.predict_proba(score)[:, clean]


def clean_probability_from_signals(signals: Mapping[str, np.ndarray], labels: np.ndarray, *,
                                   seed: int = 0) -> np.ndarray:
    """:func:`clean_probability` of :func:`fused_clean_score` over all rows and within each
    observed class of ``labels`` (float32, one value per row)."""
    return clean_probability(fused_clean_score(signals, labels), seed=seed).astype(np.float32)


def study_signals(labels: np.ndarray, oof_probs: np.ndarray, in_sample_probs: np.ndarray, instance: np.ndarray,
                  cluster_own_class: np.ndarray) -> dict[str, np.ndarray]:
    """The :data:`SIGNALS` the study fuses, from the cross-fitted (``oof_probs``) and the
    in-sample baseline's probabilities, the instance weight and the own-class cluster weight
    (each one value per row; the instance and cluster weights computed on out-of-sample features)."""
    oof_probs = np.asarray(oof_probs)
    labels = as_labels(labels, num_classes=oof_probs.shape[1])
    rows = np.arange(labels.size)
    return {"oof_confidence": oof_probs[rows, labels].astype(np.float64),
            "oof_margin": label_margin(oof_probs, labels),
            "instance": np.asarray(instance, dtype=np.float64),
            "cluster_own_class": np.asarray(cluster_own_class, dtype=np.float64),
            "in_sample_confidence": np.asarray(in_sample_probs)[rows, labels].astype(np.float64)}


def estimated_clean_counts(labels: np.ndarray, p_clean: np.ndarray, num_classes: int) -> np.ndarray:
    """``sum_{i: y_i = j} P(clean | i)`` per class j: how many clean rows each class is estimated to hold."""
    labels = as_labels(labels, num_classes=num_classes)
    return np.bincount(labels, weights=np.asarray(p_clean, dtype=np.float64), minlength=num_classes)


def relabel_agreeing(labels: np.ndarray, oof_probs: np.ndarray, in_sample_predicted: np.ndarray,
                     p_clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows to relabel, and their new class: the fold model and the in-sample baseline both
    predict the same class ``k != y`` and ``P(clean) < 0.5``. Returns ``(new_labels, agree)``
    (``new_labels == labels`` where ``agree`` is False)."""
    oof_probs = np.asarray(oof_probs)
    labels = as_labels(labels, num_classes=oof_probs.shape[1])
    oof_predicted = oof_probs.argmax(1)
    agree = (oof_predicted != labels) & (np.asarray(in_sample_predicted) == oof_predicted) & \
        (np.asarray(p_clean) < 0.5)
    return np.where(agree, oof_predicted, labels), agree


def urnet_plus_weights(labels: np.ndarray, p_clean: np.ndarray, num_classes: int, *, use: str = "weight",
                       threshold: float = 0.5, class_scheme: str = "balanced", alpha: float = 1.0,
                       cb_beta: float = 0.999, oof_probs: np.ndarray | None = None,
                       in_sample_predicted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """URNet+'s per-row weights (mean 1) and new labels (docs/DESIGN.md section 5.7).

    ``use='weight'``: ``w_i = P(clean | i)``; ``'filter'``: ``w_i = [P(clean | i) >= threshold]``.
    Then the class step on the *estimated clean* class sizes (:func:`estimated_clean_counts`):
    eq. 2-4 with ``alpha`` (``class_scheme='balanced'``) or the effective number with
    ``cb_beta`` (``'effective_number'``), so a class is balanced on the rows that count, not on
    its noisy size. With ``oof_probs`` and ``in_sample_predicted`` the rows both models move to
    the same other class (:func:`relabel_agreeing`) get that class as their label and the fold
    model's probability of it as their weight; the second value returned is then the new labels
    (else None).
    """
    from urnet_core.reweight.class_weight import class_weights, effective_number_weights

    labels = as_labels(labels, num_classes=num_classes)
    p_clean = np.asarray(p_clean, dtype=np.float64)
    if use == "weight":
        weights = p_clean.copy()
    elif use == "filter":
        weights = (p_clean >= threshold).astype(np.float64)
    else:
        raise ValueError(f"use must be 'weight' or 'filter', got {use!r}")
    new_labels = None
    if oof_probs is not None and in_sample_predicted is not None:
        new_labels, agree = relabel_agreeing(labels, oof_probs, in_sample_predicted, p_clean)
        weights = np.where(agree, np.asarray(oof_probs)[np.arange(labels.size), new_labels], weights)
    counts = np.maximum(estimated_clean_counts(labels, weights, num_classes), 1.0)
    if class_scheme == "effective_number":
        per_class = effective_number_weights(labels, num_classes, beta=cb_beta, counts=counts)
    else:
        per_class = class_weights(labels, num_classes, alpha=alpha, scheme=class_scheme, counts=counts)
    weights = weights * per_class[labels if new_labels is None else new_labels]
    if not weights.sum() > 0:
        raise ValueError("every row has URNet+ weight 0")
    return (weights / weights.mean()).astype(np.float32), new_labels
