"""Cluster reweighting (paper section 4.2, eq. 5-7).

Notation: ``n`` instances, ``C`` classes, ``K`` clusters per class (paper: 5), ``top_k``
confused classes (paper: 4).

1. Confusion matrix ``M`` of the baseline: ``M_jk`` = instances labelled ``j`` predicted ``k``.
2. For each class ``j``: its ``top_k`` most confused classes ``T_j`` (largest off-diagonal
   ``M_jk``); k-means with ``K`` clusters on the baseline features of every instance whose
   label is in ``{j} + T_j``; groups ``G_j1 .. G_jK``.
3. An instance of class ``j`` in group ``G_jl`` gets ``wG = N_Gjl / sum_t N_Gjt`` (eq. 7).

Interpretation choices (documented because the paper leaves them open):

- ``N_Gjl`` counts **all** instances in group ``l`` (of all ``1 + top_k`` pooled classes),
  ``count="all"``, the default: "an instance that looks like many others across confusable
  classes is hard and gets more attention". ``count="class"`` counts only class ``j``'s own
  instances in the group (a within-class density weight).
- Only class ``j``'s own problem weighs its instances; their appearances in other classes'
  problems only shape those clusterings.
- Rescaling: the raw ``wG`` of eq. 7 shrinks as ``1/K`` and its mean differs between classes,
  which would act as a hidden class weight. ``normalize="class_mean"`` (default) rescales the
  weights of each class to mean 1, so cluster reweighting only redistributes weight *within*
  a class and class balance stays the job of class reweighting (4.1).
  ``normalize="n_groups"`` multiplies by the number of groups instead (uniform groups -> 1).
- A class problem with ``n <= K`` rows puts each row in its own group (all weights equal).

Modules
-------
- :mod:`~urnet_core.reweight.cluster.confusion` - eq. 5-6: confusion matrix, most confused classes.
- :mod:`~urnet_core.reweight.cluster.problems` - which rows form each class's problem, block schedule.
- :mod:`~urnet_core.reweight.cluster.one_pass` - faiss: subsample training, one assignment pass.
- :mod:`~urnet_core.reweight.cluster.blocks` - the out-of-core block loop (every backend).
- :mod:`~urnet_core.reweight.cluster.equation` - eq. 7, written once, for every count mode.
- :mod:`~urnet_core.reweight.cluster.weights` - :func:`cluster_weights`, :func:`cluster_weights_by_count`.
"""

from urnet_core.reweight.cluster.blocks import read_rows
from urnet_core.reweight.cluster.confusion import DEFAULT_CHUNK_ROWS, confusion_matrix, most_confused, predicted_classes
from urnet_core.reweight.cluster.equation import COUNT_MODES, NORMALIZE_MODES, Grouping, eq7_weights, group_fractions
from urnet_core.reweight.cluster.one_pass import as_float32_tensor, one_pass_assign
from urnet_core.reweight.cluster.problems import (
    ClassClusters, ClusterStats, ProblemSet, class_rows, schedule_problems, sorted_union,
)
from urnet_core.reweight.cluster.weights import DEFAULT_BLOCK_BYTES, cluster_weights, cluster_weights_by_count

__all__ = [
    "COUNT_MODES", "DEFAULT_BLOCK_BYTES", "DEFAULT_CHUNK_ROWS", "NORMALIZE_MODES", "ClassClusters", "ClusterStats",
    "Grouping", "ProblemSet", "as_float32_tensor", "class_rows", "cluster_weights", "cluster_weights_by_count",
    "confusion_matrix", "eq7_weights", "group_fractions", "most_confused", "one_pass_assign", "predicted_classes",
    "read_rows", "schedule_problems", "sorted_union",
]
