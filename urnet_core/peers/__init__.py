"""Peer methods run in the same harness as URNet.

- :mod:`urnet_core.peers.filters`: confident-learning filtering and the top-K source trick;
- :mod:`urnet_core.peers.elr`: ELR, early-learning regularisation (Liu et al. 2020);
- :mod:`urnet_core.peers.coteaching`: Co-teaching (Han et al. 2018);
- :mod:`urnet_core.peers.dividemix`: DivideMix (Li et al. 2020);
- :mod:`urnet_core.peers.ensemble`: the two-network model (:class:`SoftmaxEnsemble`).

The three training methods are :class:`~urnet_core.training.methods.Method` objects trained by
:func:`~urnet_core.training.loop.train` (``train(dataset, ..., method=ELR())``), with its
:class:`~urnet_core.training.loop.TrainConfig`, seeds, optimizer and LR schedule, AMP,
checkpoint/resume and DDP; the result's model works with
:func:`~urnet_core.training.inference.evaluate` (two-network methods: a :class:`SoftmaxEnsemble`
averaging both networks' softmax outputs). :func:`make_method` builds one by name.
"""

from __future__ import annotations

from typing import Any

from urnet_core.peers.coteaching import CoTeaching, coteaching_keep_rate, coteaching_loss
from urnet_core.peers.dividemix import DivideMix, clean_probability
from urnet_core.peers.elr import ELR, ELRTargets, elr_loss
from urnet_core.peers.ensemble import SoftmaxEnsemble
from urnet_core.training.methods import Method

#: The peer methods by the name a study row gives (``MethodSpec.trainer``).
METHODS: dict[str, type[Method]] = {"elr": ELR, "coteaching": CoTeaching, "dividemix": DivideMix}


def make_method(name: str, **options: Any) -> Method:
    """The peer method ``name`` (a key of :data:`METHODS`) with its hyperparameters ``options``."""
    if name not in METHODS:
        raise ValueError(f"unknown peer method {name!r}; known: {sorted(METHODS)}")
    try:
        return METHODS[name](**options)
    except TypeError as exc:  # an option the method does not have
        raise ValueError(f"{name}: {exc}") from None


__all__ = [
    "METHODS",
    "CoTeaching",
    "DivideMix",
    "ELR",
    "ELRTargets",
    "SoftmaxEnsemble",
    "clean_probability",
    "coteaching_keep_rate",
    "coteaching_loss",
    "elr_loss",
    "make_method",
]
