import numpy as np
import pytest

from urnet_core.reweight.cluster_weight import cluster_weights, confusion_matrix, most_confused


def test_confusion_matrix_counts_and_probs():
    labels = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 2, 2, 0])
    m = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [0, 1, 2], [1, 0, 0]])
    probs = np.eye(3)[preds] * 0.7 + 0.1
    np.testing.assert_array_equal(confusion_matrix(labels, probs, 3), m)
    with pytest.raises(ValueError):
        confusion_matrix(labels, preds[:4], 3)


def test_most_confused_order_and_ties():
    m = np.array([
        [9, 3, 5, 3, 0],
        [1, 9, 0, 0, 0],
        [0, 0, 9, 0, 0],
        [2, 0, 0, 9, 0],
        [0, 0, 0, 0, 9],
    ])
    top = most_confused(m, top_k=2)
    # row 0: 2 (5), then 1 and 3 tie at 3; M[3,0]=2 > M[1,0]=1 breaks the tie -> 3
    np.testing.assert_array_equal(top[0], [2, 3])
    # row 1: 0 (1), then zeros: reverse confusion M[k,1] all 0 -> smallest id 2
    np.testing.assert_array_equal(top[1], [0, 2])
    np.testing.assert_array_equal(top[4], [0, 1])
    assert most_confused(m, top_k=10).shape == (5, 4)  # clipped to C - 1
    assert not np.any(most_confused(m, top_k=4) == np.arange(5)[:, None])  # never itself


@pytest.fixture
def two_blob_case():
    """Class 0: 30 points in blob A and 10 in blob B; class 1: 40 points in blob B."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(30, 4))
    b0 = rng.normal(10, 0.1, size=(10, 4))
    b1 = rng.normal(10, 0.1, size=(40, 4))
    x = np.vstack([a, b0, b1])
    labels = np.array([0] * 40 + [1] * 40)
    conf = np.array([[30, 10], [5, 35]])
    return x, labels, conf


@pytest.mark.parametrize("backend", ["faiss", "sklearn", "torch"])
def test_known_group_sizes(two_blob_case, backend):
    x, labels, conf = two_blob_case
    raw = cluster_weights(x, labels, conf, top_k=1, n_clusters=2, normalize="none", backend=backend)
    # class-0 problem pools both classes: |A| = 30, |B| = 10 + 40 = 50, total 80 (eq. 7)
    np.testing.assert_allclose(raw[:30], 30 / 80)
    np.testing.assert_allclose(raw[30:40], 50 / 80)
    # class 1 lies entirely in B: 50 / 80
    np.testing.assert_allclose(raw[40:], 50 / 80)

    w = cluster_weights(x, labels, conf, top_k=1, n_clusters=2, backend=backend)  # class_mean
    mean0 = (30 * 30 / 80 + 10 * 50 / 80) / 40
    np.testing.assert_allclose(w[:30], (30 / 80) / mean0)
    np.testing.assert_allclose(w[30:40], (50 / 80) / mean0)
    np.testing.assert_allclose(w[40:], 1.0)
    for j in (0, 1):
        assert w[labels == j].mean() == pytest.approx(1.0)
    assert w[30] > w[0]  # bigger group -> more weight

    ng = cluster_weights(x, labels, conf, top_k=1, n_clusters=2, normalize="n_groups", backend=backend)
    np.testing.assert_allclose(ng[:30], 2 * 30 / 80)

    own = cluster_weights(x, labels, conf, top_k=1, n_clusters=2, count="class", normalize="none", backend=backend)
    np.testing.assert_allclose(own[:30], 30 / 40)  # only class 0's instances counted
    np.testing.assert_allclose(own[30:40], 10 / 40)


def test_details_for_figures(two_blob_case):
    x, labels, conf = two_blob_case
    w, details = cluster_weights(x, labels, conf, top_k=1, n_clusters=2, backend="sklearn", return_details=True)
    d0 = details[0]
    np.testing.assert_array_equal(d0.classes, [0, 1])
    assert d0.indices.size == 80 and d0.groups.shape == (80,)
    assert sorted(d0.sizes.tolist()) == [30, 50]
    assert sorted(map(tuple, d0.composition.tolist())) == [(10, 40), (30, 0)]
    np.testing.assert_allclose(np.sort(d0.group_weights), np.sort(w[[0, 30]]))


def test_small_and_empty_classes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(23, 3))
    labels = np.array([0] * 20 + [2] * 3)  # class 1 empty, class 2 smaller than n_clusters
    conf = confusion_matrix(labels, labels, 3)
    w, details = cluster_weights(x, labels, conf, top_k=0, n_clusters=5, backend="torch", return_details=True)
    np.testing.assert_allclose(w[20:], 1.0)  # each of the 3 points is its own group
    assert details[1] is None
    assert w[:20].mean() == pytest.approx(1.0)
    assert np.all(w > 0)


def test_nan_features_raise(two_blob_case):
    x, labels, conf = two_blob_case
    x = x.copy()
    x[7, 0] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        cluster_weights(x, labels, conf, top_k=1, n_clusters=2)
