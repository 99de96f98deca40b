"""Streaming speech generation: every R reply tokens, the decoder reads them and writes W units.

The LLM's reply arrives as (state, token) pairs, the state being the one that
predicted the token. ``UnitWriter`` keeps the decoder's KV cache and, whenever R
pairs are pending, appends their fused inputs and writes W units greedily (each
written unit is fed back). When the reply ends it appends the pending pairs and
``<sep>`` and writes until eos. This is the schedule the training sequences of
``fe_train.data.interleave`` follow, so a decoder that predicts its training
units under teacher forcing writes the same units here. Units are chosen among
unit tokens only, and eos too once the reply has ended. Batch size 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from fe_train.model.fusion import GatedFusion
from fe_train.model.speech_decoder import SpeechDecoder


@dataclass
class StreamedSpeech:
    reply_ids: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    """Unit values in [0, N), without eos."""
    writes: list[tuple[int, int]] = field(default_factory=list)
    """After each write: (reply tokens read so far, units written so far)."""
    ended: bool = False
    """The decoder wrote eos (False: it stopped at ``max_new_units``)."""


class UnitWriter:
    """``temperature`` 0 writes the most likely unit; above 0 samples (the paper samples at 1.0) with ``generator``,
    among the ``top_k`` most likely (0: among all)."""

    def __init__(self, decoder: SpeechDecoder, fusion: GatedFusion, read: int, write: int, max_new_units: int,
                 temperature: float = 0.0, generator: torch.Generator | None = None, top_k: int = 0):
        self.decoder, self.fusion = decoder, fusion
        self.read, self.write, self.max_new_units = read, write, max_new_units
        self.temperature, self.generator, self.top_k = temperature, generator, top_k
        vocab = decoder.vocab
        unit_ids = torch.arange(vocab.unit_offset, vocab.size)
        self.streaming_ids = unit_ids  # before the reply ends no eos can come (none in training)
        self.final_ids = torch.cat([unit_ids, torch.tensor([vocab.eos_id])])
        self.cache = None
        self.logits: torch.Tensor | None = None
        self.pending: list[torch.Tensor] = []
        self.out = StreamedSpeech()

    @property
    def device(self) -> torch.device:
        return self.fusion.gate.weight.device

    @torch.no_grad()
    def feed(self, state: torch.Tensor, token: int) -> list[int]:
        """One reply token and the LLM state (D_llm,) that predicted it; the units written now (maybe none)."""
        token_ids = torch.tensor([[token]], device=self.device)
        fused = self.fusion(state.view(1, 1, -1), self.decoder.embed(token_ids))  # (1, 1, D_dec)
        self.pending.append(fused)
        self.out.reply_ids.append(token)
        if len(self.pending) < self.read:
            return []
        self._append(torch.cat(self.pending, dim=1))
        self.pending = []
        return self._write(self.write, self.streaming_ids)

    @torch.no_grad()
    def finish(self) -> StreamedSpeech:
        """The reply has ended: read what is pending and ``<sep>``, write until eos."""
        sep = self.decoder.embed(torch.tensor([[self.decoder.vocab.sep_id]], device=self.device))  # (1, 1, D_dec)
        self._append(torch.cat([*self.pending, sep], dim=1))
        self.pending = []
        self._write(self.max_new_units, self.final_ids)
        return self.out

    def _append(self, embeds: torch.Tensor) -> None:
        self.logits, self.cache = self.decoder.step(embeds, self.cache)

    def _write(self, limit: int, allowed: torch.Tensor) -> list[int]:
        allowed = allowed.to(self.device)
        written: list[int] = []
        if self.out.ended:
            return written
        for _ in range(limit):
            token = int(allowed[self._choose(self.logits[allowed])])
            if token == self.decoder.vocab.eos_id:
                self.out.ended = True
                break
            written.append(token)
            self._append(self.decoder.embed(torch.tensor([[token]], device=self.device)))
        units = self.decoder.vocab.units(written)
        self.out.units += units
        self.out.writes.append((len(self.out.reply_ids), len(self.out.units)))
        return units


    def _choose(self, logits: torch.Tensor) -> int:
        if self.temperature <= 0:
            return int(logits.argmax())
        if 0 < self.top_k < logits.numel():
            logits = logits.masked_fill(logits < logits.topk(self.top_k).values[-1], float("-inf"))
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        return int(torch.multinomial(probs.cpu(), 1, generator=self.generator))


def stream(writer: UnitWriter, pairs: Iterator[tuple[torch.Tensor, int]]) -> StreamedSpeech:
    """Feed every (state, token) pair of a reply, then finish."""
    for state, token in pairs:
        writer.feed(state, token)
    return writer.finish()


def forced_pairs(states: torch.Tensor, reply_ids: list[int], reply_start: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Pairs of a teacher-forced reply: LLM states (T, D) of one row whose reply begins at ``reply_start``."""
    for i, token in enumerate(reply_ids):
        yield states[reply_start + i - 1], token


@torch.no_grad()
def generated_pairs(llm, embeds: torch.Tensor, turn_end_id: int, max_tokens: int) -> Iterator[tuple[torch.Tensor, int]]:
    """The LLM's greedy reply to a prompt (1, T, D_llm), one pair per token, with a KV cache; ends after the turn end."""
    out = llm(inputs_embeds=embeds, use_cache=True, output_hidden_states=True, logits_to_keep=1)
    for _ in range(max_tokens):
        state = out.hidden_states[-1][0, -1]  # (D_llm,): the state that predicts the next token
        token = int(out.logits[0, -1].argmax())
        yield state, token
        if token == turn_end_id:
            return
        ids = torch.tensor([[token]], device=embeds.device)
        out = llm(input_ids=ids, cache=out.cache, use_cache=True, output_hidden_states=True, logits_to_keep=1)


@torch.no_grad()
def speak(model, batch: dict, read: int, write: int, turn_end_id: int, max_reply_tokens: int,
          max_new_units: int, temperature: float = 0.0, generator: torch.Generator | None = None,
          top_k: int = 0) -> StreamedSpeech:
    """A spoken reply to a prompt-only batch of one (``SpokenReply`` model): the LLM's greedy text and streamed units."""
    embeds = model.speech_llm.embed(batch)  # (1, T, D_llm)
    writer = UnitWriter(model.decoder, model.fusion, read, write, max_new_units, temperature, generator, top_k)
    return stream(writer, generated_pairs(model.speech_llm.llm, embeds, turn_end_id, max_reply_tokens))
