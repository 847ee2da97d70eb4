"""Tests of urnet_core.study.analysis on small synthetic arrays with known answers."""

import numpy as np
import pandas as pd
import pytest
import torch

from urnet_core.study import analysis as A
from urnet_core.study import scoring as S


def _one_hot_probs(pred, c, p=0.9):
    probs = np.full((len(pred), c), (1 - p) / (c - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


# --------------------------------------------------------------------------- C1
def test_class_size_profile_known_counts():
    labels = np.repeat([0, 1, 2, 3, 4], [100, 50, 20, 10, 0 + 5])
    prof = A.class_size_profile(labels, 5)
    assert prof["counts"].tolist() == [100, 50, 20, 10, 5]
    assert prof["imbalance_ratio"] == pytest.approx(20.0)
    assert prof["top20_share"] == pytest.approx(100 / 185)
    assert prof["order"].tolist() == [0, 1, 2, 3, 4]
    # Gini by the mean-absolute-difference definition.
    x = prof["counts"].astype(float)
    expected = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())
    assert prof["gini"] == pytest.approx(expected)
    assert list(prof["groups"]) == ["head", "head", "medium", "medium", "tail"]


def test_class_size_profile_uniform_and_empty():
    prof = A.class_size_profile(np.arange(6) % 3, 4)
    assert prof["empty_classes"] == 1
    assert prof["imbalance_ratio"] == pytest.approx(1.0)  # over non-empty classes
    assert A.gini([5, 5, 5]) == pytest.approx(0.0)
    assert A.gini([0, 0, 9]) == pytest.approx(2 / 3)


def test_class_size_profile_validates():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        A.class_size_profile([0, 1, 3], 3)
    with pytest.raises(ValueError, match="at least one"):
        A.class_size_profile([], 3)
    with pytest.raises(TypeError):
        A.class_size_profile([0.5, 1.0], 3)


def test_class_weight_table_shares():
    labels = np.repeat([0, 1], [90, 10])
    df = A.class_weight_table(labels, 2, alpha=1.0)
    assert df["count"].tolist() == [90, 10]
    # alpha=1 balanced: every class gets the same total weight.
    assert df["share_balanced"].tolist() == pytest.approx([0.5, 0.5])
    assert df["share_plain"].tolist() == pytest.approx([0.9, 0.1])
    # literal eq. 3 at alpha=1: w_j = r_j / sum r -> the minority class gets 0.9, majority 0.1.
    assert df["weight_literal"].tolist() == pytest.approx([0.1, 0.9])


# --------------------------------------------------------------------------- C2
def test_most_confused_pairs_order_and_rates():
    m = np.array([[10, 5, 0], [1, 20, 7], [0, 2, 30]])
    df = A.most_confused_pairs(m, ["a", "b", "c"], top=3)
    assert list(zip(df["label"], df["predicted"])) == [(1, 2), (0, 1), (2, 1)]
    assert df["count"].tolist() == [7, 5, 2]
    assert df["rate"].iloc[0] == pytest.approx(7 / 28)
    assert df["reverse_count"].iloc[0] == 2
    assert df["label_name"].iloc[1] == "a"
    with pytest.raises(ValueError, match="square"):
        A.most_confused_pairs(np.ones((2, 3)))
    with pytest.raises(ValueError, match="class_names"):
        A.most_confused_pairs(m, ["a"])


def test_feature_spread_known_geometry():
    # class 0 at (0,0) +-1 on x, class 1 at (10,0) +-2 on x, class 2 at (0, 4) exact.
    x = np.array([[-1, 0], [1, 0], [8, 0], [12, 0], [0, 4], [0, 4]], dtype=float)
    y = np.array([0, 0, 1, 1, 2, 2])
    df = A.feature_spread(x, y, 3).set_index("class")
    assert df.loc[0, "intra"] == pytest.approx(1.0)
    assert df.loc[1, "intra"] == pytest.approx(2.0)
    assert df.loc[2, "intra"] == pytest.approx(0.0)
    assert df.loc[0, "inter"] == pytest.approx(4.0)
    assert df.loc[0, "nearest_class"] == 2
    assert df.loc[1, "inter"] == pytest.approx(10.0)  # class 0 is nearer than class 2 (hypot(10, 4))
    assert df.loc[1, "nearest_class"] == 0
    assert df.loc[0, "ratio"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="row 1"):
        A.feature_spread(np.array([[0.0, 0], [np.nan, 0]]), [0, 1], 2)
    with pytest.raises(ValueError, match="two classes"):
        A.feature_spread(np.zeros((3, 2)), [0, 0, 0], 2)


# --------------------------------------------------------------------------- C3
def test_estimated_noise_rates_disagreement_vs_truth():
    labels = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 1])
    truth = np.array([0, 0, 0, 1, 1, -1])
    df = A.estimated_noise_rates(labels, _one_hot_probs(pred, 2), truth).set_index("class")
    assert df.loc[0, "estimated"] == pytest.approx(0.5)
    assert df.loc[0, "true"] == pytest.approx(0.25)
    assert df.loc[1, "estimated"] == pytest.approx(0.0)
    assert df.loc[1, "true"] == pytest.approx(0.5)  # the open-set image counts as noisy
    assert df.loc[0, "error"] == pytest.approx(0.25)


def test_estimated_noise_rates_cleanlab_finds_flipped_class():
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 100)
    labels = truth.copy()
    flip = rng.choice(np.flatnonzero(truth == 0), 30, replace=False)
    labels[flip] = 1  # class 1's label holds 30 images of class 0
    probs = _one_hot_probs(truth, 3, p=0.8)
    df = A.estimated_noise_rates(labels, probs, truth, method="cleanlab").set_index("class")
    assert df.loc[1, "true"] == pytest.approx(30 / 130)
    assert df.loc[1, "estimated"] == pytest.approx(30 / 130, abs=0.02)
    assert df.loc[2, "estimated"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="method"):
        A.estimated_noise_rates(labels, probs, method="magic")


def _bench_table():
    # 2 sources x 10 ranks; google is clean at top ranks, flickr noisy everywhere.
    rows = []
    for source, noisy_from in (("google", 5), ("flickr", 0)):
        for r in range(10):
            kind = "sym" if r >= noisy_from else "clean"
            rows.append({"label": 0, "true_label": 1 if kind == "sym" else 0, "noise_type": kind,
                         "source": source, "rank": float(r)})
    rows.append({"label": 0, "true_label": 0, "noise_type": "clean", "source": "google", "rank": np.nan})
    return pd.DataFrame(rows)


def test_noise_by_rank_per_source():
    df = A.noise_by_rank(_bench_table(), bins=2)
    g = df[df["source"] == "google"].set_index("bin")
    assert g.loc[0, "noise_rate"] == pytest.approx(0.0)
    assert g.loc[1, "noise_rate"] == pytest.approx(1.0)
    assert g["n"].sum() == 10  # the unranked row is left out
    assert g.loc[0, "rank_high"] == 4.0
    f = df[df["source"] == "flickr"]
    assert f["noise_rate"].tolist() == pytest.approx([1.0, 1.0])
    assert "share_sym" in df.columns
    with pytest.raises(ValueError, match="rank"):
        A.noise_by_rank(_bench_table().drop(columns="rank"))


def test_noisy_mask_and_type_counts():
    t = pd.DataFrame({"label": [0, 1, 1, 2], "true_label": [0, 0, -1, 2],
                      "noise_type": ["clean", "sym", "open", "ambiguous"]})
    assert A.noisy_mask(t).tolist() == [False, True, True, False]
    assert A.noisy_mask(t, include_ambiguous=True).tolist() == [False, True, True, True]
    assert A.noisy_mask(t.drop(columns="noise_type")).tolist() == [False, True, True, False]
    counts = A.noise_type_counts(t)
    assert counts["noise_type"].tolist() == ["clean", "sym", "open", "ambiguous"]
    assert counts["share"].sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- C5
def test_ambiguity_margins_and_groups():
    probs = np.array([[0.5, 0.45, 0.05], [0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.34, 0.33, 0.33]])
    labels = np.array([0, 0, 0, 1])
    res = A.ambiguity(probs, labels, ["ambiguous", "clean", "clean", "ambiguous"], low_margin=0.2)
    assert res["margin"] == pytest.approx([0.05, 0.85, 0.5, 0.01])
    assert res["label_margin"] == pytest.approx([0.05, 0.85, -0.5, -0.01])
    assert res["low_margin_share"] == pytest.approx(0.5)
    assert res["entropy"][3] > res["entropy"][1]
    g = res["by_group"].set_index("group")
    assert g.loc["ambiguous", "low_margin_share"] == pytest.approx(1.0)
    assert g.loc["other", "low_margin_share"] == pytest.approx(0.0)
    assert g.loc["ambiguous", "n"] == 2
    assert A.ambiguity(probs, labels)["by_group"]["group"].tolist() == ["all"]
    with pytest.raises(ValueError, match="rows"):
        A.ambiguity(probs, labels[:2])


# --------------------------------------------------------------------------- weights
def test_weight_auroc_perfect_chance_and_inverse():
    noisy = np.array([False, False, True, True])
    assert S.weight_auroc([0.9, 0.8, 0.1, 0.2], noisy) == pytest.approx(1.0)
    assert S.weight_auroc([0.1, 0.2, 0.9, 0.8], noisy) == pytest.approx(0.0)
    assert S.weight_auroc([1, 1, 1, 1], noisy) == pytest.approx(0.5)
    assert S.weight_auroc([0.9, 0.3, 0.5, 0.2], [0, 0, 1, 1]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="both"):
        S.weight_auroc([1, 2], [False, False])
    with pytest.raises(ValueError, match="entries"):
        S.weight_auroc([1, 2, 3], noisy)
    with pytest.raises(ValueError, match="NaN"):
        S.weight_auroc([np.nan, 1, 1, 1], noisy)


def test_weights_by_noise_type_and_report():
    w = np.array([1.0, 3.0, 0.5, 0.1, 2.0])
    kinds = np.array(["sym", "clean", "clean", "open", "zzz"])
    df = S.weights_by_noise_type(w, kinds)
    assert df["noise_type"].tolist() == ["clean", "sym", "open", "zzz"]
    assert df.set_index("noise_type").loc["clean", "mean"] == pytest.approx(1.75)
    t = pd.DataFrame({"noise_type": ["clean", "clean", "sym", "open"], "label": [0, 0, 0, 0],
                      "true_label": [0, 0, 1, -1]})
    rep = S.weight_report({"good": [1.0, 0.9, 0.1, 0.2], "bad": [0.1, 0.2, 1.0, 0.9]}, t).set_index("weight")
    assert rep.loc["good", "auroc"] == pytest.approx(1.0)
    assert rep.loc["bad", "auroc"] == pytest.approx(0.0)
    assert rep.loc["good", "mean_clean"] == pytest.approx(0.95)


def test_self_confidence():
    probs = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert A.self_confidence([0, 0], probs) == pytest.approx([0.7, 0.4])


def test_label_change_summary():
    from urnet_core.reweight.label_weight import label_targets

    labels = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 0, 1])
    targets = label_targets(labels, pred, 2, beta=0.8)
    t = pd.DataFrame({"label": labels, "true_label": [0, 1, 1, 1], "noise_type": ["clean", "asym", "clean", "clean"]})
    res = S.label_change_summary(labels, targets, t)
    assert res["changed"] == 2
    assert res["mixed_class"].tolist() == [-1, 1, 0, -1]
    assert res["changed_share_noisy"] == pytest.approx(1.0)
    assert res["changed_share_clean"] == pytest.approx(1 / 3)
    assert res["changed_noisy_share"] == pytest.approx(0.5)
    assert res["mixed_is_true_share"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- cluster / bag helpers
def test_cluster_group_table():
    from urnet_core.reweight.cluster import ClassClusters

    d = ClassClusters(cls=0, classes=np.array([0, 2]), indices=np.arange(5), groups=np.array([0, 0, 1, 1, 1]),
                      composition=np.array([[2, 0], [1, 2]]), group_weights=np.array([0.8, 1.2]))
    df = S.cluster_group_table(d, ["a", "b", "c"])
    assert df.columns.tolist() == ["group", "size", "own", "weight", "a", "c"]
    assert df["size"].tolist() == [2, 3]
    with pytest.raises(ValueError):
        S.cluster_group_table(None)


def test_sample_bags_and_saliency():
    from urnet_core.models.bag import BagAttentionBranch

    labels = np.repeat([0, 1, 2], [5, 2, 6])
    bags = S.sample_bags(labels, classes=[0, 1, 2], bags_per_class=2, bag_size=3, seed=1)
    assert bags.shape == (4, 3)  # class 1 is too small
    assert all(len(set(labels[b])) == 1 for b in bags)
    assert all(len(set(b)) == 3 for b in bags)
    torch.manual_seed(0)
    branch = BagAttentionBranch(4, 3, hidden=8)
    sal = S.bag_saliency(branch, np.random.default_rng(0).normal(size=(13, 4)), bags)
    assert sal.shape == (4, 3)
    assert sal.sum(1) == pytest.approx(np.ones(4))
    with pytest.raises(ValueError, match="outside"):
        S.bag_saliency(branch, np.zeros((3, 4)), bags)


def test_per_class_accuracy_table_and_size_groups():
    df = S.per_class_accuracy_table([[1.0, 0.5, 0.0], [0.8, 0.5, 0.2]], [30, 20, 10])
    assert df["accuracy"].tolist() == pytest.approx([0.9, 0.5, 0.1])
    assert df["group"].tolist() == ["head", "medium", "tail"]
    assert A.size_groups([1, 5, 3, 5]).tolist() == ["tail", "head", "medium", "head"]


def test_saliency_by_noise_type():
    bags = np.array([[0, 1, 2], [3, 4, 5]])
    sal = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    kinds = np.array(["clean", "sym", "clean", "open", "clean", "clean"])
    df = S.saliency_by_noise_type(bags, sal, kinds).set_index("noise_type")
    assert df.loc["clean", "n"] == 4
    assert df.loc["clean", "mean_saliency"] == pytest.approx((0.6 + 0.1 + 0.2 + 0.6) / 4)
    assert df.loc["clean", "top_share"] == pytest.approx(0.5)
    assert df.loc["open", "top_share"] == pytest.approx(0.0)
    assert df["uniform"].iloc[0] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        S.saliency_by_noise_type(bags, sal[:, :2], kinds)


def test_clean_counts_and_soft_target_examples():
    from urnet_core.reweight.label_weight import label_targets

    t = pd.DataFrame({"label": [0, 0, 0, 1, 2, 2], "true_label": [0, 1, 0, 1, 2, 0],
                      "noise_type": ["clean", "asym", "clean", "clean", "clean", "sym"]})
    cc = S.clean_counts(t, 3).set_index("class")
    assert cc.loc[0, "clean"] == 2 and cc.loc[0, "n"] == 3
    assert cc.loc[2, "clean_share"] == pytest.approx(0.5)
    pred = np.array([0, 1, 0, 1, 2, 0])
    targets = label_targets(t["label"], pred, 3)
    ex = S.soft_target_examples(t["label"], targets, t, class_names=["a", "b", "c"])
    assert ex["row"].tolist() == [1, 5]
    assert ex["mixed"].tolist() == ["b", "a"]
    assert ex["true_label"].tolist() == ["b", "a"]
    assert ex["target_label"].tolist() == pytest.approx([0.8, 0.8])
