"""The claim figures: one figure for each claim the verdict makes (:mod:`urnet_core.study.verdict`).

(a) :func:`ladder_steps_figure`: each ladder step's paired difference with its 95% interval, a
zero line and the paper's step beside it; (b) :func:`headline_figure`: URNet's rows minus the
baseline and minus the best tuned peer, paired by seed; (c) :func:`rows_dot_plot`: every row's
absolute accuracy as a dot plot with the per-seed points. Colours come from a colour-blind-safe
palette (seaborn's ``colorblind``, written out so seaborn is not needed); an outcome is also
told by the marker and the words, never by colour alone. Rows are named as in the tables and
the verdict; the rows the verdict names are marked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

#: seaborn's "colorblind" palette.
COLORBLIND = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494", "#ece133",
              "#56b4e9")
#: One colour per outcome of a paired interval, and its marker (told apart without colour too).
OUTCOME_STYLE = {"better": (COLORBLIND[0], "o"), "worse": (COLORBLIND[3], "s"), "tie": (COLORBLIND[7], "D"),
                 "untested": (COLORBLIND[7], "x")}
GROUP_COLORS = {"ladder": COLORBLIND[0], "urnet": COLORBLIND[2], "peer": COLORBLIND[1], "oracle": COLORBLIND[7],
                "ladder (cross-fitted)": COLORBLIND[9], "ladder (from scratch)": COLORBLIND[5],
                "alone": COLORBLIND[4], "peer (paper defaults)": COLORBLIND[6], "trick": COLORBLIND[8]}


def _figure(width: float, height: float) -> Figure:
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(width, height))
    plt.close(fig)  # returned and displayed by the caller, never drawn twice
    return fig


def _group_color(group: str, spare: dict[str, str]) -> str:
    if group in GROUP_COLORS:
        return GROUP_COLORS[group]
    if group not in spare:
        spare[group] = COLORBLIND[(len(spare) + 4) % len(COLORBLIND)]
    return spare[group]


def _differences(ax, labels: Sequence[str], rows: pd.DataFrame, *, paper: Sequence[float] | None = None,
                 versus: bool = False) -> None:
    """Horizontal paired differences (pp) with 95% intervals, coloured and marked by outcome, each
    with the verdict's word for it (a step helps / hurts; a row beats / loses to the other)."""
    from urnet_core.study.verdict import STEP_WORDS, VERSUS_WORDS, outcome

    word_of = VERSUS_WORDS if versus else STEP_WORDS

    y = np.arange(len(rows))[::-1].astype(float)
    for yi, (_, r) in zip(y, rows.iterrows()):
        kind = outcome(float(r["low_pp"]), float(r["high_pp"]), int(r["seeds"]))
        color, marker = OUTCOME_STYLE[kind]
        d, lo, hi = float(r["diff_pp"]), float(r["low_pp"]), float(r["high_pp"])
        if kind != "untested":
            ax.plot([lo, hi], [yi, yi], color=color, lw=2.2, solid_capstyle="butt")
        ax.plot([d], [yi], marker=marker, color=color, ms=8, ls="none")
        words = word_of[kind]
        text = f"{d:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if kind != "untested" else "") + f"  {words}"
        # The values in a column right of the axes (axes x, data y): never over a point or the legend.
        ax.text(1.02, yi, text, transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=8,
                color=color if kind != "tie" else "#222222")
    if paper is not None:
        ok = [(yi, p) for yi, p in zip(y, paper) if p is not None and np.isfinite(p)]
        if ok:
            ax.plot([p for _, p in ok], [yi - 0.3 for yi, _ in ok], marker="^", mfc="white", mec="black", ms=7,
                    ls="none", label="the paper's step (top-5, WebVision 2.0, one run)")
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_ylim(y.min() - 0.7, y.max() + 0.6)
    values = np.concatenate([rows[c].to_numpy(dtype=float) for c in ("diff_pp", "low_pp", "high_pp")]
                            + ([np.asarray([p for p in paper if p is not None], dtype=float)] if paper is not None else []))
    values = values[np.isfinite(values)]
    lo, hi = (min(values.min(), 0.0), max(values.max(), 0.0)) if values.size else (-1.0, 1.0)
    span = max(hi - lo, 1.0)
    ax.set_xlim(lo - 0.08 * span, hi + 0.08 * span)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    handles = [ax.plot([], [], marker=OUTCOME_STYLE[k][1], color=OUTCOME_STYLE[k][0], ls="none", ms=7,
                       label=word_of[k])[0] for k in ("better", "worse", "tie")]
    if paper is not None:
        handles += [h for h in ax.get_lines() if h.get_label().startswith("the paper")]
    # Below the axes (the values take the right): never over the points.
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13 - 0.3 / max(len(rows), 1)),
              frameon=False, ncol=len(handles), title="mean over seeds and 95% interval:", title_fontsize=8)


def ladder_steps_figure(ladder: pd.DataFrame, *, metric: str = "top-1") -> Figure:
    """(a) Each ladder step minus the rung before, in pp of test accuracy, paired by seed.

    ``ladder``: :func:`urnet_core.study.ablation.ladder_differences` (``step``, ``diff_pp``,
    ``low_pp``, ``high_pp``, ``seeds``, ``paper_top5_diff``)."""
    fig = _figure(8.5, 0.62 * len(ladder) + 1.6)
    ax = fig.add_subplot()
    labels = [str(s).split("->")[-1].strip() + f"  (minus {str(s).split('->')[0].strip()})" for s in ladder["step"]]
    paper = list(ladder["paper_top5_diff"]) if "paper_top5_diff" in ladder else None
    _differences(ax, labels, ladder, paper=paper)
    ax.set_xlabel(f"difference in test {metric} (percentage points), mean over seeds and 95% paired interval")
    ax.set_title("Which step helps: each rung of the ladder minus the one before", fontsize=10)
    fig.tight_layout()
    return fig


def headline_figure(head: pd.DataFrame, *, metric: str = "top-1") -> Figure:
    """(b) URNet's rows minus the baseline and minus the best tuned peer, paired by seed.

    ``head``: :func:`urnet_core.study.verdict.headline_table`."""
    fig = _figure(8.5, 0.62 * len(head) + 1.7)
    ax = fig.add_subplot()
    labels = [f"{m}\nminus {o}" for m, o in zip(head["method"], head["other"])]
    _differences(ax, labels, head, versus=True)
    ax.set_xlabel(f"difference in test {metric} (percentage points), mean over seeds and 95% paired interval")
    ax.set_title("Does URNet beat the baseline and the best tuned peer?", fontsize=10)
    fig.tight_layout()
    return fig


def rows_dot_plot(results: pd.DataFrame, summary: pd.DataFrame, *, metric: str = "top1",
                  marked: Sequence[str] = ()) -> Figure:
    """(c) Every row's test ``metric`` (%): one small dot per seed, the mean as a large dot with
    its 95% interval (clipped to [0, 100]), coloured by group. Rows in ``marked`` (those the
    verdict names) are written in bold with a ``>`` before the name."""
    df = summary.reset_index(drop=True)
    fig = _figure(8.5, 0.3 * len(df) + 1.5)
    ax = fig.add_subplot()
    y = np.arange(len(df))[::-1].astype(float)
    spare: dict[str, str] = {}
    rng = np.random.default_rng(0)
    for yi, (_, r) in zip(y, df.iterrows()):
        color = _group_color(str(r["group"]), spare)
        seeds = results.loc[results["method"] == r["method"], metric].to_numpy(dtype=float) * 100
        ax.plot(seeds, yi + rng.uniform(-0.12, 0.12, seeds.size), "o", ms=3, color=color, alpha=0.55, mew=0)
        m = float(r[f"{metric}_mean"]) * 100
        lo = float(np.clip(float(r[f"{metric}_low"]) * 100, 0, 100))
        hi = float(np.clip(float(r[f"{metric}_high"]) * 100, 0, 100))
        if int(r.get("seeds", 1)) >= 2 and np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=color, lw=2)
        ax.plot([m], [yi], "o", ms=7, color=color, mec="black", mew=0.6)
    base = df.loc[df["method"] == "baseline", f"{metric}_mean"]
    if len(base):
        ax.axvline(float(base.iloc[0]) * 100, color="black", ls="--", lw=0.8)
    ax.set_yticks(y)
    names = [("> " if m in marked else "") + str(m) for m in df["method"]]
    ax.set_yticklabels(names, fontsize=8)
    for tick, m in zip(ax.get_yticklabels(), df["method"]):
        if m in marked:
            tick.set_fontweight("bold")
    groups = list(dict.fromkeys(df["group"]))
    handles = [ax.plot([], [], "o", color=_group_color(g, spare), ms=7, ls="none", label=g)[0] for g in groups]
    if len(base):
        handles.append(ax.plot([], [], color="black", ls="--", lw=0.8, label="baseline")[0])
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="group")
    name = {"top1": "top-1", "balanced_accuracy": "balanced accuracy"}.get(metric, metric)
    ax.set_xlabel(f"test {name} (%): small dots one seed each, large dot the mean, line its 95% interval")
    ax.set_title(f"Every row's test {name}; rows marked > are the ones the verdict names", fontsize=10)
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    return fig


def claim_figures(tables: dict, *, marked: Sequence[str] | None = None) -> dict[str, Figure]:
    """The claim figures the ablation's ``tables`` allow: ``{"ladder", "headline", "rows"}``
    (a figure is left out when its rows did not run)."""
    from urnet_core.study import verdict as words

    out: dict[str, Figure] = {}
    results, summary = tables.get("results"), tables.get("summary")
    ladder = tables.get("ladder_differences")
    if ladder is not None and len(ladder):
        out["ladder"] = ladder_steps_figure(ladder)
    if results is not None and len(results):
        head = words.headline_table(results)
        if len(head):
            out["headline"] = headline_figure(head)
        else:
            peers = words.versus_baseline(results, "peer")
            if len(peers):
                out["headline"] = versus_baseline_figure(peers)
    if summary is not None and len(summary) and results is not None:
        out["rows"] = rows_dot_plot(results, summary, marked=marked if marked is not None else verdict_rows(tables))
    return out


def versus_baseline_figure(table: pd.DataFrame, *, metric: str = "top-1") -> Figure:
    """(b) in the ``peers`` profile: every tuned peer minus the baseline, paired by seed
    (:func:`urnet_core.study.verdict.versus_baseline`)."""
    fig = _figure(8.5, 0.55 * len(table) + 1.7)
    ax = fig.add_subplot()
    _differences(ax, [f"{m}  minus  baseline" for m in table["method"]], table, versus=True)
    ax.set_xlabel(f"difference in test {metric} (percentage points), mean over seeds and 95% paired interval")
    ax.set_title("Which tuned peer beats the baseline?", fontsize=10)
    fig.tight_layout()
    return fig


def verdict_rows(tables: dict) -> list[str]:
    """The rows the verdict names: URNet's headline rows, the baseline and the best tuned peer."""
    from urnet_core.study.ablation_tables import best_of_group
    from urnet_core.study.verdict import headline_rows

    results = tables.get("results")
    if results is None or not len(results):
        return []
    methods = set(results["method"])
    peer = best_of_group(results, "peer")
    return [m for m in (*headline_rows(), "baseline", peer) if m and m in methods]
