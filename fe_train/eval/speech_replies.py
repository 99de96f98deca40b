"""The frozen LLM's replies to prompts whose slots hold soft tokens: speech -> adapter -> LLM ``generate``.

A collated batch is right-padded (prompt, then padding, or prompt, reply, padding
for training batches). Its input embeddings are built by the model with every slot
filled (``FreezeEmpath.embed``), cut at the end of each row's prompt, moved to the
right end of the row (left padding, which ``generate`` continues from) and passed
as ``inputs_embeds``. Under ZeRO-3 over several ranks, ``synced`` keeps every rank
stepping until all are done; the epoch plan gives every rank the same number of
batches, so the ranks make the same ``generate`` calls.
"""

from __future__ import annotations

import torch

from fe_train.data.prompt import IGNORE
from fe_train.generate.replies import Reply, Sampling, cut_replies, generation_config


def prompt_lengths(batch: dict) -> torch.Tensor:
    """(B,) positions before each row's first labelled one (the prompt); a row without labels is all prompt."""
    labelled = batch["labels"] != IGNORE  # (B, T)
    first = labelled.int().argmax(dim=1)
    return torch.where(labelled.any(dim=1), first, batch["attention_mask"].sum(dim=1))


def left_align(embeds: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's first ``lengths`` positions moved to the right end: (B, T', D) and the attention mask (B, T')."""
    width = int(lengths.max())
    source = torch.arange(width, device=embeds.device)[None, :] - (width - lengths)[:, None]  # (B, T'), < 0 is padding
    valid = source >= 0
    index = source.clamp(min=0)[:, :, None].expand(-1, -1, embeds.shape[-1])  # (B, T', D)
    aligned = embeds.gather(1, index) * valid[:, :, None].to(embeds.dtype)  # (B, T', D)
    return aligned, valid.long()


@torch.no_grad()
def generate_from_embeds(llm, embeds: torch.Tensor, attention_mask: torch.Tensor, sampling: Sampling,
                         eos: list[int], pad_id: int, synced: bool = False) -> list[Reply]:
    """Replies to left-padded prompt embeddings (B, T, D); with ``inputs_embeds`` only new tokens come back."""
    new = llm.generate(inputs_embeds=embeds, attention_mask=attention_mask,
                       generation_config=generation_config(sampling, eos, pad_id), synced_gpus=synced)
    return cut_replies(new.tolist(), eos)


@torch.no_grad()
def reply_to_batch(model, batch: dict, sampling: Sampling, eos: list[int], pad_id: int,
                   synced: bool = False, embeds: torch.Tensor | None = None) -> list[Reply]:
    """The LLM's reply to every row's prompt (a ``FreezeEmpath`` model; padding rows included).

    ``embeds``: the batch's input embeddings (B, T, D) when the caller already has them, so that the
    encoder does not run again; ``model.embed(batch)`` otherwise.
    """
    embeds = model.embed(batch) if embeds is None else embeds
    aligned, mask = left_align(embeds, prompt_lengths(batch))
    return generate_from_embeds(model.llm, aligned, mask, sampling, eos, pad_id, synced)
