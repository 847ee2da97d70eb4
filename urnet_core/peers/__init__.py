"""Peer methods run in the same harness as URNet.

- :mod:`urnet_core.peers.filters`: confident-learning filtering and the top-K source trick;
- :mod:`urnet_core.peers.elr`: ELR, early-learning regularisation (Liu et al. 2020);
- :mod:`urnet_core.peers.coteaching`: Co-teaching (Han et al. 2018);
- :mod:`urnet_core.peers.dividemix`: DivideMix (Li et al. 2020).

The three training methods take the study's :class:`~urnet_core.training.loop.TrainConfig`
and return a :class:`~urnet_core.training.loop.TrainResult` whose model works with
:func:`~urnet_core.training.loop.evaluate` (two-network methods: a
:class:`SoftmaxEnsemble` averaging both networks' softmax outputs).
"""

from urnet_core.peers._common import SoftmaxEnsemble
from urnet_core.peers.coteaching import coteaching_keep_rate, coteaching_loss, train_coteaching
from urnet_core.peers.dividemix import clean_probability, train_dividemix
from urnet_core.peers.elr import ELRTargets, elr_loss, train_elr

__all__ = [
    "ELRTargets",
    "SoftmaxEnsemble",
    "clean_probability",
    "coteaching_keep_rate",
    "coteaching_loss",
    "elr_loss",
    "train_coteaching",
    "train_dividemix",
    "train_elr",
]
