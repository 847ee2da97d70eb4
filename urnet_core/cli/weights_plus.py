"""URNet+ weights for ``urnet weights --config`` (the large-scale path of the recommended row).

A config file with an ``urnet_plus:`` section turns ``urnet weights`` into URNet+
(docs/DESIGN.md, "URNet+"): the same signals the study fuses, computed from the arrays a user
has at scale, then :func:`~urnet_core.reweight.clean_probability.urnet_plus_weights`::

    urnet_plus:
      use: weight              # P(clean) as a weight, or `filter` (keep P(clean) >= threshold)
      threshold: 0.5
      class_scheme: balanced   # the class step on the estimated clean counts, or effective_number
      alpha: 1.0
      cb_beta: 0.999
      relabel: false           # rows both models move to the same other class get that class
    n_clusters: 5              # any URNetConfig field: the signals' hyperparameters
    top_r: 30

``urnet study`` writes the file of its recommended configuration (``urnet_plus.yaml`` in the
reports folder). The arrays, with the study's names:

* ``--features`` and ``--probs``: **out-of-sample** features and probabilities (each row from a
  model that did not train on it: the cross-fitted baseline, ``oof_features.npy`` and
  ``oof_probs.npy`` of the study's cross-fit stage);
* ``--folds``: which fold model scored each row (``folds.npy``); cluster and instance weights
  are computed fold by fold, never mixing feature spaces (default: one fold);
* ``--in-sample-probs``: the baseline trained on every row (``train_probs.npy``), the second
  model of the fused score and of the agreeing relabel.

With the same arrays and seed the weights equal those of the study's row (a test checks it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: Keys of the ``urnet_plus:`` section and their defaults.
PLUS_DEFAULTS: dict[str, Any] = {"use": "weight", "threshold": 0.5, "class_scheme": "balanced", "alpha": 1.0,
                                 "cb_beta": 0.999, "relabel": False}
SECTION = "urnet_plus"


def plus_settings(section: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """The ``urnet_plus:`` section over :data:`PLUS_DEFAULTS`, checked (errors name ``source``)."""
    if not isinstance(section, Mapping):
        raise ValueError(f"{source}: {SECTION} must be a mapping of {sorted(PLUS_DEFAULTS)}")
    unknown = sorted(set(section) - set(PLUS_DEFAULTS))
    if unknown:
        raise ValueError(f"{source}: unknown {SECTION} key(s) {unknown}; valid: {sorted(PLUS_DEFAULTS)}")
    out = {**PLUS_DEFAULTS, **section}
    if out["use"] not in ("weight", "filter"):
        raise ValueError(f"{source}: {SECTION}.use must be 'weight' or 'filter', got {out['use']!r}")
    if out["class_scheme"] not in ("balanced", "literal", "effective_number"):
        raise ValueError(f"{source}: {SECTION}.class_scheme must be balanced, literal or effective_number, "
                         f"got {out['class_scheme']!r}")
    for key in ("threshold", "alpha", "cb_beta"):
        if isinstance(out[key], bool) or not isinstance(out[key], (int, float)):
            raise ValueError(f"{source}: {SECTION}.{key} must be a number, got {out[key]!r}")
    if not 0.0 <= out["alpha"] <= 1.0:
        raise ValueError(f"{source}: {SECTION}.alpha must be in [0, 1], got {out['alpha']}")
    if not 0.0 < out["cb_beta"] < 1.0:
        raise ValueError(f"{source}: {SECTION}.cb_beta must be in (0, 1), got {out['cb_beta']}")
    if not isinstance(out["relabel"], bool):
        raise ValueError(f"{source}: {SECTION}.relabel must be true or false, got {out['relabel']!r}")
    return out


def settings_of(spec: Any) -> dict[str, Any]:
    """The ``urnet_plus:`` section of an ablation row of URNet+ (a :class:`~urnet_core.study.ablation.MethodSpec`)."""
    d = PLUS_DEFAULTS
    return {"use": "filter" if "clean_filter" in spec.strategies else "weight",
            "threshold": float(spec.option("clean_threshold", d["threshold"])),
            "class_scheme": str(spec.option("class_scheme", d["class_scheme"])),
            "alpha": float(spec.option("alpha", d["alpha"])), "cb_beta": float(spec.option("cb_beta", d["cb_beta"])),
            "relabel": "label_agree" in spec.strategies}


def recommended_config(study: Any, spec: Any) -> dict[str, Any]:
    """The file ``urnet weights --config`` reads to reproduce ``spec``'s weights: the study's
    URNetConfig fields (the signals' hyperparameters) and the ``urnet_plus:`` section."""
    fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(study.urnet).items()}
    return {SECTION: settings_of(spec), **fields}


def signal_config(config: Any) -> tuple[Any, Any]:
    """The two URNetConfig rungs the study's weights stage computes the signals with: every
    strategy on but label (the image-text weight wI), and the own-class cluster count alone."""
    every = dataclasses.replace(config, class_reweight=True, cluster_reweight=True, instance_reweight=True,
                                label_reweight=False, bag_branch=True)
    own_class = dataclasses.replace(every, class_reweight=False, instance_reweight=False, cluster_count="class")
    return every, own_class


def urnet_plus_arrays(config: Any, settings: Mapping[str, Any], *, labels: np.ndarray, num_classes: int,
                      features: np.ndarray, oof_probs: np.ndarray, in_sample_probs: np.ndarray,
                      label_vectors: np.ndarray, folds: np.ndarray | None = None, ranks: np.ndarray | None = None,
                      sources: np.ndarray | None = None, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """URNet+ weights (mean 1), new labels (or None) and the signals, from out-of-sample arrays.

    Mirrors the study's cross-fitted weights stage: per fold, wI (eq. 8-9) and the own-class
    cluster weight (eq. 7) on that fold's rows; then the fused ``P(clean)``
    (:func:`~urnet_core.reweight.clean_probability.study_signals`) and
    :func:`~urnet_core.reweight.clean_probability.urnet_plus_weights`.
    """
    from urnet_core.reweight.clean_probability import (clean_probability_from_signals, study_signals,
                                                      urnet_plus_weights)
    from urnet_core.reweight.compose import compose_weights

    n = len(labels)
    for name, arr in (("out-of-sample probabilities", oof_probs), ("in-sample probabilities", in_sample_probs)):
        if arr.ndim != 2 or arr.shape != (n, num_classes):
            raise ValueError(f"{name} must be (rows, classes) = ({n}, {num_classes}), got {arr.shape}")
    folds = np.zeros(n, dtype=np.int64) if folds is None else np.asarray(folds).astype(np.int64)
    if folds.shape != (n,):
        raise ValueError(f"--folds must hold one fold id per row ({n}), got shape {folds.shape}")
    every, own_class = signal_config(config)
    predicted = oof_probs.argmax(1)
    instance = np.zeros(n, dtype=np.float32)
    own = np.zeros(n, dtype=np.float32)
    for f in np.unique(folds):
        rows = np.flatnonzero(folds == f)
        ws = compose_weights(every, labels=labels[rows], num_classes=num_classes, features=features[rows],
                             pred_probs=predicted[rows], label_vectors=label_vectors,
                             ranks=None if ranks is None else ranks[rows],
                             sources=None if sources is None else sources[rows], seed=seed)
        instance[rows] = ws.components["instance"]
        own[rows] = compose_weights(own_class, labels=labels[rows], num_classes=num_classes, features=features[rows],
                                    pred_probs=predicted[rows], seed=seed).components["cluster"]
    signals = study_signals(labels, oof_probs, in_sample_probs, instance, own)
    p_clean = clean_probability_from_signals(signals, labels, seed=seed)
    relabel = ({"oof_probs": oof_probs, "in_sample_predicted": in_sample_probs.argmax(1)}
               if settings["relabel"] else {})
    weights, new_labels = urnet_plus_weights(
        labels, p_clean, num_classes, use=settings["use"], threshold=settings["threshold"],
        class_scheme=settings["class_scheme"], alpha=settings["alpha"], cb_beta=settings["cb_beta"], **relabel)
    components = {"instance": instance, "cluster_own_class": own, "clean_probability": p_clean,
                  **{k: v.astype(np.float32) for k, v in signals.items() if k not in ("instance", "cluster_own_class")}}
    return weights, new_labels, components


def write_recommended(path: str | Path, config: Mapping[str, Any]) -> Path:
    """Write :func:`recommended_config` as YAML, with a header saying how to use it."""
    import yaml

    path = Path(path)
    header = ("# URNet+ as recommended by `urnet study` (chosen on the noisy validation split).\n"
              "# Reproduce its weights at scale:\n"
              "#   urnet weights --config urnet_plus.yaml --table T --features OOF_FEATURES.npy --probs OOF_PROBS.npy \\\n"
              "#                 --in-sample-probs TRAIN_PROBS.npy --folds FOLDS.npy --out DIR\n")
    path.write_text(header + yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    return path
