"""Reproducibility: one seed fixes weights, models and metrics on CPU, bit for bit.

Runs in separate processes are covered by the stage tests of ``test_fault_tolerance`` (a
killed and resumed run matches an uninterrupted one in another process); here the same call
is repeated and a different seed must change what depends on randomness.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

from urnet_core.utils.io import stable_hash
from urnet_core.study.report import environment, git_revision
from urnet_core.reweight.compose import URNetConfig, compose_weights
from urnet_core.training.loop import TrainConfig, train


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(3)
    c, d = 4, 8
    labels = np.repeat(np.arange(c), [90, 50, 30, 20])
    centers = rng.normal(0, 2.5, size=(c, d))
    features = centers[labels] + rng.normal(size=(labels.size, d))
    flip = rng.random(labels.size) < 0.2
    labels = np.where(flip, rng.integers(0, c, labels.size), labels)
    logits = features @ centers.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    ranks = np.concatenate([np.arange(np.sum(labels == k), dtype=float) for k in range(c)])
    order = np.argsort(labels, kind="stable")
    labels, features, probs = labels[order], features[order], probs[order]
    return dict(labels=labels, num_classes=c, features=features, pred_probs=probs,
                label_vectors=rng.normal(size=(c, 16)), ranks=ranks,
                sources=np.array(["google"] * labels.size, dtype=object))


def _full_weights(problem, seed):
    cfg = URNetConfig.full(kmeans_backend="sklearn", n_clusters=3, top_r=8, instance_epochs=5)
    return compose_weights(cfg, seed=seed, **problem)


def test_same_seed_gives_bit_identical_weights_and_targets(problem):
    a, b = _full_weights(problem, 0), _full_weights(problem, 0)
    assert a.sample_weights.dtype == b.sample_weights.dtype
    assert np.array_equal(a.sample_weights, b.sample_weights)
    assert np.array_equal(a.soft_targets, b.soft_targets)
    assert a.components.keys() == b.components.keys() and len(a.components) >= 3
    for name in a.components:
        assert np.array_equal(a.components[name], b.components[name]), name


def test_other_seed_changes_the_random_components_only(problem):
    a, c = _full_weights(problem, 0), _full_weights(problem, 1)
    # Class weights are a pure function of the counts; the confidence model's initialisation
    # and negative labels depend on the seed.
    assert np.array_equal(a.components["class"], c.components["class"])
    assert not np.array_equal(a.components["instance"], c.components["instance"])


def _train_once(seed: int):
    data = load_digits()
    x = torch.tensor(data.data[:400], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(data.target[:400])
    ds = TensorDataset(x, y, torch.arange(400))
    ds.labels = data.target[:400]
    cfg = TrainConfig(model="small_cnn", epochs=2, batch_size=64, lr=0.05, amp=False, device="cpu", seed=seed)
    weights = np.linspace(0.5, 1.5, 400).astype(np.float32)
    result = train(ds, num_classes=10, config=cfg, sample_weights=weights, eval_dataset=ds, progress=False)
    return result


def test_same_seed_gives_bit_identical_model_and_metrics():
    a, b = _train_once(0), _train_once(0)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    def untimed(history):  # wall-clock seconds are the one field that may differ
        return [{k: v for k, v in rec.items() if k != "seconds"} for rec in history]

    assert untimed(a.history) == untimed(b.history)
    assert a.final_metrics == b.final_metrics
    sc = _train_once(1).model.state_dict()
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_report_records_versions_revision_and_hashes(tmp_path):
    env = environment()
    assert env["python"] and {"torch", "numpy"} <= set(env["packages"])
    assert env["git_revision"] == git_revision() and git_revision()
    # Data hashes are content hashes: equal content, equal key; one changed byte, another key.
    assert stable_hash(np.arange(5)) == stable_hash(np.arange(5))
    assert stable_hash(np.arange(5)) != stable_hash(np.array([0, 1, 2, 3, 5]))
