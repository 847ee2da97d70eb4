"""Classification metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from urnet_core.training.metrics import accuracy_by_class_size, classification_metrics, expected_calibration_error


def test_perfect_confident_predictions():
    labels = np.array([0, 1, 2, 2])
    probs = np.eye(3)[labels]
    m = classification_metrics(labels, probs, num_classes=3)
    assert m["top1"] == m["top5"] == m["balanced_accuracy"] == m["macro_f1"] == 1.0
    assert m["ece"] == pytest.approx(0.0)
    assert m["nll"] == pytest.approx(0.0, abs=1e-9)
    assert m["per_class_accuracy"] == [1.0, 1.0, 1.0]
    assert m["n"] == 4


def test_ece_of_calibrated_and_overconfident_predictions():
    # Confidence 0.75 on every row, 3 of 4 correct: perfectly calibrated.
    probs = np.tile([0.75, 0.25], (4, 1))
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0)
    # Same confidence, half correct: ECE = |0.5 - 0.75|.
    assert expected_calibration_error(np.array([0, 0, 1, 1]), probs) == pytest.approx(0.25)
    # Two bins: conf 0.9 (1/2 correct), conf 0.6 (2/2 correct) -> 0.5*0.4 + 0.5*0.4
    probs2 = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(np.array([0, 1, 0, 0]), probs2) == pytest.approx(0.4)


def test_top5_and_balanced_accuracy_hand_case():
    c = 7
    probs = np.full((3, c), 0.01)
    probs[0, [0, 1, 2, 3, 4]] = [0.5, 0.2, 0.1, 0.08, 0.06]  # label 4: 5th best -> top5 hit
    probs[1, [0, 1, 2, 3, 4, 5]] = [0.5, 0.2, 0.1, 0.07, 0.06, 0.02]  # label 6: outside top 5
    probs[2, 6] = 0.94  # label 6: top1 hit
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([4, 6, 6])
    m = classification_metrics(labels, probs, num_classes=c)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    # class 4: 0/1, class 6: 1/2 -> mean over present classes 0.25
    assert m["balanced_accuracy"] == pytest.approx(0.25)
    assert math.isnan(m["per_class_accuracy"][0]) and m["per_class_accuracy"][6] == 0.5
    assert m["nll"] == pytest.approx(-np.mean(np.log(probs[[0, 1, 2], labels])))


def test_top5_with_fewer_than_five_classes_is_one():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    m = classification_metrics(np.array([2, 0]), probs, num_classes=3)
    assert m["top1"] == 0.0 and m["top5"] == 1.0


def test_metrics_validate_input():
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(np.array([0]), np.array([[0.5, 0.5]]), num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        classification_metrics(np.array([2]), np.array([[0.5, 0.5]]), num_classes=2)


def test_accuracy_by_class_size():
    acc = [0.9, 0.1, 0.5, 0.8, np.nan, 0.3]
    counts = [100, 5, 50, 90, 1, 10]
    out = accuracy_by_class_size(acc, counts)
    assert out["head_classes"] == [0, 3] and out["head"] == pytest.approx(0.85)
    assert out["medium_classes"] == [2, 5] and out["medium"] == pytest.approx(0.4)
    assert out["tail_classes"] == [1, 4] and out["tail"] == pytest.approx(0.1)  # NaN ignored
    with pytest.raises(ValueError):
        accuracy_by_class_size([0.5], [1, 2])
