"""The FreezeEmpath model: frozen encoder -> adapter -> soft tokens in a frozen LLM.

Which components exist is decided when the model is built (by the stage); the
forward pass only asks which inputs the batch carries, and those are the same on
every rank, so every rank calls the same (ZeRO-3 partitioned) modules in the same
order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fe_train.data.prompt import IGNORE, SLOTS
from fe_train.model.speech_encoder import encoder_frames
from fe_train.model.splice import splice, valid_rows

SPEECH_SLOT = SLOTS["<speech>"]


class FreezeEmpath(nn.Module):
    def __init__(self, llm: nn.Module, encoder: nn.Module | None = None, adapter: nn.Module | None = None):
        super().__init__()
        self.llm = llm
        self.encoder = encoder
        self.adapter = adapter

    def train(self, mode: bool = True):
        """Trainable parts follow ``mode``; frozen parts stay in eval mode (no dropout).

        An LLM with activation checkpointing must be in train mode for transformers to
        checkpoint; it has no weight to update either way.
        """
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        self.llm.train(mode and getattr(self.llm, "is_activation_checkpointing", False))
        return self

    def embed(self, batch: dict) -> torch.Tensor:
        """Input embeddings (B, T, D_llm) with every slot filled."""
        embeds = self.llm.get_input_embeddings()(batch["input_ids"])  # (B, T, D)
        if "mel" in batch:
            states, _ = self.encoder(batch["mel"], batch["mel_pad_value"])  # (B, T_enc, D_enc)
            tokens, counts = self.adapter(states, encoder_frames(batch["audio_frames"]))  # (B, N, D)
            embeds = splice(embeds, batch["slots"], SPEECH_SLOT, valid_rows(tokens, counts))
        return embeds

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        embeds = self.embed(batch)
        return self.reply_loss(embeds, batch["attention_mask"], batch["labels"])

    def reply_loss(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy on labelled positions; logits only where a label follows."""
        targets = labels[:, 1:]  # (B, T-1): the token each position predicts
        keep = (targets != IGNORE).any(dim=0).nonzero().squeeze(1)  # columns with any label
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False)
        logits = out.logits.float()  # (B, K, V)
        kept = targets[:, keep]  # (B, K)
        n_tokens = (kept != IGNORE).sum()
        loss_sum = F.cross_entropy(logits.flatten(0, 1), kept.flatten(), ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == kept) & (kept != IGNORE)).sum()
        # An all-padding micro-batch has no label, yet its loss must reach every trainable
        # weight so that ZeRO-3's gradient hooks fire on every rank.
        loss = loss_sum / n_tokens.clamp(min=1)
        return {"loss": loss, "n_tokens": n_tokens.detach(), "n_correct": correct.detach()}
