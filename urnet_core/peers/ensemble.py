"""The model of the two-network peers (Co-teaching, DivideMix): two backbones averaged by softmax.

Both methods report the average of their two networks' softmax outputs at test time (DivideMix
as its paper does; Co-teaching's paper reports one network, ``model.members[0]``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from urnet_core.models.backbones import Backbone


class _PairEncoder(nn.Module):
    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.first.encoder(x), self.second.encoder(x)], dim=1)


class _PairHead(nn.Module):
    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        # Not registered as submodules: the encoder owns the two networks (no duplicate parameters).
        self._nets = (first, second)
        self._split = first.feature_dim

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        first, second = self._nets
        a = torch.log_softmax(first.head(feats[:, : self._split]).float(), dim=1)
        b = torch.log_softmax(second.head(feats[:, self._split :]).float(), dim=1)
        # log((p1 + p2) / 2): its softmax is exactly the mean of the two softmax outputs.
        return torch.logsumexp(torch.stack([a, b]), dim=0) - math.log(2.0)


class SoftmaxEnsemble(nn.Module):
    """Two backbones whose softmax outputs are averaged, with a :class:`Backbone`'s interface.

    ``encoder(x)`` concatenates both networks' features (``feature_dim`` = the sum) and
    ``head(features)`` returns ``log((softmax_1 + softmax_2) / 2)``, so ``softmax(forward(x))``
    is the average prediction, which is what :func:`~urnet_core.training.inference.evaluate` and
    :func:`~urnet_core.training.inference.predict` compute (they call ``encoder`` then ``head``).
    The networks themselves are ``members``.
    """

    def __init__(self, first: Backbone, second: Backbone) -> None:
        super().__init__()
        if first.num_classes != second.num_classes:
            raise ValueError("both networks must have the same number of classes")
        self.encoder = _PairEncoder(first, second)
        self.head = _PairHead(first, second)
        self.num_classes = first.num_classes
        self.feature_dim = first.feature_dim + second.feature_dim
        self.name = f"ensemble({first.name},{second.name})"

    @property
    def members(self) -> tuple[Backbone, Backbone]:
        return self.encoder.first, self.encoder.second

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.encoder(x)
        return feats, self.head(feats)
