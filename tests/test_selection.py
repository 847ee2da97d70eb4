"""Cross-fitting folds, the noisy validation split, the combined instance weight, the selection
among URNet configurations and the head-to-head tables (synthetic inputs, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urnet_core.config import StudyConfig
from urnet_core.reweight.instance_weight import combined_instance_weights
from urnet_core.study import ablation as A
from urnet_core.study import ablation_tables as T
from urnet_core.study.scoring import auroc_by_noise_type
from urnet_core.study.pipeline import stratified_folds, validation_mask


def test_stratified_folds_split_every_class_evenly_and_are_seeded():
    labels = np.repeat(np.arange(3), [10, 7, 4])
    folds = stratified_folds(labels, 2, seed=0)
    for c in range(3):
        counts = np.bincount(folds[labels == c], minlength=2)
        assert abs(counts[0] - counts[1]) <= 1
    assert np.array_equal(folds, stratified_folds(labels, 2, seed=0))
    assert not np.array_equal(folds, stratified_folds(labels, 2, seed=1))


def test_validation_split_is_stratified_and_leaves_every_class_rows():
    study = StudyConfig().with_overrides({"run.validation_fraction": 0.2})
    labels = np.repeat(np.arange(3), [50, 20, 2])
    val = validation_mask(study, labels, seed=0)
    assert [int(val[labels == c].sum()) for c in range(3)] == [10, 4, 0]  # a 2-row class keeps its rows
    assert np.array_equal(val, validation_mask(study, labels, seed=0))


def test_combined_instance_weight_is_low_when_either_signal_is_low():
    text = np.array([0.9, 0.9, 0.1, 0.1])
    oof = np.array([0.9, 0.05, 0.9, 0.05])
    w = combined_instance_weights(text, oof)
    assert np.allclose(w, np.sqrt(text * oof))
    assert w[0] > max(w[1], w[2]) and w[3] == w.min()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        combined_instance_weights(np.array([1.5]), np.array([0.5]))


def test_combined_weight_catches_look_alike_flips_the_text_side_misses():
    rng = np.random.default_rng(0)
    n = 400
    kinds = np.array(["clean"] * 200 + ["asym"] * 100 + ["open"] * 100, dtype=object)
    table = pd.DataFrame({"noise_type": kinds, "label": 0, "true_label": 0})
    text = np.where(kinds == "open", rng.uniform(0, 0.3, n), rng.uniform(0.5, 1, n))  # blind to flips
    oof = np.where(kinds == "asym", rng.uniform(0, 0.4, n), rng.uniform(0.3, 1, n))
    auroc = auroc_by_noise_type({"text": text, "combined": combined_instance_weights(text, oof)}, table)
    auroc = auroc.set_index("weight")
    assert auroc.loc["text", "asym"] < 0.6 < auroc.loc["combined", "asym"]
    assert auroc.loc["combined", "open"] > 0.8 and auroc.loc["combined", "all"] > auroc.loc["text", "all"]


def _results(scores: dict[str, tuple[str, list[float]]]) -> pd.DataFrame:
    rows = []
    for method, (group, values) in scores.items():
        for seed, v in enumerate(values):
            rows.append({"method": method, "group": group, "seed": seed, "top1": v,
                         "per_class_accuracy": [v, v - 0.1]})
    return pd.DataFrame(rows)


def test_head_to_head_names_the_best_peer_and_oracle():
    results = _results({"baseline": ("ladder", [0.70, 0.71, 0.72]), "+label": ("ladder", [0.74, 0.75, 0.76]),
                        A.SELECTED: ("selected", [0.80, 0.81, 0.83]), "peer a": ("peer", [0.78, 0.79, 0.80]),
                        "peer b": ("peer", [0.76, 0.77, 0.78]), "oracle": ("oracle", [0.90, 0.91, 0.92])})
    table = T.head_to_head(results).set_index(["method", "versus"])
    assert {"half_width_pp", "detectable_pp"} <= set(table.columns)
    assert table.loc[(A.SELECTED, "best peer"), "other"] == "peer a"
    assert table.loc[(A.SELECTED, "best peer"), "diff_pp"] == pytest.approx((0.80 + 0.81 + 0.83 - 2.37) / 3 * 100)
    assert table.loc[("+label", "best peer"), "diff_pp"] < 0 and table.loc[("+label", "best oracle"), "significant"]
    gap = T.per_class_gap(results, A.SELECTED, "peer a", pd.DataFrame({"label": [0, 0, 1]}), 2)
    assert list(gap.columns[:4]) == ["class", "train_rows", "size_group", "diff_pp"]


def test_every_family_chooses_among_the_same_number_of_its_own_papers_candidates():
    from urnet_core.study import tuning

    study = StudyConfig()
    sizes = {family: len(tuning.candidates(study, family)) for family in tuning.FAMILIES}
    assert set(sizes.values()) == {tuning.CANDIDATES_PER_FAMILY} and tuning.CANDIDATES_PER_FAMILY >= 6
    cb = tuning.candidates(study, "class_balanced")
    assert sorted(c.option("cb_beta") for c in cb)[0] == 0.9 and {0.99, 0.999, 0.9999} <= {c.option("cb_beta") for c in cb}
    assert {(c.option("lam"), c.option("beta")) for c in tuning.candidates(study, "elr")} == \
        {(lam, beta) for lam in (1.0, 3.0, 7.0) for beta in (0.7, 0.9)}
    dividemix = tuning.candidates(study, "dividemix")
    assert all(c.option("warmup_epochs") == 0 for c in dividemix)  # the baseline is the warm-up when fine-tuning
    scratch = tuning.candidates(study.with_overrides({"run.protocol": "scratch"}), "dividemix")
    assert all(c.option("warmup_epochs") is None for c in scratch)
    quick = study.with_overrides({"run.profile": "quick"})
    assert {len(tuning.candidates(quick, f)) for f in tuning.FAMILIES} == {tuning.QUICK_CANDIDATES}
    names = [c.name for f in tuning.FAMILIES for c in tuning.candidates(study, f)]
    assert len(names) == len(set(names))
    rows = A.default_methods()
    tuned = [r for r in rows if r.family]
    assert [r.family for r in tuned] == list(tuning.FAMILIES) and A.RECOMMENDED in {r.name for r in tuned}
    assert [r.name for r in rows[:6]] == list(A.LADDER)


def test_trainer_options_route_each_hyperparameter_to_one_place():
    spec = A.MethodSpec("x", "candidate", trainer="elr", hyper=(("beta", 0.9), ("lam", 7.0)))
    assert A.trainer_options(spec) == {"beta": 0.9, "lam": 7.0}
    cb = A.MethodSpec("cb", "candidate", class_balanced=True, hyper=(("cb_beta", 0.99),))
    assert A.trainer_options(cb) == {}
    with pytest.raises(ValueError, match="need a peer trainer"):
        A.trainer_options(A.MethodSpec("bad", "candidate", hyper=(("lam", 1.0),)))


def test_clean_weighted_rule_gives_no_credit_for_reproducing_a_flip():
    from urnet_core.study.tuning import _balanced_accuracy

    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    flipped = np.array([False, False, False, True, False, False, False, True])  # observed label is wrong
    p_clean = np.where(flipped, 0.02, 0.98)
    reproduces_flips = labels.copy()  # predicts the observed (wrong) label everywhere
    true_labels = np.where(flipped, 1 - labels, labels)
    correct = true_labels.copy()  # predicts the truth
    noisy = [_balanced_accuracy(labels, p, np.ones(8), 2) for p in (reproduces_flips, correct)]
    clean = [_balanced_accuracy(labels, p, p_clean, 2) for p in (reproduces_flips, correct)]
    assert noisy[0] > noisy[1]  # the noisy-label rule prefers the model that copies the flips
    assert clean[0] - clean[1] < 0.05 * (noisy[0] - noisy[1])  # the clean-weighted rule barely does


def test_selection_chooses_on_validation_averaged_over_seeds_and_measures_regret(monkeypatch):
    from urnet_core.study import tuning

    study = StudyConfig().with_overrides({"run.seeds": [0, 1, 2], "run.selection_seeds": 2})
    jobs = tuning.selection_jobs(study, ["gce", "elr"])
    assert len(jobs) == 2 * 6 * 2 and {seed for _, seed, _ in jobs} == {0, 1}
    # Candidate k of each family: validation score rises with k on seed 0 but the mean over the
    # two seeds peaks at k = 2; test accuracy peaks at k = 4 (never used to choose).
    val = {0: [0.50, 0.52, 0.60, 0.55, 0.54, 0.70], 1: [0.50, 0.52, 0.64, 0.55, 0.54, 0.30]}
    test = [0.70, 0.71, 0.72, 0.73, 0.80, 0.60]

    def fake_scores(_study, seed, folder):
        k = int(folder.split(":")[1])
        return {"clean_weighted_balanced_accuracy": val[seed][k], "noisy_balanced_accuracy": val[seed][5 - k],
                "test_top1": test[k]}

    monkeypatch.setattr(tuning, "validation_scores", fake_scores)
    order = {f: [c.name for c in tuning.candidates(study, f)] for f in ("gce", "elr")}
    folders = [f"{family}:{order[family].index(spec.name)}" for family, _, spec in jobs]
    table = tuning.selection_table(study, jobs, folders)
    for family in ("gce", "elr"):
        rows = table[table["family"] == family].reset_index(drop=True)
        assert rows["seeds"].tolist() == [2] * 6
        assert rows.index[rows["chosen"]].tolist() == [2]
        assert rows.index[rows["pick_noisy_balanced_accuracy"]].tolist() == [3]  # mean of val[.][5 - k] peaks at k = 3
    regret = tuning.selection_regret(table).set_index(["family", "rule"])
    assert regret.loc[("gce", tuning.SELECTION_RULE), "regret_pp"] == pytest.approx((0.72 - 0.80) * 100)
    assert regret.loc[("gce", tuning.SELECTION_RULE), "rank_on_test"] == 3
    chosen = tuning.resolve_tuned(A.MethodSpec("GCE (tuned)", "peer", family="gce"), study, table)
    assert chosen.name == "GCE (tuned)" and chosen.family is None and chosen.option("gce_q") == 0.5
    assert tuning.chosen_settings(table)["ELR (Liu 2020)"] == order["elr"][2]


def test_detectable_difference_follows_the_paired_t_test():
    from scipy import stats

    from urnet_core.study.stats import detectable_difference, paired_difference

    diffs = np.array([0.010, 0.012, 0.008, 0.015, 0.011, 0.009, 0.013, 0.010])
    sd, n = diffs.std(ddof=1), diffs.size
    expected = (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
    assert detectable_difference(diffs) == pytest.approx(expected)
    assert detectable_difference(diffs) > paired_difference(np.zeros(n), diffs).half_width
    assert np.isnan(detectable_difference([0.1]))
