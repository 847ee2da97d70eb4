"""The web-noise benchmark: realised rates, long tail, ranks, sources, blends, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from urnet_core.data import table as T
from urnet_core.data.webnoise import (
    FASHION_MNIST_LOOKALIKES,
    long_tail_sizes,
    make_test_table,
    make_web_noisy,
    noise_rate_by_rank,
    realised_noise_rates,
)
from urnet_core.utils.io import stable_hash

GROUPS = [(0, 1), (2, 3, 4)]


@pytest.fixture(scope="module")
def bench(synthetic_images):
    images, labels = synthetic_images
    rng = np.random.default_rng(5)
    open_images = rng.integers(0, 256, (300, 16, 16), dtype=np.uint8)  # resized to 8x8 inside
    return make_web_noisy(
        images, labels, class_names=[f"c{i}" for i in range(6)], open_images=open_images,
        imbalance_ratio=5.0, max_per_class=300, closed_noise=0.3, asym_fraction=0.6, open_noise=0.1,
        asym_pairs=GROUPS, ambiguous_frac=0.05, seed=3,
    )  # fmt: skip


def test_schema_and_image_alignment(bench, synthetic_images):
    table = bench.table
    T.validate_table(table, num_classes=6)
    assert set(T.OPTIONAL_COLUMNS) <= set(table.columns)
    assert (table.split == "train").all() and table.path.isna().all()
    assert table.image_index.tolist() == list(range(len(table)))
    assert bench.images.shape == (len(table), 8, 8) and bench.images.dtype == np.uint8
    # clean rows show an image of their class: the synthetic class means are 40 * class
    clean = table[table.noise_type == "clean"]
    means = bench.images[clean.image_index].reshape(len(clean), -1).mean(axis=1)
    assert np.all(np.abs(means - 40.0 * clean.label.to_numpy()) < 8)
    sym = table[table.noise_type.isin(["sym", "asym"])]
    means = bench.images[sym.image_index].reshape(len(sym), -1).mean(axis=1)
    assert np.all(np.abs(means - 40.0 * sym.true_label.to_numpy()) < 8)
    assert (sym.true_label != sym.label).all()
    opened = table[table.noise_type == "open"]
    assert (opened.true_label == -1).all() and len(opened) > 0


def test_realised_rates_close_to_requested(bench):
    overall = realised_noise_rates(bench.table, by=None).iloc[0]
    assert abs(overall.noise_rate - 0.4) < 0.02
    assert abs(overall.share_open - 0.1) < 0.015
    assert abs(overall.share_ambiguous - 0.05) < 0.015
    per_class = realised_noise_rates(bench.table)
    assert per_class.n.sum() == len(bench.table)
    assert (abs(per_class.noise_rate - 0.4) < 0.1).all()
    # asym noise only in look-alike classes; it makes up ~60% of their closed noise
    grouped = per_class.loc[[0, 1, 2, 3, 4]]
    assert (per_class.loc[5, "share_asym"] == 0) and (grouped.share_asym > 0).all()
    closed = grouped.share_asym + grouped.share_sym
    assert abs((grouped.share_asym * grouped.n).sum() / (closed * grouped.n).sum() - 0.6) < 0.05
    asym = bench.table[bench.table.noise_type == "asym"]
    group_of = {c: g for g in GROUPS for c in g}
    assert all(t in group_of[y] for y, t in zip(asym.label, asym.true_label))


def test_long_tail_ratio(bench):
    counts = np.bincount(bench.table.label, minlength=6)
    assert counts.max() == 300 and counts.max() / counts.min() == pytest.approx(5.0, rel=0.02)
    assert sorted(counts.tolist()) == sorted(long_tail_sizes(6, 300, 5.0).tolist())
    assert bench.params["class_sizes"] == counts.tolist()


def test_top_ranks_cleaner_and_flickr_noisier(bench):
    table = bench.table
    noisy = table.noise_type.isin(["asym", "sym", "open"])
    google = table.source == "google"
    top = noisy[google & (table["rank"] < 15)].mean()
    low = noisy[google & (table["rank"] >= 60)].mean()
    assert top < 0.5 * low
    by_source = realised_noise_rates(table, by="source")
    assert by_source.loc["flickr", "noise_rate"] > 1.5 * by_source.loc["google", "noise_rate"]
    assert abs(by_source.loc["google", "n"] / len(table) - 0.7) < 0.02
    ranks = noise_rate_by_rank(table, bins=[0, 15, 60, np.inf])
    g = ranks[ranks.source == "google"].noise_rate.to_numpy()
    assert g[0] < g[-1]
    # ranks are 0..n-1 within each (label, source)
    for _, group in table.groupby(["label", "source"]):
        assert sorted(group["rank"]) == list(range(len(group)))


def test_ambiguous_rows_are_blends(bench, synthetic_images):
    amb = bench.table[bench.table.noise_type == "ambiguous"]
    assert len(amb) > 0 and (amb.second_label >= 0).all() and (amb.second_label != amb.label).all()
    assert (amb.true_label == amb.label).all()
    means = bench.images[amb.image_index].reshape(len(amb), -1).mean(axis=1)
    expected = 40.0 * (amb.label.to_numpy() + amb.second_label.to_numpy()) / 2
    assert np.all(np.abs(means - expected) < 0.1 * 40 * np.abs(amb.label - amb.second_label) + 8)
    assert (bench.table.second_label[bench.table.noise_type != "ambiguous"] == -1).all()


def test_each_source_image_used_at_most_once(synthetic_images):
    images, labels = synthetic_images
    # tag each image uniquely in its corner pixel so reuse can be detected
    tagged = images.copy()
    tagged[:, 0, 0] = np.arange(len(images)) % 251
    tagged[:, 0, 1] = np.arange(len(images)) // 251
    web = make_web_noisy(tagged, labels, class_names=list("abcdef"), open_noise=0.0, ambiguous_frac=0.0, seed=1)
    keys = web.images[:, 0, 0].astype(int) + 251 * web.images[:, 0, 1].astype(int)
    assert len(np.unique(keys)) == len(web.table)
    # without max_per_class the largest class is shrunk until every true class can supply its rows
    assert web.params["max_per_class"] <= 400


def test_determinism_by_seed(synthetic_images):
    images, labels = synthetic_images
    kwargs = dict(class_names=list("abcdef"), open_images=images[:50], max_per_class=120, asym_pairs=GROUPS)
    a = make_web_noisy(images, labels, seed=7, **kwargs)
    b = make_web_noisy(images, labels, seed=7, **kwargs)
    c = make_web_noisy(images, labels, seed=8, **kwargs)
    assert stable_hash(a.table, a.images) == stable_hash(b.table, b.images)
    assert stable_hash(a.table, a.images) != stable_hash(c.table, c.images)


def test_test_table_untouched(digits_splits):
    d = digits_splits
    before = d.test_images.copy()
    make_web_noisy(d.train_images, d.train_labels, class_names=d.class_names, open_images=d.test_images[:20], seed=0)
    assert np.array_equal(before, d.test_images)
    test = make_test_table(d.test_images, d.test_labels, d.class_names, image_offset=1000)
    assert (test.split == "test").all() and (test.noise_type == "clean").all()
    assert np.array_equal(test.label, d.test_labels) and np.array_equal(test.true_label, d.test_labels)
    assert test.image_index.tolist() == list(range(1000, 1000 + len(test)))


def test_fashion_lookalike_groups_are_valid():
    flat = [c for g in FASHION_MNIST_LOOKALIKES for c in g]
    assert len(flat) == len(set(flat)) and all(0 <= c < 10 for c in flat)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(closed_noise=0.8, open_noise=0.3), ValueError, "must be <= 1"),
        (dict(imbalance_ratio=0.5), ValueError, "imbalance_ratio"),
        (dict(asym_pairs=[(0, 9)]), ValueError, "outside"),
        (dict(asym_pairs=[(0, 1), (1, 2)]), ValueError, "more than one group"),
        (dict(sources={"google": {"share": 0.5}}), ValueError, "sum to 1"),
        (dict(open_noise=0.1, open_images=None), ValueError, "needs open_images"),
        (dict(closed_noise=1.5), ValueError, "closed_noise"),
    ],
)
def test_bad_parameters(synthetic_images, kwargs, error, pattern):
    images, labels = synthetic_images
    base = dict(class_names=list("abcdef"), open_images=images[:10])
    with pytest.raises(error, match=pattern):
        make_web_noisy(images, labels, **{**base, **kwargs})


def test_bad_labels(synthetic_images):
    images, labels = synthetic_images
    with pytest.raises(ValueError, match="must lie in"):
        make_web_noisy(images, labels, class_names=list("abc"), open_noise=0)
    with pytest.raises(ValueError, match="has no images"):
        make_web_noisy(images, labels, class_names=list("abcdefg"), open_noise=0)
    with pytest.raises(TypeError, match="uint8"):
        make_web_noisy(images.astype(np.float32), labels, class_names=list("abcdef"), open_noise=0)
