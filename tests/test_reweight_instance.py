import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from urnet_core.models.confidence import ConfidenceModel
from urnet_core.reweight.instance_weight import instance_weights, select_positives


def test_select_positives_rank_source_and_fallbacks():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
    ranks = np.array([3, 0, 1, np.nan, 5, np.nan, 2, np.nan, np.nan])
    sources = np.array(["google", "flickr", "google", "google", "flickr", "flickr", "flickr", "google", "google"], dtype=object)
    pos = select_positives(labels, ranks, sources, top_r=2, clean_source="google")
    # class 0: google rows 0 (rank 3), 2 (rank 1), 3 (NaN) -> ranks 1, 3 -> rows 2, 0
    # class 1: no google rows -> all sources: ranks 5, NaN, 2 -> rows 6, 4
    # class 2: all ranks NaN -> table order -> rows 7, 8
    np.testing.assert_array_equal(pos, [0, 2, 4, 6, 7, 8])
    # no source column: every source counts
    np.testing.assert_array_equal(select_positives(labels, ranks, None, top_r=1), [1, 6, 7])
    # unknown clean source behaves the same
    np.testing.assert_array_equal(select_positives(labels, ranks, sources, top_r=1, clean_source="bing"), [1, 6, 7])
    # no ranks at all: first rows of each class
    np.testing.assert_array_equal(select_positives(labels, None, None, top_r=1), [0, 4, 7])


def test_confidence_model_shapes_and_range():
    torch.manual_seed(0)
    model = ConfidenceModel(10, text_dim=6, hidden=8, out_dim=4)
    cos = model(torch.randn(5, 10), torch.randn(5, 6))
    assert cos.shape == (5,)
    assert torch.all(cos.abs() <= 1 + 1e-6)


def _noisy_problem(seed=0, n_per_class=150, c=5, d=16, flip=0.25):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(c, d))
    true = np.repeat(np.arange(c), n_per_class)
    x = centers[true] + rng.normal(0, 1.0, size=(true.size, d))
    labels = true.copy()
    flipped = rng.random(true.size) < flip
    labels[flipped] = (true[flipped] + rng.integers(1, c, flipped.sum())) % c
    # Search rank: clean instances come first within their (observed) class.
    ranks = np.empty(true.size)
    for j in range(c):
        rows = np.flatnonzero(labels == j)
        order = np.lexsort((rng.random(rows.size), flipped[rows]))
        ranks[rows[order]] = np.arange(rows.size)
    text = rng.normal(size=(c, 24))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return x, labels, flipped, ranks, text


def test_flipped_labels_get_lower_weight():
    x, labels, flipped, ranks, text = _noisy_problem()
    w, info = instance_weights(x, labels, text, ranks=ranks, top_r=30, hidden=32, out_dim=16, epochs=40,
                               lr=3e-3, seed=0, return_model=True)
    assert w.shape == labels.shape
    assert w.min() >= 0.0 and w.max() <= 1.0
    assert w[flipped].mean() < w[~flipped].mean()
    assert roc_auc_score(~flipped, w) > 0.8
    # loss = -mean(cos_pos - cos_neg) falls below 0 as positives separate from negatives
    assert info["loss_history"][-1] < info["loss_history"][0]
    assert info["loss_history"][-1] < -0.5
    assert info["positives"].size == 5 * 30


def test_deterministic_and_global_rng_untouched():
    x, labels, _, ranks, text = _noisy_problem(seed=1, n_per_class=40)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = instance_weights(x, labels, text, ranks=ranks, top_r=10, hidden=16, out_dim=8, epochs=3, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)  # the seeded init does not consume the global RNG
    b = instance_weights(x, labels, text, ranks=ranks, top_r=10, hidden=16, out_dim=8, epochs=3, seed=5)
    np.testing.assert_array_equal(a, b)
    c = instance_weights(x, labels, text, ranks=ranks, top_r=10, hidden=16, out_dim=8, epochs=3, seed=6)
    assert not np.array_equal(a, c)


def test_bad_inputs():
    x, labels, _, ranks, text = _noisy_problem(n_per_class=10)
    with pytest.raises(ValueError, match="2 classes"):
        instance_weights(x, np.zeros_like(labels), text[:1], epochs=1)
    with pytest.raises(ValueError):
        instance_weights(x[:-1], labels, text, epochs=1)
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="row 3"):
        instance_weights(bad, labels, text, epochs=1)


def test_weights_bit_identical_to_the_old_implementation():
    """``tests/data/instance_weights_main.npz``: weights of the implementation before the chunked
    ``score_rows`` (float32 and float16 inputs, two chunk sizes); the new scoring chunks differ."""
    from pathlib import Path

    ref = np.load(Path(__file__).parent / "data" / "instance_weights_main.npz")
    for key in ref.files:
        if not key.startswith("w-"):
            continue
        _, dt, chunk = key.split("-")
        for rows in (int(chunk), 65536):
            timings = {}
            w = instance_weights(ref["x"].astype(dt), ref["labels"], ref["vec"], ranks=ref["ranks"], top_r=40,
                                 epochs=3, batch_size=64, seed=1, chunk_rows=rows, negatives_per_positive=2,
                                 timings=timings)
            np.testing.assert_array_equal(w, ref[key])
            n_pos = len(np.unique(ref["labels"])) * 40  # top_r positives per class (every class has >= 40 rows)
            assert timings["instance.train_steps"] == 3 * -(-n_pos // 64)
            assert set(timings) == {"instance.train_s", "instance.train_steps", "instance.score_s",
                                    "instance.fastest_epoch_s", "instance.epoch_steps"}
            assert timings["instance.epoch_steps"] * 3 == timings["instance.train_steps"]
            assert 0 < timings["instance.fastest_epoch_s"] <= timings["instance.train_s"] / 3


def test_score_rows_names_the_file_row_of_a_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 300)
    text = rng.normal(size=(3, 5)).astype(np.float32)
    x[250, 2] = np.nan  # outside the positives' rows only if not drawn: use ranks to keep it out
    ranks = np.arange(300, dtype=float)
    with pytest.raises(ValueError, match="row 250"):
        instance_weights(x, labels, text, ranks=ranks, top_r=5, epochs=1, chunk_rows=100)


def test_training_is_the_same_on_one_and_two_threads():
    """A label used by several rows of a batch gets their gradients summed; with indexing's
    backward (atomic adds over the OpenMP threads) that sum's order, and so the trained model,
    changed from run to run on 2 threads. Few classes and a full batch: most labels are used 3+
    times a batch, and the gradient (256 x 2 x 128 values) is large enough to be split over threads."""
    rng = np.random.default_rng(0)
    c, per_class = 200, 12
    labels = np.repeat(np.arange(c), per_class)
    x = rng.normal(size=(labels.size, 8)).astype(np.float32)
    text = rng.normal(size=(c, 12)).astype(np.float32)
    old = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 2, 2):
            torch.set_num_threads(threads)
            runs.append(instance_weights(x, labels, text, top_r=per_class, epochs=8, batch_size=256, seed=0))
    finally:
        torch.set_num_threads(old)
    for w in runs[1:]:
        np.testing.assert_array_equal(w, runs[0])
