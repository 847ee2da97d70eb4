"""Combine the reweighting strategies into URNet's per-instance weights and targets (eq. 10).

The loss of eq. 10 is ``- sum_i sum_j wI_i * wG_i * wC_{y_i} * t_ij * log p_ij`` with soft targets
``t`` (label reweighting). :func:`compose_weights` returns the per-instance factor
``wI * wG * wC[label]`` and the targets.

Normalisation: the product is rescaled to mean 1 over the instances given (the training set),
so the effective learning rate keeps its meaning whatever strategies are switched on and the
ablation rungs differ only in how weight is *distributed*. ``WeightSet.components`` keeps each
strategy's raw per-instance weight, so ``prod(components) / mean(prod(components))`` equals
``sample_weights``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from urnet_core.utils.validation import (
    as_features,
    as_labels,
    check_fraction,
    check_option,
    check_positive_int,
)
from urnet_core.reweight.kmeans import BACKENDS
from urnet_core.utils.typecheck import check_dataclass_types
from urnet_core.reweight.class_weight import CLASS_SCHEMES, class_weights, effective_number_weights
from urnet_core.reweight.cluster import (
    COUNT_MODES, ClusterStats, cluster_weights_by_count, confusion_matrix, predicted_classes,
)
from urnet_core.reweight.instance_weight import instance_weights
from urnet_core.reweight.label_weight import LabelPairs, expand_label_targets

logger = logging.getLogger(__name__)

#: Above this many target values (n x C), :func:`compose_weights` returns compact label targets.
DENSE_TARGET_LIMIT = 1 << 26


def use_compact_targets(n: int, num_classes: int) -> bool:
    """Whether ``n x num_classes`` targets are too many to hold densely (:data:`DENSE_TARGET_LIMIT`)."""
    return n * num_classes > DENSE_TARGET_LIMIT


@dataclass(frozen=True)
class URNetConfig:
    """Which reweighting strategies are on, and their settings (paper defaults).

    ``class_scheme`` is ``'balanced'`` (default), ``'literal'`` (eq. 3 as printed) or
    ``'effective_number'`` (Cui et al. 2019 peer baseline, using ``cb_beta``).
    ``cluster_count`` is what ``N_Gjl`` of eq. 7 counts (see
    :func:`~urnet_core.reweight.cluster.cluster_weights`): ``'all'`` instances of the
    pooled classes in the group (the paper's reading, default) or only the class's ``'class'``
    own instances (a within-class density weight that down-weights mislabelled instances).
    ``bag_branch``/``bag_size`` are read by the trainer, not by :func:`compose_weights`.
    ``device`` is where the confidence model of instance reweighting trains (``'cpu'``,
    bit-reproducible; ``'cuda'``; ``'auto'``); batched k-means picks CUDA by itself under
    ``kmeans_backend='auto'``.
    """

    class_reweight: bool = False
    alpha: float = 0.5
    class_scheme: str = "balanced"
    cb_beta: float = 0.999
    cluster_reweight: bool = False
    top_k: int = 4
    n_clusters: int = 5
    cluster_count: str = "all"
    kmeans_backend: str = "auto"
    instance_reweight: bool = False
    top_r: int = 30
    clean_source: str | None = "google"
    instance_epochs: int = 50
    label_reweight: bool = False
    beta: float = 0.8
    bag_branch: bool = False
    bag_size: int = 3
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_dataclass_types(self)  # "false" or "0.5" from a config file are errors, not truthy strings
        check_fraction(self.alpha, "alpha")
        check_option(self.class_scheme, "class_scheme", CLASS_SCHEMES + ("effective_number",))
        check_fraction(self.cb_beta, "cb_beta")
        check_positive_int(self.top_k, "top_k", minimum=0)
        check_positive_int(self.n_clusters, "n_clusters")
        check_option(self.cluster_count, "cluster_count", COUNT_MODES)
        check_option(self.kmeans_backend, "kmeans_backend", BACKENDS)
        check_positive_int(self.top_r, "top_r")
        check_positive_int(self.instance_epochs, "instance_epochs")
        check_fraction(self.beta, "beta")
        check_positive_int(self.bag_size, "bag_size")

    @classmethod
    def ladder(cls, **overrides) -> "OrderedDict[str, URNetConfig]":
        """The paper's incremental ablation rungs, each adding one strategy to the previous."""
        steps = [
            ("baseline", {}),
            ("+class", {"class_reweight": True}),
            ("+cluster", {"cluster_reweight": True}),
            ("+instance", {"instance_reweight": True}),
            ("+bag", {"bag_branch": True}),
            ("+label", {"label_reweight": True}),
        ]
        out: OrderedDict[str, URNetConfig] = OrderedDict()
        current = cls(**overrides)
        for name, change in steps:
            current = replace(current, **change)
            out[name] = current
        return out

    @classmethod
    def full(cls, **overrides) -> "URNetConfig":
        """Every strategy on (the last rung of :meth:`ladder`)."""
        return next(reversed(cls.ladder(**overrides).values()))


@dataclass
class WeightSet:
    """Output of :func:`compose_weights`.

    Attributes
    ----------
    sample_weights : ndarray of float32, shape (n,)
        ``wI * wG * wC[y]`` rescaled to mean 1.
    soft_targets : ndarray of float32, shape (n, C), LabelPairs, or None
        Eq. 10 targets when label reweighting is on, else None (use the hard labels): dense
        rows for small data, or the compact :class:`~urnet_core.reweight.label_weight.LabelPairs`
        (see ``compact_targets`` of :func:`compose_weights`). ``train`` takes either.
    components : dict of str -> ndarray (n,)
        Raw per-instance weight of each active strategy: ``'class'``, ``'cluster'``,
        ``'instance'``.
    cluster_by_count : dict of str -> ndarray of float32 (n,)
        Cluster weights of every count mode asked for with ``cluster_counts`` (from the same
        clustering as ``components['cluster']``; not part of ``sample_weights``).
    """

    sample_weights: np.ndarray
    soft_targets: np.ndarray | LabelPairs | None
    components: dict[str, np.ndarray] = field(default_factory=dict)
    cluster_by_count: dict[str, np.ndarray] = field(default_factory=dict)


def combine_components(components: Mapping[str, np.ndarray], *, n: int | None = None) -> np.ndarray:
    """Final per-instance weight: the product of the given components rescaled to mean 1.

    ``w_i = wI_i * wG_i * wC_{y_i} / mean_k(wI_k * wG_k * wC_{y_k})`` (the weight factor of eq. 10).
    Rescaling to mean 1 over the training set keeps the learning rate's meaning whichever
    strategies are on. With no component every weight is 1.

    Parameters
    ----------
    components : mapping of str -> array (n,)
        Per-instance weight of each active strategy.
    n : int, optional
        Number of instances (needed when ``components`` is empty).
    """
    arrays = [np.asarray(w, dtype=np.float64) for w in components.values()]
    if n is None:
        if not arrays:
            raise ValueError("n is needed when there are no components")
        n = arrays[0].shape[0]
    product = np.ones(n, dtype=np.float64)
    for name, w in zip(components, arrays):
        if w.shape != (n,):
            raise ValueError(f"component {name!r} has shape {w.shape}, expected ({n},)")
        product *= w
    mean = product.mean() if n else float("nan")
    if not np.isfinite(mean) or mean <= 0:
        raise ValueError("every instance got weight 0 (e.g. all confidence cosines <= 0); check the inputs")
    return (product / mean).astype(np.float32)


def compose_weights(
    config: URNetConfig,
    *,
    labels: np.ndarray,
    num_classes: int,
    features: np.ndarray | None = None,
    pred_probs: np.ndarray | None = None,
    label_vectors: np.ndarray | None = None,
    ranks: np.ndarray | None = None,
    sources: np.ndarray | None = None,
    seed: int = 0,
    compact_targets: bool | None = None,
    timings: dict[str, float] | None = None,
    cluster_counts: Sequence[str] = (),
    features_digest: Any = None,
) -> WeightSet:
    """Per-instance weights and targets of the configured URNet rung.

    Works out of core: features and predictions may be memory maps (float16 features too).
    Features are validated in row chunks; probabilities are checked and reduced to class ids
    in one streamed pass, and each strategy streams its inputs (see its module), so nothing of size
    ``n x d`` or ``n x C`` is held in memory.

    Parameters
    ----------
    config : URNetConfig
    labels : array of int, shape (n,)
    num_classes : int
    features : array, shape (n, d), optional
        Baseline features; needed by cluster and instance reweighting.
    pred_probs : array, shape (n, C) or (n,), optional
        Baseline predicted probabilities, or predicted class ids (the argmax: all that cluster
        and label reweighting use); needed by cluster (confusion matrix) and label reweighting.
    label_vectors : array, shape (C, T), optional
        Class-name text vectors; needed by instance reweighting.
    ranks, sources : arrays, shape (n,), optional
        Search rank and source of each instance (positives of instance reweighting).
    seed : int, default=0
        Seeds k-means and the confidence model.
    compact_targets : bool, optional
        Return label targets as :class:`~urnet_core.reweight.label_weight.LabelPairs`
        (``O(n)``) instead of dense ``(n, C)`` rows. Default: compact when ``n * C`` exceeds
        :data:`DENSE_TARGET_LIMIT` (67M values, 268 MB).
    timings : dict, optional
        Filled with the wall seconds of each stage: ``validate_features`` (the NaN/inf pass over
        the features), ``validate_probs`` (the pass over the probabilities or class ids),
        ``class``, ``cluster`` (confusion matrix + cluster weights), ``instance``, ``combine``,
        ``label``. Each stage is also logged at INFO as ``stage <name> took <seconds>s``
        (``urnet -v weights`` shows them; ``urnet bench`` parses them). The stages' parts are
        added under dotted names: ``cluster.train_s`` (training the centroids: one pass, the
        subsample gathering + faiss; blocks, the k-means), ``cluster.train_rows`` (rows trained
        on), ``cluster.assign_s`` (one pass, the assignment pass over every row; blocks, reading
        the blocks' rows), ``instance.train_s``, ``instance.train_steps`` (optimiser steps),
        ``instance.fastest_epoch_s``, ``instance.epoch_steps`` (the fastest epoch and its steps),
        ``instance.score_s`` (scoring every row).
    cluster_counts : sequence of {'all', 'class'}, default=()
        Also return the cluster weights of these count modes (``WeightSet.cluster_by_count``),
        from the same clustering as ``config.cluster_count``'s (clustering once for several
        counts; needs ``config.cluster_reweight``).
    features_digest : :class:`~urnet_core.utils.io.NpyDigest`, optional
        Fed the features' bytes by their NaN/inf pass (``validate_features`` then also hashes the
        file: ``urnet weights`` reads it once for both).

    Returns
    -------
    WeightSet

    Its length is the ladder's steps in the paper's order, each a guarded call into its strategy
    module with its timing; the strategies themselves live in those modules.
    """
    if not isinstance(config, URNetConfig):
        raise TypeError(f"config must be a URNetConfig, got {type(config).__name__}")
    num_classes = check_positive_int(num_classes, "num_classes")
    labels = as_labels(labels, num_classes=num_classes)
    n = labels.shape[0]
    if n == 0:
        raise ValueError("labels is empty")
    timings = timings if timings is not None else {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        logger.info("stage %s took %.3fs", name, timings[name])

    if features is not None:
        with stage("validate_features"):  # streamed: pages released chunk by chunk
            features = as_features(features, n_rows=n, digest=features_digest)
    predicted = None
    if pred_probs is not None:
        with stage("validate_probs"):
            if np.ndim(pred_probs) == 1:
                predicted = as_labels(pred_probs, num_classes=num_classes, name="pred_probs (class ids)")
                if predicted.shape[0] != n:
                    raise ValueError(f"pred_probs (class ids) has {predicted.shape[0]} rows but {n} were expected")
            else:  # one streamed pass: NaN/inf and [0, 1] checks, argmax
                shape = np.shape(pred_probs)
                if len(shape) != 2 or shape[0] != n:
                    raise ValueError(f"pred_probs has shape {shape}, expected ({n}, {num_classes}) or ({n},)")
                if shape[1] != num_classes:
                    raise ValueError(f"pred_probs has {shape[1]} columns but num_classes={num_classes}")
                predicted = predicted_classes(pred_probs, num_classes, n, name="pred_probs", check_range=True)

    def need(value, name: str, strategy: str):
        if value is None:
            raise ValueError(f"{strategy} reweighting needs {name}")
        return value

    components: dict[str, np.ndarray] = {}
    if config.class_reweight:
        with stage("class"):
            if config.class_scheme == "effective_number":
                wc = effective_number_weights(labels, num_classes, beta=config.cb_beta)
            else:
                wc = class_weights(labels, num_classes, alpha=config.alpha, scheme=config.class_scheme)
            components["class"] = wc[labels]
    if config.cluster_reweight:
        feats = need(features, "features", "cluster")
        with stage("cluster"):
            conf = confusion_matrix(labels, need(predicted, "pred_probs", "cluster"), num_classes)
            counts = tuple(dict.fromkeys((config.cluster_count, *cluster_counts)))
            cstats = ClusterStats()
            by_count = cluster_weights_by_count(
                feats, labels, conf, top_k=config.top_k, n_clusters=config.n_clusters, counts=counts,
                backend=config.kmeans_backend, seed=seed, stats=cstats,
            )
            components["cluster"] = by_count[config.cluster_count]
            timings["cluster.train_s"] = cstats.seconds_train if cstats.mode == "one_pass" else cstats.seconds_kmeans
            timings["cluster.train_rows"] = cstats.train_rows if cstats.mode == "one_pass" else cstats.problem_rows
            timings["cluster.assign_s"] = cstats.seconds_assign if cstats.mode == "one_pass" else cstats.seconds_read
    elif cluster_counts:
        raise ValueError("cluster_counts needs config.cluster_reweight")
    if config.instance_reweight:
        feats = need(features, "features", "instance")
        vecs = need(label_vectors, "label_vectors", "instance")
        if np.asarray(vecs).shape[0] != num_classes:
            raise ValueError(f"label_vectors has {np.asarray(vecs).shape[0]} rows, expected num_classes={num_classes}")
        with stage("instance"):
            components["instance"] = instance_weights(
                feats, labels, vecs, ranks=ranks, sources=sources, top_r=config.top_r,
                clean_source=config.clean_source, epochs=config.instance_epochs, seed=seed, device=config.device,
                timings=timings,
            )
    with stage("combine"):
        sample_weights = combine_components(components, n=n)
    targets: np.ndarray | LabelPairs | None = None
    if config.label_reweight:
        with stage("label"):
            pairs = LabelPairs(need(predicted, "pred_probs", "label"), config.beta)
            compact = use_compact_targets(n, num_classes) if compact_targets is None else bool(compact_targets)
            targets = pairs if compact else expand_label_targets(labels, pairs.predicted, num_classes, beta=pairs.beta)
    return WeightSet(
        sample_weights=sample_weights,
        soft_targets=targets,
        components={k: v.astype(np.float32) for k, v in components.items()},
        cluster_by_count={k: by_count[k].astype(np.float32) for k in cluster_counts} if cluster_counts else {},
    )
