import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from urnet_core.reweight.class_weight import class_weights
from urnet_core.reweight.compose import URNetConfig, compose_weights


def test_ladder_adds_one_strategy_per_rung():
    ladder = URNetConfig.ladder()
    assert list(ladder) == ["baseline", "+class", "+cluster", "+instance", "+bag", "+label"]
    flags = ["class_reweight", "cluster_reweight", "instance_reweight", "bag_branch", "label_reweight"]
    on = [[getattr(cfg, f) for f in flags] for cfg in ladder.values()]
    assert on[0] == [False] * 5
    for k in range(1, 6):
        assert sum(on[k]) == k and all(on[k][i] for i in range(k))
    full = URNetConfig.full()
    assert all(getattr(full, f) for f in flags)
    assert URNetConfig.ladder(alpha=0.3)["+label"].alpha == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.alpha = 0.1
    with pytest.raises(ValueError, match="class_scheme"):
        URNetConfig(class_scheme="sqrt")


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    c, d = 4, 6
    sizes = [120, 60, 30, 15]
    labels = np.repeat(np.arange(c), sizes)
    centers = rng.normal(0, 3, size=(c, d))
    x = centers[labels] + rng.normal(size=(labels.size, d))
    logits = x @ centers.T
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    text = rng.normal(size=(c, 12))
    ranks = np.concatenate([np.arange(s, dtype=float) for s in sizes])
    sources = np.array(["google"] * labels.size, dtype=object)
    return dict(labels=labels, num_classes=c, features=x, pred_probs=probs, label_vectors=text,
                ranks=ranks, sources=sources)


def test_baseline_is_uniform(problem):
    ws = compose_weights(URNetConfig(), **problem)
    np.testing.assert_array_equal(ws.sample_weights, np.ones(problem["labels"].size, dtype=np.float32))
    assert ws.soft_targets is None and ws.components == {}


def test_class_only_matches_class_weights(problem):
    ws = compose_weights(URNetConfig(class_reweight=True, alpha=1.0), labels=problem["labels"], num_classes=4)
    wc = class_weights(problem["labels"], 4, alpha=1.0)
    np.testing.assert_allclose(ws.sample_weights, wc[problem["labels"]], rtol=1e-6)  # balanced: already mean 1
    eff = compose_weights(URNetConfig(class_reweight=True, class_scheme="effective_number", cb_beta=0.99),
                          labels=problem["labels"], num_classes=4)
    assert eff.sample_weights.mean() == pytest.approx(1.0, rel=1e-5)


def test_full_components_multiply_and_mean_one(problem):
    cfg = URNetConfig.full(instance_epochs=5, kmeans_backend="sklearn", top_k=2, n_clusters=3)
    ws = compose_weights(cfg, **problem, seed=1)
    n = problem["labels"].size
    assert set(ws.components) == {"class", "cluster", "instance"}
    assert ws.sample_weights.dtype == np.float32 and ws.sample_weights.shape == (n,)
    assert ws.sample_weights.mean() == pytest.approx(1.0, rel=1e-5)
    prod = np.prod([v.astype(np.float64) for v in ws.components.values()], axis=0)
    np.testing.assert_allclose(ws.sample_weights, prod / prod.mean(), rtol=1e-5)
    assert ws.soft_targets.shape == (n, 4) and ws.soft_targets.dtype == np.float32
    np.testing.assert_allclose(ws.soft_targets.sum(1), 1.0, rtol=1e-6)
    again = compose_weights(cfg, **problem, seed=1)
    np.testing.assert_array_equal(ws.sample_weights, again.sample_weights)


def test_missing_inputs_and_nan(problem):
    with pytest.raises(ValueError, match="cluster reweighting needs features"):
        compose_weights(URNetConfig(cluster_reweight=True), labels=problem["labels"], num_classes=4,
                        pred_probs=problem["pred_probs"])
    with pytest.raises(ValueError, match="label reweighting needs pred_probs"):
        compose_weights(URNetConfig(label_reweight=True), labels=problem["labels"], num_classes=4)
    bad = problem["features"].copy()
    bad[11, 0] = np.nan
    with pytest.raises(ValueError, match="row 11"):
        compose_weights(URNetConfig(cluster_reweight=True), **{**problem, "features": bad})
    with pytest.raises(TypeError):
        compose_weights({"class_reweight": True}, labels=problem["labels"], num_classes=4)


def test_weights_command(problem, tmp_path):
    from urnet_core.cli import main

    n = problem["labels"].size
    table = pd.DataFrame({
        "label": problem["labels"],
        "class_name": np.array(["T-shirt/top", "Trouser", "Pullover", "Dress"])[problem["labels"]],
        "source": problem["sources"], "rank": problem["ranks"], "split": "train",
    })
    extra = table.iloc[:5].assign(split="test")
    pd.concat([table, extra], ignore_index=True).to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "f.npy", problem["features"].astype(np.float32))
    np.save(tmp_path / "p.npy", problem["pred_probs"])
    (tmp_path / "cfg.json").write_text(json.dumps({"class_reweight": True, "cluster_reweight": True,
                                                   "instance_reweight": True, "label_reweight": True,
                                                   "instance_epochs": 3, "kmeans_backend": "torch",
                                                   "n_clusters": 3, "top_k": 1}))
    out = tmp_path / "out"
    rc = main(["weights", "--table", str(tmp_path / "t.parquet"), "--features", str(tmp_path / "f.npy"),
               "--probs", str(tmp_path / "p.npy"), "--config", str(tmp_path / "cfg.json"), "--out", str(out)])
    assert rc == 0
    w = np.load(out / "weights.npy")
    t = np.load(out / "targets.npy")
    assert w.shape == (n,) and t.shape == (n, 4)
    assert w.mean() == pytest.approx(1.0, rel=1e-5)
    summary = json.loads((out / "weights.json").read_text())
    assert summary["n"] == n and set(summary["components"]) == {"class", "cluster", "instance"}
    with np.load(out / "components.npz") as comp:
        assert set(comp.files) == {"class", "cluster", "instance"}

    # rung shortcut; label reweighting off -> one-hot targets
    rc = main(["weights", "--table", str(tmp_path / "t.parquet"), "--rung", "+class", "--out", str(tmp_path / "o2")])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "o2" / "targets.npy"), np.eye(4)[problem["labels"]])

    # at scale (n x C over the limit) the targets are written compact and urnet train's loader reads them
    import urnet_core.reweight.compose as compose_mod
    from urnet_core.data.targets import load_label_pairs

    old_limit = compose_mod.DENSE_TARGET_LIMIT
    compose_mod.DENSE_TARGET_LIMIT = 10
    try:
        rc = main(["weights", "--table", str(tmp_path / "t.parquet"), "--features", str(tmp_path / "f.npy"),
                   "--probs", str(tmp_path / "p.npy"), "--config", str(tmp_path / "cfg.json"),
                   "--out", str(tmp_path / "o4")])
    finally:
        compose_mod.DENSE_TARGET_LIMIT = old_limit
    assert rc == 0 and not (tmp_path / "o4" / "targets.npy").exists()
    pairs = load_label_pairs(tmp_path / "o4" / "targets.npz")
    np.testing.assert_array_equal(pairs.expand(problem["labels"], 4), t)
    assert json.loads((tmp_path / "o4" / "weights.json").read_text())["targets_file"] == "targets.npz"
    with pytest.raises(ValueError, match="not a compact targets file"):
        np.savez(tmp_path / "x.npz", a=np.zeros(2))
        load_label_pairs(tmp_path / "x.npz")

    (tmp_path / "bad.yaml").write_text("class_reweight: true\nalfa: 0.3\n")
    rc = main(["weights", "--table", str(tmp_path / "t.parquet"), "--config", str(tmp_path / "bad.yaml"),
               "--out", str(tmp_path / "o3")])
    assert rc == 1


def test_cluster_count_reaches_cluster_weights(problem):
    from urnet_core.reweight.cluster import cluster_weights, confusion_matrix

    problem = dict(problem)
    flip = np.random.default_rng(1).random(problem["labels"].size) < 0.25  # noisy labels: groups mix classes
    problem["labels"] = np.where(flip, (problem["labels"] + 1) % 4, problem["labels"])
    cfg = URNetConfig(cluster_reweight=True, cluster_count="class", n_clusters=3, kmeans_backend="sklearn")
    ws = compose_weights(cfg, **problem, seed=0)
    conf = confusion_matrix(problem["labels"], problem["pred_probs"], 4)
    own = cluster_weights(problem["features"], problem["labels"], conf, n_clusters=3, count="class",
                          backend="sklearn", seed=0)
    pooled = cluster_weights(problem["features"], problem["labels"], conf, n_clusters=3, count="all",
                             backend="sklearn", seed=0)
    np.testing.assert_allclose(ws.components["cluster"], own, rtol=1e-6)
    assert not np.allclose(own, pooled)
    with pytest.raises(ValueError, match="cluster_count"):
        URNetConfig(cluster_count="pooled")


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_cluster_counts_from_one_clustering_equal_two_calls(problem, backend):
    """What ``weight_components`` relies on: the own-class count from the same clustering
    (``cluster_counts``) equals a second call with ``cluster_count='class'`` and the same seed."""
    problem = dict(problem)
    flip = np.random.default_rng(1).random(problem["labels"].size) < 0.25
    problem["labels"] = np.where(flip, (problem["labels"] + 1) % 4, problem["labels"])
    cfg = URNetConfig(cluster_reweight=True, n_clusters=3, kmeans_backend=backend)
    timings = {}
    ws = compose_weights(cfg, **problem, seed=4, cluster_counts=("class",), timings=timings)
    pooled = compose_weights(cfg, **problem, seed=4)
    own = compose_weights(URNetConfig(cluster_reweight=True, n_clusters=3, kmeans_backend=backend,
                                      cluster_count="class"), **problem, seed=4)
    np.testing.assert_array_equal(ws.components["cluster"], pooled.components["cluster"])
    np.testing.assert_array_equal(ws.cluster_by_count["class"], own.components["cluster"])
    assert not np.array_equal(ws.cluster_by_count["class"], ws.components["cluster"])
    assert {"cluster", "cluster.train_s", "cluster.train_rows", "cluster.assign_s"} <= set(timings)
    assert timings["cluster.train_rows"] > 0
    with pytest.raises(ValueError, match="cluster_counts"):
        compose_weights(URNetConfig(), **problem, cluster_counts=("class",))


def test_out_of_core_inputs_match_in_memory(problem, tmp_path, monkeypatch):
    """Memory-mapped float16 features and probabilities, class ids for predictions, compact
    targets: the same weights as the in-memory call, validated in small chunks."""
    from urnet_core.utils import validation as _validation
    from urnet_core.reweight.label_weight import LabelPairs

    cfg = URNetConfig.full(instance_epochs=3, kmeans_backend="sklearn", top_k=2, n_clusters=3)
    feats16 = problem["features"].astype(np.float16)
    ref = compose_weights(cfg, **{**problem, "features": feats16}, seed=2)
    np.save(tmp_path / "f.npy", feats16)
    np.save(tmp_path / "p.npy", problem["pred_probs"].astype(np.float32))
    monkeypatch.setattr(_validation, "CHECK_CHUNK_VALUES", 64)  # many chunks on this small problem
    mm = dict(problem, features=np.load(tmp_path / "f.npy", mmap_mode="r"),
              pred_probs=np.load(tmp_path / "p.npy", mmap_mode="r"))
    out = compose_weights(cfg, **mm, seed=2, compact_targets=True)
    np.testing.assert_allclose(out.sample_weights, ref.sample_weights, rtol=1e-5)
    assert isinstance(out.soft_targets, LabelPairs) and out.soft_targets.beta == cfg.beta
    np.testing.assert_array_equal(out.soft_targets.expand(problem["labels"], 4), ref.soft_targets)
    ids = compose_weights(cfg, **{**mm, "pred_probs": problem["pred_probs"].argmax(1)}, seed=2)
    np.testing.assert_allclose(ids.sample_weights, ref.sample_weights, rtol=1e-5)
    np.testing.assert_array_equal(ids.soft_targets, ref.soft_targets)  # small: dense by default
    # bad values are still found and named, chunk by chunk
    bad = problem["pred_probs"].copy()
    bad[50, 1] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]; rows"):
        compose_weights(cfg, **{**problem, "pred_probs": bad})
    feats = problem["features"].copy()
    feats[[97, 150], 2] = np.inf
    with pytest.raises(ValueError, match="in 2 row\\(s\\), first at row 97"):
        compose_weights(cfg, **{**problem, "features": feats})
    with pytest.raises(ValueError, match="class ids"):
        compose_weights(cfg, **{**problem, "pred_probs": np.full(problem["labels"].size, 9)})
