"""Peer methods run in the same harness as URNet, and the paper's data trick.

- class-balanced loss by effective number (Cui et al. 2019):
  :func:`urnet_core.reweight.class_weight.effective_number_weights`;
- generalized cross entropy (Zhang & Sabuncu 2018): ``TrainConfig(loss="gce")``;
- confident-learning filtering with cleanlab: :func:`confident_learning_keep_mask` (here);
- the paper's "keep only the top-K Flickr images per class": :func:`top_k_source_mask`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urnet_core.utils.validation import as_labels, check_positive_int, check_probabilities


def confident_learning_keep_mask(labels, pred_probs, *, filter_by: str = "prune_by_noise_rate",
                                 frac_noise: float = 1.0) -> np.ndarray:
    """Boolean mask of the instances cleanlab does *not* flag as label issues.

    Parameters
    ----------
    labels : array-like of shape (n,)
        Observed labels.
    pred_probs : array-like of shape (n, C)
        Predicted probabilities of the baseline. cleanlab expects out-of-sample
        probabilities; the study passes the baseline's in-sample ones (the same inputs URNet's
        weights get), which makes cleanlab flag fewer instances than it would with
        cross-validated probabilities.
    filter_by : str, default="prune_by_noise_rate"
        Passed to :func:`cleanlab.filter.find_label_issues` (the confident-learning variants of
        Northcutt et al. 2021, section 3.2: ``prune_by_noise_rate``, ``prune_by_class``,
        ``both``, ``confident_learning``, ``predicted_neq_given``).
    frac_noise : float in (0, 1], default=1.0
        Share of the estimated number of label issues to remove (cleanlab's ``frac_noise``;
        for the ``prune_by_*`` and ``both`` filters).
    """
    from cleanlab.filter import find_label_issues

    probs = check_probabilities(pred_probs)
    y = as_labels(labels, num_classes=probs.shape[1])
    # n_jobs=1: cleanlab's own worker pool relies on fork-inherited globals and fails in spawned workers.
    options = {"frac_noise": frac_noise} if filter_by in ("prune_by_noise_rate", "prune_by_class", "both") else {}
    issues = find_label_issues(y, probs, filter_by=filter_by, n_jobs=1, **options)
    return ~np.asarray(issues, dtype=bool)


def top_k_source_mask(table: pd.DataFrame, *, source: str = "flickr", k: int = 15) -> np.ndarray:
    """Keep every instance except those of ``source`` ranked below the top ``k`` of their class.

    The paper's trick (WebVision 2.0: top-15 Flickr images per class, +0.5 top-5): the noisier
    source's low-ranked images are mostly noise. Instances of ``source`` without a rank are dropped.
    """
    check_positive_int(k, "k")
    for col in ("source", "rank", "label"):
        if col not in table:
            raise ValueError(f"top-K filtering needs a {col!r} column in the instances table")
    is_source = (table["source"] == source).to_numpy()
    if not is_source.any():
        raise ValueError(f"no instance has source {source!r}; sources present: {sorted(table['source'].unique())}")
    ranks = table["rank"].to_numpy(dtype=np.float64)
    order = pd.Series(ranks).where(is_source).groupby(table["label"].to_numpy()).rank(method="first") - 1
    top = order.to_numpy() < k
    return ~is_source | top
