"""Every notebook's "What this shows": each page's own numbers turned into its paragraphs.

One source of truth per finding. Each ``findings_*`` function turns a notebook's own numbers
into the paragraphs its "What this shows" cell prints (the first paragraph is the page's
one-line takeaway); a step page (03-07) opens with its step's measured effect,
:func:`~urnet_core.study.verdict.step_effect`, the sentence the index's verdict
(:mod:`urnet_core.study.verdict`) uses too. Rows are named exactly as in the tables and charts.
The wording is chosen by the numbers (thresholds below), never written by hand next to a result
that may change, and negative results are stated as plainly as positive ones.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from urnet_core.study.analysis import WRONG_LABEL_TYPES
from urnet_core.study.verdict import step_effect

#: |AUROC - 0.5| below this is "no better than chance" for a weight separating clean from noisy.
AUROC_CHANCE = 0.03
#: Two AUROCs closer than this are "about the same".
AUROC_TIE = 0.01
#: A mean saliency within this relative distance of uniform is "practically uniform".
SALIENCY_TIE = 0.05


def _pct(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%"


def _seconds(value: float) -> str:
    """A duration with the precision a timing has (two significant digits)."""
    v = float(value)
    return f"{v:.2g} s" if v < 10 else f"{v:.0f} s"


def _auroc_words(auroc: float) -> str:
    if not np.isfinite(auroc):
        return "cannot be scored (one of the two groups is empty)"
    if abs(auroc - 0.5) < AUROC_CHANCE:
        return f"is {auroc:.3f}, no better than chance (0.5) at telling clean from wrongly labelled instances"
    if auroc < 0.5:
        return f"is {auroc:.3f}, below chance: it gives wrongly labelled instances more weight than clean ones"
    return f"is {auroc:.3f}: it gives clean instances more weight than wrongly labelled ones"


def findings_data(profile: Mapping[str, Any], noise: pd.DataFrame | None = None,
                  by_source: pd.DataFrame | None = None, coverage: Any = None) -> str:
    """00_data: how long-tailed and how noisy the training set is.

    ``profile``: :func:`class_size_profile`; ``noise`` / ``by_source``: realised noise rates
    overall and by source (``urnet_core.data.webnoise.realised_noise_rates``), None without truth;
    ``coverage``: :func:`urnet_core.data.coverage.class_coverage`, whose warnings come first.
    """
    warnings = [f"Warning: {m}" for m in coverage.messages()] if coverage is not None else []
    parts = warnings + [f"The training set has {profile['n']} images in {profile['num_classes']} classes; the largest class is "
             f"{profile['imbalance_ratio']:.1f} times the smallest (Gini {profile['gini']:.2f}), and the largest 20% of "
             f"the classes hold {_pct(profile['top20_share'])} of the images."]
    if noise is None or not len(noise):
        parts.append("This data has no ground truth, so how many labels are wrong cannot be measured here.")
        return " ".join(parts)
    row = noise.iloc[0]
    kinds = [f"{k} {_pct(float(row[f'share_{k}']))}" for k in ("asym", "sym", "flip", "open")
             if f"share_{k}" in row and float(row[f"share_{k}"]) > 0]
    text = f"{_pct(float(row['noise_rate']))} of the training labels are wrong"
    if kinds:
        text += f" ({', '.join(kinds)})"
    if "share_ambiguous" in row and float(row["share_ambiguous"]) > 0:
        text += f", and {_pct(float(row['share_ambiguous']))} of the images are ambiguous blends of two classes"
    parts.append(text + ".")
    if by_source is not None and len(by_source) > 1 and "noise_rate" in by_source:
        src = by_source.reset_index()
        name_col = "source" if "source" in src.columns else src.columns[0]
        src = src.sort_values("noise_rate")
        clean, noisy = src.iloc[0], src.iloc[-1]
        parts.append(f"Source {clean[name_col]} is the cleaner one ({_pct(float(clean['noise_rate']))} wrong labels "
                     f"against {_pct(float(noisy['noise_rate']))} for {noisy[name_col]}).")
    return " ".join(parts)


def findings_challenges(profile: Mapping[str, Any], spread: pd.DataFrame, *, wrong_share: float | None = None,
                        noise_error: float | None = None, low_margin_share: float | None = None,
                        fewest_clean: tuple[str, int] | None = None) -> str:
    """01_challenges: one sentence per challenge, from the measurements of the notebook."""
    wide = int((spread["ratio"] >= 1).sum())
    parts = [f"C1: the class sizes span a factor of {profile['imbalance_ratio']:.1f} (Gini {profile['gini']:.2f}).",
             f"C2: {wide} of {len(spread)} classes are wider in feature space than the distance to their nearest "
             f"neighbour class (median spread/gap ratio {spread['ratio'].median():.2f})"
             + (", so their instances overlap another class." if wide else "; the classes are well separated.")]
    if wrong_share is not None:
        text = f"C3: {_pct(wrong_share)} of the labels are wrong"
        if noise_error is not None:
            text += f"; the baseline's per-class estimate of the noise is off by {_pct(noise_error)} on average"
        parts.append(text + ".")
    else:
        parts.append("C3: without ground truth the share of wrong labels is not measured.")
    if fewest_clean is not None:
        parts.append(f"C4: the class with the fewest clean images ({fewest_clean[0]}) has {fewest_clean[1]}.")
    if low_margin_share is not None:
        parts.append(f"C5: the baseline is undecided (top-1 minus top-2 probability below 0.2) on "
                     f"{_pct(low_margin_share)} of the training images.")
    return " ".join(parts)


def findings_baseline(summary_row: Mapping[str, Any], by_size: pd.DataFrame | None = None) -> str:
    """02_baseline: the baseline's accuracy and what the long tail costs it.

    ``summary_row``: the baseline's row of ``ablation_tables.summary_table`` (``top1_mean/_low/_high``);
    ``by_size``: ``ablation_tables.accuracy_by_class_size`` for the baseline.
    """
    m, lo, hi = (float(summary_row[f"top1_{k}"]) for k in ("mean", "low", "high"))
    seeds = int(summary_row.get("seeds", 1))
    text = f"The baseline reaches {_pct(m)} test top-1"
    text += (f" (95% interval {_pct(lo)} to {_pct(hi)} over {seeds} seeds)." if seeds > 1 else " (one seed, no interval).")
    if by_size is not None and len(by_size):
        acc = by_size.set_index("group")
        if {"head", "tail"} <= set(acc.index):
            head, tail = acc.loc["head"], acc.loc["tail"]
            gap = float(head["accuracy"]) - float(tail["accuracy"])
            separated = float(tail["high"]) < float(head["low"]) or float(head["high"]) < float(tail["low"])
            if gap > 0 and separated:
                text += (f" The long tail costs accuracy: the smallest third of the classes averages "
                         f"{_pct(float(tail['accuracy']))} against {_pct(float(head['accuracy']))} on the largest third "
                         f"({100 * gap:.1f} points, intervals apart).")
            elif gap > 0:
                text += (f" The smallest third of the classes averages {_pct(float(tail['accuracy']))} against "
                         f"{_pct(float(head['accuracy']))} on the largest third, but the intervals overlap: the seeds "
                         f"cannot show that the tail costs accuracy.")
            else:
                text += (f" The smallest classes are not worse: {_pct(float(tail['accuracy']))} against "
                         f"{_pct(float(head['accuracy']))} on the largest third.")
    return text


def findings_class(weights: pd.DataFrame, alpha: float, scheme: str = "balanced",
                   tables: Mapping[str, Any] | None = None) -> list[str]:
    """03_class_reweight: the +class step's measured effect (:func:`step_effect`, from the
    ablation's ``tables`` when they exist), then how much each scheme moves the training weight
    towards the small classes.

    ``weights``: :func:`class_weight_table` (classes largest first).
    """
    tail = weights.tail(max(1, len(weights) // 3))
    lit = weights["weight_literal"]
    bal = weights["weight_balanced"]
    parts = [f"With alpha = {alpha}, the literal eq. 3 weights range from {lit.min():.3f} to {lit.max():.3f} "
             f"(ratio {lit.max() / lit.min():.2f}); the balanced ones from {bal.min():.3f} to {bal.max():.3f} "
             f"(ratio {bal.max() / bal.min():.2f})."]
    plain, s_lit, s_bal = (float(tail[c].sum()) for c in ("share_plain", "share_literal", "share_balanced"))
    lit_words = "barely moves it" if abs(s_lit - plain) < 0.1 * max(plain, 1e-12) else "moves it"
    parts.append(f"The smallest third of the classes holds {_pct(plain)} of the unweighted training signal; the literal "
                 f"form {lit_words} (to {_pct(s_lit)}), the balanced form gives it {_pct(s_bal)}.")
    parts.append(f"The study trains with the {scheme} scheme.")
    return [step_effect(tables, "+class"), " ".join(parts)]


def findings_cluster(auroc: float | None, by_type: pd.DataFrame | None = None,
                     timing: pd.DataFrame | None = None, tables: Mapping[str, Any] | None = None) -> list[str]:
    """04_cluster_reweight: the +cluster step's measured effect, then whether the cluster weight
    separates clean from noisy and how fast k-means is."""
    parts = []
    if auroc is None:
        parts.append("Without ground truth the cluster weight cannot be scored against the truth.")
    else:
        parts.append(f"The cluster weight's AUROC for clean against wrongly labelled instances {_auroc_words(auroc)}.")
        if by_type is not None and len(by_type):
            means = by_type.set_index("noise_type")["mean"]
            parts.append("Mean weight by noise type: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()) + ".")
    if timing is not None and len(timing):
        fastest = timing.sort_values("seconds").iloc[0]
        parts.append(f"The fastest k-means backend here is {fastest['backend']} ({_seconds(fastest['seconds'])} for "
                     f"every cluster problem of this data).")
    return [step_effect(tables, "+cluster"), " ".join(parts)]


def findings_instance(auroc_instance: float, auroc_self_confidence: float,
                      auroc_open: float | None = None, auroc_combined: float | None = None,
                      tables: Mapping[str, Any] | None = None) -> list[str]:
    """05_instance_reweight: the +instance step's measured effect on test accuracy, then whether
    the instance weight *detects* clean rows better than the free baseline score.

    Two different questions, stated as such: the AUROC says how well the weight separates clean
    from wrongly labelled training rows, against the baseline's self-confidence (which needs no
    text or confidence model); the step's effect on test accuracy is the ablation's.
    """
    parts = [f"The instance weight's AUROC {_auroc_words(auroc_instance)}; the baseline's self-confidence scores "
             f"{auroc_self_confidence:.3f}."]
    diff = auroc_instance - auroc_self_confidence
    if not (np.isfinite(auroc_instance) and np.isfinite(auroc_self_confidence)):
        parts.append("The comparison is undefined on this data.")
    elif diff > AUROC_TIE:
        parts.append(f"As a detector of clean rows it beats the free score by {diff:.3f}.")
    elif diff < -AUROC_TIE:
        parts.append(f"As a detector of clean rows it is worse than the free score: the baseline's own confidence, "
                     f"which needs no text or confidence model, separates clean from noisy instances better (by "
                     f"{-diff:.3f}).")
    else:
        parts.append("As detectors of clean rows the two are about equal: the instance weight detects nothing the "
                     "baseline's own confidence does not already give.")
    if auroc_open is not None and np.isfinite(auroc_open):
        parts.append(f"Against open-set images alone (clean vs images from outside the label set) its AUROC is "
                     f"{auroc_open:.3f}.")
    if auroc_combined is not None and np.isfinite(auroc_combined):
        change = auroc_combined - auroc_instance
        verb = "raises" if change > AUROC_TIE else ("lowers" if change < -AUROC_TIE else "leaves")
        parts.append(f"The combined instance weight (image-text confidence x out-of-sample label confidence) "
                     f"{verb} the AUROC {'to' if verb != 'leaves' else 'at'} {auroc_combined:.3f}.")
    parts.append("Whether the weight helps test accuracy is the measured effect above, not the AUROC.")
    return [step_effect(tables, "+instance"), " ".join(parts)]


def findings_bag(table: pd.DataFrame, tables: Mapping[str, Any] | None = None) -> list[str]:
    """06_bag_attention: the +bag step's measured effect, then whether the bag branch attends to
    clean instances more than uniform.

    ``table``: :func:`saliency_by_noise_type`.
    """
    effect = step_effect(tables, "+bag")
    by = table.set_index("noise_type")
    if "clean" not in by.index:
        return [effect, "No clean instance was sampled into a bag, so the saliency cannot be compared with the truth."]
    uniform = float(by["uniform"].iloc[0])
    clean = float(by.loc["clean", "mean_saliency"])
    rel = (clean - uniform) / uniform
    text = f"Clean instances get a mean saliency of {clean:.3f} against {uniform:.3f} for uniform attention"
    if abs(rel) < SALIENCY_TIE:
        text += (f" ({100 * rel:+.1f}%): practically uniform. The branch does not pick out the representative "
                 f"instances of a bag on this data.")
    elif rel > 0:
        text += f" ({100 * rel:+.1f}%): the branch prefers clean instances."
    else:
        text += f" ({100 * rel:+.1f}%): the branch attends less to clean instances than to the others."
    noisy = [k for k in by.index if k in WRONG_LABEL_TYPES]
    if noisy:
        n = by.loc[noisy, "n"].to_numpy(dtype=float)
        mean_noisy = float(np.average(by.loc[noisy, "mean_saliency"].to_numpy(dtype=float), weights=n))
        text += f" Wrongly labelled instances get {mean_noisy:.3f} on average."
    return [effect, text]


def findings_label(change: Mapping[str, Any], tables: Mapping[str, Any] | None = None) -> list[str]:
    """07_label_reweight: the +label step's measured effect, then whether the targets it changes
    are the wrong ones, and towards the truth.

    ``change``: :func:`label_change_summary` (with the table for the truth-based shares).
    """
    effect = step_effect(tables, "+label")
    text = f"Label reweighting changed {change['changed']} of {change['n']} targets ({_pct(change['changed_share'])})."
    if "changed_share_noisy" not in change:
        return [effect, text + " Without ground truth it cannot be said whether the changed targets were wrong."]
    noisy_share = change.get("changed_noisy_share", float("nan"))
    true_share = change.get("mixed_is_true_share", float("nan"))
    text += (f" It changed {_pct(change['changed_share_noisy'])} of the wrongly labelled instances and "
             f"{_pct(change['changed_share_clean'])} of the correctly labelled ones.")
    if change["changed"] and np.isfinite(noisy_share):
        text += f" Of the changed targets, {_pct(noisy_share)} belong to wrongly labelled instances"
        if np.isfinite(true_share):
            text += f" and {_pct(true_share)} mix in the true class"
        text += "."
        helpful = true_share if np.isfinite(true_share) else noisy_share
        harmful = 1.0 - noisy_share
        if helpful > harmful:
            text += (" More changed targets point at the truth than damage a correct label (a property of the "
                     "targets; the step's effect on test accuracy is the measured one above).")
        else:
            text += (" At least as many changed targets damage a correct label as point at the truth (a property of "
                     "the targets; the step's effect on test accuracy is the measured one above).")
    return [effect, text]
