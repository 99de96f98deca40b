"""The emotion extractor: the outputs of every encoder block -> ONE soft token in the LLM's embedding space.

Three parts, each chosen when the extractor is built (``fe_train.model.registry``):

(a) a layer mix over the L blocks: the layer gate (a small MLP scores each block from its
    time-mean, softmax over blocks, weighted sum of blocks) or, as the ablation, the last block
    alone; then LayerNorm;
(b) a pool over time: attention with one learnable query (4 heads) or, as the ablation, the mean;
(c) an FFN into the LLM width.

The time-means of the gate and the pool see either only the frames of real audio
(``mask_padding=True``) or the whole encoder window with Whisper's padding, as the released
FreezeEmpath inference code does (``False``): weights trained one way are meant to be used the
same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def frame_mask(frames: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(B,) real frame counts -> (B, T) True at frames of real audio."""
    return torch.arange(n_frames, device=frames.device)[None, :] < frames[:, None]


def time_mean(states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the time axis (-2) of (B, ..., T, D), over the frames in ``mask`` (B, T) when given."""
    if mask is None:
        return states.mean(dim=-2)
    weights = mask.to(states.dtype)  # (B, T)
    weights = weights.view(weights.shape[0], *([1] * (states.dim() - 3)), weights.shape[1], 1)  # (B, 1.., T, 1)
    return (states * weights).sum(dim=-2) / weights.sum(dim=-2).clamp(min=1.0)


class LayerGate(nn.Module):
    """Softmax over blocks of an MLP score of each block's time-mean; returns the weighted sum of blocks."""

    def __init__(self, encoder_dim: int, hidden_dim: int = 128):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(encoder_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))

    def weights(self, blocks: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, T, D) -> (B, L) block weights summing to 1."""
        return self.score(time_mean(blocks, mask)).squeeze(-1).softmax(dim=1)  # (B, L)

    def forward(self, blocks: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        weights = self.weights(blocks, mask)
        return torch.einsum("bl,bltd->btd", weights, blocks)  # (B, T, D)


class LastBlock(nn.Module):
    """Ablation of the gate: the last block's output only."""

    def forward(self, blocks: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return blocks[:, -1]  # (B, T, D)


class AttentionPool(nn.Module):
    """One learnable query attends over time with ``heads`` heads (q/k/v/out projections, as multi-head attention).

    Written with plain ``nn.Linear`` children so that ZeRO-3 gathers each weight in that
    child's own forward (``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling it).
    """

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention pooling: width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D), mask (B, T) or None -> (B, D)."""
        query = self.q_proj(self.query.to(states.dtype)).expand(states.shape[0], 1, -1)  # (B, 1, D)
        q = rearrange(query, "b n (h d) -> b h n d", h=self.heads)  # (B, H, 1, D/H)
        k = rearrange(self.k_proj(states), "b t (h d) -> b h t d", h=self.heads)  # (B, H, T, D/H)
        v = rearrange(self.v_proj(states), "b t (h d) -> b h t d", h=self.heads)  # (B, H, T, D/H)
        allowed = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T)
        pooled = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, 1, D/H)
        return self.out_proj(rearrange(pooled, "b h n d -> b n (h d)"))[:, 0]  # (B, D)


class MeanPool(nn.Module):
    """Ablation of attention pooling: the mean over time."""

    def forward(self, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return time_mean(states, mask)  # (B, D)


class EmotionExtractor(nn.Module):
    def __init__(self, mix: nn.Module, pool: nn.Module, encoder_dim: int, llm_dim: int, hidden_dim: int = 2048,
                 mask_padding: bool = False):
        super().__init__()
        self.mix = mix
        self.norm = nn.LayerNorm(encoder_dim)
        self.pool = pool
        self.ffn = nn.Sequential(nn.Linear(encoder_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, llm_dim))
        self.mask_padding = mask_padding

    def forward(self, blocks: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Block outputs (B, L, T, D_enc) and real encoder frames (B,) -> one vector per clip (B, D_llm)."""
        blocks = blocks.to(self.norm.weight.dtype)
        mask = frame_mask(frames, blocks.shape[2]) if self.mask_padding else None  # (B, T) or None
        mixed = self.norm(self.mix(blocks, mask))  # (B, T, D_enc)
        return self.ffn(self.pool(mixed, mask))  # (B, D_llm)

