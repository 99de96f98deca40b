"""The speech decoder's input at a reply position: the LLM state fused with the reply token.

rep = proj(h) maps the LLM's last hidden state into the decoder's width (a linear
map or a two-layer FFN, chosen in ``fe_train.model.registry.FUSION_PROJECTIONS``);
emb is the decoder's own embedding of the reply token; a gate
g = sigmoid(Linear(2 D_dec, D_dec)([rep; emb])) mixes them: x = g * rep + (1 - g) * emb.
Reply token t is paired with the state at t - 1, the state from which the LLM
predicted t (``paired_states``).
"""

from __future__ import annotations

import torch
from torch import nn


def linear_projection(llm_dim: int, decoder_dim: int, hidden_dim: int) -> nn.Module:
    return nn.Linear(llm_dim, decoder_dim)


def ffn_projection(llm_dim: int, decoder_dim: int, hidden_dim: int) -> nn.Module:
    hidden = hidden_dim or 2 * llm_dim
    return nn.Sequential(nn.Linear(llm_dim, hidden), nn.ReLU(), nn.Linear(hidden, decoder_dim))


class GatedFusion(nn.Module):
    def __init__(self, projection: nn.Module, decoder_dim: int):
        super().__init__()
        self.projection = projection
        self.gate = nn.Linear(2 * decoder_dim, decoder_dim)

    def forward(self, states: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """LLM states (..., D_llm) and token embeddings (..., D_dec) -> fused inputs (..., D_dec)."""
        rep = self.projection(states.to(self.gate.weight.dtype))  # (..., D_dec)
        gate = torch.sigmoid(self.gate(torch.cat([rep, embeds.to(rep.dtype)], dim=-1)))  # (..., D_dec)
        return gate * rep + (1 - gate) * embeds


def paired_states(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """LLM states (B, T, D) at ``positions`` (B, S) -> (B, S, D); negative positions (no pair) read position 0."""
    index = positions.clamp(min=0)[..., None].expand(-1, -1, states.shape[-1])  # (B, S, D)
    return states.gather(1, index)
