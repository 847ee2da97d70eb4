import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from urnet_core.reweight import kmeans as km
from urnet_core.reweight.kmeans import batched_kmeans, kmeans, resolve_backend

# faiss-cpu is a dependency here; a GPU image without it still runs the other backends' tests
CPU_BACKENDS = (["faiss"] if km.HAS_FAISS else []) + ["sklearn", "torch"]


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=2000, n_features=8, centers=5, cluster_std=0.6, random_state=3)
    return x.astype(np.float32), y


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_backends_recover_blobs(blobs, backend):
    x, y = blobs
    res = kmeans(x, 5, backend=backend, seed=0)
    assert res.backend == backend
    assert res.centers.shape == (5, 8) and res.labels.shape == (2000,) and res.labels.dtype == np.int64
    assert adjusted_rand_score(y, res.labels) > 0.99
    # inertia is the sum of squared distances to the assigned centres
    direct = ((x - res.centers[res.labels]) ** 2).sum()
    assert res.inertia == pytest.approx(float(direct), rel=1e-3)


def test_backends_agree(blobs):
    x, _ = blobs
    results = {b: kmeans(x, 5, backend=b, seed=1) for b in CPU_BACKENDS}
    ref = results["sklearn"]
    for b, r in results.items():
        assert adjusted_rand_score(ref.labels, r.labels) > 0.99, b
        assert r.inertia == pytest.approx(ref.inertia, rel=0.01), b


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_deterministic_given_seed(blobs, backend):
    x, _ = blobs
    a = kmeans(x[:600], 4, backend=backend, seed=7)
    b = kmeans(x[:600], 4, backend=backend, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centers, b.centers)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_fewer_points_than_clusters(backend):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    res = kmeans(x, 5, backend=backend)
    np.testing.assert_array_equal(res.labels, [0, 1, 2])
    np.testing.assert_array_equal(res.centers, x)
    assert res.inertia == 0.0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_duplicates(backend):
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]], dtype=np.float32), 20, axis=0)
    res = kmeans(x, 3, backend=backend, seed=0)
    assert res.labels.shape == (40,)
    assert np.isfinite(res.centers).all()
    assert res.inertia == pytest.approx(0.0, abs=1e-2)  # float32 distance round-off
    assert res.labels[0] != res.labels[-1]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_nan_raises(backend):
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 1] = np.nan
    with pytest.raises(ValueError, match="row 4"):
        kmeans(x, 2, backend=backend)


def test_bad_backend_lists_choices():
    with pytest.raises(ValueError, match="faiss"):
        kmeans(np.zeros((10, 2)), 2, backend="nope")


def test_auto_resolves_and_logs_once(caplog):
    from urnet_core.reweight.kmeans import backends

    backends._LOGGED.clear()
    with caplog.at_level("INFO", logger="urnet_core.reweight.kmeans"):
        first = resolve_backend("auto")
        resolve_backend("auto")
    assert first in {"cuml", "faiss", "sklearn"}
    assert sum("auto ->" in r.message for r in caplog.records) == 1
    if not torch.cuda.is_available():
        assert first == ("faiss" if km.HAS_FAISS else "sklearn")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_batched_matches_single(blobs, backend):
    x, y = blobs
    groups = [np.arange(0, 700), np.arange(500, 1500), np.arange(1200, 2000), np.arange(3), np.array([], dtype=np.int64)]
    results = batched_kmeans(x, groups, 5, backend=backend, seed=4, n_jobs=2)
    assert len(results) == len(groups)
    for i, (g, r) in enumerate(zip(groups, results)):
        assert r.labels.shape == (g.size,)
        if g.size <= 5:
            np.testing.assert_array_equal(r.labels, np.arange(g.size))
            continue
        single = kmeans(x[g], 5, backend=backend, seed=4 + i)
        assert adjusted_rand_score(single.labels, r.labels) > 0.99
        assert r.inertia == pytest.approx(single.inertia, rel=0.01)
        assert adjusted_rand_score(y[g], r.labels) > 0.99
        if backend != "torch":  # faiss/sklearn problem i uses seed + i exactly
            np.testing.assert_array_equal(single.labels, r.labels)


def test_torch_segmented_deterministic(blobs):
    x, _ = blobs
    groups = [np.arange(0, 400), np.arange(300, 900)]
    a = batched_kmeans(x, groups, 4, backend="torch", seed=2)
    b = batched_kmeans(x, groups, 4, backend="torch", seed=2)
    for ra, rb in zip(a, b):
        np.testing.assert_array_equal(ra.labels, rb.labels)
        np.testing.assert_array_equal(ra.centers, rb.centers)


def test_batched_rejects_bad_groups(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match="groups\\[0\\]"):
        batched_kmeans(x, [np.array([0, 5000])], 2, backend="sklearn")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backends(blobs):
    x, y = blobs
    res = kmeans(x, 5, backend="torch", device="cuda", seed=0)
    assert adjusted_rand_score(y, res.labels) > 0.99
    if km.HAS_CUML:
        res = kmeans(x, 5, backend="cuml", seed=0)
        assert adjusted_rand_score(y, res.labels) > 0.99


@pytest.mark.skipif(not km.HAS_FAISS, reason="needs faiss")
def test_subsample_training_reproduces_faiss_kmeans(blobs):
    x, _ = blobs
    small = x[:900]  # <= 256 k rows: kmeans() trains faiss on all rows, as faiss_train does
    sub, rng = km.training_subsample(small.shape[0], 5, 3)
    assert sub is None
    centres = km.faiss_train(small, 5, 3, 25, rng)
    ref = kmeans(small, 5, backend="faiss", seed=3)
    np.testing.assert_array_equal(centres, ref.centers)
    np.testing.assert_array_equal(km.nearest_centroid(small, centres), ref.labels)
    pos, _ = km.training_subsample(x.shape[0], 5, 3)  # 2000 > 1280 rows: a sorted draw of 1280
    assert pos.size == 1280 and np.all(np.diff(pos) > 0)
    # stacked problems: one (m, P) result equal to each problem alone
    stack = np.stack([centres, centres[::-1]])
    both = km.nearest_centroid(small, stack)
    np.testing.assert_array_equal(both[:, 0], ref.labels)
    np.testing.assert_array_equal(both[:, 1], km.nearest_centroid(small, centres[::-1]))


def test_kmeanspp_products_keep_their_bits():
    """k-means++ computes ``(x c^T)^T`` (faster for a few candidate rows); it must equal ``c x^T``
    bit for bit, so the seeded initialisations of the faiss backend do not change."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    for threads in (1, 2):
        with threadpool_limits(threads):
            for _ in range(100):
                n, d, m = int(rng.integers(6, 1400)), int(rng.choice([3, 8, 64, 256])), int(rng.integers(1, 4))
                x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 10)).astype(np.float32)
                c = x[rng.integers(0, n, m)]
                np.testing.assert_array_equal((x @ c.T).T, c @ x.T)
