import numpy as np
import pytest

from urnet_core.reweight.cluster import cluster_weights, confusion_matrix, most_confused


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


# --------------------------------------------------------------------------- one pass, streaming
def _problem_case(seed=0, n=3000, c=6, d=8):
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, c, n))
    centres = rng.normal(0, 3, size=(c, d))
    x = (centres[labels] + rng.normal(size=(n, d))).astype(np.float32)
    preds = np.where(rng.random(n) < 0.7, labels, (labels + 1) % c)
    return x, labels, confusion_matrix(labels, preds, c)


def test_one_pass_assignment_equals_per_problem_assignment():
    from urnet_core.reweight.cluster import class_rows, one_pass_assign
    from urnet_core.reweight.kmeans import nearest_centroid

    x, labels, conf = _problem_case()
    c, k = conf.shape[0], 4
    rng = np.random.default_rng(1)
    by_class = class_rows(labels, c)
    pools = {j: np.concatenate([[j], most_confused(conf, 2)[j]]) for j in range(c)}
    centres = {j: rng.normal(0, 3, size=(k, x.shape[1])).astype(np.float32) for j in range(c)}
    members = [[(j, col) for j in range(c) for col, t in enumerate(pools[j]) if t == cls] for cls in range(c)]
    # shuffled rows too: the pass groups each chunk's rows by class itself
    perm = rng.permutation(labels.size)
    for xs, ls in ((x, labels), (x[perm], labels[perm])):
        counts, own, pieces = one_pass_assign(xs, ls, centres, members, keep=True, chunk_values=8 * 257)
        got: dict[int, dict[int, int]] = {}
        for p, col, rows, groups in pieces:
            got.setdefault(p, {}).update(zip(rows.tolist(), groups.tolist()))
        for j in range(c):
            prows = np.sort(np.concatenate([np.flatnonzero(ls == t) for t in pools[j]]))
            ref = nearest_centroid(xs[prows], centres[j])  # the problem alone, its own centres
            np.testing.assert_array_equal([got[j][r] for r in prows.tolist()], ref)
            assert counts[j].sum() == prows.size
            mine = prows[ls[prows] == j]
            np.testing.assert_array_equal(own[mine], ref[ls[prows] == j])


def test_one_pass_matches_blocks_when_problems_fit_the_subsample():
    # every problem has <= 256 k rows: both modes train faiss on all of them with the same seed
    x, labels, conf = _problem_case(seed=2, n=900)
    a, da = cluster_weights(x, labels, conf, top_k=2, n_clusters=3, backend="faiss", one_pass=True,
                            return_details=True)
    b, db = cluster_weights(x, labels, conf, top_k=2, n_clusters=3, backend="faiss", one_pass=False,
                            return_details=True)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    for p, q in zip(da, db):
        np.testing.assert_array_equal(p.indices, q.indices)
        np.testing.assert_array_equal(p.groups, q.groups)
        np.testing.assert_array_equal(p.composition, q.composition)
    with pytest.raises(ValueError, match="one_pass"):
        cluster_weights(x, labels, conf, backend="sklearn", one_pass=True)


def test_one_pass_float16_memmap_and_nan(tmp_path):
    from urnet_core.reweight.cluster import ClusterStats

    x, labels, conf = _problem_case(seed=3, n=2000)
    path = tmp_path / "f.npy"
    np.save(path, x.astype(np.float16))
    mm = np.load(path, mmap_mode="r")
    st = ClusterStats()
    w = cluster_weights(mm, labels, conf, top_k=2, n_clusters=3, backend="faiss", stats=st)
    assert st.mode == "one_pass" and st.rows_read == 2000 and st.train_rows > 0
    for j in range(conf.shape[0]):
        assert w[labels == j].mean() == pytest.approx(1.0)
    bad = x.astype(np.float16)
    bad[1234, 3] = np.inf
    with pytest.raises(ValueError, match="row 1234"):
        cluster_weights(bad, labels, conf, top_k=2, n_clusters=3, backend="faiss")


_RSS_SCRIPT = r"""
import sys, numpy as np
sys.path.insert(0, {root!r})
from urnet_core.utils.validation import as_features
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
x = np.load({path!r}, mmap_mode="r")
before = rss()
as_features(np.asarray(x))
print(before, rss())
"""


def test_validation_pass_keeps_rss_bounded(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "big.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(300_000, 256))  # 307 MB
    for s in range(0, mm.shape[0], 50_000):
        mm[s : s + 50_000] = 1.0
    mm.flush()
    del mm
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT.format(root=root, path=str(path))],
                         capture_output=True, text=True, check=True).stdout.split()
    before, after = map(int, out)
    assert after - before < 100e6, (before, after)


def test_file_hash_is_sha256_of_the_whole_file(tmp_path):
    import hashlib

    from urnet_core.utils.io import file_hash

    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 12345)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_hash(path, chunk=1 << 20) == hashlib.sha256(data).hexdigest()[:16]  # multi-chunk path
    assert file_hash(path) == hashlib.sha256(data).hexdigest()[:16]
    path.write_bytes(data[:-1] + b"x")  # any change of content changes the key
    assert file_hash(path, chunk=1 << 20) != hashlib.sha256(data).hexdigest()[:16]


@pytest.mark.parametrize("dtype", ["float16", "float32", "int32"])
def test_features_hashed_during_their_check_equal_the_file_hash(tmp_path, dtype):
    """`urnet weights` hashes the features file in the NaN/inf pass over its memory map (one read):
    the digest is the file's sha256, over several check chunks too."""
    from urnet_core.utils import validation
    from urnet_core.utils.io import file_hash, load_npy, npy_digest
    from urnet_core.utils.validation import as_features

    x = np.random.default_rng(0).normal(size=(5000, 7)).astype(dtype)
    path = tmp_path / "f.npy"
    np.save(path, x)
    mm = np.asarray(load_npy(path))
    digest = npy_digest(path, mm)
    with pytest.raises(RuntimeError, match="fed 0 of"):
        digest.hexdigest()
    old = validation.CHECK_CHUNK_VALUES
    validation.CHECK_CHUNK_VALUES = 7 * 700  # 8 chunks, the last one short
    try:
        as_features(mm, digest=digest)
    finally:
        validation.CHECK_CHUNK_VALUES = old
    assert digest.complete and digest.hexdigest() == file_hash(path)
    # not the whole file in C order: no digest (the caller hashes the file on its own)
    np.save(path, np.asfortranarray(x))
    assert npy_digest(path, np.asarray(load_npy(path))) is None
    np.save(path, x)
    assert npy_digest(path, x[:10]) is None
    with open(path, "ab") as fh:
        fh.write(b"trailing")
    assert npy_digest(path, np.asarray(load_npy(path))) is None


def test_a_nan_is_still_named_when_the_check_also_hashes(tmp_path):
    from urnet_core.utils.io import load_npy, npy_digest
    from urnet_core.utils.validation import as_features

    x = np.ones((300, 4), dtype=np.float16)
    x[123, 2] = np.nan
    path = tmp_path / "f.npy"
    np.save(path, x)
    mm = np.asarray(load_npy(path))
    with pytest.raises(ValueError, match="1 row.*first at row 123"):
        as_features(mm, digest=npy_digest(path, mm))
