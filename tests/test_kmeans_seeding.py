"""The one-pass cluster training's fast paths give the old per-problem results.

- :func:`seed_problems` (k-means++ of many padded problems at once) picks the same centres as
  the per-problem ``_kmeanspp`` from the same generators;
- :func:`train_centers` (gather with ``np.take`` + torch conversion, grouped seeding, faiss
  Lloyd per problem) returns :func:`faiss_train`'s centres for every problem, so inertia and
  weights are unchanged;
- :func:`take_rows` (also converting into a float32 ``out``) / :func:`as_float32` equal numpy's
  fancy indexing and ``astype``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from urnet_core.reweight.kmeans import backends as kb
from urnet_core.reweight.kmeans import training_subsample
from urnet_core.reweight.kmeans.seeding import padded_groups, seed_problems
from urnet_core.utils.memory import as_float32, take_rows


def _problems(rng, count: int, d: int):
    """Rows of ``count`` blob problems of random sizes (6 .. 1400 rows) in one block."""
    sizes = rng.integers(6, 1400, size=count)
    blocks, rows, start = [], [], 0
    for m in sizes:
        centres = rng.normal(scale=4.0, size=(5, d))
        blocks.append((centres[rng.integers(0, 5, size=m)] + rng.normal(size=(m, d))).astype(np.float32))
        rows.append(np.arange(start, start + m))
        start += m
    return np.concatenate(blocks), rows


@pytest.mark.parametrize("d,group_bytes", [(3, 1 << 12), (64, 1 << 20), (256, 16 << 20)])
def test_seeding_equals_per_problem_kmeanspp(d, group_bytes):
    rng = np.random.default_rng(d)
    block, rows = _problems(rng, 40, d)
    gens = [np.random.default_rng(100 + i) for i in range(len(rows))]
    ref_gens = copy.deepcopy(gens)
    got = {}
    groups = 0
    for first, x, sizes in padded_groups(block, rows, group_bytes=group_bytes):
        groups += 1
        np.testing.assert_array_equal(x[0, : sizes[0]].numpy(), block[rows[first]])
        for q, c in enumerate(seed_problems(x, sizes, 5, gens[first:first + len(sizes)])):
            got[first + q] = c
    assert groups > 1 and len(got) == len(rows)
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(got[i], kb._kmeanspp(block[r], 5, ref_gens[i]), err_msg=f"problem {i}")
        # the generators advanced alike: the next draw agrees
        assert gens[i].random() == ref_gens[i].random()


def test_seeding_of_duplicate_rows_falls_back_to_the_per_problem_code():
    block = np.ones((30, 4), dtype=np.float32)  # every row on the first centre: total distance 0
    block[20:] = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = [np.arange(20), np.arange(10, 30)]
    gens = [np.random.default_rng(1), np.random.default_rng(2)]
    ref = copy.deepcopy(gens)
    (first, x, sizes), = padded_groups(block, rows)
    out = seed_problems(x, sizes, 5, gens)
    for i in range(2):
        np.testing.assert_array_equal(out[i], kb._kmeanspp(block[rows[i]], 5, ref[i]))
    with pytest.raises(ValueError, match="more than k"):
        seed_problems(x[:, :5], np.array([5, 5]), 5, gens)


@pytest.mark.skipif(not kb.HAS_FAISS, reason="needs faiss")
@pytest.mark.parametrize("n_jobs,batch_bytes", [(2, 256 << 20), (2, 40_000), (1, 40_000)])
def test_train_centers_equal_faiss_train_per_problem(tmp_path, monkeypatch, n_jobs, batch_bytes):
    """One batch, or many small ones (gathered into two buffers in turn while the pool trains)."""
    import urnet_core.reweight.cluster.one_pass as op
    from urnet_core.reweight.cluster.one_pass import train_centers
    from urnet_core.reweight.cluster.problems import ClusterStats

    monkeypatch.setattr(op, "TRAIN_BATCH_BYTES", batch_bytes)  # 40 kB: 625 rows of 16 float32, ~1-2 problems

    rng = np.random.default_rng(0)
    block, rows = _problems(rng, 12, 16)
    extra = rng.normal(size=(3000, 16)).astype(np.float32)  # one problem larger than 256 k rows
    feats = np.concatenate([block, extra]).astype(np.float16)
    path = tmp_path / "f.npy"
    np.save(path, feats)
    mm = np.load(path, mmap_mode="r")
    rows.append(np.arange(block.shape[0], feats.shape[0]))
    jobs, seed_of = [], {}
    for j, r in enumerate(rows):
        pos, gen = training_subsample(r.size, 5, 7 + j)
        jobs.append((j, r if pos is None else r[pos], gen))
        seed_of[j] = 7 + j
    ref_jobs = copy.deepcopy(jobs)
    stats = ClusterStats()
    got = train_centers(mm, jobs, 5, seed_of=seed_of, max_iter=25, n_jobs=n_jobs, stats=stats)
    assert stats.train_rows == sum(j[1].size for j in jobs) and jobs[-1][1].size == 1280
    f32 = feats.astype(np.float32)
    for j, sub_rows, gen in ref_jobs:
        sub = f32[sub_rows]
        want = kb.faiss_train(sub, 5, seed_of[j], 25, gen)
        np.testing.assert_array_equal(got[j], want, err_msg=f"problem {j}")


def test_take_rows_and_as_float32_equal_numpy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)).astype(np.float16)
    x[3, 2], x[9, 0] = np.nan, np.inf
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    rows = np.sort(rng.choice(500, 80, replace=False))
    rows[0] = 3
    got = take_rows(mm, rows)
    assert type(got) is np.ndarray and not np.shares_memory(got, mm)
    np.testing.assert_array_equal(got, x[rows])
    for arr in (got, x.astype(np.float64), mm[:50]):
        conv = as_float32(arr)
        assert conv.dtype == np.float32
        np.testing.assert_array_equal(conv, np.asarray(arr).astype(np.float32))
    same = x.astype(np.float32)
    assert as_float32(same) is same
    np.testing.assert_array_equal(as_float32(np.arange(4, dtype=np.int64)), np.arange(4, dtype=np.float32))


def test_take_rows_of_a_memory_map_in_chunks_releases_pages(tmp_path, monkeypatch):
    import urnet_core.utils.memory as M

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 5)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mm = np.asarray(np.load(tmp_path / "x.npy", mmap_mode="r"))  # a plain view of the map, as the CLI holds it
    rows = rng.integers(0, 300, size=97)
    released = []
    monkeypatch.setattr(M, "release_pages", lambda arr, start=None, stop=None: released.append((start, stop)))
    got = M.take_rows(mm, rows, chunk_bytes=10 * 5 * 2)  # 10 rows per chunk
    np.testing.assert_array_equal(got, x[rows])
    assert len(released) == 10 and all(lo <= hi for lo, hi in released)
    released.clear()
    np.testing.assert_array_equal(M.take_rows(x, rows, chunk_bytes=10), x[rows])  # in memory: one take, no release
    assert released == []


@pytest.mark.parametrize("memmap", [True, False])
def test_take_rows_into_a_float32_buffer_converts_chunk_by_chunk(tmp_path, memmap):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 6)).astype(np.float16)
    x[5, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    src = np.load(tmp_path / "x.npy", mmap_mode="r") if memmap else x
    rows = np.sort(rng.choice(400, 123, replace=False))
    buf = np.full((123, 6), -7.0, dtype=np.float32)
    got = take_rows(src, rows, out=buf, chunk_bytes=10 * 6 * 2)  # 10 rows per chunk, 13 chunks
    assert got is buf
    np.testing.assert_array_equal(buf, x[rows].astype(np.float32))
    with pytest.raises(ValueError, match="out has shape"):
        take_rows(src, rows, out=np.empty((122, 6), dtype=np.float32))
