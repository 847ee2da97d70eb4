"""Figures of the study's results: the ablation chart, accuracy per class and per class-size
group, and the k-means backends' timing. Drawn from :mod:`urnet_core.study.ablation`'s tables,
with the palette and helpers of :mod:`urnet_core.study.plots`.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from urnet_core.study.analysis import SIZE_GROUPS
from urnet_core.study.plots import SIZE_COLORS, _figure, _plain_log, group_colors


# --------------------------------------------------------------------------- results
def per_class_accuracy_chart(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy vs training class size (``scoring.per_class_accuracy_table``)."""
    fig = _figure(5.5, 3.8)
    ax = fig.add_subplot()
    wilson = {"low", "high"} <= set(per_class.columns)
    for group in SIZE_GROUPS:
        df = per_class[per_class["group"] == group]
        if len(df):
            if wilson:  # a proportion's interval: inside [0, 1] by construction
                yerr = np.vstack([df["accuracy"] - df["low"], df["high"] - df["accuracy"]]).clip(min=0)
            else:
                yerr = df["accuracy_std"]
            ax.errorbar(df["count"], df["accuracy"], yerr=yerr, fmt="o", ms=4, capsize=2,
                        color=SIZE_COLORS[group], label=group)
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel("test accuracy of the class")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title("baseline per-class accuracy vs class size (mean over seeds, "
                 + ("95% Wilson interval)" if wilson else "± sd over seeds)"))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def ablation_chart(summary: pd.DataFrame, *, metric: str = "top1", title: str | None = None) -> Figure:
    """Horizontal bars of ``metric`` (in %) per method with 95% CI error bars, coloured by group.

    ``summary``: :func:`urnet_core.study.ablation.summary_table` (``<metric>_mean/_low/_high``).
    """
    for col in (f"{metric}_mean", f"{metric}_low", f"{metric}_high", "method", "group"):
        if col not in summary.columns:
            raise ValueError(f"summary has no column {col!r}; pass ablation_tables.summary_table(results)")
    df = summary.reset_index(drop=True)
    mean = df[f"{metric}_mean"].to_numpy() * 100
    low = df[f"{metric}_low"].to_numpy() * 100
    high = df[f"{metric}_high"].to_numpy() * 100
    if metric != "ece":  # accuracies are bounded: draw the t-intervals clipped to [0, 100]
        low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
    err = np.nan_to_num(np.maximum(np.vstack([mean - low, high - mean]), 0))
    fig = _figure(8.5, 0.32 * len(df) + 1.4)
    ax = fig.add_subplot()
    y = np.arange(len(df))[::-1]
    colors = group_colors(list(df["group"]))
    ax.barh(y, mean, xerr=err, capsize=3, color=[colors[g] for g in df["group"]])
    ax.set_yticks(y)
    ax.set_yticklabels(df["method"], fontsize=8)
    lo = float(np.nanmin(mean - err[0]))
    hi = float(np.nanmax(mean + err[1]))
    pad = max(1.0, (hi - lo) * 0.15)
    ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad))
    base = df.loc[df["method"] == "baseline", f"{metric}_mean"]
    if len(base):
        ax.axvline(float(base.iloc[0]) * 100, color="black", ls="--", lw=0.8)
    groups = list(dict.fromkeys(df["group"]))
    handles = [matplotlib.patches.Patch(color=colors[g], label=g) for g in groups]
    if len(base):
        handles.append(matplotlib.lines.Line2D([], [], color="black", ls="--", lw=0.8, label="baseline"))
    # Right of the axes, never over the bars or their error bars.
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="group")
    ax.set_xlabel(f"test {metric} (%), mean and 95% CI over seeds")
    ax.set_title(title or f"ablation: {metric}")
    fig.tight_layout()
    return fig


def accuracy_by_size_chart(by_size: pd.DataFrame, *, methods: Sequence[str] | None = None) -> Figure:
    """Grouped bars: mean per-class accuracy on head / medium / tail classes per method, with CIs.

    ``by_size``: :func:`urnet_core.study.ablation.accuracy_by_class_size`.
    """
    df = by_size if methods is None else by_size[by_size["method"].isin(methods)]
    names = list(dict.fromkeys(df["method"]))
    fig = _figure(max(6.0, 0.7 * len(names) + 2), 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(SIZE_GROUPS)
    x = np.arange(len(names))
    for k, group in enumerate(SIZE_GROUPS):
        sub = df[df["group"] == group].set_index("method").reindex(names)
        mean = sub["accuracy"].to_numpy() * 100
        # Accuracy is bounded: intervals (Wilson from scoring.accuracy_by_size) stay inside [0, 100].
        low = np.clip(sub["low"].to_numpy() * 100, 0, 100)
        high = np.clip(sub["high"].to_numpy() * 100, 0, 100)
        err = np.nan_to_num(np.maximum(np.vstack([mean - low, high - mean]), 0))
        ax.bar(x + (k - 1) * width, mean, width, yerr=err, capsize=2, label=group, color=SIZE_COLORS[group])
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_title("accuracy by class size (mean and 95% interval)")
    # Outside the axes: the bars reach the top of the plot.
    ax.legend(title="classes", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def backend_timing_chart(timing: pd.DataFrame) -> Figure:
    """Bar chart of k-means wall-clock time per backend (:func:`urnet_core.benchmarks.kmeans.time_kmeans_backends`)."""
    fig = _figure(5, 3.2)
    ax = fig.add_subplot()
    ax.bar(timing["backend"], timing["seconds"], color="#4c72b0")
    for i, s in enumerate(timing["seconds"]):
        ax.text(i, s, f"{s:.3g} s", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds (median of repeats)")
    rows = int(timing["rows"].iloc[0]) if len(timing) else 0
    probs = int(timing["problems"].iloc[0]) if len(timing) else 0
    ax.set_title(f"k-means of all cluster problems ({probs} problems, {rows} rows)")
    fig.tight_layout()
    return fig
