"""Cross-fitting folds, the noisy validation split, the combined instance weight, the selection
among URNet configurations and the head-to-head tables (synthetic inputs, no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from urnet_core.config import StudyConfig
from urnet_core.reweight.instance_weight import combined_instance_weights
from urnet_core.study import ablation as A
from urnet_core.study.analysis import auroc_by_noise_type
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
    table = A.head_to_head(results).set_index(["method", "versus"])
    assert table.loc[(A.SELECTED, "best peer"), "other"] == "peer a"
    assert table.loc[(A.SELECTED, "best peer"), "diff_pp"] == pytest.approx((0.80 + 0.81 + 0.83 - 2.37) / 3 * 100)
    assert table.loc[("+label", "best peer"), "diff_pp"] < 0 and table.loc[("+label", "best oracle"), "significant"]
    gap = A.per_class_gap(results, A.SELECTED, "peer a", pd.DataFrame({"label": [0, 0, 1]}), 2)
    assert list(gap.columns[:4]) == ["class", "train_rows", "size_group", "diff_pp"]


def test_selection_picks_the_best_validation_score_never_test(monkeypatch, tmp_path):
    """selection_table reads the *validation* runs; the chosen candidate becomes the selected row."""
    candidates = A.selection_candidates()
    assert len(candidates) == 8 and all(c.signals == "cross_fit" and c.bag for c in candidates)
    scores = np.linspace(0.5, 0.6, len(candidates))
    scores[3] = 0.9
    folders = []
    for i, s in enumerate(scores):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "test_metrics.json").write_text(f'{{"top1": {s}, "balanced_accuracy": {s}}}')
        folders.append(str(folder))
    study = StudyConfig().with_overrides({"run.seeds": [0]})
    table = A.selection_table(study, folders)
    assert table["chosen"].sum() == 1 and bool(table.loc[3, "chosen"])
    chosen = A.select_configuration(study, table)
    assert chosen.name == A.SELECTED and chosen.group == "selected"
    assert chosen.strategies == candidates[3].strategies
