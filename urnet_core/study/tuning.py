"""Equal tuning budget: every method chooses its hyperparameters the same way, on the same data.

Each *family* (URNet, URNet+ and the six peers) has the same number of candidates
(:data:`CANDIDATES_PER_FAMILY`; 3 in the ``quick`` profile), drawn from the hyperparameters its
own paper tunes. Every candidate trains once per selection seed (``run.selection_seeds``: the
first seeds, each with its own data draw and noisy validation split) on the training rows minus
that split, starting from the split's selection baseline under the fine-tuning protocol, and
predicts the split's rows. The rule (:data:`SELECTION_RULE`) scores each prediction and the
candidate with the best mean score over the selection seeds becomes the family's tuned row.

The rule. Accuracy on *noisy* validation labels rewards a model that reproduces systematic
label flips (a look-alike class relabelled the same way in training and validation). The
default rule therefore weighs each validation row by URNet+'s estimate of ``P(clean | row)``
(:mod:`urnet_core.reweight.clean_probability`, from the cross-fitted signals: out-of-sample for
the validation rows), then takes the class-balanced mean: ``sum_c (1/C) sum_{i: y_i = c} q_i
[pred_i = y_i] / sum_{i: y_i = c} q_i``. The old rule (balanced accuracy on the noisy labels) is
kept in the table for comparison.

How good is the pick? Every selection run also predicts the test split. Those numbers never
choose anything; :func:`selection_regret` reports, per family and rule, how far the pick's
test top-1 is below the best candidate's (both from the same selection runs), so the report can
say "the rule's pick is within X pp of the best candidate on test".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from urnet_core.config import StudyConfig
from urnet_core.study.ablation import RECOMMENDED, SELECTED, MethodSpec
from urnet_core.utils.io import load_npy, read_json

CANDIDATES_PER_FAMILY = 6
QUICK_CANDIDATES = 3
RULES = ("clean_weighted_balanced_accuracy", "noisy_balanced_accuracy")
SELECTION_RULE = RULES[0]


def _grid(name: str, group: str, base: dict[str, Any], options: list[tuple[str, dict[str, Any], dict[str, Any]]]):
    """Candidates ``base`` + each option's fields and hyperparameters, named ``name: label``."""
    out = []
    for label, fields, hyper in options:
        spec_fields = {**base, **fields}
        out.append(MethodSpec(f"{name}: {label}", group, hyper=tuple(sorted(hyper.items())), **spec_fields))
    return out


def _urnet_candidates() -> list[MethodSpec]:
    """The paper's knobs: alpha (eq. 3), cluster count reading (eq. 7), instance weight form
    (eq. 8-9 or combined with the out-of-sample confidence), label reweighting (eq. 10) on/off;
    bag branch on, cross-fitted signals."""
    base = {"bag": True, "signals": "cross_fit"}
    options = []
    for alpha in (0.5, 1.0):
        for label, strategies in (("pooled count, image-text", ("class", "cluster", "instance")),
                                  ("own-class count, combined", ("class", "cluster_own_class", "instance_combined")),
                                  ("own-class count, combined, label on",
                                   ("class", "cluster_own_class", "instance_combined", "label"))):
            options.append((f"alpha {alpha}, {label}", {"strategies": strategies}, {"alpha": alpha}))
    return _grid("URNet", "candidate", base, options)


def _urnet_plus_candidates() -> list[MethodSpec]:
    """URNet+ (docs/DESIGN.md section 5.7): the class step on the estimated clean counts (full
    balance or effective number) x how P(clean) is used (a weight, a filter at 0.5, a weight
    plus the agreeing relabel)."""
    base = {"signals": "cross_fit"}
    options = []
    for class_label, class_hyper in (("balanced", {"alpha": 1.0}),
                                     ("effective number", {"class_scheme": "effective_number", "cb_beta": 0.999})):
        for use_label, strategies in (("P(clean) weight", ("clean_weight",)),
                                      ("P(clean) >= 0.5 filter", ("clean_filter",)),
                                      ("P(clean) weight + agreeing relabel", ("clean_weight", "label_agree"))):
            options.append((f"{class_label} class step, {use_label}", {"strategies": strategies}, class_hyper))
    return _grid("URNet+", "candidate", base, options)


def _peer_candidates(family: str, protocol: str) -> list[MethodSpec]:
    """Each peer over the hyperparameters its paper tunes."""
    if family == "class_balanced":  # Cui et al. 2019, section 5: beta in {0.9, 0.99, 0.999, 0.9999}
        return _grid("class-balanced loss", "candidate", {"class_balanced": True},
                     [(f"beta {b}", {}, {"cb_beta": b}) for b in (0.9, 0.99, 0.995, 0.999, 0.9995, 0.9999)])
    if family == "cleanlab":  # Northcutt et al. 2021, section 3.2: the pruning variants
        options = [(f, {}, {"filter_by": f}) for f in ("prune_by_noise_rate", "prune_by_class", "both",
                                                       "confident_learning", "predicted_neq_given")]
        options.append(("prune_by_noise_rate, half", {}, {"filter_by": "prune_by_noise_rate", "frac_noise": 0.5}))
        return _grid("cleanlab", "candidate", {"subset": "cleanlab", "signals": "cross_fit"}, options)
    if family == "gce":  # Zhang & Sabuncu 2018, section 4: q in (0, 1], 0.7 in most tables
        return _grid("generalized CE", "candidate", {"loss": "gce"},
                     [(f"q {q}", {}, {"gce_q": q}) for q in (0.1, 0.3, 0.5, 0.7, 0.8, 0.9)])
    if family == "elr":  # Liu et al. 2020, appendix: lambda in {1, 3, 7}, beta in {0.7, 0.9}
        return _grid("ELR", "candidate", {"trainer": "elr"},
                     [(f"lambda {lam}, beta {beta}", {}, {"lam": lam, "beta": beta})
                      for lam in (1.0, 3.0, 7.0) for beta in (0.7, 0.9)])
    if family == "coteaching":  # Han et al. 2018, section 4: forget rate tau and T_k
        return _grid("co-teaching", "candidate", {"trainer": "coteaching"},
                     [(f"tau {tau}, T_k {tk}", {}, {"noise_rate": tau, "num_gradual": tk})
                      for tau in (0.2, 0.35, 0.5) for tk in (1, 2)])
    if family == "dividemix":  # Li et al. 2020, section 4: lambda_u and the clean threshold tau
        # Under fine-tuning the baseline is DivideMix's warm-up (cross entropy on all rows).
        warmup = {"warmup_epochs": 0} if protocol == "finetune" else {}
        return _grid("DivideMix", "candidate", {"trainer": "dividemix"},
                     [(f"lambda_u {lu}, p_threshold {p}", {}, {"lambda_u": lu, "p_threshold": p, **warmup})
                      for lu in (0.0, 25.0) for p in (0.5, 0.6, 0.7)])
    raise ValueError(f"unknown family {family!r}; known: {list(FAMILIES)}")


#: family -> (name of its tuned row, group of that row).
FAMILIES = {
    "urnet": (SELECTED, "urnet"),
    "urnet_plus": (RECOMMENDED, "urnet"),
    "class_balanced": ("class-balanced loss (Cui 2019)", "peer"),
    "cleanlab": ("confident learning (cleanlab, out-of-sample)", "peer"),
    "gce": ("generalized CE (Zhang 2018)", "peer"),
    "elr": ("ELR (Liu 2020)", "peer"),
    "coteaching": ("co-teaching (Han 2018)", "peer"),
    "dividemix": ("DivideMix (Li 2020)", "peer"),
}


def candidates(study: StudyConfig, family: str) -> list[MethodSpec]:
    """The candidates of ``family`` under the study's profile and protocol (the same number for every family)."""
    if family == "urnet":
        out = _urnet_candidates()
    elif family == "urnet_plus":
        out = _urnet_plus_candidates()
    else:
        out = _peer_candidates(family, study.run.protocol)
    if len(out) != CANDIDATES_PER_FAMILY:
        raise AssertionError(f"{family} has {len(out)} candidates, not {CANDIDATES_PER_FAMILY}")
    return out[:QUICK_CANDIDATES] if study.run.profile == "quick" else out


def tuned_rows() -> list[MethodSpec]:
    """One placeholder row per family, resolved by :func:`resolve_tuned`."""
    return [MethodSpec(name, group, family=family) for family, (name, group) in FAMILIES.items()]


def selection_jobs(study: StudyConfig, families: list[str]) -> list[tuple[str, int, MethodSpec]]:
    """``(family, seed, candidate)`` of every selection run."""
    return [(family, seed, spec) for family in families for spec in candidates(study, family)
            for seed in study.run.selecting_seeds]


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, weights: np.ndarray, num_classes: int) -> float:
    hits = np.bincount(labels, weights=weights * (predicted == labels), minlength=num_classes)
    totals = np.bincount(labels, weights=weights, minlength=num_classes)
    present = totals > 0
    return float(np.mean(hits[present] / totals[present]))


def validation_scores(study: StudyConfig, seed: int, folder: str | Path) -> dict[str, float]:
    """Every rule's score of one selection run (see the module docstring), and its test top-1."""
    from urnet_core.study.pipeline import load_bundle, load_component, validation_mask, weight_components

    bundle = load_bundle(study, seed)
    labels_all = bundle.train["label"].to_numpy()
    val = validation_mask(study, labels_all, seed)
    labels = labels_all[val]
    predicted = load_npy(Path(folder) / "validation_probs.npy", mmap=False).argmax(1)
    if predicted.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {predicted.shape[0]} validation predictions for {labels.shape[0]} rows")
    p_clean = load_component(weight_components(study, seed, signals="cross_fit"), "clean_probability")[val]
    test = read_json(Path(folder) / "test_metrics.json")
    return {"clean_weighted_balanced_accuracy": _balanced_accuracy(labels, predicted, p_clean.astype(np.float64),
                                                                   bundle.num_classes),
            "noisy_balanced_accuracy": _balanced_accuracy(labels, predicted, np.ones(labels.size),
                                                          bundle.num_classes),
            "test_top1": float(test["top1"])}


def selection_table(study: StudyConfig, jobs: list[tuple[str, int, MethodSpec]], folders: list[str]) -> pd.DataFrame:
    """One row per (family, candidate): mean scores over the selection seeds and ``chosen``
    (the best :data:`SELECTION_RULE` score of its family; ties: the first candidate)."""
    rows = []
    for (family, seed, spec), folder in zip(jobs, folders):
        rows.append({"family": family, "method": FAMILIES[family][0], "candidate": spec.name, "seed": seed,
                     **validation_scores(study, seed, folder)})
    per_seed = pd.DataFrame(rows)
    table = (per_seed.groupby(["family", "method", "candidate"], sort=False)
             .agg(seeds=("seed", "nunique"), **{r: (r, "mean") for r in RULES}, test_top1=("test_top1", "mean"))
             .reset_index())
    table["chosen"] = False
    for rule in RULES:
        table[f"pick_{rule}"] = False
    for family, df in table.groupby("family", sort=False):
        for rule in RULES:
            table.loc[df[rule].idxmax(), f"pick_{rule}"] = True  # idxmax: the first of ties
    table["chosen"] = table[f"pick_{SELECTION_RULE}"]
    return table


def selection_regret(table: pd.DataFrame) -> pd.DataFrame:
    """Per family and rule: the pick's test top-1 minus the best candidate's (pp, <= 0) and
    the pick's rank on test (1 = the best), from the selection runs."""
    rows = []
    for family, df in table.groupby("family", sort=False):
        best = df["test_top1"].max()
        ranks = df["test_top1"].rank(ascending=False, method="min")
        for rule in RULES:
            pick = df[df[f"pick_{rule}"]].iloc[0]
            rows.append({"family": family, "method": pick["method"], "rule": rule, "pick": pick["candidate"],
                         "regret_pp": (pick["test_top1"] - best) * 100, "rank_on_test": int(ranks[pick.name]),
                         "candidates": int(len(df))})
    return pd.DataFrame(rows)


def resolve_tuned(spec: MethodSpec, study: StudyConfig, table: pd.DataFrame) -> MethodSpec:
    """The tuned row of ``spec.family``: its chosen candidate, renamed to the family's row name."""
    chosen = table[(table["family"] == spec.family) & table["chosen"]]
    if chosen.empty:
        raise ValueError(f"no selection for family {spec.family!r}")
    by_name = {c.name: c for c in candidates(study, spec.family)}
    pick = by_name[str(chosen.iloc[0]["candidate"])]
    return dataclasses.replace(pick, name=spec.name, group=spec.group, family=None)


def chosen_settings(table: pd.DataFrame) -> dict[str, str]:
    """``{tuned row name: chosen candidate}`` (what ``urnet study`` prints)."""
    chosen = table[table["chosen"]]
    return dict(zip(chosen["method"], chosen["candidate"]))
