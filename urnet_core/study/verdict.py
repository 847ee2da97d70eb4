"""The ablation's words: step effects, tuned peers against the baseline, and the index's verdict.

:func:`step_effect` states a ladder step's measured paired effect on test accuracy, from the
ablation's tables, and is the sentence both the step's page (03-07) and the index's verdict
use; :func:`study_verdict` is the index's verdict, three lines first (does URNet beat the
baseline / the best tuned peer; which steps help, hurt or cannot be told apart), then the
details. The wording is chosen by the numbers (thresholds below), never written by hand next
to a result that may change. Each page's own paragraphs are in :mod:`urnet_core.study.findings`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


# --------------------------------------------------------------------------- the ablation's words
#: Which ladder step each step notebook explains (its page states the step's measured effect).
STEP_OF_NOTEBOOK = {"03_class_reweight": "+class", "04_cluster_reweight": "+cluster",
                    "05_instance_reweight": "+instance", "06_bag_attention": "+bag", "07_label_reweight": "+label"}
#: Resolution targets (95% interval half-width, percentage points): the headline (URNet against
#: the best tuned peer) and each ladder step.
HEADLINE_TARGET_PP = 1.0
STEP_TARGET_PP = 1.5
#: What the verdict calls each outcome of a paired interval (the same words on every page).
STEP_WORDS = {"better": "helps", "worse": "hurts", "tie": "cannot be told apart", "untested": "untested (one seed)"}
VERSUS_WORDS = {"better": "beats", "worse": "loses to", "tie": "cannot be told apart from",
                "untested": "is untested against (one seed)"}
_PLURAL = {"beats": "beat", "loses to": "lose to", "cannot be told apart from": "cannot be told apart from",
           "is untested against (one seed)": "are untested against (one seed)"}


def _verb(key: str, n: int) -> str:
    return VERSUS_WORDS[key] if n == 1 else _PLURAL[VERSUS_WORDS[key]]


def outcome(low: float, high: float, seeds: int) -> str:
    """``'better'`` / ``'worse'`` (the 95% interval excludes zero), ``'tie'``, or ``'untested'``
    (fewer than two seeds: no interval)."""
    if int(seeds) < 2 or not (np.isfinite(low) and np.isfinite(high)):
        return "untested"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "tie"


def _interval_pp(row: Mapping[str, Any]) -> str:
    if int(row.get("seeds", 0)) < 2:
        return f"{float(row['diff_pp']):+.1f} pp, one seed"
    return f"{float(row['diff_pp']):+.1f} pp, 95% interval {float(row['low_pp']):+.1f} to {float(row['high_pp']):+.1f}"


def _has(tables: Mapping[str, Any] | None, name: str) -> bool:
    t = (tables or {}).get(name)
    return t is not None and len(t) > 0


def step_row(tables: Mapping[str, Any] | None, step: str) -> dict | None:
    """The ladder-differences row whose rung is ``step`` (``'+class'``...), None when not measured."""
    if not _has(tables, "ladder_differences"):
        return None
    ladder = tables["ladder_differences"]
    match = ladder[ladder["step"].astype(str).str.split("->").str[-1].str.strip() == step]
    return match.iloc[0].to_dict() if len(match) else None


def step_outcome(row: Mapping[str, Any]) -> str:
    return outcome(float(row["low_pp"]), float(row["high_pp"]), int(row.get("seeds", 2)))


def step_effect(tables: Mapping[str, Any] | None, step: str, *, metric: str = "top-1") -> str:
    """The measured effect of ladder step ``step`` on test accuracy, one sentence: the same
    sentence on the step's page (03-07) and, in its words, in the index's verdict."""
    row = step_row(tables, step)
    if row is None:
        return (f"The {step} step's effect on test {metric} is not yet measured: the ablation (notebook 08) has not "
                f"written its tables into this run folder.")
    before = str(row["step"]).split("->")[0].strip()
    word = STEP_WORDS[step_outcome(row)]
    text = (f"Measured in the ablation (notebook 08): {step} {word}"
            + (f" from {before}" if word == "cannot be told apart" else "")
            + f": {float(row['diff_pp']):+.1f} pp of test {metric} against {before}")
    if int(row.get("seeds", 0)) >= 2:
        hw = float(row.get("half_width_pp", (float(row["high_pp"]) - float(row["low_pp"])) / 2))
        text += (f" (95% interval {float(row['low_pp']):+.1f} to {float(row['high_pp']):+.1f}, paired over "
                 f"{int(row['seeds'])} seeds; half-width {hw:.1f} pp, "
                 f"{'within' if hw <= STEP_TARGET_PP else 'above'} the {STEP_TARGET_PP:.1f} pp target)")
    else:
        text += " (one seed, no interval)"
    return text + "."


def versus_baseline(results: pd.DataFrame, group: str = "peer", *, baseline: str = "baseline",
                    metric: str = "top1") -> pd.DataFrame:
    """Every row of ``group`` minus the baseline, paired by seed, in pp of ``metric``: ``method``,
    ``diff_pp``, ``low_pp``, ``high_pp``, ``half_width_pp``, ``seeds`` and ``outcome``
    (better / worse / tie / untested), best first. Empty without the baseline or the group."""
    from urnet_core.study.ablation_tables import paired_row

    cols = ["method", "diff_pp", "low_pp", "high_pp", "half_width_pp", "seeds", "outcome"]
    if results is None or not len(results) or baseline not in set(results["method"]):
        return pd.DataFrame(columns=cols)
    rows = []
    for method in dict.fromkeys(results.loc[results["group"] == group, "method"]):
        r = paired_row(results, baseline, method, metric)
        rows.append({"method": method, **{k: r[k] for k in cols[1:-1]},
                     "outcome": outcome(r["low_pp"], r["high_pp"], r["seeds"])})
    return pd.DataFrame(rows, columns=cols).sort_values("diff_pp", ascending=False).reset_index(drop=True)


def versus_baseline_sentence(table: pd.DataFrame, *, what: str = "tuned peer", baseline: str = "baseline") -> str:
    """Which rows of :func:`versus_baseline` beat the baseline, lose to it or cannot be told apart."""
    if table is None or not len(table):
        return f"No {what} ran against the {baseline} in this study."
    by = {k: [str(m) for m in table.loc[table["outcome"] == k, "method"]] for k in VERSUS_WORDS}
    parts = []
    for key in ("better", "tie", "worse", "untested"):
        if by[key]:
            verb = _verb(key, len(by[key]))
            parts.append(f"{_join(by[key])} {verb} the {baseline}" if key != "untested"
                         else f"{_join(by[key])} {verb}")
    n_better = len(by["better"])
    head = f"{n_better} of {len(table)} {what}{'s' if len(table) != 1 else ''} beat{'s' if len(table) == 1 else ''} the {baseline}"
    return f"{head} (paired by seed, 95% interval excluding zero): " + "; ".join(parts) + "."


def versus_baseline_view(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`versus_baseline` formatted for a page (pp with one decimal, the outcome in words)."""
    return pd.DataFrame({"row": table["method"], "minus baseline (pp)": table["diff_pp"].map(lambda v: f"{v:+.1f}"),
                         "low": table["low_pp"].map(lambda v: f"{v:+.1f}"),
                         "high": table["high_pp"].map(lambda v: f"{v:+.1f}"),
                         "seeds": table["seeds"].astype(int),
                         "outcome": [VERSUS_WORDS[o] + " the baseline" if o != "untested" else VERSUS_WORDS[o]
                                     for o in table["outcome"]]})


def ladder_view(ladder: pd.DataFrame) -> pd.DataFrame:
    """:func:`urnet_core.study.ablation.ladder_differences` for a page: pp with one decimal, the
    verdict's word for each step (helps / hurts / cannot be told apart), the interval's half-width
    and the paper's step (empty when the ladder did not run, as in the peers profile)."""
    if ladder is None or not len(ladder):
        return pd.DataFrame(columns=["step", "difference (pp)", "low", "high", "outcome"])
    view = pd.DataFrame({"step": ladder["step"],
                         "difference (pp)": ladder["diff_pp"].map(lambda v: f"{v:+.1f}"),
                         "low": ladder["low_pp"].map(lambda v: f"{v:+.1f}"),
                         "high": ladder["high_pp"].map(lambda v: f"{v:+.1f}")})
    seeds = ladder["seeds"] if "seeds" in ladder else pd.Series(2, index=ladder.index)
    view["outcome"] = [STEP_WORDS[outcome(lo, hi, n)] for lo, hi, n in zip(ladder["low_pp"], ladder["high_pp"], seeds)]
    if "half_width_pp" in ladder:
        view["half-width"] = ladder["half_width_pp"].map(lambda v: f"{v:.1f}")
    if "paper_top5_diff" in ladder:
        view["paper (top-5)"] = ladder["paper_top5_diff"].map(lambda v: "" if pd.isna(v) else f"{v:+.1f}")
    return view


def headline_view(head: pd.DataFrame) -> pd.DataFrame:
    """:func:`headline_table` (or :func:`urnet_core.study.ablation.head_to_head`) for a page: pp
    with one decimal and the verdict's word for each comparison."""
    if head is None or not len(head):
        return pd.DataFrame(columns=["row", "versus", "difference (pp)", "low", "high", "outcome"])
    out = pd.DataFrame({"row": head["method"], "versus": head["other"],
                        "difference (pp)": head["diff_pp"].map(lambda v: f"{v:+.1f}"),
                        "low": head["low_pp"].map(lambda v: f"{v:+.1f}"),
                        "high": head["high_pp"].map(lambda v: f"{v:+.1f}"),
                        "half-width": head["half_width_pp"].map(lambda v: f"{v:.1f}"),
                        "detectable": head["detectable_pp"].map(lambda v: f"{v:.1f}")})
    out["outcome"] = [f"{VERSUS_WORDS[outcome(lo, hi, n)]} {o}" for lo, hi, n, o in
                      zip(head["low_pp"], head["high_pp"], head["seeds"], head["other"])]
    return out


#: The rows the headline compares, in the order the verdict names them (as in the charts).
def headline_rows() -> tuple[str, ...]:
    from urnet_core.study.ablation import RECOMMENDED, SELECTED

    return (RECOMMENDED, SELECTED, FULL_URNET)


def headline_table(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """URNet's rows (:func:`headline_rows` present) minus the baseline and minus the best tuned
    peer, paired by seed: ``method``, ``versus``, ``other`` and the columns of
    :func:`urnet_core.study.ablation.paired_row`, plus ``outcome``."""
    from urnet_core.study.ablation_tables import best_of_group, paired_row

    cols = ["method", "versus", "other", "diff_pp", "low_pp", "high_pp", "half_width_pp", "detectable_pp",
            "seeds", "outcome"]
    if results is None or not len(results):
        return pd.DataFrame(columns=cols)
    methods = set(results["method"])
    others = {"baseline": "baseline" if "baseline" in methods else None,
              "best tuned peer": best_of_group(results, "peer", metric=metric)}
    rows = []
    for method in [m for m in headline_rows() if m in methods]:
        for role, other in others.items():
            if other is not None:
                r = paired_row(results, other, method, metric)
                rows.append({"method": method, "versus": role, "other": other,
                             **{k: r[k] for k in cols[3:-1]}, "outcome": outcome(r["low_pp"], r["high_pp"], r["seeds"])})
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- the study's verdict
#: What each ablation group stands for (the index's legend), keyed by the groups the ablation's
#: rows use (:func:`ablation_groups`); a group missing here is described by its members.
_GROUP_MEANINGS = {
    "ladder": "the paper's incremental ladder: the baseline (plain cross entropy), then one URNet step added per "
              "row (class, cluster, instance, bag, label; DESIGN.md section 5.1)",
    "urnet": "URNet and URNet+ tuned: each chose its configuration among the same number of candidates as every "
             "peer, on a noisy validation split carved from the training rows, never on the test split",
    "peer": "other methods for noisy or imbalanced labels, each tuned the same way (DESIGN.md section 5.3)",
    "oracle": "trained on the truly clean rows only, which needs ground truth: the reference for the gap closed "
              "(DESIGN.md section 5.4)",
    "ladder (cross-fitted)": "the ladder with weights computed out-of-fold (each row's weights come from a baseline "
                             "that did not train on it)",
    "ladder (from scratch)": "the ladder trained from a fresh initialisation instead of fine-tuned from the baseline",
    "alone": "each URNet step on its own on top of the baseline, and the paper's literal class weight "
             "(DESIGN.md section 5.2)",
    "peer (paper defaults)": "the peers at their papers' default hyperparameters, untuned",
    "trick": "the paper's tricks on top of full URNet, e.g. keeping only top-ranked Flickr images "
             "(DESIGN.md section 5.2)",
}


def ablation_groups() -> list[str]:
    """Every group a row of the ablation can have (every profile, tricks included), in order."""
    from urnet_core.study.ablation import default_methods

    rows = default_methods(profile="full", include_tricks=True)
    return list(dict.fromkeys(r.group for r in rows))


def group_descriptions() -> dict[str, str]:
    """``{group: meaning}`` for :func:`ablation_groups` (derived from the ablation's rows, so a
    renamed or new group shows up as undescribed instead of silently keeping an old name)."""
    return {g: _GROUP_MEANINGS.get(g, f"rows of the '{g}' group") for g in ablation_groups()}


#: The ladder's top rung (the paper's full URNet), named as in the tables and charts.
FULL_URNET = "+label"


def group_legend(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per group present in ``summary`` (in order of appearance): ``group``, ``rows``
    (its methods), ``meaning``."""
    meanings = group_descriptions()
    rows = []
    for group, df in summary.groupby("group", sort=False):
        methods = list(dict.fromkeys(df["method"]))
        rows.append({"group": group, "rows": ", ".join(methods),
                     "meaning": meanings.get(group, f"rows of the '{group}' group")})
    return pd.DataFrame(rows)


def _level(summary: pd.DataFrame, method: str, metric: str) -> str:
    row = summary.set_index("method").loc[method]
    m, lo, hi = (100 * float(row[f"{metric}_{k}"]) for k in ("mean", "low", "high"))
    if int(row.get("seeds", 1)) < 2:
        return f"{m:.1f}%"
    return f"{m:.1f}% (95% interval {max(lo, 0.0):.1f} to {min(hi, 100.0):.1f})"


def _versus_line(rows: pd.DataFrame, label: str) -> str:
    parts = [f"{r['method']} {VERSUS_WORDS[r['outcome']]} it ({_interval_pp(r)})" for _, r in rows.iterrows()]
    return f"{label}: " + "; ".join(parts) + "."


def _ladder_line(tables: Mapping[str, Any]) -> str | None:
    if not _has(tables, "ladder_differences"):
        return None
    steps = {k: [] for k in STEP_WORDS}
    for _, r in tables["ladder_differences"].iterrows():
        steps[step_outcome(r)].append(str(r["step"]).split("->")[-1].strip())
    if steps["untested"] and not any(steps[k] for k in ("better", "worse", "tie")):
        return (f"The paper's ladder, step by step: one seed, so no step can be called helping or hurting "
                f"({_join(steps['untested'])} untested).")
    parts = []
    if steps["better"]:
        parts.append(f"{_join(steps['better'])} help{'s' if len(steps['better']) == 1 else ''}")
    else:
        parts.append("no step helps")
    if steps["worse"]:
        parts.append(f"{_join(steps['worse'])} hurt{'s' if len(steps['worse']) == 1 else ''}")
    if steps["tie"]:
        parts.append(f"{_join(steps['tie'])} cannot be told apart from the rung before")
    return "The paper's ladder, step by step (each rung against the one before, paired by seed): " + "; ".join(parts) + "."


def _selection_sentence(tables: Mapping[str, Any]) -> str | None:
    if not _has(tables, "selection_regret"):
        return None
    regret = tables["selection_regret"]
    rule = (tables.get("data") or {}).get("selection_rule")
    if rule is None:
        from urnet_core.study.tuning import SELECTION_RULE as rule
    df = regret[regret["rule"] == rule] if "rule" in regret else regret
    if not len(df):
        return None
    worst = df.loc[df["regret_pp"].idxmin()]
    within = abs(float(worst["regret_pp"]))
    picked_best = int((df["rank_on_test"] == 1).sum())
    return (f"Selection: in every one of the {len(df)} tuned families the rule's pick is within {within:.1f} pp of "
            f"the best candidate on test (worst: {worst['method']}, rank {int(worst['rank_on_test'])} of "
            f"{int(worst['candidates'])}); it picked the best candidate in {picked_best} of {len(df)} families. "
            f"The test numbers measure the pick, they never chose it.")


def _resolution_sentence(tables: Mapping[str, Any], head: pd.DataFrame) -> str | None:
    parts = []
    peer_rows = head[head["versus"] == "best tuned peer"] if len(head) else head
    if len(peer_rows) and int(peer_rows["seeds"].min()) >= 2:
        r = peer_rows.iloc[0]
        hw = float(r["half_width_pp"])
        parts.append(f"the headline ({r['method']} minus {r['other']}) is resolved to ±{hw:.1f} pp "
                     f"({'within' if hw <= HEADLINE_TARGET_PP else 'above'} the {HEADLINE_TARGET_PP:.1f} pp target; "
                     f"the seeds could detect a difference of about {float(r['detectable_pp']):.1f} pp)")
    if _has(tables, "ladder_differences"):
        ladder = tables["ladder_differences"]
        if int(ladder["seeds"].min()) >= 2 and "half_width_pp" in ladder:
            met = int((ladder["half_width_pp"] <= STEP_TARGET_PP).sum())
            parts.append(f"{met} of {len(ladder)} ladder steps are resolved to within the {STEP_TARGET_PP:.1f} pp "
                         f"target (half-widths " + ", ".join(
                             f"{str(s).split('->')[-1].strip()} ±{float(h):.1f}"
                             for s, h in zip(ladder["step"], ladder["half_width_pp"])) + " pp)")
    return ("Resolution: " + "; ".join(parts) + ".") if parts else None


def _chance_warning(tables: Mapping[str, Any], metric: str) -> str | None:
    summary, data = tables.get("summary"), tables.get("data") or {}
    classes = data.get("classes")
    if not classes or f"{metric}_mean" not in summary or metric not in ("top1", "balanced_accuracy"):
        return None
    chance = 1.0 / float(classes)
    best = float(summary[f"{metric}_mean"].max())
    if best > chance + 0.02:
        return None
    return (f"Every model is at chance level (top-1 at most {100 * best:.1f}% with {classes} classes, chance "
            f"{100 * chance:.1f}%): nothing was learned, so this run says nothing about URNet (too few epochs or "
            f"images, as in a smoke run); read what follows as a check of the machinery only.")


def verdict(tables: Mapping[str, Any], *, metric: str = "top1") -> dict[str, list[str]]:
    """The index's verdict: ``{"warnings": [...], "lines": [three sentences], "details": [...]}``.

    The three lines: URNet's rows (URNet+ (tuned), URNet (tuned), +label) against the baseline;
    the same rows against the best tuned peer; which ladder steps help, hurt or cannot be told
    apart (:func:`step_effect`'s words). In the ``peers`` profile (no URNet row, no ladder), the
    lines say which tuned peers beat the baseline (:func:`versus_baseline`). A row "beats" or
    "loses to" another only when the 95% paired interval excludes zero. The details: the levels,
    the resolution against the targets, the selection regret, the oracle and the gap closed.
    """
    results, summary = tables.get("results"), tables.get("summary")
    data = tables.get("data") or {}
    if results is None or summary is None or not len(summary):
        return {"warnings": [], "lines": ["The ablation has not run yet, so there is no verdict."], "details": []}
    from urnet_core.study.ablation_tables import best_of_group

    n_seeds = int(results["seed"].nunique())
    methods = set(summary["method"])
    warnings = [w for w in (_chance_warning(tables, metric),) if w]
    if n_seeds < 2:
        warnings.append("With a single seed no interval can be computed, so no row is called better or worse "
                        "than another.")
    head = headline_table(results, metric=metric)
    peers = versus_baseline(results, "peer", metric=metric)
    peer = best_of_group(results, "peer", metric=metric)
    lines: list[str] = []
    if len(head):
        lines.append(_versus_line(head[head["versus"] == "baseline"], "Against the baseline (plain cross entropy)")
                     if (head["versus"] == "baseline").any() else "There is no baseline row to compare with.")
        lines.append(_versus_line(head[head["versus"] == "best tuned peer"], f"Against the best tuned peer, {peer}")
                     if peer else "No tuned peer ran, so URNet is not compared with another method.")
    else:
        lines.append(versus_baseline_sentence(peers))
        lines.append("This profile runs no URNet row: it checks the peers against the baseline only.")
    ladder = _ladder_line(tables)
    lines.append(ladder or "The paper's ladder did not run in this profile, so no step is measured.")

    details: list[str] = []
    named = [m for m in headline_rows() if m in methods] + [m for m in ("baseline", peer) if m]
    if named:
        details.append(f"Test {metric.replace('top1', 'top-1')} over {n_seeds} seed{'s' if n_seeds != 1 else ''}: "
                       + "; ".join(f"{m} {_level(summary, m, metric)}" for m in dict.fromkeys(named)) + ".")
    if len(head) and len(peers):
        details.append(versus_baseline_sentence(peers))
    for sentence in (_resolution_sentence(tables, head), _selection_sentence(tables)):
        if sentence:
            details.append(sentence)
    oracle = best_of_group(results, "oracle", metric=metric) if data.get("ground_truth", True) else None
    if not data.get("ground_truth", True):
        details.append("This data has no ground truth (no true labels), so there is no oracle trained on the clean "
                       "rows and no gap closed; the comparisons above need no truth.")
    elif oracle and "baseline" in methods:
        text = f"The oracle, {oracle}, trained on the truly clean rows only, reaches {_level(summary, oracle, metric)}"
        gap = tables.get("gap_closed")
        g = gap.set_index("method") if gap is not None and len(gap) else None
        closed = []
        for method in [m for m in headline_rows() if m in methods] + ([peer] if peer else []):
            if g is not None and method in g.index and np.isfinite(float(g.loc[method, "gap_closed"])):
                r = g.loc[method]
                closed.append(f"{method} closes {_num(r['gap_closed'])} of the baseline-to-oracle gap "
                              f"({_num(r['low'])} to {_num(r['high'])})")
        if closed:
            text += "; " + "; ".join(closed) + " (0 = baseline, 1 = oracle)"
        elif g is not None:
            text += "; it is not better than the baseline, so the gap closed is undefined"
        details.append(text + ".")
    coverage = coverage_sentence(data)
    if coverage:
        details.append(coverage)
    return {"warnings": warnings, "lines": lines, "details": details}


def study_verdict(tables: Mapping[str, Any], *, metric: str = "top1") -> list[str]:
    """:func:`verdict` as one list of sentences: warnings, the three lines, then the details."""
    v = verdict(tables, metric=metric)
    return v["warnings"] + v["lines"] + v["details"]


def coverage_sentence(data: Mapping[str, Any]) -> str | None:
    """The verdict's warning about classes the training split cannot teach (None when every
    class has enough images), from ``data['class_coverage']``
    (:meth:`urnet_core.data.coverage.ClassCoverage.to_dict`)."""
    cov = data.get("class_coverage") or {}
    n = int(cov.get("n_flagged") or 0)
    if not n:
        return None
    classes = data.get("classes")
    text = (f"Caution: {n}{f' of the {classes} classes' if classes else (' classes' if n != 1 else ' class')} "
            f"{'have' if n != 1 else 'has'} no or fewer than {cov.get('min_train_images', 5)} training images")
    test_only = len(cov.get("test_only") or [])
    if test_only:
        text += (f", {test_only} of them in the test split but absent from training (scoring 0 by construction, "
                 "which lowers every mean over classes)")
    return text + "; the data section names them."


def _num(value: Any, digits: int = 2) -> str:
    """``value`` rounded, without a minus sign on zero."""
    text = f"{float(value):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def interval_coverage(data: Mapping[str, Any]) -> str:
    """What a 95% interval of the study covers: the seeds, and what a seed varies."""
    seeds = data.get("seeds") or []
    what = "model initialisation, batch order, augmentation, bags, k-means and the confidence model"
    if data.get("draw_per_seed"):
        what = "the benchmark draw (which labels are corrupted) and " + what
    else:
        what += "; the benchmark draw is the same for every seed"
    return (f"Intervals are 95% Student-t intervals over {len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
            f"({', '.join(str(s) for s in seeds)}); a seed fixes the {what}. `low` and `high` are the bounds of the "
            f"interval.")


def balanced_test_note(test_class_counts: Sequence[int] | None, summary: pd.DataFrame | None = None) -> str | None:
    """Why ``top1`` equals ``balanced_accuracy``, when the test split has as many images in every class
    (the mean of per-class accuracies is then the overall accuracy). None otherwise."""
    if test_class_counts is not None:
        counts = np.asarray(test_class_counts)
        counts = counts[counts > 0]
        if counts.size and counts.min() == counts.max():
            return (f"The test split has {int(counts[0])} images in every class, so top-1 accuracy equals balanced "
                    f"accuracy (the mean of the per-class accuracies): the two columns are identical by construction.")
        return None
    if summary is not None and {"top1_mean", "balanced_accuracy_mean"} <= set(summary.columns) and len(summary):
        if np.allclose(summary["top1_mean"], summary["balanced_accuracy_mean"], atol=1e-9):
            return ("top-1 accuracy equals balanced accuracy in every row, as it does when the test split has as many "
                    "images in every class.")
    return None
