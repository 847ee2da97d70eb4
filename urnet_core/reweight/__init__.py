"""URNet's reweighting strategies: pure functions from arrays to per-instance weights.

- :mod:`~urnet_core.reweight.class_weight` - class weights (4.1, eq. 2-4) and the
  effective-number peer baseline.
- :mod:`~urnet_core.reweight.cluster` - cluster weights (4.2, eq. 5-7), on
  :mod:`~urnet_core.reweight.kmeans` (the old path ``cluster_weight`` is deprecated).
- :mod:`~urnet_core.reweight.instance_weight` - confidence-model instance weights (4.3, eq. 8-9).
- :mod:`~urnet_core.reweight.label_weight` - soft targets (4.5, eq. 10).
- :mod:`~urnet_core.reweight.clean_probability` - URNet+'s fused P(clean | row).
- :mod:`~urnet_core.reweight.compose` - the configured combination (:class:`URNetConfig`).
"""

from urnet_core.reweight.class_weight import class_weights, effective_number_weights
from urnet_core.reweight.cluster import cluster_weights, confusion_matrix, most_confused
from urnet_core.reweight.compose import URNetConfig, WeightSet, compose_weights
from urnet_core.reweight.instance_weight import instance_weights, select_positives
from urnet_core.reweight.label_weight import LabelPairs, label_pairs, label_targets

__all__ = [
    "class_weights",
    "effective_number_weights",
    "cluster_weights",
    "confusion_matrix",
    "most_confused",
    "instance_weights",
    "select_positives",
    "label_targets",
    "label_pairs",
    "LabelPairs",
    "URNetConfig",
    "WeightSet",
    "compose_weights",
]
