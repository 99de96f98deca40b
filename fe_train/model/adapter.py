"""The semantic adapter: stacked encoder frames -> LLM-width soft tokens."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from fe_train.data.speech_input import speech_token_count


class StackFFNAdapter(nn.Module):
    """Stack k consecutive frames, then Linear(k*D_enc, H) -> ReLU -> Linear(H, D_llm)."""

    def __init__(self, encoder_dim: int, llm_dim: int, stack_frames: int, hidden_dim: int):
        super().__init__()
        self.stack_frames = stack_frames
        self.ffn = nn.Sequential(
            nn.Linear(encoder_dim * stack_frames, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, llm_dim),
        )

    def forward(self, states: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """states (B, T, D_enc), real frames (B,) -> tokens (B, N, D_llm) and counts (B,)."""
        counts = speech_token_count(frames, self.stack_frames)
        n_tokens = int(counts.max())
        usable = states[:, : n_tokens * self.stack_frames]  # (B, N*k, D_enc)
        stacked = rearrange(usable, "b (n k) d -> b n (k d)", k=self.stack_frames)  # (B, N, k*D_enc)
        return self.ffn(stacked.to(self.ffn[0].weight.dtype)), counts
