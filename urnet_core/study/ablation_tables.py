"""The ablation's tables: per-method summaries, the ladder's paired differences, the gap closed,
head-to-head comparisons, per-class-size accuracy, and the table files the report reads.

Computed from the per-run results of :func:`urnet_core.study.ablation.run_ablation` with the
statistics of :mod:`urnet_core.study.stats` (paired by seed, 95% intervals).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from urnet_core.utils.io import load_npy
from urnet_core.config import StudyConfig
from urnet_core.study.ablation import LADDER, METRICS, PAPER_TOP5, RECOMMENDED, SELECTED
from urnet_core.study.pipeline import load_bundle
from urnet_core.study.stats import detectable_difference, gap_closed, mean_ci, paired_difference


# --------------------------------------------------------------------------- tables
def summary_table(results: pd.DataFrame, *, metrics: Iterable[str] = METRICS) -> pd.DataFrame:
    """One row per method: mean, 95% CI bounds and formatted ``mean ± hw`` (in %) of each metric."""
    rows = []
    for (method, group), df in results.groupby(["method", "group"], sort=False):
        row = {"method": method, "group": group, "seeds": int(df["seed"].nunique())}
        for m in metrics:
            ci = mean_ci(df[m])
            scale = 100.0
            row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"] = ci.mean, ci.low, ci.high
            row[m] = ci.format(scale, 2 if m == "ece" else 1)
        rows.append(row)
    return pd.DataFrame(rows)


def _by_seed(results: pd.DataFrame, method: str, metric: str) -> pd.Series:
    return results[results["method"] == method].set_index("seed")[metric].sort_index()


def paired_row(results: pd.DataFrame, before: str, after: str, metric: str = "top1") -> dict[str, Any]:
    """``after - before`` paired by seed, in pp: mean, 95% interval, its half-width, the
    smallest difference the seeds could detect (:func:`~urnet_core.study.stats.detectable_difference`),
    ``significant`` (the interval excludes zero) and the number of seeds."""
    a, b = _by_seed(results, before, metric), _by_seed(results, after, metric)
    seeds = a.index.intersection(b.index)
    diffs = b[seeds].to_numpy() - a[seeds].to_numpy()
    ci = paired_difference(a[seeds].to_numpy(), b[seeds].to_numpy())
    return {"diff_pp": ci.mean * 100, "low_pp": ci.low * 100, "high_pp": ci.high * 100,
            "half_width_pp": ci.half_width * 100, "detectable_pp": detectable_difference(diffs) * 100,
            "significant": ci.excludes_zero(), "seeds": int(len(seeds))}


def ladder_differences(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """Paired (by seed) differences between consecutive ladder rungs, in percentage points."""
    rows = []
    present = [r for r in LADDER if r in set(results["method"])]
    for prev, cur in zip(present, present[1:]):
        rows.append({"step": f"{prev} -> {cur}", **paired_row(results, prev, cur, metric),
                     "paper_top5_diff": (PAPER_TOP5[cur] - PAPER_TOP5[prev])})
    return pd.DataFrame(rows)


def gap_closed_table(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """Fraction of the baseline -> best-oracle gap each method closes (mean over seeds, with CI).

    The best oracle is the oracle method with the higher mean; per seed, the gap is
    ``(method - baseline) / (oracle - baseline)``.
    """
    oracles = [m for m in results.loc[results["group"] == "oracle", "method"].unique()]
    if not oracles or "baseline" not in set(results["method"]):
        return pd.DataFrame(columns=["method", "gap_closed", "low", "high"])
    best = max(oracles, key=lambda m: _by_seed(results, m, metric).mean())
    base, orc = _by_seed(results, "baseline", metric), _by_seed(results, best, metric)
    rows = []
    for method in results["method"].unique():
        vals = _by_seed(results, method, metric)
        seeds = vals.index.intersection(base.index).intersection(orc.index)
        per_seed = [gap_closed(vals[s], base[s], orc[s]) for s in seeds]
        ci = mean_ci(per_seed)
        rows.append({"method": method, "oracle": best, "gap_closed": ci.mean, "low": ci.low, "high": ci.high})
    return pd.DataFrame(rows)


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """Our ladder (top-1 and top-5, mean ± CI) beside the paper's top-5 on WebVision 2.0."""
    ladder = summary[summary["method"].isin(LADDER)].set_index("method").reindex(
        [r for r in LADDER if r in set(summary["method"])])
    return pd.DataFrame({"ours top-1 (%)": ladder["top1"], "ours top-5 (%)": ladder["top5"],
                         "paper top-5 (%), WebVision 2.0": [PAPER_TOP5[r] for r in ladder.index]})


def accuracy_by_class_size(results: pd.DataFrame, class_counts: np.ndarray) -> pd.DataFrame:
    """Mean per-class accuracy of each method over head / medium / tail thirds of the classes
    (sorted by training-set size), averaged over seeds, with 95% CI."""
    order = np.argsort(-np.asarray(class_counts), kind="stable")
    thirds = np.array_split(order, 3)
    rows = []
    for method, df in results.groupby("method", sort=False):
        for name, idx in zip(("head", "medium", "tail"), thirds):
            vals = [float(np.mean(np.asarray(pc)[idx])) for pc in df["per_class_accuracy"]]
            ci = mean_ci(vals)
            rows.append({"method": method, "group": name, "accuracy": ci.mean, "low": ci.low, "high": ci.high})
    return pd.DataFrame(rows)


def seed_ensemble_metrics(results: pd.DataFrame, method: str, test_labels: np.ndarray, num_classes: int) -> dict:
    """Metrics of the average of ``method``'s test probabilities over seeds (the ensembling trick)."""
    from urnet_core.training.metrics import classification_metrics

    probs = [load_npy(Path(f) / "test_probs.npy", mmap=False) for f in results.loc[results["method"] == method, "folder"]]
    return classification_metrics(test_labels, np.mean(probs, axis=0), num_classes=num_classes)


# --------------------------------------------------------------------------- tables for the report
TABLE_FILES = ("results.csv", "summary.csv", "ladder_differences.csv", "gap_closed.csv", "selection.csv",
               "selection_regret.csv", "head_to_head.csv", "data.json")


def write_tables(study: StudyConfig, results: pd.DataFrame, selection: pd.DataFrame | None = None) -> Path:
    """Write the ablation's tables into ``<run_dir>/ablation/`` as one complete set.

    Files: :data:`TABLE_FILES` (per-run results, the summary, the ladder's paired differences,
    gap closed, and a description of the data with its hash). They are written into a
    temporary folder and renamed into place together, so the report never reads a mix of two
    runs. Returns the folder.
    """
    import json
    import os
    import shutil
    import tempfile

    from urnet_core.study.pipeline import data_key, describe

    bundle = load_bundle(study)
    out = Path(study.run.run_dir) / "ablation"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ablation-", dir=out.parent))
    try:
        results.assign(per_class_accuracy=results["per_class_accuracy"].map(json.dumps)).to_csv(
            tmp / "results.csv", index=False)
        summary_table(results).to_csv(tmp / "summary.csv", index=False)
        ladder_differences(results).to_csv(tmp / "ladder_differences.csv", index=False)
        gap_closed_table(results).to_csv(tmp / "gap_closed.csv", index=False)
        from urnet_core.study.tuning import SELECTION_RULE, selection_regret

        if selection is None:
            selection = results.attrs.get("selection", pd.DataFrame())
        selection.to_csv(tmp / "selection.csv", index=False)
        (selection_regret(selection) if len(selection) else pd.DataFrame()).to_csv(tmp / "selection_regret.csv",
                                                                                  index=False)
        head_to_head(results).to_csv(tmp / "head_to_head.csv", index=False)
        info = {**describe(study, bundle), "data_hash": data_key(bundle),
                "draw_per_seed": bundle.manifest.benchmark is not None and study.run.draw_per_seed,
                "cross_fit_folds": study.run.cross_fit_folds, "validation_fraction": study.run.validation_fraction,
                "protocol": study.run.protocol, "finetune_epochs": study.run.finetune_epochs,
                "epochs": study.training.epochs, "selection_seeds": list(study.run.selecting_seeds),
                "selection_rule": SELECTION_RULE, "profile": study.run.profile}
        (tmp / "data.json").write_text(json.dumps(info, indent=1, default=str))
        old = out.with_name(f".ablation-old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_tables(run_dir: str | Path) -> dict[str, Any] | None:
    """The tables :func:`write_tables` wrote (None when the set is absent or incomplete)."""
    import json

    folder = Path(run_dir) / "ablation"
    if not all((folder / name).is_file() for name in TABLE_FILES):
        return None
    tables: dict[str, Any] = {}
    for name in TABLE_FILES:
        stem = name.rsplit(".", 1)[0]
        if name.endswith(".json"):
            tables[stem] = json.loads((folder / name).read_text())
        else:
            try:
                tables[stem] = pd.read_csv(folder / name)
            except pd.errors.EmptyDataError:
                tables[stem] = pd.DataFrame()
    return tables


# --------------------------------------------------------------------------- head to head
def best_of_group(results: pd.DataFrame, group: str, *, metric: str = "top1") -> str | None:
    """The row of ``group`` with the highest mean ``metric`` (None when the group is absent)."""
    rows = results[results["group"] == group]
    if rows.empty:
        return None
    return str(rows.groupby("method", sort=False)[metric].mean().idxmax())


HEAD_TO_HEAD_COLUMNS = ["method", "versus", "other", "diff_pp", "low_pp", "high_pp", "half_width_pp",
                       "detectable_pp", "significant", "seeds"]


def head_to_head(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """Paired (by seed) differences, in percentage points of ``metric``, between URNet's rows
    (the paper's full ladder "+label", the tuned URNet and the tuned URNet+) and the baseline,
    the best tuned peer and the best oracle. ``significant``: the 95% interval excludes zero;
    ``half_width_pp`` and ``detectable_pp`` say how fine the seeds resolve the question."""
    methods = set(results["method"])
    ours = [m for m in ("+label", SELECTED, RECOMMENDED) if m in methods]
    others = {"baseline": "baseline" if "baseline" in methods else None,
              "best peer": best_of_group(results, "peer", metric=metric),
              "best oracle": best_of_group(results, "oracle", metric=metric)}
    rows = []
    for method in ours:
        for role, other in others.items():
            if other is not None:
                rows.append({"method": method, "versus": role, "other": other,
                             **paired_row(results, other, method, metric)})
    return pd.DataFrame(rows, columns=HEAD_TO_HEAD_COLUMNS)


def per_class_gap(results: pd.DataFrame, method: str, other: str, train: pd.DataFrame,
                  num_classes: int) -> pd.DataFrame:
    """Where ``method`` wins or loses against ``other``: per class, the paired mean difference
    of test accuracy (pp), the class's training size and size group, and (with ground truth)
    the class's training noise mix (share of rows per noise type)."""
    from urnet_core.study.analysis import size_groups

    def per_class(name: str) -> pd.DataFrame:
        rows = results[results["method"] == name].set_index("seed")["per_class_accuracy"]
        return pd.DataFrame({s: np.asarray(v, dtype=float) for s, v in rows.items()})

    a, b = per_class(other), per_class(method)
    seeds = a.columns.intersection(b.columns)
    counts = np.bincount(train["label"].to_numpy(), minlength=num_classes)
    groups = size_groups(counts) if num_classes >= 3 else np.full(num_classes, "all")
    out = pd.DataFrame({"class": np.arange(num_classes), "train_rows": counts, "size_group": groups,
                        "diff_pp": (b[seeds] - a[seeds]).mean(axis=1).to_numpy() * 100})
    if "noise_type" in train.columns:
        mix = pd.crosstab(train["label"], train["noise_type"], normalize="index").reindex(range(num_classes)).fillna(0)
        for kind in mix.columns:
            out[f"share_{kind}"] = mix[kind].to_numpy()
    return out.sort_values("diff_pp").reset_index(drop=True)
