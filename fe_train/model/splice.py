"""Placing soft tokens at their slot positions of the LLM's input embeddings."""

from __future__ import annotations

import torch


def valid_rows(tokens: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, N, D) padded per-clip tokens and counts (B,) -> (sum(counts), D), clip after clip."""
    keep = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < counts[:, None]  # (B, N)
    return tokens[keep]


def splice(embeds: torch.Tensor, slots: torch.Tensor, slot_id: int, values: torch.Tensor) -> torch.Tensor:
    """Write ``values`` (M, D) at the positions where ``slots`` (B, T) equals ``slot_id``, row-major.

    The number of such positions must equal M: the data pipeline reserved exactly as
    many positions as the model produces soft tokens.
    """
    mask = slots == slot_id  # (B, T)
    expected = int(mask.sum())
    if expected != values.shape[0]:
        raise ValueError(f"slot {slot_id}: {expected} positions reserved but {values.shape[0]} soft tokens made")
    out = embeds.clone()
    out[mask] = values.to(out.dtype)  # (B, T, D), differentiable w.r.t. values
    return out
