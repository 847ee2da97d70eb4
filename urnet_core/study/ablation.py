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
    ``trainer`` names a peer method (a key of :data:`urnet_core.peers.METHODS`); ``hyper`` holds
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
    from urnet_core.data.targets import LabelPairs

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


def peer_method(spec: MethodSpec):
    """The peer method of ``spec`` (:func:`urnet_core.peers.make_method` with :func:`trainer_options`),
    or None for the plain trainer."""
    options = trainer_options(spec)
    if spec.trainer is None:
        return None
    from urnet_core.peers import make_method

    return make_method(spec.trainer, **options)


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
                                      init_weights=init, method=peer_method(spec),
                                      validation_table=validation_table)
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
