"""Bag attention branch (paper section 4.4) and the sampler that forms same-class bags.

A *bag* is ``Nb`` instances (default 3) that share one observed label. The branch scores each
instance's feature with two FC layers (FC2 -> ReLU -> FC3 -> one saliency score), takes the
softmax of the scores over the bag, and classifies the saliency-weighted sum of the features
with FC4. Its cross entropy is added to the main loss; since the bag features come from the
backbone's encoder on the same batch, the bag loss trains the backbone as well. The branch
lets representative instances of a class dominate a bag feature (challenge C4).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Sampler

from urnet_core.utils.validation import as_labels, check_positive_int


class BagAttentionBranch(nn.Module):
    """Attention pooling of a bag of instance features, then a linear classifier.

    Parameters
    ----------
    feature_dim : int
        Instance feature size D (the backbone's ``feature_dim``).
    num_classes : int
        Number of classes C.
    hidden : int, default=128
        Width of FC2.

    Forward
    -------
    bag_features : Tensor (B, Nb, D)
        Features of B bags of Nb instances each.

    Returns ``(logits (B, C), saliency (B, Nb))``; each saliency row sums to 1.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        check_positive_int(feature_dim, "feature_dim")
        check_positive_int(num_classes, "num_classes")
        check_positive_int(hidden, "hidden")
        self.fc2 = nn.Linear(feature_dim, hidden)
        self.fc3 = nn.Linear(hidden, 1)
        self.fc4 = nn.Linear(feature_dim, num_classes)

    def forward(self, bag_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bag_features.ndim != 3:
            raise ValueError(f"bag_features must be (B, Nb, D), got shape {tuple(bag_features.shape)}")
        scores = self.fc3(torch.relu(self.fc2(bag_features))).squeeze(-1)  # (B, Nb)
        saliency = torch.softmax(scores, dim=1)
        bag_feature = (saliency.unsqueeze(-1) * bag_features).sum(dim=1)  # (B, D)
        return self.fc4(bag_feature), saliency


class BagBatchSampler(Sampler[list[int]]):
    """Yield index batches made of same-label bags, for a ``DataLoader(batch_sampler=...)``.

    Each epoch, the indices of every class are shuffled and cut into bags of ``bag_size``;
    the bags of all classes are shuffled together and grouped ``bags_per_batch`` at a time.
    Within a batch, positions ``[k*bag_size, (k+1)*bag_size)`` form bag k and share a label.

    Every instance appears exactly once per epoch, except that a class whose count is not a
    multiple of ``bag_size`` has its last bag topped up with instances drawn again (without
    replacement where the class allows it) from the same class; a class with a single instance
    becomes a bag of that instance repeated. So an epoch holds ``sum_j ceil(N_j / bag_size)``
    bags and those few duplicates see one extra gradient step.

    Parameters
    ----------
    labels : array-like (n,)
        Observed label of each dataset index.
    bag_size : int, default=3
        Instances per bag (the paper's Nb = 3).
    bags_per_batch : int
        Bags per yielded batch, so a batch holds ``bags_per_batch * bag_size`` indices.
    seed : int
        Base seed; the order of epoch e depends only on ``(seed, e)``.
    drop_last : bool, default=False
        Drop the last batch when it has fewer than ``bags_per_batch`` bags.
    """

    def __init__(
        self,
        labels: np.ndarray,
        *,
        bag_size: int = 3,
        bags_per_batch: int,
        seed: int,
        drop_last: bool = False,
    ) -> None:
        self.labels = as_labels(labels)
        if self.labels.size == 0:
            raise ValueError("labels is empty; a bag sampler needs at least one instance")
        self.bag_size = check_positive_int(bag_size, "bag_size")
        self.bags_per_batch = check_positive_int(bags_per_batch, "bags_per_batch")
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        order = np.argsort(self.labels, kind="stable")
        classes, starts = np.unique(self.labels[order], return_index=True)
        self._class_indices = np.split(order, starts[1:])
        self.num_bags = int(sum(-(-len(idx) // self.bag_size) for idx in self._class_indices))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def bags(self) -> np.ndarray:
        """Return this epoch's bags as an int64 array (num_bags, bag_size), in yield order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        bags = []
        for idx in self._class_indices:
            perm = rng.permutation(idx)
            short = (-len(perm)) % self.bag_size
            if short:
                # Top up from the class, preferring instances not already in the last bag.
                last = perm[len(perm) - (self.bag_size - short):]
                pool = np.setdiff1d(idx, last)
                if pool.size >= short:
                    extra = rng.choice(pool, size=short, replace=False)
                else:
                    extra = rng.choice(idx, size=short, replace=True)
                perm = np.concatenate([perm, extra])
            bags.append(perm.reshape(-1, self.bag_size))
        all_bags = np.concatenate(bags).astype(np.int64)
        return all_bags[rng.permutation(len(all_bags))]

    def __iter__(self) -> Iterator[list[int]]:
        bags = self.bags()
        for start in range(0, len(bags), self.bags_per_batch):
            chunk = bags[start : start + self.bags_per_batch]
            if self.drop_last and len(chunk) < self.bags_per_batch:
                return
            yield chunk.reshape(-1).tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_bags // self.bags_per_batch
        return -(-self.num_bags // self.bags_per_batch)
