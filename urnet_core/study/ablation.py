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
from urnet_core.study.stats import detectable_difference, gap_closed, mean_ci, paired_difference

logger = logging.getLogger(__name__)

#: The paper's ablation (WebVision 2.0 validation, top-5 accuracy, single runs).
#: Keyed by the rungs of :data:`LADDER` (a test checks they agree).
PAPER_TOP5 = {"baseline": 71.7, "+class": 72.8, "+cluster": 75.3, "+instance": 76.0, "+bag": 76.3, "+label": 76.5}

METRICS = ("top1", "balanced_accuracy", "macro_f1", "top5", "ece")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the ablation.

    ``strategies`` names the URNet components combined into the weights (subset of
    {"class", "class_literal", "cluster", "cluster_own_class", "instance", "instance_combined",
    "label"}, files of :func:`~urnet_core.study.pipeline.weight_components}`, and URNet+'s
    {"clean_weight", "clean_filter", "clean_class", "label_agree"}, see :func:`method_weights`);
    ``signals`` says whether they come from the in-sample baseline (the paper) or the
    cross-fitted one (``"cross_fit"``); ``bag`` turns on the bag branch; ``loss`` is "ce" or
    "gce"; ``class_balanced`` multiplies effective-number class weights (Cui et al. 2019);
    ``subset`` restricts the training table ("clean_oracle", "cleanlab", "flickr_top_k");
    ``trainer`` names a peer's own training procedure (:data:`PEER_TRAINERS`); ``hyper`` holds
    the row's hyperparameters as ``(name, value)`` pairs (:data:`WEIGHT_HYPER`,
    :data:`CONFIG_HYPER`, :data:`SUBSET_HYPER`; any other name goes to the trainer); ``family``
    marks a *tuned* row whose hyperparameters :func:`urnet_core.study.tuning.resolve_tuned`
    selects on the noisy validation split; ``protocol`` overrides ``run.protocol``.
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
    hyper: tuple[tuple[str, Any], ...] = ()
    family: str | None = None
    protocol: str | None = None

    def option(self, name: str, default: Any = None) -> Any:
        """The value of hyperparameter ``name`` (``default`` when the row does not set it)."""
        return dict(self.hyper).get(name, default)


#: Hyperparameters read by :func:`method_weights`, by the training config and by the subset filter.
WEIGHT_HYPER = ("alpha", "class_scheme", "cb_beta", "clean_threshold")
CONFIG_HYPER = ("gce_q",)
SUBSET_HYPER = ("filter_by", "frac_noise")

#: Strategy name of an ablation row -> the URNetConfig flag that turns it on.
STRATEGY_FLAGS = (("class", "class_reweight"), ("cluster", "cluster_reweight"), ("instance", "instance_reweight"),
                  ("label", "label_reweight"))


def _ladder_steps() -> tuple[tuple[str, tuple[str, ...], bool], ...]:
    """``(rung, strategies, bag branch)`` of each rung of the one ladder definition,
    :meth:`~urnet_core.reweight.compose.URNetConfig.ladder`."""
    from urnet_core.reweight.compose import URNetConfig

    return tuple((name, tuple(s for s, flag in STRATEGY_FLAGS if getattr(cfg, flag)), bool(cfg.bag_branch))
                 for name, cfg in URNetConfig.ladder().items())


#: The paper's ladder: each rung adds one URNet step to the one above (in-sample signals):
#: ``(rung, strategies, bag branch)``, read from ``URNetConfig.ladder()``.
LADDER_STEPS = _ladder_steps()
LADDER = tuple(name for name, _, _ in LADDER_STEPS)
CF = " (cross-fitted)"
SCRATCH = " (from scratch)"
SELECTED = "URNet (tuned)"
RECOMMENDED = "URNet+ (tuned)"
#: Peer trainers: ``module:function`` taking the arguments of :func:`urnet_core.training.loop.train`.
PEER_TRAINERS = {"elr": "urnet_core.peers.elr:train_elr", "coteaching": "urnet_core.peers.coteaching:train_coteaching",
                 "dividemix": "urnet_core.peers.dividemix:train_dividemix"}


def ladder_rows(*, group: str = "ladder", suffix: str = "", **fields: Any) -> list[MethodSpec]:
    """The rungs of :data:`LADDER_STEPS` (``+bag`` and ``+label`` with the bag branch), renamed with ``suffix``."""
    rows = []
    for name, strategies, bag in LADDER_STEPS:
        rows.append(MethodSpec(name if name == "baseline" and not suffix else name + suffix, group, strategies,
                               bag=bag, **fields))
    return rows


def paper_default_peers() -> list[MethodSpec]:
    """The peers at their papers' default hyperparameters (untuned; the ``full`` profile's rows)."""
    group = "peer (paper defaults)"
    return [
        MethodSpec("class-balanced loss, beta 0.999", group, class_balanced=True),
        MethodSpec("cleanlab, prune by noise rate", group, subset="cleanlab", signals="cross_fit"),
        MethodSpec("generalized CE, q 0.7", group, loss="gce"),
        MethodSpec("ELR, lambda 3, beta 0.7", group, trainer="elr"),
        MethodSpec("co-teaching, tau 0.2", group, trainer="coteaching"),
        MethodSpec("DivideMix, lambda_u 0", group, trainer="dividemix"),
    ]


def default_methods(*, profile: str = "default", ground_truth: bool = True,
                    include_tricks: bool = False) -> list[MethodSpec]:
    """The study's rows for ``profile`` (see :class:`~urnet_core.config.RunConfig`).

    Always: the paper's ladder, every tuned family (:data:`urnet_core.study.tuning.FAMILIES`:
    URNet, URNet+ and the six peers) and, with ground truth, the oracle trained on the truly
    clean rows with class-balanced weights. ``full`` adds each step alone, the cross-fitted
    ladder, the ladder trained from scratch, the peers at their papers' defaults and the plain
    oracle; ``peers`` keeps the baseline, the tuned peers and the oracle only. Without
    ``ground_truth`` (real web data) the oracle rows are left out.
    """
    from urnet_core.study.tuning import tuned_rows

    rows = ladder_rows() + tuned_rows()
    if profile == "peers":
        rows = rows[:1] + [r for r in tuned_rows() if r.group == "peer"]
    oracles = [MethodSpec("oracle: clean only, class-balanced", "oracle", subset="clean_oracle", class_balanced=True)]
    if profile == "full":
        rows += [r for r in ladder_rows(group="ladder (cross-fitted)", suffix=CF, signals="cross_fit")[2:]]
        rows += ladder_rows(group="ladder (from scratch)", suffix=SCRATCH, protocol="scratch")
        rows += [MethodSpec("class (literal eq. 3)", "alone", ("class_literal",)),
                 MethodSpec("cluster only", "alone", ("cluster",)),
                 MethodSpec("instance only", "alone", ("instance",)),
                 MethodSpec("bag only", "alone", (), bag=True),
                 MethodSpec("label only", "alone", ("label",))]
        rows += paper_default_peers()
        oracles.insert(0, MethodSpec("oracle: clean only", "oracle", subset="clean_oracle"))
    if include_tricks:
        rows.append(MethodSpec("URNet + top-K Flickr", "trick", LADDER_STEPS[-1][1], bag=LADDER_STEPS[-1][2],
                               subset="flickr_top_k"))
    return rows + (oracles if ground_truth else [])


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
        return confident_learning_keep_mask(table["label"].to_numpy(), load_npy(source, mmap=False),
                                            filter_by=spec.option("filter_by", "prune_by_noise_rate"),
                                            frac_noise=spec.option("frac_noise", 1.0))
    if spec.subset == "flickr_top_k":
        from urnet_core.peers.filters import top_k_source_mask

        return top_k_source_mask(table, source="flickr", k=flickr_top_k)
    raise ValueError(f"unknown subset {spec.subset!r}")


#: URNet+'s strategies (docs/DESIGN.md section 5.7), read from the cross-fitted weights stage.
CLEAN_STRATEGIES = ("clean_weight", "clean_filter", "label_agree")


def _class_factor(spec: MethodSpec, study: StudyConfig, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-row class weight of ``spec``: eq. 2-4 with the row's ``alpha``/``class_scheme`` (the
    study's by default)."""
    from urnet_core.reweight.class_weight import class_weights

    per_class = class_weights(labels, num_classes, alpha=spec.option("alpha", study.urnet.alpha),
                              scheme=spec.option("class_scheme", study.urnet.class_scheme))
    return np.asarray(per_class, dtype=np.float64)[labels]


def _clean_weights(spec: MethodSpec, study: StudyConfig, folder: Path, labels: np.ndarray, num_classes: int):
    """URNet+'s weights and targets (:func:`urnet_core.reweight.clean_probability.urnet_plus_weights`):
    P(clean) as a weight (``clean_weight``) or a filter at ``clean_threshold`` (``clean_filter``),
    the class step on the estimated clean counts, and with ``label_agree`` the agreeing relabel
    as one-hot targets."""
    from urnet_core.reweight.clean_probability import urnet_plus_weights
    from urnet_core.study.pipeline import cross_fit
    from urnet_core.training.targets import LabelPairs

    seed = int(read_json(Path(folder) / "stage.json")["description"]["seed"])
    relabel = {}
    if "label_agree" in spec.strategies:
        relabel = {"oof_probs": load_npy(cross_fit(study, seed) / "oof_probs.npy", mmap=False),
                   "in_sample_predicted": load_npy(baseline(study, seed) / "train_probs.npy", mmap=False).argmax(1)}
    weights, new_labels = urnet_plus_weights(
        labels, load_component(folder, "clean_probability"), num_classes,
        use="filter" if "clean_filter" in spec.strategies else "weight",
        threshold=spec.option("clean_threshold", 0.5), class_scheme=spec.option("class_scheme", "balanced"),
        alpha=spec.option("alpha", 1.0), cb_beta=spec.option("cb_beta", 0.999), **relabel)
    return weights, (LabelPairs(new_labels, 0.0) if new_labels is not None else None)


def method_weights(spec: MethodSpec, study: StudyConfig, seed: int, table: pd.DataFrame,
                   num_classes: int, keep: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-instance weights (mean 1 over the kept rows) and soft targets of ``spec`` (None = plain)."""
    from urnet_core.reweight.class_weight import effective_number_weights
    from urnet_core.reweight.compose import combine_components

    weights = targets = None
    labels_all = table["label"].to_numpy()
    if spec.strategies:
        folder = weight_components(study, seed, signals=spec.signals)
        if set(spec.strategies) & set(CLEAN_STRATEGIES):
            weights, targets = _clean_weights(spec, study, folder, labels_all, num_classes)
        else:
            comps = {s: load_component(folder, s) for s in spec.strategies if s != "label"}
            if "class" in comps and (spec.option("alpha") is not None or spec.option("class_scheme") is not None):
                comps["class"] = _class_factor(spec, study, labels_all, num_classes)
            if comps:
                weights = combine_components(comps)
            if "label" in spec.strategies:
                targets = load_label_targets(folder)
    labels = labels_all[keep]
    if weights is not None:
        weights = weights[keep]
    targets = subset_targets(targets, keep)
    if spec.class_balanced:
        cb = effective_number_weights(labels, num_classes, beta=spec.option("cb_beta", 0.999))[labels]
        weights = cb if weights is None else weights * cb
    if weights is not None:
        if not weights.sum() > 0:
            raise ValueError(f"{spec.name}: every training row has weight 0")
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


def trainer_options(spec: MethodSpec) -> dict[str, Any]:
    """The hyperparameters of ``spec`` its trainer takes (those not read by weights, config or subset)."""
    options = {k: v for k, v in spec.hyper if k not in WEIGHT_HYPER + CONFIG_HYPER + SUBSET_HYPER}
    if options and spec.trainer is None:
        raise ValueError(f"{spec.name}: hyperparameters {sorted(options)} need a peer trainer")
    return options


def run_method(study: StudyConfig, spec: MethodSpec, seed: int, *, force: bool = False,
               flickr_top_k: int = 15, validation: bool = False) -> Path:
    """Train ``spec`` for ``seed`` (cached) and return its run folder (``test_metrics.json``, ``test_probs.npy``).

    Under ``run.protocol='finetune'`` (or the row's ``protocol``) the row starts from the
    seed's baseline and trains ``run.finetune_epochs``; under ``'scratch'`` it trains
    ``training.epochs`` from a fresh initialisation (the scratch baseline row *is* the baseline).
    With ``validation`` the run trains on the training rows minus the noisy validation split
    (:func:`~urnet_core.study.pipeline.validation_mask`), starting from that split's
    :func:`~urnet_core.study.pipeline.selection_baseline`, and also predicts the validation rows
    (``validation_probs.npy``): what a selection may look at.
    """
    from urnet_core.study.pipeline import selection_baseline, validation_mask

    if spec.family is not None:
        raise ValueError(f"{spec.name}: resolve the tuned row with tuning.resolve_tuned() first")
    protocol = spec.protocol or study.run.protocol
    if spec.name.startswith("baseline") and not spec.strategies and protocol == "scratch" and not validation \
            and spec.subset is None:
        return baseline(study, seed, force=force)
    bundle = load_bundle(study, seed)
    table = bundle.train
    config = study.row_config(seed, protocol=protocol, loss=spec.loss, bag_branch=spec.bag,
                              **{k: v for k, v in spec.hyper if k in CONFIG_HYPER})
    source = None
    if protocol == "finetune":
        source = selection_baseline(study, seed) if validation else baseline(study, seed)
    base_key = read_json(baseline(study, seed) / "stage.json")["key"]
    source_key = read_json(source / "stage.json")["key"] if source is not None else None
    # The weights stage's key covers study.urnet, the signals, the backend used and the text model.
    weights_key = weight_components(study, seed, signals=spec.signals).name if spec.strategies else None
    fraction = study.run.validation_fraction if validation else None
    key = stage_key("method", base_key, weights_key, dataclasses.replace(spec, name="", group=""), config,
                    flickr_top_k, fraction, protocol, source_key)

    def compute(folder: Path) -> dict:
        keep = _subset_mask(spec, study, seed, table, flickr_top_k)
        validation_table = None
        if validation:
            val = validation_mask(study, table["label"].to_numpy(), seed)
            keep = keep & ~val
            validation_table = table.loc[val].reset_index(drop=True)
        if keep.sum() == 0:
            raise ValueError(f"{spec.name}: the training subset is empty")
        weights, targets = method_weights(spec, study, seed, table, bundle.num_classes, keep)
        sub = table.loc[keep].reset_index(drop=True)
        init = str(source / "checkpoint.pt") if source is not None else study.data.init_weights
        metrics, _ = fit_and_evaluate(bundle, sub, config, folder, sample_weights=weights, soft_targets=targets,
                                      init_weights=init, trainer=peer_trainer(spec.trainer),
                                      trainer_options=trainer_options(spec), validation_table=validation_table)
        return {"metrics": {k: v for k, v in metrics.items() if not isinstance(v, (list, dict))},
                "n_train": int(len(sub)), "kept_fraction": float(keep.mean()), "validation": validation,
                "protocol": protocol}

    folder, _ = run_stage(study.run.run_dir, "validation" if validation else "method", key, compute, force=force,
                          description={"method": spec.name, "seed": seed})
    return folder


def study_methods(study: StudyConfig) -> list[MethodSpec]:
    """The rows this study's profile and data allow: no oracle without ground truth."""
    return default_methods(profile=study.run.profile, ground_truth=has_ground_truth(load_bundle(study).train))


# --------------------------------------------------------------------------- many runs
def _init_worker() -> None:
    import torch

    # Two single-threaded trainings beat one two-threaded one for small CNNs on 2 cores.
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _job(kind: str, study: StudyConfig, seed: int, spec: MethodSpec | None) -> str:
    from urnet_core.study.pipeline import selection_baseline

    if kind == "baseline":
        return str(baseline(study, seed))
    if kind == "selection_baseline":
        return str(selection_baseline(study, seed))
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


def run_selection(study: StudyConfig, families: list[str], *, n_jobs: int | None = None) -> pd.DataFrame:
    """Train every candidate of ``families`` on every selection seed (cached) and return the
    selection table (:func:`urnet_core.study.tuning.selection_table`)."""
    from urnet_core.study import tuning

    n_jobs = study.run.n_jobs if n_jobs is None else n_jobs
    seeds = list(study.run.selecting_seeds)
    if study.run.protocol == "finetune":
        _run_jobs([("selection_baseline", study, s, None) for s in seeds], n_jobs, "selection baselines")
    jobs = tuning.selection_jobs(study, families)
    folders = _run_jobs([("validation", study, seed, spec) for _, seed, spec in jobs], n_jobs, "selection")
    return tuning.selection_table(study, jobs, folders)


def resolve_methods(study: StudyConfig, methods: list[MethodSpec], *,
                    n_jobs: int | None = None) -> tuple[list[MethodSpec], pd.DataFrame]:
    """``methods`` with every tuned row replaced by its family's pick, and the selection table
    (empty when no row is tuned)."""
    from urnet_core.study import tuning

    families = [m.family for m in methods if m.family is not None]
    if not families:
        return methods, pd.DataFrame()
    table = run_selection(study, families, n_jobs=n_jobs)
    return [tuning.resolve_tuned(m, study, table) if m.family is not None else m for m in methods], table


def run_ablation(study: StudyConfig, methods: Iterable[MethodSpec] | None = None, *,
                 n_jobs: int | None = None) -> pd.DataFrame:
    """Run every method for every seed (cached) and return one row per (method, seed).

    Tuned rows are first resolved on the noisy validation split (:func:`resolve_methods`).
    Columns: method, group, seed, the metrics of :data:`METRICS`, ``per_class_accuracy``
    (list) and ``folder``; ``results.attrs["selection"]`` holds the selection table.
    """
    if methods is None:
        methods = study_methods(study)
    methods = list(methods)
    n_jobs = study.run.n_jobs if n_jobs is None else n_jobs
    seeds = list(study.run.seeds)
    _run_jobs([("baseline", study, s, None) for s in seeds], n_jobs, "baselines")
    signals = {m.signals for m in methods if m.strategies or m.subset == "cleanlab" or m.family} | \
        ({"cross_fit"} if any(m.family for m in methods) else set())
    _run_jobs([(kind, study, s, None) for kind in sorted(signals) for s in seeds], n_jobs, "weights")
    methods, selection = resolve_methods(study, methods, n_jobs=n_jobs)
    jobs = [("method", study, s, m) for m in methods for s in seeds]
    folders = _run_jobs(jobs, n_jobs, "ablation")
    rows = []
    for (_, _, seed, spec), folder in zip(jobs, folders):
        metrics = load_test_metrics(folder)
        row = {"method": spec.name, "group": spec.group, "seed": seed, "folder": folder}
        row.update({m: float(metrics[m]) for m in METRICS})
        row["per_class_accuracy"] = metrics["per_class_accuracy"]
        rows.append(row)
    results = pd.DataFrame(rows)
    results.attrs["selection"] = selection
    return results


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
