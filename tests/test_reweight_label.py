import numpy as np
import pytest

from urnet_core.reweight.label_weight import label_targets


def test_hand_computed_targets():
    labels = np.array([0, 1, 2])
    preds = np.array([0, 2, 1])
    t = label_targets(labels, preds, 3, beta=0.8)
    assert t.dtype == np.float32 and t.shape == (3, 3)
    np.testing.assert_array_equal(t[0], [1, 0, 0])  # agreement: exactly one-hot
    np.testing.assert_allclose(t[1], [0, 0.8, 0.2], rtol=1e-6)
    np.testing.assert_allclose(t[2], [0, 0.2, 0.8], rtol=1e-6)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)


def test_probabilities_use_argmax():
    labels = np.array([0, 1])
    probs = np.array([[0.1, 0.9], [0.3, 0.7]])
    t = label_targets(labels, probs, 2, beta=0.6)
    np.testing.assert_allclose(t, [[0.6, 0.4], [0.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(label_targets(labels, probs, 2, beta=1.0), np.eye(2)[labels])


def test_bad_inputs():
    with pytest.raises(ValueError):
        label_targets([0, 1], [0, 3], 3)
    with pytest.raises(ValueError):
        label_targets([0, 1], np.ones((2, 4)) / 4, 3)
    with pytest.raises(ValueError, match="beta"):
        label_targets([0, 1], [0, 1], 2, beta=-0.1)
