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


def test_label_pair_loss_equals_dense_soft_loss():
    import torch

    from urnet_core.training.losses import weighted_label_pair_cross_entropy, weighted_soft_cross_entropy
    from urnet_core.reweight.label_weight import LabelPairs, label_pairs

    rng = np.random.default_rng(0)
    b, c = 37, 11
    labels = rng.integers(0, c, b)
    pred = np.where(rng.random(b) < 0.5, labels, rng.integers(0, c, b))
    pairs = label_pairs(labels, pred, c, beta=0.7)
    assert isinstance(pairs, LabelPairs) and pairs.beta == 0.7
    np.testing.assert_array_equal(pairs.expand(labels, c), label_targets(labels, pred, c, beta=0.7))
    logits_a = torch.tensor(rng.normal(size=(b, c)), dtype=torch.float32, requires_grad=True)
    logits_b = logits_a.detach().clone().requires_grad_(True)
    w = torch.tensor(rng.uniform(0.1, 2.0, b), dtype=torch.float32)
    dense = weighted_soft_cross_entropy(logits_a, torch.from_numpy(pairs.expand(labels, c)), w)
    compact = weighted_label_pair_cross_entropy(logits_b, torch.from_numpy(labels), torch.from_numpy(pred), w, beta=0.7)
    torch.testing.assert_close(compact, dense)
    dense.backward()
    compact.backward()
    torch.testing.assert_close(logits_b.grad, logits_a.grad)
    # beta=1 or no predictions: plain weighted cross entropy
    plain = torch.nn.functional.cross_entropy(logits_a.detach(), torch.from_numpy(labels), reduction="none")
    torch.testing.assert_close(weighted_label_pair_cross_entropy(logits_a.detach(), torch.from_numpy(labels),
                                                                 reduction="none"), plain)
    with pytest.raises(ValueError, match="predicted"):
        weighted_label_pair_cross_entropy(logits_a, torch.from_numpy(labels), torch.zeros(3, dtype=torch.long), beta=0.5)
    with pytest.raises(ValueError, match="1-D integer"):
        LabelPairs(np.zeros((2, 2), dtype=np.int64), 0.8)
    with pytest.raises(ValueError, match="beta"):
        LabelPairs(np.zeros(2, dtype=np.int64), 1.5)
