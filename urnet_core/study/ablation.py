"""The ablation: the paper's incremental ladder, each strategy alone, peers and oracles, over seeds.

Every method trains the same backbone for the same epochs on the same benchmark draw and is
tested on the same untouched test split; only the weights, targets, loss or training subset
differ. Rows are summarised as means with 95% Student-t intervals over seeds
(:mod:`urnet_core.study.stats`), consecutive ladder rungs as paired differences, and every method as
the fraction of the baseline -> oracle gap it closes.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from urnet_core.utils.io import load_npy, read_json
from urnet_core.config import StudyConfig
from urnet_core.study.pipeline import (
    SIGNALS, baseline, fit_and_evaluate, has_ground_truth, load_bundle, load_component, load_label_targets,
    load_test_metrics, subset_targets, weight_components,
)
from urnet_core.study.stages import run_stage, stage_key
from urnet_core.study.stats import gap_closed, mean_ci, paired_difference

logger = logging.getLogger(__name__)

#: The paper's ablation (WebVision 2.0 validation, top-5 accuracy, single runs).
PAPER_TOP5 = {"baseline": 71.7, "+class": 72.8, "+cluster": 75.3, "+instance": 76.0, "+bag": 76.3, "+label": 76.5}
#: The paper's tricks on top of full URNet (top-5).
PAPER_TRICKS_TOP5 = {"top-15 Flickr": 77.0, "29-model ensemble": 78.3, "multi-crop test": 79.3,
                     "multi-scale test": 79.8}

METRICS = ("top1", "balanced_accuracy", "macro_f1", "top5", "ece")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the ablation.

    ``strategies`` names the URNet components combined into the weights (subset of
    {"class", "class_literal", "cluster", "cluster_own_class", "instance", "instance_combined",
    "label"}, files of :func:`~urnet_core.study.pipeline.weight_components`); ``signals`` says
    whether they come from the in-sample baseline (the paper) or the cross-fitted one
    (``"cross_fit"``); ``bag`` turns on the bag branch; ``loss`` is "ce" or "gce";
    ``class_balanced`` multiplies effective-number class weights (Cui et al. 2019); ``subset``
    restricts the training table ("clean_oracle", "cleanlab", "flickr_top_k"); ``trainer``
    names a peer's own training procedure (:data:`PEER_TRAINERS`); ``selected`` marks the row
    whose configuration :func:`select_configuration` picks on the noisy validation split.
    """

    name: str
    group: str
    strategies: tuple[str, ...] = ()
    bag: bool = False
    loss: str = "ce"
    class_balanced: bool = False
    subset: str | None = None
    signals: str = "in_sample"
    trainer: str | None = None
    selected: bool = False


LADDER = ("baseline", "+class", "+cluster", "+instance", "+bag", "+label")
CF = " (cross-fitted)"
LADDER_CROSS_FIT = ("baseline", "+class") + tuple(r + CF for r in LADDER[2:])
SELECTED = "URNet (selected on noisy validation)"
#: Peer trainers: ``module:function`` taking the arguments of :func:`urnet_core.training.loop.train`.
PEER_TRAINERS = {"elr": "urnet_core.peers.elr:train_elr", "coteaching": "urnet_core.peers.coteaching:train_coteaching",
                 "dividemix": "urnet_core.peers.dividemix:train_dividemix"}
#: Row groups and what they mean (the report's legend).
GROUPS = {
    "ladder": "the paper's ladder: each rung adds one URNet step to the one above, signals from the baseline "
              "trained on all rows (in-sample)",
    "ladder (cross-fitted)": "the same rungs with out-of-sample signals (K-fold cross-fitted baseline)",
    "alone": "one URNet step on its own",
    "new": "the study's instance weight: image-text confidence x out-of-sample label confidence",
    "selected": "the URNet configuration chosen on the noisy validation split (never on test)",
    "peer": "other methods for noisy labels, same backbone, epochs, seeds and data",
    "oracle": "trained on the truly clean rows only: an upper reference that needs ground truth",
    "variant": "alternative readings of a step", "trick": "the paper's data trick",
}


def default_methods(*, include_tricks: bool = False, ground_truth: bool = True,
                    include_variants: bool = False) -> list[MethodSpec]:
    """The study's rows: both ladders, each strategy alone, the new instance weight, the
    selected configuration, peers and oracles (variants and the top-K Flickr trick on request).

    Without ``ground_truth`` (real web data: no ``noise_type``/``true_label``) the oracle rows,
    which train on the truly clean rows only, are left out.
    """
    rungs = [
        MethodSpec("baseline", "ladder"),
        MethodSpec("+class", "ladder", ("class",)),
        MethodSpec("+cluster", "ladder", ("class", "cluster")),
        MethodSpec("+instance", "ladder", ("class", "cluster", "instance")),
        MethodSpec("+bag", "ladder", ("class", "cluster", "instance"), bag=True),
        MethodSpec("+label", "ladder", ("class", "cluster", "instance", "label"), bag=True),
    ]
    cross_fitted = [dataclasses.replace(r, name=r.name + CF, group="ladder (cross-fitted)", signals="cross_fit")
                    for r in rungs[2:]]
    alone = [
        MethodSpec("class (literal eq. 3)", "alone", ("class_literal",)),
        MethodSpec("cluster only", "alone", ("cluster",)),
        MethodSpec("instance only", "alone", ("instance",)),
        MethodSpec("bag only", "alone", (), bag=True),
        MethodSpec("label only", "alone", ("label",)),
    ]
    new = [MethodSpec("+instance, combined instance weight" + CF, "new", ("class", "cluster", "instance_combined"),
                      signals="cross_fit")]
    selected = [MethodSpec(SELECTED, "selected", selected=True)]
    peers = [
        MethodSpec("class-balanced loss (Cui 2019)", "peer", class_balanced=True),
        MethodSpec("confident learning (cleanlab, out-of-sample)", "peer", subset="cleanlab", signals="cross_fit"),
        MethodSpec("generalized CE (Zhang 2018)", "peer", loss="gce"),
        MethodSpec("ELR (Liu 2020)", "peer", trainer="elr"),
        MethodSpec("co-teaching (Han 2018)", "peer", trainer="coteaching"),
        MethodSpec("DivideMix (Li 2020)", "peer", trainer="dividemix"),
    ]
    oracles = [
        MethodSpec("oracle: clean only", "oracle", subset="clean_oracle"),
        MethodSpec("oracle: clean only, class-balanced", "oracle", subset="clean_oracle", class_balanced=True),
    ]
    # Our reading of eq. 7 that counts only the class's own instances in a group (see
    # cluster_weight.py); the selection considers it with the paper's reading.
    own = ("class", "cluster_own_class", "instance")
    variants = [
        MethodSpec("+bag, own-class cluster count", "variant", own, bag=True),
        MethodSpec("+label, own-class cluster count", "variant", own + ("label",), bag=True),
    ]
    tricks = [MethodSpec("URNet + top-K Flickr", "trick", rungs[-1].strategies, bag=True, subset="flickr_top_k")]
    return (rungs + cross_fitted + alone + new + selected + peers + (oracles if ground_truth else [])
            + (variants if include_variants else []) + (tricks if include_tricks else []))


def selection_candidates() -> list[MethodSpec]:
    """What the noisy validation split chooses among (cross-fitted signals, bag branch on): the
    cluster count (the paper's pooled count or the class's own), the instance weight (the
    paper's image-text confidence or the combined one) and label reweighting on or off."""
    out = []
    for cluster, cluster_name in (("cluster", "pooled"), ("cluster_own_class", "own-class")):
        for instance, instance_name in (("instance", "image-text"), ("instance_combined", "combined")):
            for label in (False, True):
                strategies = ("class", cluster, instance) + (("label",) if label else ())
                name = f"cluster count {cluster_name}, instance {instance_name}, label {'on' if label else 'off'}"
                out.append(MethodSpec(name, "candidate", strategies, bag=True, signals="cross_fit"))
    return out


# --------------------------------------------------------------------------- one method
def _subset_mask(spec: MethodSpec, study: StudyConfig, seed: int, table: pd.DataFrame,
                 flickr_top_k: int) -> np.ndarray:
    n = len(table)
    if spec.subset is None:
        return np.ones(n, dtype=bool)
    if spec.subset == "clean_oracle":
        if "noise_type" not in table:
            raise ValueError("the oracle needs ground truth (a noise_type column); this dataset has none")
        return (table["noise_type"] == "clean").to_numpy()
    if spec.subset == "cleanlab":
        from urnet_core.peers.filters import confident_learning_keep_mask
        from urnet_core.study.pipeline import cross_fit

        source = (baseline(study, seed) / "train_probs.npy" if spec.signals == "in_sample"
                  else cross_fit(study, seed) / "oof_probs.npy")
        return confident_learning_keep_mask(table["label"].to_numpy(), load_npy(source, mmap=False))
    if spec.subset == "flickr_top_k":
        from urnet_core.peers.filters import top_k_source_mask

        return top_k_source_mask(table, source="flickr", k=flickr_top_k)
    raise ValueError(f"unknown subset {spec.subset!r}")


def method_weights(spec: MethodSpec, study: StudyConfig, seed: int, table: pd.DataFrame,
                   num_classes: int, keep: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-instance weights (mean 1 over the kept rows) and soft targets of ``spec`` (None = plain)."""
    from urnet_core.reweight.class_weight import effective_number_weights
    from urnet_core.reweight.compose import combine_components

    weights = targets = None
    if spec.strategies:
        folder = weight_components(study, seed, signals=spec.signals)
        comps = {s: load_component(folder, s) for s in spec.strategies if s != "label"}
        if comps:
            weights = combine_components(comps)
        if "label" in spec.strategies:
            targets = load_label_targets(folder)
    labels = table["label"].to_numpy()[keep]
    if weights is not None:
        weights = weights[keep]
    targets = subset_targets(targets, keep)
    if spec.class_balanced:
        cb = effective_number_weights(labels, num_classes)[labels]
        weights = cb if weights is None else weights * cb
    if weights is not None:
        weights = (weights / weights.mean()).astype(np.float32)
    return weights, targets


def peer_trainer(name: str | None):
    """The training function of a peer (:data:`PEER_TRAINERS`), or None for the plain trainer."""
    import importlib

    if name is None:
        return None
    if name not in PEER_TRAINERS:
        raise ValueError(f"unknown peer trainer {name!r}; known: {sorted(PEER_TRAINERS)}")
    module, function = PEER_TRAINERS[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_method(study: StudyConfig, spec: MethodSpec, seed: int, *, force: bool = False,
               flickr_top_k: int = 15, validation: bool = False) -> Path:
    """Train ``spec`` for ``seed`` (cached) and return its run folder (``test_metrics.json``, ``test_probs.npy``).

    With ``validation`` the run trains on the training rows minus the noisy validation split
    (:func:`~urnet_core.study.pipeline.validation_mask`) and its metrics are scored on that
    split's observed (noisy) labels, not on the test split: what selection may look at.
    """
    from urnet_core.study.pipeline import validation_mask

    if spec.selected:
        raise ValueError(f"{spec.name}: resolve the selected row with select_configuration() first")
    if spec.name == "baseline" and not validation:
        return baseline(study, seed, force=force)
    bundle = load_bundle(study, seed)
    table = bundle.train
    config = study.train_config(seed, loss=spec.loss, bag_branch=spec.bag)
    base_key = read_json(baseline(study, seed) / "stage.json")["key"]
    # The weights stage's key covers study.urnet, the signals, the backend used and the text model.
    weights_key = weight_components(study, seed, signals=spec.signals).name if spec.strategies else None
    fraction = study.run.validation_fraction if validation else None
    key = stage_key("method", base_key, weights_key, dataclasses.replace(spec, name="", group=""), config,
                    flickr_top_k, fraction)

    def compute(folder: Path) -> dict:
        keep = _subset_mask(spec, study, seed, table, flickr_top_k)
        eval_table = None
        if validation:
            val = validation_mask(study, table["label"].to_numpy(), seed)
            keep = keep & ~val
            eval_table = table.loc[val].reset_index(drop=True)
        if keep.sum() == 0:
            raise ValueError(f"{spec.name}: the training subset is empty")
        weights, targets = method_weights(spec, study, seed, table, bundle.num_classes, keep)
        sub = table.loc[keep].reset_index(drop=True)
        metrics, _ = fit_and_evaluate(bundle, sub, config, folder, sample_weights=weights, soft_targets=targets,
                                      init_weights=study.data.init_weights, trainer=peer_trainer(spec.trainer),
                                      eval_table=eval_table)
        return {"metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
                "n_train": int(len(sub)), "kept_fraction": float(keep.mean()), "validation": validation}

    folder, _ = run_stage(study.run.run_dir, "validation" if validation else "method", key, compute, force=force,
                          description={"method": spec.name, "seed": seed})
    return folder


#: Validation metric of the selection: balanced accuracy on the noisy labels (macro recall), so
#: the long-tailed validation split does not favour the head classes the balanced test ignores.
SELECTION_METRIC = "balanced_accuracy"


def selection_table(study: StudyConfig, folders: list[str] | None = None) -> pd.DataFrame:
    """Validation scores of every candidate (:func:`selection_candidates`) on the first seed."""
    seed = study.run.seeds[0]
    candidates = selection_candidates()
    if folders is None:
        folders = [str(run_method(study, spec, seed, validation=True)) for spec in candidates]
    rows = []
    for spec, folder in zip(candidates, folders):
        metrics = load_test_metrics(folder)
        rows.append({"candidate": spec.name, "strategies": "+".join(spec.strategies), "seed": seed,
                     "val_top1": float(metrics["top1"]), "val_balanced_accuracy": float(metrics["balanced_accuracy"])})
    table = pd.DataFrame(rows)
    table["chosen"] = table[f"val_{SELECTION_METRIC}"] == table[f"val_{SELECTION_METRIC}"].max()
    first = int(np.flatnonzero(table["chosen"].to_numpy())[0])  # ties: the first, i.e. the simplest
    table["chosen"] = np.arange(len(table)) == first
    return table


def select_configuration(study: StudyConfig, table: pd.DataFrame | None = None) -> MethodSpec:
    """The selected row: the candidate with the best noisy-validation score, named :data:`SELECTED`."""
    table = selection_table(study) if table is None else table
    chosen = selection_candidates()[int(np.flatnonzero(table["chosen"].to_numpy())[0])]
    return dataclasses.replace(chosen, name=SELECTED, group="selected")


def study_methods(study: StudyConfig) -> list[MethodSpec]:
    """The rows this study's data allows: no oracle without ground truth."""
    return default_methods(ground_truth=has_ground_truth(load_bundle(study).train))


# --------------------------------------------------------------------------- many runs
def _init_worker() -> None:
    import torch

    # Two single-threaded trainings beat one two-threaded one for small CNNs on 2 cores.
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _job(kind: str, study: StudyConfig, seed: int, spec: MethodSpec | None) -> str:
    if kind == "baseline":
        return str(baseline(study, seed))
    if kind in SIGNALS:
        return str(weight_components(study, seed, signals=kind))
    if kind == "validation":
        return str(run_method(study, spec, seed, validation=True))
    return str(run_method(study, spec, seed))


def _run_jobs(jobs: list[tuple], n_jobs: int, desc: str) -> list[str]:
    """Run ``jobs`` (in ``n_jobs`` processes), recording progress in the run folder's
    ``progress.json`` (``urnet study`` reads it to show what the kernel is doing)."""
    from tqdm.auto import tqdm

    from urnet_core.study.progress import track

    if not jobs:
        return []
    run_dir = jobs[0][1].run.run_dir
    if n_jobs <= 1 or len(jobs) <= 1:
        return [_job(*job) for job in track(tqdm(jobs, desc=desc, leave=False), run_dir=run_dir, stage=desc,
                                             total=len(jobs))]
    results: list[str | None] = [None] * len(jobs)
    with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn"),
                                initializer=_init_worker) as pool:
        futures = {pool.submit(_job, *job): i for i, job in enumerate(jobs)}
        done = tqdm(cf.as_completed(futures), total=len(jobs), desc=desc, leave=False)
        for fut in track(done, run_dir=run_dir, stage=desc, total=len(jobs)):
            results[futures[fut]] = fut.result()
    return results  # type: ignore[return-value]


def run_ablation(study: StudyConfig, methods: Iterable[MethodSpec] | None = None, *,
                 n_jobs: int | None = None) -> pd.DataFrame:
    """Run every method for every seed (cached) and return one row per (method, seed).

    Columns: method, group, seed, the metrics of :data:`METRICS`, ``per_class_accuracy``
    (list) and ``folder``.
    """
    if methods is None:
        methods = study_methods(study)
    methods = list(methods)
    n_jobs = study.run.n_jobs if n_jobs is None else n_jobs
    seeds = list(study.run.seeds)
    _run_jobs([("baseline", study, s, None) for s in seeds], n_jobs, "baselines")
    selecting = any(m.selected for m in methods)
    signals = {m.signals for m in methods if m.strategies or m.subset == "cleanlab"} | ({"cross_fit"} if selecting else set())
    _run_jobs([(kind, study, s, None) for kind in sorted(signals) for s in seeds], n_jobs, "weights")
    if selecting:
        candidates = selection_candidates()
        folders = _run_jobs([("validation", study, seeds[0], c) for c in candidates], n_jobs, "selection")
        chosen = select_configuration(study, selection_table(study, folders))
        methods = [chosen if m.selected else m for m in methods]
    jobs = [("method", study, s, m) for m in methods for s in seeds]
    folders = _run_jobs(jobs, n_jobs, "ablation")
    rows = []
    for (_, _, seed, spec), folder in zip(jobs, folders):
        metrics = load_test_metrics(folder)
        row = {"method": spec.name, "group": spec.group, "seed": seed, "folder": folder}
        row.update({m: float(metrics[m]) for m in METRICS})
        row["per_class_accuracy"] = metrics["per_class_accuracy"]
        rows.append(row)
    return pd.DataFrame(rows)


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


def ladder_differences(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """Paired (by seed) differences between consecutive ladder rungs, in percentage points."""
    rows = []
    present = [r for r in LADDER if r in set(results["method"])]
    for prev, cur in zip(present, present[1:]):
        a, b = _by_seed(results, prev, metric), _by_seed(results, cur, metric)
        seeds = a.index.intersection(b.index)
        ci = paired_difference(a[seeds].to_numpy(), b[seeds].to_numpy())
        rows.append({"step": f"{prev} -> {cur}", "diff_pp": ci.mean * 100, "low_pp": ci.low * 100,
                     "high_pp": ci.high * 100, "significant": ci.excludes_zero(),
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
               "head_to_head.csv", "data.json")


def write_tables(study: StudyConfig, results: pd.DataFrame) -> Path:
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
        selection = selection_table(study) if (results["group"] == "selected").any() else pd.DataFrame()
        selection.to_csv(tmp / "selection.csv", index=False)
        head_to_head(results).to_csv(tmp / "head_to_head.csv", index=False)
        info = {**describe(study, bundle), "data_hash": data_key(bundle),
                "draw_per_seed": bundle.manifest.benchmark is not None and study.run.draw_per_seed,
                "cross_fit_folds": study.run.cross_fit_folds, "validation_fraction": study.run.validation_fraction}
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


def head_to_head(results: pd.DataFrame, *, metric: str = "top1") -> pd.DataFrame:
    """Paired (by seed) differences, in percentage points of ``metric``, between URNet's rows
    (the paper's full ladder "+label", its cross-fitted version, the selected configuration)
    and the baseline, the best peer and the best oracle. ``significant``: the 95% interval
    excludes zero."""
    methods = set(results["method"])
    ours = [m for m in ("+label", "+label" + CF, SELECTED) if m in methods]
    others = {"baseline": "baseline" if "baseline" in methods else None,
              "best peer": best_of_group(results, "peer", metric=metric),
              "best oracle": best_of_group(results, "oracle", metric=metric)}
    rows = []
    for method in ours:
        for role, other in others.items():
            if other is None:
                continue
            a, b = _by_seed(results, other, metric), _by_seed(results, method, metric)
            seeds = a.index.intersection(b.index)
            ci = paired_difference(a[seeds].to_numpy(), b[seeds].to_numpy())
            rows.append({"method": method, "versus": role, "other": other, "diff_pp": ci.mean * 100,
                         "low_pp": ci.low * 100, "high_pp": ci.high * 100, "significant": ci.excludes_zero(),
                         "seeds": int(len(seeds))})
    return pd.DataFrame(rows, columns=["method", "versus", "other", "diff_pp", "low_pp", "high_pp", "significant",
                                       "seeds"])


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
