"""Confidence model of instance reweighting (paper section 4.3, eq. 8-9).

It scores how well an image matches the text of a label: image features and label text
vectors are each mapped by two fully connected layers into a shared space, and the score is
the cosine of the two embeddings.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConfidenceModel(nn.Module):
    """Two-tower image/text matcher.

    Parameters
    ----------
    feature_dim : int
        Size of the baseline's penultimate features.
    text_dim : int, default=300
        Size of the label text vectors.
    hidden : int, default=256
        Width of the hidden layer of each tower.
    out_dim : int, default=128
        Size of the shared embedding space (``V_I`` and ``V_T``).
    """

    def __init__(self, feature_dim: int, text_dim: int = 300, hidden: int = 256, out_dim: int = 128) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.text = nn.Sequential(nn.Linear(text_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def embed_image(self, features: torch.Tensor) -> torch.Tensor:
        """``V_I``, shape (B, out_dim)."""
        return self.image(features)

    def embed_text(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """``V_T``, shape (B, out_dim)."""
        return self.text(text_vectors)

    def forward(self, features: torch.Tensor, text_vectors: torch.Tensor) -> torch.Tensor:
        """Cosine of ``V_I`` and ``V_T`` row by row, shape (B,), in [-1, 1]."""
        return F.cosine_similarity(self.embed_image(features), self.embed_text(text_vectors), dim=1)
