"""The report's words come from the numbers: verdict, findings, legend, index, progress, maths.

The ablation tables are made up here (no training), then broken on purpose (URNet made to win,
to lose, a peer made to win, the truth or seeds taken away) to check that the wording follows.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from urnet_core.study import analysis as A
from urnet_core.study import progress
from urnet_core.study.ablation import gap_closed_table, ladder_differences, summary_table

SEEDS = (0, 1, 2)


def _results(top1: dict[str, float], groups: dict[str, str], *, noise: float = 0.002, seeds=SEEDS) -> pd.DataFrame:
    # Seed-to-seed noise (+1, -1, 0) x noise, rotated per method, so that two methods with the same
    # level differ by a mean of zero with some spread, plus a shared per-seed shift pairing removes.
    pattern = (1.0, -1.0, 0.0)
    rows = []
    for i, (method, acc) in enumerate(top1.items()):
        for s in seeds:
            v = acc + noise * pattern[(s + i) % 3] + 0.01 * s
            rows.append({"method": method, "group": groups[method], "seed": s, "top1": v, "balanced_accuracy": v,
                         "macro_f1": v, "top5": min(1.0, v + 0.1), "ece": 0.05, "per_class_accuracy": [v, v]})
    return pd.DataFrame(rows)


LADDER_GROUPS = {"baseline": "ladder", "+class": "ladder", "+cluster": "ladder", "+instance": "ladder", "+bag": "ladder",
                 "+label": "ladder", "class-balanced loss (Cui 2019)": "peer", "generalized CE (Zhang 2018)": "peer",
                 "oracle: clean only": "oracle"}


def _tables(top1: dict[str, float], *, groups=None, ground_truth=True, seeds=SEEDS, **data) -> dict:
    groups = {**LADDER_GROUPS, **(groups or {})}
    results = _results(top1, groups, seeds=seeds)
    return {"results": results, "summary": summary_table(results), "ladder_differences": ladder_differences(results),
            "gap_closed": gap_closed_table(results),
            "data": {"name": "digits_web", "ground_truth": ground_truth, "seeds": list(seeds), "train_rows": 134,
                     "test_rows": 200, "classes": 8, "imbalance_ratio": 10.0, "noise_mix": {"clean": 0.6, "sym": 0.4},
                     "data_hash": "abcdef0123", **data}}


BASE = {"baseline": 0.70, "+class": 0.75, "+cluster": 0.75, "+instance": 0.751, "+bag": 0.70, "+label": 0.70,
        "class-balanced loss (Cui 2019)": 0.74, "generalized CE (Zhang 2018)": 0.71, "oracle: clean only": 0.85}


def test_verdict_names_the_steps_that_help_and_hurt():
    text = " ".join(A.study_verdict(_tables(BASE)))
    assert re.search(r"\+class \(\+5\.0 points, .*\) helps significantly", text), text
    assert re.search(r"\+bag \(-5\.\d points.*hurts significantly", text), text
    assert "+cluster" in text and "+instance" in text and "less than the seeds can resolve" in text
    assert "does not significantly beat the baseline" in text  # +label == baseline
    assert "oracle: clean only" in text and "closes" in text


def test_verdict_changes_when_urnet_beats_everything():
    text = " ".join(A.study_verdict(_tables({**BASE, "+bag": 0.80, "+label": 0.82})))
    assert text.startswith("URNet works on this data: full URNet (+label) beats the baseline and the best peer, "
                           "class-balanced loss (Cui 2019)")
    assert "Full URNet reaches 83.0% (95% interval" in text  # mean over seeds 0.82 + 0.01


def test_verdict_changes_when_urnet_loses():
    text = " ".join(A.study_verdict(_tables({**BASE, "+label": 0.60})))
    assert text.startswith("Full URNet (+label) is significantly worse than the baseline")
    assert "URNet works" not in text


def test_verdict_says_when_a_peer_is_better_or_tied():
    better = " ".join(A.study_verdict(_tables({**BASE, "+label": 0.78, "class-balanced loss (Cui 2019)": 0.83})))
    assert "the best peer (class-balanced loss (Cui 2019)) is significantly better than URNet" in better
    tied = " ".join(A.study_verdict(_tables({**BASE, "+label": 0.78, "class-balanced loss (Cui 2019)": 0.78})))
    assert "but not the best peer" in tied and "cannot tell them apart" in tied


def test_verdict_without_ground_truth_skips_the_oracle_with_a_reason():
    top1 = {k: v for k, v in BASE.items() if not k.startswith("oracle")}
    text = " ".join(A.study_verdict(_tables(top1, ground_truth=False)))
    assert "no ground truth" in text and "no oracle" in text and "gap closed" in text
    assert "closes" not in text


def test_verdict_with_one_seed_calls_nothing_significant():
    text = " ".join(A.study_verdict(_tables(BASE, seeds=(0,))))
    assert "single seed" in text and "significantly" not in text.replace("called significant", "")


def test_verdict_reports_the_selected_configuration_when_it_exists():
    top1 = {**BASE, "URNet (selected on noisy validation)": 0.78}
    text = " ".join(A.study_verdict(_tables(top1, groups={"URNet (selected on noisy validation)": "selected"})))
    assert "The configuration selected on the noisy validation split, URNet (selected on noisy validation)" in text
    assert "closes" in text


def test_group_legend_covers_every_group_present_known_or_not():
    summary = _tables({**BASE, "new thing": 0.7}, groups={"new thing": "brand-new group"})["summary"]
    legend = A.group_legend(summary)
    assert list(legend["group"]) == ["ladder", "peer", "oracle", "brand-new group"]
    assert legend.set_index("group").loc["brand-new group", "meaning"] == "rows of the 'brand-new group' group"
    assert "+label" in legend.set_index("group").loc["ladder", "rows"]


def test_balanced_note_and_interval_coverage():
    assert "25 images in every class" in A.balanced_test_note([25] * 8)
    assert A.balanced_test_note([25, 30]) is None
    assert "seeds (0, 1, 2)" in A.interval_coverage({"seeds": [0, 1, 2]})
    assert "benchmark draw is the same" in A.interval_coverage({"seeds": [0]})
    assert "the benchmark draw (which labels" in A.interval_coverage({"seeds": [0, 1], "draw_per_seed": True})


# --------------------------------------------------------------------------- findings of the notebooks
def test_findings_instance_states_a_negative_result_plainly():
    worse = A.findings_instance(0.62, 0.81, 0.7)
    assert "does not earn its cost" in worse and "0.620" in worse and "0.810" in worse
    better = A.findings_instance(0.90, 0.81)
    assert "earns its cost" in better and "does not" not in better
    assert "about equal" in A.findings_instance(0.805, 0.81)
    assert "below chance" in A.findings_instance(0.40, 0.81)


def test_findings_bag_calls_near_uniform_saliency_uniform():
    table = pd.DataFrame({"noise_type": ["clean", "sym"], "n": [300, 100], "mean_saliency": [0.338, 0.32],
                          "top_share": [0.34, 0.3], "uniform": [1 / 3, 1 / 3]})
    assert "practically uniform" in A.findings_bag(table)
    table["mean_saliency"] = [0.45, 0.2]
    assert "prefers clean instances" in A.findings_bag(table)
    table["mean_saliency"] = [0.25, 0.5]
    assert "attends less to clean" in A.findings_bag(table)


def test_findings_label_baseline_class_cluster_data():
    good = {"n": 100, "changed": 20, "changed_share": 0.2, "changed_share_noisy": 0.5, "changed_share_clean": 0.05,
            "changed_noisy_share": 0.8, "mixed_is_true_share": 0.7}
    assert "should help" in A.findings_label(good)
    bad = {**good, "changed_noisy_share": 0.3, "mixed_is_true_share": 0.1}
    assert "not expected to help" in A.findings_label(bad)
    assert "Without ground truth" in A.findings_label({"n": 10, "changed": 1, "changed_share": 0.1})

    row = {"top1_mean": 0.7, "top1_low": 0.68, "top1_high": 0.72, "seeds": 3}
    by_size = pd.DataFrame({"group": ["head", "medium", "tail"], "accuracy": [0.9, 0.7, 0.4],
                            "low": [0.88, 0.6, 0.35], "high": [0.92, 0.8, 0.45]})
    assert "The long tail costs accuracy" in A.findings_baseline(row, by_size)
    by_size["low"], by_size["high"] = [0.3, 0.3, 0.3], [0.95, 0.95, 0.95]
    assert "cannot show" in A.findings_baseline(row, by_size)

    labels = np.repeat(np.arange(3), [60, 30, 10])
    weights = A.class_weight_table(labels, 3, alpha=0.5)
    text = A.findings_class(weights, 0.5)
    assert "literal eq. 3" in text and "balanced form gives it" in text

    assert "no better than chance" in A.findings_cluster(0.51, None, None)
    assert "Without ground truth" in A.findings_cluster(None)

    profile = A.class_size_profile(labels, 3)
    noise = pd.DataFrame({"share_clean": [0.6], "share_asym": [0.1], "share_sym": [0.2], "share_open": [0.1],
                          "share_ambiguous": [0.0], "noise_rate": [0.4]}, index=["all"])
    text = A.findings_data(profile, noise)
    assert "40.0% of the training labels are wrong (asym 10.0%, sym 20.0%, open 10.0%)" in text
    assert "no ground truth" in A.findings_data(profile, None)


def test_parameters_table_flattens_nested_settings():
    table = A.parameters_table({"a": 1, "sources": {"flickr": {"share": 0.3}}})
    assert table.to_dict("records") == [{"parameter": "a", "value": "1"},
                                        {"parameter": "sources.flickr.share", "value": "0.3"}]


# --------------------------------------------------------------------------- the index
def test_index_answers_first_and_links_only_what_exists(tmp_path):
    from urnet_core.study.report import write_index

    tables = _tables(BASE)
    (tmp_path / "00_data.html").write_text("<html></html>")
    index = write_index(tmp_path, notebooks=[("00_data", "00_data.html", "executed"),
                                             ("01_challenges", "01_challenges.html", "executed")],
                        tables=tables, parameters={"data": {"manifest": "/nowhere/x.yaml"}}, elapsed_s=60,
                        test_class_counts=[25] * 8)
    html = index.read_text()
    verdict = html.index("id='verdict'")
    assert verdict < html.index("<img") < html.index("step by step") < html.index("Every row")
    assert "+class (+5.0 points" in html
    src = re.search(r"<img src='([^']+)' alt='([^']+)'", html)
    assert src and (tmp_path / src.group(1)).is_file() and len(src.group(2)) > 50
    assert "What the groups mean" in html and "incremental ladder" in html
    assert "25 images in every class" in html and "<code>low</code>" in html
    assert "href='00_data.html'" in html and "href='01_challenges.html'" not in html  # no dangling link
    assert "/nowhere" not in html and str(tmp_path) not in html
    assert "<script" not in html


def test_index_without_ablation_has_no_stale_chart(tmp_path):
    from urnet_core.study.report import write_index

    (tmp_path / "ablation_top1.png").write_bytes(b"old")
    html = write_index(tmp_path, notebooks=[], tables=None, parameters={}).read_text()
    assert "has not run yet" in html and "<img" not in html and not (tmp_path / "ablation_top1.png").exists()


def test_equations_render_as_images_with_their_tex_as_alt():
    from urnet_core.study.report import render_math

    out = render_math(r"weight $w^C_j = (1 - \alpha) + \alpha t_j$ but `a $b$ c` stays code")
    assert out.count("<img") == 1 and 'alt="w^C_j = (1 - \\alpha) + \\alpha t_j"' in out
    assert "`a $b$ c`" in out
    assert "`\\notacommand{`" in render_math(r"$\notacommand{$") or "<img" in render_math(r"$\notacommand{$")


# --------------------------------------------------------------------------- progress in the terminal
def test_progress_file_and_watcher(tmp_path):
    from urnet_core.study.runner import ProgressWatcher

    lines = []
    watcher = ProgressWatcher("08_ablation", tmp_path, last_seconds=600, heartbeat_s=0.0, emit=lines.append)
    watcher.started = time.time() - 1
    last, _ = watcher.poll(None, time.time())
    assert lines and "still executing" in lines[-1] and "the last run took 10 min" in lines[-1]
    for i, _ in enumerate(progress.track(range(3), run_dir=tmp_path, stage="ablation", unit="runs")):
        if i == 0:
            record = progress.read_progress(tmp_path)
            assert record["done"] == 0 and record["total"] == 3
    record = progress.read_progress(tmp_path)
    assert record["done"] == 3 and progress.format_progress(record) == "ablation: 3/3 runs"
    watcher.heartbeat_s = 1e9
    watcher.poll(None, time.time())
    assert lines[-1] == "08_ablation: ablation: 3/3 runs"
    slow = {"stage": "ablation", "unit": "runs", "done": 12, "total": 57, "slow_done": 10, "slow_seconds": 100.0}
    assert progress.format_progress(slow) == "ablation: 12/57 runs, ~8 min left"
