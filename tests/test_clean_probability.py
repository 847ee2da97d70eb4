"""URNet+'s fused clean probability and its weights (synthetic signals, no training)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from urnet_core.reweight.clean_probability import (
    clean_probability,
    estimated_clean_counts,
    fused_clean_score,
    label_margin,
    normal_scores,
    relabel_agreeing,
    urnet_plus_weights,
)


def _signals(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.random(n) < 0.6
    # Three weak, independent detectors with different scales.
    signals = {"a": np.where(clean, rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)),
               "b": np.exp(np.where(clean, rng.normal(0.8, 1.0, n), rng.normal(0.0, 1.0, n))),
               "c": np.where(clean, rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.7, n))}
    return clean, signals


def test_fusing_independent_signals_beats_each_one():
    clean, signals = _signals()
    single = max(roc_auc_score(clean, v) for v in signals.values())
    fused = fused_clean_score(signals)
    assert roc_auc_score(clean, fused) > single + 0.03
    p = clean_probability(fused)
    assert roc_auc_score(clean, p) == pytest.approx(roc_auc_score(clean, fused), abs=1e-9)  # monotone
    assert 0.45 < p.mean() < 0.75 and p[clean].mean() > p[~clean].mean() + 0.3


def test_normal_scores_ignore_the_scale_and_reject_nan():
    x = np.array([3.0, 1.0, 2.0, 2.0])
    assert np.allclose(normal_scores(x), normal_scores(np.exp(x)))
    assert normal_scores(x)[1] < normal_scores(x)[2] == normal_scores(x)[3] < normal_scores(x)[0]
    with pytest.raises(ValueError, match="NaN"):
        normal_scores(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="one value per row"):
        fused_clean_score({"a": np.zeros(3), "b": np.zeros(4)})


def test_label_margin_is_positive_exactly_where_the_label_is_the_argmax():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2]])
    margin = label_margin(probs, np.array([0, 0, 1]))
    assert np.allclose(margin, [0.5, -0.3, 0.0])


def test_urnet_plus_weights_balance_the_estimated_clean_counts():
    labels = np.array([0] * 8 + [1] * 4)
    p_clean = np.array([1.0] * 4 + [0.0] * 4 + [1.0] * 4)  # class 0: 4 clean of 8, class 1: 4 of 4
    weights, relabelled = urnet_plus_weights(labels, p_clean, 2, alpha=1.0)
    assert relabelled is None and weights.mean() == pytest.approx(1.0)
    assert weights[labels == 0].sum() == pytest.approx(weights[labels == 1].sum())  # equal clean mass
    assert np.all(weights[4:8] == 0)
    assert np.allclose(estimated_clean_counts(labels, p_clean, 2), [4, 4])
    filtered, _ = urnet_plus_weights(labels, np.where(p_clean > 0, 0.6, 0.4), 2, use="filter")
    assert np.all(filtered[4:8] == 0) and np.all(filtered[:4] > 0)
    with pytest.raises(ValueError, match="use must be"):
        urnet_plus_weights(labels, p_clean, 2, use="drop")


def test_relabel_only_where_both_models_agree_on_another_class():
    labels = np.array([0, 0, 0, 1])
    oof = np.array([[0.1, 0.9], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8]])
    in_sample = np.array([1, 0, 0, 1])
    p_clean = np.array([0.1, 0.1, 0.9, 0.9])
    new, agree = relabel_agreeing(labels, oof, in_sample, p_clean)
    assert agree.tolist() == [True, False, False, False] and new.tolist() == [1, 0, 0, 1]
    weights, relabelled = urnet_plus_weights(labels, p_clean, 2, oof_probs=oof, in_sample_predicted=in_sample)
    assert relabelled.tolist() == [1, 0, 0, 1] and weights[0] > weights[1]  # weighted by the fold model's 0.9


def test_normal_scores_within_groups_equal_one_ranking_per_group():
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=500), 1)  # many ties
    groups = rng.integers(0, 7, size=500)
    groups[groups == 4] = 5  # a group id with no rows
    within = normal_scores(values, groups)
    for g in np.unique(groups):
        assert np.allclose(within[groups == g], normal_scores(values[groups == g]))
    with pytest.raises(ValueError, match="one group per value"):
        normal_scores(values, groups[:-1])


def test_within_class_scores_keep_clean_rows_of_a_hard_class():
    # Class 1 is hard: every signal is lower there, clean or not. Ranked over all rows, its clean
    # rows look like the noisy rows of class 0; ranked within class as well, they do not.
    rng = np.random.default_rng(0)
    n = 4000
    labels = rng.integers(0, 2, n)
    clean = rng.random(n) < 0.7
    signals = {k: np.where(clean, 1.0, 0.0) - 1.2 * labels + rng.normal(0, 0.8, n) for k in "abc"}
    over_all = roc_auc_score(clean, fused_clean_score(signals))
    with_classes = roc_auc_score(clean, fused_clean_score(signals, labels))
    assert with_classes > over_all + 0.02
