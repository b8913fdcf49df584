"""The position-wise MLP shared by the MIPT and Transformer blocks: ``W_2 GELU(W_1 x)``."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FeedForward"]


class FeedForward(nn.Module):
    """``W_2 GELU(W_1 x)`` with hidden width ``mult · d``."""

    def __init__(self, d_model: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, mult * d_model)
        self.fc2 = nn.Linear(mult * d_model, d_model)
        self.act = nn.GELU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))
