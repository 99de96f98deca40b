"""Next-token cross-entropy of a causal LM on labelled positions only, shared by the LLM and the speech decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fe_train.data.prompt import IGNORE


def next_token_loss(lm: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor, states: bool = False) -> dict[str, torch.Tensor]:
    """Mean cross-entropy over labelled positions of ``labels`` (B, S), and its sum (``loss_sum``); logits only
    where a label follows. With ``states`` also ``states``: every layer's hidden states (B, S, D), input
    embeddings left out."""
    targets = labels[:, 1:]  # (B, S-1): the token each position predicts
    keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)  # columns with any label
    out = lm(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False,
             output_hidden_states=states)
    logits = out.logits.float()  # (B, K, V)
    kept = targets[:, keep]  # (B, K)
    n_tokens = (kept != IGNORE).sum()
    loss_sum = F.cross_entropy(logits.flatten(0, 1), kept.flatten(), ignore_index=IGNORE, reduction="sum")
    correct = ((logits.argmax(-1) == kept) & (kept != IGNORE)).sum()
    # An all-padding micro-batch has no label, yet its zero loss must reach every trainable
    # weight so that ZeRO-3's gradient hooks fire on every rank.
    loss = loss_sum / n_tokens.clamp(min=1)
    result = {"loss": loss, "loss_sum": loss_sum, "n_tokens": n_tokens.detach(), "n_correct": correct.detach()}
    if states:
        result["states"] = out.hidden_states[1:]
    return result
