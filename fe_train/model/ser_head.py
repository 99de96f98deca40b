"""The auxiliary SER classifier on the emotion vector."""

from __future__ import annotations

import torch
from torch import nn


class SERHead(nn.Module):
    """The auxiliary SER classifier on the emotion vector: Linear(D_llm, classes), no bias."""

    def __init__(self, llm_dim: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(llm_dim, classes, bias=False)

    def forward(self, emotion: torch.Tensor) -> torch.Tensor:
        return self.linear(emotion.to(self.linear.weight.dtype))  # (B, classes)
