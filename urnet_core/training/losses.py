"""Training losses.

Notation: B instances in a batch, C classes.

- :func:`weighted_soft_cross_entropy` is URNet's loss (eq. 10) with the per-instance weight
  ``w_i`` and the soft target ``t_ij`` already combined by the reweighting stages:
  ``L = (1/B) * sum_i w_i * sum_j -t_ij log p_ij``. The class, cluster and instance weights of
  eq. 10 (wC_j, wG_ij, wI_i) enter through ``w_i`` (the cluster weight of the observed class
  only, since t is one-hot apart from the label weight), and ``t = beta*y + (1-beta)*yhat`` is
  the label weight of section 4.5.
- :func:`weighted_label_pair_cross_entropy` is the same loss for eq. 10's two-hot targets given
  in compact form (observed label, predicted class, beta): ``O(B)`` beyond the log-softmax, no
  dense ``(B, C)`` target (the WebVision-scale path, and the cheaper one at C=5000).
- :func:`generalized_cross_entropy` is the GCE loss of Zhang & Sabuncu (2018), a
  noise-robust peer baseline.

Both divide by the batch size B, not by ``sum_i w_i``: the weights are not renormalised per
batch, so their scale acts like a learning-rate factor. The reweighting stages keep the mean
weight near 1, which keeps the learning rate of the unweighted baseline meaningful.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from urnet_core.utils.validation import check_fraction, check_option

REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_instance: torch.Tensor, reduction: str) -> torch.Tensor:
    check_option(reduction, "reduction", REDUCTIONS)
    if reduction == "none":
        return per_instance
    if reduction == "sum":
        return per_instance.sum()
    return per_instance.sum() / max(per_instance.shape[0], 1)


def weighted_soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted cross entropy against soft targets (eq. 10).

    Parameters
    ----------
    logits : Tensor (B, C)
    targets : Tensor (B, C)
        Soft targets, rows summing to 1 (one-hot for plain cross entropy).
    weights : Tensor (B,), optional
        Per-instance weights w_i >= 0; all ones when omitted.
    reduction : {'mean', 'sum', 'none'}, default='mean'
        ``'mean'`` is ``sum_i w_i * CE_i / B`` (divided by B, not by the weight sum).

    Returns
    -------
    Tensor
        Scalar, or (B,) for ``reduction='none'``.
    """
    if logits.ndim != 2 or targets.shape != logits.shape:
        raise ValueError(f"logits and targets must both be (B, C); got {tuple(logits.shape)} and {tuple(targets.shape)}")
    per = -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1)
    if weights is not None:
        if weights.shape != per.shape:
            raise ValueError(f"weights must be (B,) = {tuple(per.shape)}, got {tuple(weights.shape)}")
        per = per * weights
    return _reduce(per, reduction)


def weighted_label_pair_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    predicted: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    beta: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted cross entropy against ``beta * onehot(y) + (1 - beta) * onehot(yhat)`` (eq. 10).

    Equal to :func:`weighted_soft_cross_entropy` with the dense targets of
    :func:`~urnet_core.data.targets.expand_label_targets` (up to float rounding), but
    gathers two log-probabilities per instance instead of multiplying a ``(B, C)`` target.

    Parameters
    ----------
    logits : Tensor (B, C)
    labels : Tensor (B,) of int
        Observed labels ``y``.
    predicted : Tensor (B,) of int, optional
        Baseline predicted classes ``yhat``; omitted (or ``beta=1``): plain weighted cross entropy.
    weights : Tensor (B,), optional
    beta : float in [0, 1], default=1.0
    reduction : {'mean', 'sum', 'none'}
    """
    beta = check_fraction(beta, "beta")
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, C) and labels (B,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = F.log_softmax(logits.float(), dim=1)
    if predicted is not None and beta < 1.0:
        if predicted.shape != labels.shape:
            raise ValueError(f"predicted must be (B,) = {tuple(labels.shape)}, got {tuple(predicted.shape)}")
        # one gather of both columns: a single (B, C) scatter in the backward pass
        picked = -log_p.gather(1, torch.stack([labels.long(), predicted.long()], 1))
        per = beta * picked[:, 0] + (1.0 - beta) * picked[:, 1]  # = picked[:, 0] (to rounding) where yhat == y
    else:
        per = -log_p.gather(1, labels[:, None].long())[:, 0]
    if weights is not None:
        if weights.shape != per.shape:
            raise ValueError(f"weights must be (B,) = {tuple(per.shape)}, got {tuple(weights.shape)}")
        per = per * weights
    return _reduce(per, reduction)


def generalized_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    q: float = 0.7,
    weights: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """Generalized cross entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu, 2018).

    q -> 0 recovers cross entropy; q = 1 is the (noise-robust) mean absolute error.

    Parameters
    ----------
    logits : Tensor (B, C)
    labels : Tensor (B,) int64
    q : float in (0, 1], default=0.7
    weights : Tensor (B,), optional
        Per-instance weights; the mean divides by B as in :func:`weighted_soft_cross_entropy`.
    reduction : {'mean', 'sum', 'none'}, default='mean'
    """
    q = check_fraction(q, "q", low=0.0, high=1.0)
    if q == 0.0:
        raise ValueError("q must be > 0 (q -> 0 is plain cross entropy; use loss='ce')")
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (B, C) and labels (B,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    # exp(q * log p) is p^q computed stably for tiny p.
    per = (1.0 - torch.exp(q * log_p)) / q
    if weights is not None:
        if weights.shape != per.shape:
            raise ValueError(f"weights must be (B,) = {tuple(per.shape)}, got {tuple(weights.shape)}")
        per = per * weights
    return _reduce(per, reduction)
