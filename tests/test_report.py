"""The report's words come from the numbers: verdict, findings, legend, index, progress, maths.

The ablation tables are made up here (no training), then broken on purpose (URNet made to win,
to lose, a peer made to win, the truth or seeds taken away) to check that the wording follows.
"""

from __future__ import annotations

import html
import re
import time

import numpy as np
import pandas as pd
import pytest

from urnet_core.study import analysis as A
from urnet_core.study import scoring as S
from urnet_core.study import verdict as V
from urnet_core.study import findings as F
from urnet_core.study import progress
from urnet_core.study.ablation_tables import gap_closed_table, ladder_differences, summary_table

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


TUNED = {"URNet (tuned)": "urnet", "URNet+ (tuned)": "urnet"}


def _verdict(top1, **kw):
    return V.verdict(_tables(top1, groups={**TUNED, **kw.pop("groups", {})}, **kw))


def test_verdict_opens_with_three_lines_naming_rows_as_the_charts_do():
    v = _verdict({**BASE, "URNet (tuned)": 0.76, "URNet+ (tuned)": 0.80})
    assert len(v["lines"]) == 3
    base, peer, ladder = v["lines"]
    assert base.startswith("Against the baseline") and "URNet+ (tuned) beats it (+10.0 pp" in base
    assert "+label cannot be told apart from it" in base  # +label == baseline
    assert peer.startswith("Against the best tuned peer, class-balanced loss (Cui 2019)")
    assert "URNet+ (tuned) beats it" in peer and "+label loses to it" in peer
    assert re.search(r"\+class helps; \+bag hurts; \+cluster, \+instance and \+label cannot be told apart", ladder)
    assert "Full URNet" not in " ".join(V.study_verdict(_tables(BASE)))  # no name that no chart carries
    details = " ".join(v["details"])
    assert "Resolution: the headline (URNet+ (tuned) minus class-balanced loss (Cui 2019))" in details
    assert "1.0 pp target" in details and "1.5 pp target" in details
    assert "oracle: clean only" in details and "closes" in details


def test_verdict_follows_the_numbers_when_urnet_loses_or_ties():
    lose = _verdict({**BASE, "URNet (tuned)": 0.60, "URNet+ (tuned)": 0.65})
    assert "URNet+ (tuned) loses to it" in lose["lines"][0] and "beats" not in lose["lines"][0]
    tie = _verdict({**BASE, "URNet (tuned)": 0.74, "URNet+ (tuned)": 0.74})
    assert "URNet+ (tuned) cannot be told apart from it" in tie["lines"][1]


def test_verdict_without_ground_truth_skips_the_oracle_with_a_reason():
    top1 = {k: v for k, v in BASE.items() if not k.startswith("oracle")}
    text = " ".join(V.study_verdict(_tables(top1, ground_truth=False)))
    assert "no ground truth" in text and "no oracle" in text and "gap closed" in text
    assert "closes" not in text


def test_verdict_with_one_seed_calls_nothing_better_or_worse():
    v = V.verdict(_tables(BASE, seeds=(0,)))
    text = " ".join(v["lines"])
    assert "single seed" in " ".join(v["warnings"])
    assert "helps" not in text.replace("no step can be called helping", "") and " beats " not in text


def test_selection_regret_sentence():
    tables = _tables({**BASE, "URNet+ (tuned)": 0.8}, groups=TUNED)
    tables["selection_regret"] = pd.DataFrame({
        "family": ["urnet_plus", "gce", "urnet_plus", "gce"], "method": ["URNet+ (tuned)", "generalized CE", "x", "y"],
        "rule": ["clean_weighted_balanced_accuracy"] * 2 + ["noisy_balanced_accuracy"] * 2,
        "pick": ["a", "b", "c", "d"], "regret_pp": [0.0, -1.25, -9.0, -9.0], "rank_on_test": [1, 2, 5, 5],
        "candidates": [6, 6, 6, 6]})
    text = " ".join(V.verdict(tables)["details"])
    assert "in every one of the 2 tuned families the rule's pick is within 1.2 pp of the best candidate" in text
    assert "9.0" not in text  # the other rule's regret is not the selection's


def test_versus_baseline_names_which_peers_beat_cross_entropy():
    top1 = {"baseline": 0.70, "class-balanced loss (Cui 2019)": 0.74, "generalized CE (Zhang 2018)": 0.70,
            "oracle: clean only": 0.85}
    tables = _tables(top1)
    table = V.versus_baseline(tables["results"], "peer")
    assert list(table["method"]) == ["class-balanced loss (Cui 2019)", "generalized CE (Zhang 2018)"]
    assert list(table["outcome"]) == ["better", "tie"]
    assert table["low_pp"].iloc[0] > 0 > table["low_pp"].iloc[1]
    sentence = V.versus_baseline_sentence(table)
    assert sentence.startswith("1 of 2 tuned peers beat the baseline")
    assert "class-balanced loss (Cui 2019) beats the baseline" in sentence
    assert "generalized CE (Zhang 2018) cannot be told apart from the baseline" in sentence
    # The peers profile: no ladder, no URNet row; the verdict's first line is this sentence.
    tables["ladder_differences"] = tables["ladder_differences"].iloc[0:0]
    lines = V.verdict(tables)["lines"]
    assert lines[0] == sentence and "no URNet row" in lines[1] and "did not run" in lines[2]
    view = V.versus_baseline_view(table)
    assert list(view["minus baseline (pp)"]) == ["+4.0", "+0.0"]


STEP_PAGES = {"03": "+class", "04": "+cluster", "05": "+instance", "06": "+bag", "07": "+label"}


def _page_conclusions(tables) -> dict[str, str]:
    """The conclusion of each step page (03-07), as its notebook computes it."""
    labels = np.repeat(np.arange(3), [60, 30, 10])
    change = {"n": 100, "changed": 20, "changed_share": 0.2, "changed_share_noisy": 0.5, "changed_share_clean": 0.05,
              "changed_noisy_share": 0.8, "mixed_is_true_share": 0.7}
    saliency = pd.DataFrame({"noise_type": ["clean", "sym"], "n": [300, 100], "mean_saliency": [0.338, 0.32],
                             "top_share": [0.34, 0.3], "uniform": [1 / 3, 1 / 3]})
    pages = {"03": F.findings_class(A.class_weight_table(labels, 3), 0.5, tables=tables),
             "04": F.findings_cluster(0.6, None, None, tables=tables),
             "05": F.findings_instance(0.62, 0.81, tables=tables),
             "06": F.findings_bag(saliency, tables=tables),
             "07": F.findings_label(change, tables=tables)}
    return {k: "\n\n".join(v) for k, v in pages.items()}


def _index_word(ladder_line: str, step: str) -> str:
    """What the index's ladder line calls ``step``: helps / hurts / cannot be told apart."""
    for clause in ladder_line.split(": ", 1)[1].rstrip(".").split("; "):
        names = re.split(r", | and ", re.sub(r" (helps?|hurts?|cannot be told apart from the rung before)$", "", clause))
        if step in names:
            return "helps" if " help" in clause else "hurts" if " hurt" in clause else "cannot be told apart"
    raise AssertionError(f"{step} not in {ladder_line!r}")


@pytest.mark.parametrize("flip", ["as measured", "class hurts, bag helps", "everything helps", "nothing resolved"])
def test_step_pages_and_index_change_their_wording_together(flip, tmp_path):
    top1 = dict(BASE)
    if flip == "class hurts, bag helps":
        top1.update({"+class": 0.65, "+cluster": 0.65, "+instance": 0.651, "+bag": 0.70, "+label": 0.70})
    elif flip == "everything helps":
        top1.update({"+class": 0.72, "+cluster": 0.74, "+instance": 0.76, "+bag": 0.78, "+label": 0.80})
    tables = _tables(top1)
    if flip == "nothing resolved":  # seed noise far larger than every step
        results = _results(top1, LADDER_GROUPS)
        results["top1"] += np.tile([0.2, -0.2, 0.0], len(results) // 3) * np.repeat(np.arange(len(top1)) % 3 + 1, 3)
        tables = {**tables, "results": results, "summary": summary_table(results),
                  "ladder_differences": ladder_differences(results)}
    pages = _page_conclusions(tables)
    ladder_line = V.verdict(tables)["lines"][2]
    from urnet_core.study.report import write_index

    index_html = write_index(tmp_path, notebooks=[], tables=tables, parameters={}).read_text()
    words = {}
    for page, step in STEP_PAGES.items():
        row = V.step_row(tables, step)
        expected = V.STEP_WORDS[V.step_outcome(row)]
        first = pages[page].split("\n\n")[0]  # the page's takeaway
        assert first.startswith(f"Measured in the ablation (notebook 08): {step} {expected}"), (page, first)
        assert f"{float(row['diff_pp']):+.1f} pp" in first
        assert _index_word(ladder_line, step) == expected, (step, ladder_line)
        table_row = re.search(r"<tr>\s*<td>" + re.escape(html.escape(str(row["step"]))) + r"</td>(.*?)</tr>", index_html,
                              flags=re.S)
        assert table_row and f"<td>{expected}</td>" in table_row.group(1), step  # the index's ladder table
        words[step] = expected
        for other in set(V.STEP_WORDS.values()) - {expected}:  # never two words for one step
            assert f"{step} {other}" not in first
    if flip == "as measured":
        assert words == {"+class": "helps", "+cluster": "cannot be told apart", "+instance": "cannot be told apart",
                         "+bag": "hurts", "+label": "cannot be told apart"}
    elif flip == "class hurts, bag helps":
        assert words["+class"] == "hurts" and words["+bag"] == "helps"
    elif flip == "everything helps":
        assert set(words.values()) == {"helps"}
    else:
        assert set(words.values()) == {"cannot be told apart"}
    # Before the ablation ran, every page says its step is not yet measured.
    for page, text in _page_conclusions(None).items():
        assert text.startswith(f"The {STEP_PAGES[page]} step's effect on test top-1 is not yet measured")


def test_group_descriptions_derive_from_the_ablation_groups():
    from urnet_core.study.ablation import default_methods

    groups = {r.group for p in ("default", "quick", "full", "peers") for r in default_methods(profile=p)}
    described = V.group_descriptions()
    assert groups <= set(described) and set(described) == set(V.ablation_groups())
    assert all("rows of the" not in v for v in described.values())  # every real group has a meaning
    assert set(V._GROUP_MEANINGS) <= set(V.ablation_groups())  # no description of a group that no row has
    assert not hasattr(F, "GROUP_DESCRIPTIONS") and not hasattr(A, "GROUP_DESCRIPTIONS")  # one name: group_descriptions()


def test_group_legend_covers_every_group_present_known_or_not():
    summary = _tables({**BASE, "new thing": 0.7}, groups={"new thing": "brand-new group"})["summary"]
    legend = V.group_legend(summary)
    assert list(legend["group"]) == ["ladder", "peer", "oracle", "brand-new group"]
    assert legend.set_index("group").loc["brand-new group", "meaning"] == "rows of the 'brand-new group' group"
    assert "+label" in legend.set_index("group").loc["ladder", "rows"]


def test_balanced_note_and_interval_coverage():
    assert "25 images in every class" in V.balanced_test_note([25] * 8)
    assert V.balanced_test_note([25, 30]) is None
    assert "seeds (0, 1, 2)" in V.interval_coverage({"seeds": [0, 1, 2]})
    assert "benchmark draw is the same" in V.interval_coverage({"seeds": [0]})
    assert "the benchmark draw (which labels" in V.interval_coverage({"seeds": [0, 1], "draw_per_seed": True})


# --------------------------------------------------------------------------- findings of the notebooks
def test_findings_instance_states_a_negative_result_plainly():
    def text(*args):
        return " ".join(F.findings_instance(*args))

    worse = text(0.62, 0.81, 0.7)
    assert "worse than the free score" in worse and "0.620" in worse and "0.810" in worse
    better = text(0.90, 0.81)
    assert "beats the free score by 0.090" in better and "worse" not in better
    assert "about equal" in text(0.805, 0.81)
    assert "below chance" in text(0.40, 0.81)
    assert "target" not in text(0.62, 0.81, 0.7, 0.95)  # no target the report never defines
    assert "earn" not in worse  # the AUROC speaks of detection; the step's accuracy is the ablation's


def test_findings_bag_calls_near_uniform_saliency_uniform():
    table = pd.DataFrame({"noise_type": ["clean", "sym"], "n": [300, 100], "mean_saliency": [0.338, 0.32],
                          "top_share": [0.34, 0.3], "uniform": [1 / 3, 1 / 3]})
    assert "practically uniform" in F.findings_bag(table)[1]
    table["mean_saliency"] = [0.45, 0.2]
    assert "prefers clean instances" in F.findings_bag(table)[1]
    table["mean_saliency"] = [0.25, 0.5]
    assert "attends less to clean" in F.findings_bag(table)[1]


def test_findings_label_baseline_class_cluster_data():
    good = {"n": 100, "changed": 20, "changed_share": 0.2, "changed_share_noisy": 0.5, "changed_share_clean": 0.05,
            "changed_noisy_share": 0.8, "mixed_is_true_share": 0.7}
    assert "More changed targets point at the truth" in F.findings_label(good)[1]
    assert "should help" not in " ".join(F.findings_label(good))  # a prediction is not the measured effect
    bad = {**good, "changed_noisy_share": 0.3, "mixed_is_true_share": 0.1}
    assert "At least as many changed targets damage a correct label" in F.findings_label(bad)[1]
    assert "Without ground truth" in F.findings_label({"n": 10, "changed": 1, "changed_share": 0.1})[1]

    row = {"top1_mean": 0.7, "top1_low": 0.68, "top1_high": 0.72, "seeds": 3}
    by_size = pd.DataFrame({"group": ["head", "medium", "tail"], "accuracy": [0.9, 0.7, 0.4],
                            "low": [0.88, 0.6, 0.35], "high": [0.92, 0.8, 0.45]})
    assert "The long tail costs accuracy" in F.findings_baseline(row, by_size)
    by_size["low"], by_size["high"] = [0.3, 0.3, 0.3], [0.95, 0.95, 0.95]
    assert "cannot show" in F.findings_baseline(row, by_size)

    labels = np.repeat(np.arange(3), [60, 30, 10])
    weights = A.class_weight_table(labels, 3, alpha=0.5)
    text = " ".join(F.findings_class(weights, 0.5))
    assert "literal eq. 3" in text and "balanced form gives it" in text

    assert "no better than chance" in F.findings_cluster(0.51, None, None)[1]
    assert "Without ground truth" in F.findings_cluster(None)[1]
    timing = pd.DataFrame({"backend": ["faiss"], "seconds": [0.123456]})
    assert "0.12 s" in F.findings_cluster(None, None, timing)[1]  # no more precision than a timing has

    profile = A.class_size_profile(labels, 3)
    noise = pd.DataFrame({"share_clean": [0.6], "share_asym": [0.1], "share_sym": [0.2], "share_open": [0.1],
                          "share_ambiguous": [0.0], "noise_rate": [0.4]}, index=["all"])
    text = F.findings_data(profile, noise)
    assert "40.0% of the training labels are wrong (asym 10.0%, sym 20.0%, open 10.0%)" in text
    assert "no ground truth" in F.findings_data(profile, None)


def test_parameters_table_flattens_nested_settings():
    table = S.parameters_table({"a": 1, "sources": {"flickr": {"share": 0.3}}})
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
    assert verdict < html.index("id='verdict-details'") < html.index("<img") < html.index("the ladder, step by step")
    assert html.index("the ladder, step by step") < html.index("<h2>Every row</h2>")
    lines = re.findall(r"<p class='line'>(.*?)</p>", html)
    assert len(lines) == 3 and "+class helps" in lines[2]
    figures = re.findall(r"<figure id='claim-(\w+)'><img src='([^']+)' alt='([^']+)'", html)
    assert [f[0] for f in figures] == ["headline", "ladder", "rows"]
    assert all((tmp_path / src).is_file() and len(alt) > 50 for _, src, alt in figures)
    assert "baseline -&gt; +class +5.0 pp (+4.1 to +5.9)" in html  # the ladder figure's alt text holds its numbers
    assert "<th>top5</th>" not in html  # eight classes: top-5 says nothing
    assert "What the groups mean" in html and "incremental ladder" in html
    assert "25 images in every class" in html and "<code>low</code>" in html
    assert "href='00_data.html'" in html and "href='01_challenges.html'" not in html  # no dangling link
    assert "/nowhere" not in html and str(tmp_path) not in html
    assert "<script" not in html


def test_index_of_the_peers_profile_shows_the_sanity_table(tmp_path):
    from urnet_core.study.report import write_index

    top1 = {"baseline": 0.70, "class-balanced loss (Cui 2019)": 0.74, "generalized CE (Zhang 2018)": 0.70,
            "oracle: clean only": 0.85}
    tables = _tables(top1)
    tables["ladder_differences"] = pd.DataFrame()  # what read_tables gives for the peers profile's empty CSV
    html = write_index(tmp_path, notebooks=[], tables=tables, parameters={}).read_text()
    lines = re.findall(r"<p class='line'>(.*?)</p>", html)
    assert lines[0].startswith("1 of 2 tuned peers beat the baseline")
    assert "<h2>Tuned peers against the baseline</h2>" in html and "<td>beats the baseline</td>" in html
    assert (tmp_path / "claim_headline.png").is_file() and not (tmp_path / "claim_ladder.png").exists()
    assert "the ladder, step by step</h2>" not in html
    assert len(V.ladder_view(pd.DataFrame())) == 0 and len(V.headline_view(pd.DataFrame())) == 0


def test_index_without_ablation_has_no_stale_chart(tmp_path):
    from urnet_core.study.report import write_index

    for stale in ("ablation_top1.png", "claim_ladder.png", "claim_headline.png", "claim_rows.png"):
        (tmp_path / stale).write_bytes(b"old")
    html = write_index(tmp_path, notebooks=[], tables=None, parameters={}).read_text()
    assert "has not run yet" in html and "<img" not in html and not list(tmp_path.glob("*.png"))


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


def test_the_ablation_ladder_is_urnet_configs_ladder():
    from urnet_core.reweight.compose import URNetConfig
    from urnet_core.study.ablation import LADDER, LADDER_STEPS, PAPER_TOP5, ladder_rows

    assert LADDER == tuple(URNetConfig.ladder()) == tuple(PAPER_TOP5)
    # the rows the ablation trained before the ladder was read from URNetConfig (same cache keys)
    assert [(r.name, r.strategies, r.bag) for r in ladder_rows()] == [
        ("baseline", (), False), ("+class", ("class",), False), ("+cluster", ("class", "cluster"), False),
        ("+instance", ("class", "cluster", "instance"), False), ("+bag", ("class", "cluster", "instance"), True),
        ("+label", ("class", "cluster", "instance", "label"), True)]
    assert [s for _, s, _ in LADDER_STEPS] == [r.strategies for r in ladder_rows()]
