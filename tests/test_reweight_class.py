import numpy as np
import pytest

from urnet_core.reweight.class_weight import class_weights, effective_number_weights

# counts N = [6, 3, 1], N = 10, C = 3
LABELS = np.array([0] * 6 + [1] * 3 + [2])


def test_balanced_hand_computed():
    # N/(C*N_j) = 10/18, 10/9, 10/3
    term = np.array([10 / 18, 10 / 9, 10 / 3])
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=1.0), term)
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=0.5), 0.5 + 0.5 * term)
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=0.0), np.ones(3))


def test_literal_hand_computed():
    r = np.array([1 / 6, 1 / 3, 1.0])
    frac = r / r.sum()  # [0.1, 0.2, 0.6] / 0.5
    np.testing.assert_allclose(frac, [1 / 9, 2 / 9, 6 / 9])
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=1.0, scheme="literal"), frac)
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=0.5, scheme="literal"), 0.5 + 0.5 * frac)
    np.testing.assert_allclose(class_weights(LABELS, 3, alpha=0.0, scheme="literal"), np.ones(3))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_balanced_mean_one_and_equal_totals(alpha):
    rng = np.random.default_rng(0)
    labels = rng.choice(7, size=500, p=np.array([40, 20, 10, 5, 3, 1, 21]) / 100)
    w = class_weights(labels, 7, alpha=alpha)
    per_instance = w[labels]
    assert per_instance.mean() == pytest.approx(1.0)
    if alpha == 1.0:
        totals = np.bincount(labels, weights=per_instance, minlength=7)
        np.testing.assert_allclose(totals, np.full(7, 500 / 7))


def test_sklearn_doc_example():
    np.testing.assert_allclose(class_weights([1, 1, 1, 1, 0, 0], 2, alpha=1.0), [1.5, 0.75])


def test_empty_class_no_division_error():
    labels = np.array([0, 0, 2])
    with np.errstate(all="raise"):
        w = class_weights(labels, 4, alpha=1.0)
        wl = class_weights(labels, 4, alpha=0.5, scheme="literal")
        we = effective_number_weights(labels, 4, beta=0.9)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(wl)) and np.all(np.isfinite(we))
    assert w[1] == 0.0 and w[3] == 0.0  # alpha-term 0, (1 - alpha) = 0
    assert wl[1] == 0.5
    assert w[labels].mean() == pytest.approx(1.0)  # C counts present classes only
    assert we[1] == 0.0


def test_effective_number_hand_computed():
    beta = 0.9
    raw = (1 - beta) / (1 - beta ** np.array([6.0, 3.0, 1.0]))
    expected = raw * 10 / (np.array([6, 3, 1]) * raw).sum()
    w = effective_number_weights(LABELS, 3, beta=beta)
    np.testing.assert_allclose(w, expected)
    assert w[LABELS].mean() == pytest.approx(1.0)
    assert w[0] < w[1] < w[2]
    np.testing.assert_allclose(effective_number_weights(LABELS, 3, beta=0.0), np.ones(3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="scheme"):
        class_weights(LABELS, 3, scheme="inverse")
    with pytest.raises(ValueError, match="alpha"):
        class_weights(LABELS, 3, alpha=1.5)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        class_weights(LABELS, 2)
    with pytest.raises(ValueError, match="beta"):
        effective_number_weights(LABELS, 3, beta=1.0)
