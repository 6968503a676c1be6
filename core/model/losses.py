"""Loss functions for the single-logit classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class FocalLoss(nn.Module):
    """Binary focal loss on logits (Lin et al. 2017) with an optional positive-class weight."""

    def __init__(self, gamma: float = 2.0, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else torch.tensor(1.0))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the mean focal loss."""
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = torch.exp(-bce)
        weight = torch.where(targets > 0.5, self.pos_weight, torch.ones_like(targets))
        return (weight * (1 - p_t) ** self.gamma * bce).mean()


def build_loss(kind: str, pos_weight: float | None, gamma: float = 2.0) -> nn.Module:
    """Return BCE-with-logits (``kind="bce"``) or focal loss, weighted for class imbalance."""
    weight = torch.tensor(pos_weight) if pos_weight is not None else None
    if kind == "focal":
        return FocalLoss(gamma=gamma, pos_weight=weight)
    return nn.BCEWithLogitsLoss(pos_weight=weight)
