"""GPU paths: batched k-means on CUDA, CuPy input, the confidence model on CUDA, AMP training,
and the benchmark's GPU rows. Every test is skipped cleanly without a CUDA device, except the
one that checks the clear error asked-for CUDA gives on a machine without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs
from sklearn.metrics import adjusted_rand_score
from torch.utils.data import Dataset

from urnet_core.reweight.kmeans import batched_kmeans, kmeans
from urnet_core.reweight.compose import URNetConfig, compose_weights
from urnet_core.reweight.instance_weight import instance_weights
from urnet_core.reweight.label_weight import LabelPairs
from urnet_core.training.inference import evaluate
from urnet_core.training.loop import TrainConfig, train

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=3000, centers=5, n_features=16, cluster_std=0.6, random_state=0)
    return x.astype(np.float32), y


def _noisy_features(seed: int = 0, n_per_class: int = 120, c: int = 6, d: int = 24):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(c, d))
    true = np.repeat(np.arange(c), n_per_class)
    x = (centers[true] + rng.normal(0, 1.0, size=(true.size, d))).astype(np.float32)
    labels = true.copy()
    flipped = rng.random(true.size) < 0.25
    labels[flipped] = (true[flipped] + rng.integers(1, c, flipped.sum())) % c
    ranks = np.where(flipped, 1000, 0) + rng.random(true.size)  # clean first within each class
    text = rng.normal(size=(c, 20)).astype(np.float32)
    probs = np.full((true.size, c), 0.1 / (c - 1), dtype=np.float32)
    probs[np.arange(true.size), true] = 0.9
    return x, labels, flipped, ranks, text, probs


def test_cuda_requested_without_cuda_is_a_clear_error():
    if HAS_CUDA:
        pytest.skip("this machine has CUDA")
    x, labels, _, ranks, text, _ = _noisy_features(n_per_class=20)
    with pytest.raises(ValueError, match="CUDA is not available"):
        instance_weights(x, labels, text, ranks=ranks, epochs=1, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_batched_kmeans_cuda_matches_cpu(blobs):
    x, y = blobs
    groups = [np.arange(0, 1200), np.arange(1000, 2500), np.arange(2000, 3000)]
    gpu = batched_kmeans(x, groups, 5, backend="torch", device="cuda", seed=3)
    ref = batched_kmeans(x, groups, 5, backend="sklearn", seed=3)
    for g, rg, rr in zip(groups, gpu, ref):
        assert rg.backend == "torch"
        assert rg.labels.shape == (g.size,)
        assert rg.inertia <= rr.inertia * 1.01
        assert adjusted_rand_score(y[g], rg.labels) > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_kmeans_accepts_cupy_arrays(blobs):
    cp = pytest.importorskip("cupy")
    x, y = blobs
    res = kmeans(cp.asarray(x), 5, backend="torch", seed=0)
    assert isinstance(res.labels, np.ndarray)
    assert adjusted_rand_score(y, res.labels) > 0.99
    # a float16 CuPy array (features stored in half precision) works too
    res16 = kmeans(cp.asarray(x, dtype=cp.float16), 5, backend="torch", seed=0)
    assert adjusted_rand_score(y, res16.labels) > 0.99


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_instance_weights_cuda_agree_with_cpu():
    x, labels, flipped, ranks, text, _ = _noisy_features()
    kw = dict(ranks=ranks, top_r=40, hidden=32, out_dim=16, epochs=20, lr=3e-3, seed=0)
    w_cpu = instance_weights(x, labels, text, device="cpu", **kw)
    w_gpu = instance_weights(x, labels, text, device="cuda", **kw)
    # same random draws, float rounding differs: close, not identical
    assert np.corrcoef(w_cpu, w_gpu)[0, 1] > 0.99
    assert np.abs(w_cpu - w_gpu).max() < 0.05
    assert w_gpu[flipped].mean() < w_gpu[~flipped].mean()
    again = instance_weights(x, labels, text, device="cuda", **kw)
    np.testing.assert_allclose(again, w_gpu, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_compose_weights_on_cuda():
    x, labels, flipped, ranks, text, probs = _noisy_features()
    cfg = URNetConfig.full(instance_epochs=10, device="cuda", top_r=40)
    ws = compose_weights(cfg, labels=labels, num_classes=6, features=x, pred_probs=probs, label_vectors=text,
                         ranks=ranks, seed=0)
    assert set(ws.components) == {"class", "cluster", "instance"}
    assert np.isfinite(ws.sample_weights).all()
    assert ws.sample_weights.mean() == pytest.approx(1.0, rel=1e-4)
    assert ws.soft_targets.shape == (labels.size, 6)


class _Digits(Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.x[i], int(self.labels[i]), int(i)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_amp_training_on_cuda_learns():
    data = load_digits()
    perm = np.random.default_rng(0).permutation(len(data.target))
    tr, te = perm[:1000], perm[1000:1500]
    train_ds, test_ds = _Digits(data.data[tr], data.target[tr]), _Digits(data.data[te], data.target[te])
    weights = np.ones(len(tr), dtype=np.float32)
    predicted = np.where(np.random.default_rng(1).random(len(tr)) < 0.9, train_ds.labels, 0)
    cfg = TrainConfig(epochs=4, batch_size=63, lr=0.05, amp=True, device="cuda", bag_branch=True, bag_size=3)
    result = train(train_ds, num_classes=10, config=cfg, sample_weights=weights, eval_dataset=test_ds,
                   soft_targets=LabelPairs(predicted, 0.8), progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert result.final_metrics["top1"] > 0.8
    assert next(result.model.parameters()).device.type == "cuda"
    metrics, probs = evaluate(result.model, test_ds, num_classes=10, device="cuda")
    assert probs.shape == (500, 10) and np.isfinite(probs).all()
    assert metrics["top1"] == pytest.approx(result.final_metrics["top1"], abs=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_bench_train_rows_on_cuda():
    from urnet_core.benchmarks.train import train_step_section

    rows = train_step_section(num_classes=100, steps=3, warmup=1, epochs=1, device="cuda")
    ratios = [r["ratio_vs_ce"] for r in rows if "ratio_vs_ce" in r]
    assert len(ratios) == 2 and all(np.isfinite(ratios)) and all(r > 0 for r in ratios)
    assert "bf16 autocast" in rows[0]["note"]
