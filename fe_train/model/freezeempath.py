"""The FreezeEmpath model: frozen encoder -> adapter and emotion extractor -> soft tokens in a frozen LLM.

Which components exist is decided when the model is built (by the stage); the
forward pass only asks which inputs the batch carries, and those are the same on
every rank, so every rank calls the same (ZeRO-3 partitioned) modules in the same
order.

Batch inputs: ``mel`` (content audio: the adapter fills ``<speech>``), ``emotion_mel``
(a separate emotion clip; without it the extractor reads the content clip), and
``emotion_label`` (class index, for the SER auxiliary loss); ``teacher_input_ids`` (the same prompt with the
transcript in place of the speech) and ``state_span`` (B,), how many positions end both rows alike, for the hidden-state
distillation term (``state_weight``, stage 1's ``train.state_distill``). Whenever a model with an
extractor gets audio, the extractor runs on every row, also where the prompt has no
``<emotion>`` slot (the label-word controls), so that ranks stay in step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fe_train.data.prompt import IGNORE, SLOTS
from fe_train.data.speech_input import encoder_frames
from fe_train.model.freezing import Assembly
from fe_train.model.loss_terms import labelled_targets, weighted_loss
from fe_train.model.next_token_loss import next_token_loss
from fe_train.model.splice import splice, valid_rows

SPEECH_SLOT = SLOTS["<speech>"]
EMOTION_SLOT = SLOTS["<emotion>"]


class FreezeEmpath(Assembly):
    def __init__(self, llm: nn.Module, encoder: nn.Module | None = None, adapter: nn.Module | None = None,
                 emotion_extractor: nn.Module | None = None, ser_head: nn.Module | None = None, aux_weight: float = 0.0,
                 state_weight: float = 0.0):
        super().__init__()
        self.llm = llm
        self.encoder = encoder
        self.adapter = adapter
        self.emotion_extractor = emotion_extractor
        self.ser_head = ser_head
        self.aux_weight = aux_weight
        self.state_weight = state_weight

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
        return self.embed_with_emotion(batch)[0]

    def embed_with_emotion(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Input embeddings (B, T, D_llm) with every slot filled, and the emotion vectors (B, D_llm) or None."""
        embeds = self.llm.get_input_embeddings()(batch["input_ids"])  # (B, T, D)
        with_blocks = self.emotion_extractor is not None and "emotion_mel" not in batch
        blocks = None
        if "mel" in batch:
            states, blocks = self.encoder(batch["mel"], batch["mel_pad_value"], all_blocks=with_blocks)  # (B, T_enc, D_enc)
            tokens, counts = self.adapter(states, encoder_frames(batch["audio_frames"]))  # (B, N, D)
            embeds = splice(embeds, batch["slots"], SPEECH_SLOT, valid_rows(tokens, counts))
        emotion = self.emotion_vectors(batch, blocks)
        if emotion is not None:
            has_slot = (batch["slots"] == EMOTION_SLOT).any(dim=1)  # (B,)
            embeds = splice(embeds, batch["slots"], EMOTION_SLOT, emotion[has_slot])
        return embeds, emotion

    def emotion_vectors(self, batch: dict, content_blocks: torch.Tensor | None) -> torch.Tensor | None:
        """One vector per row (B, D_llm) from the emotion clip, else the content clip; None without either."""
        if self.emotion_extractor is None:
            return None
        if "emotion_mel" in batch:
            _, blocks = self.encoder(batch["emotion_mel"], batch["emotion_mel_pad_value"], all_blocks=True)  # (B, L, T, D)
            return self.emotion_extractor(blocks, encoder_frames(batch["emotion_audio_frames"]))
        if content_blocks is None:
            return None
        return self.emotion_extractor(content_blocks, encoder_frames(batch["audio_frames"]))

    @property
    def loss_weights(self) -> tuple[float, ...]:
        """The weight of each loss term: the reply tokens', with a SER head ``aux_weight`` for its clips, and with
        ``state_weight`` that of the hidden-state distillation."""
        return (1.0, *(() if self.ser_head is None else (self.aux_weight,)), *((self.state_weight,) if self.state_weight else ()))

    def loss_counts(self, batch: dict) -> torch.Tensor:
        """How many items each loss term of ``batch`` holds (labelled tokens; SER clips; state positions), from the host
        batch."""
        counts = [labelled_targets(batch["labels"])]
        if self.ser_head is not None:
            counts.append(float((batch["weight"] != 0).sum()) if self._has_ser_term(batch) else 0.0)
        if self.state_weight:
            counts.append(float((batch["state_span"] * (batch["weight"] != 0)).sum()))
        return torch.tensor(counts, dtype=torch.float64)

    def _has_ser_term(self, batch: dict) -> bool:
        return (self.ser_head is not None and self.emotion_extractor is not None and "emotion_label" in batch
                and ("mel" in batch or "emotion_mel" in batch))

    def forward(self, batch: dict, loss_norm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses of ``batch``; ``loss_norm`` (one divisor per term, see ``fe_train.model.loss_terms``)."""
        embeds, emotion = self.embed_with_emotion(batch)
        out = self.reply_loss(embeds, batch["attention_mask"], batch["labels"], states=bool(self.state_weight))
        sums, counts = [out["loss_sum"]], [out["n_tokens"]]
        if self._has_ser_term(batch):
            ser = self.ser_loss(emotion, batch["emotion_label"], batch["weight"])
            sums.append(ser.pop("ser_sum"))
            counts.append(ser["ser_clips"])
            out.update(ser)
        elif self.ser_head is not None:
            sums.append(torch.zeros_like(out["loss_sum"]))
            counts.append(torch.zeros_like(out["n_tokens"]))
        if self.state_weight:
            sums.append(self.state_distance(out.pop("states"), batch))
            counts.append(self._state_positions(batch).sum())
        return {**out, **weighted_loss(sums, counts, self.loss_weights, loss_norm)}

    def state_distance(self, states: tuple[torch.Tensor, ...], batch: dict) -> torch.Tensor:
        """Sum over the positions ending both rows alike (the prompt after the speech, the reply) of the mean over
        layers of 1 - cosine between the LLM's hidden states on the speech (``states``) and on the transcript."""
        with torch.no_grad():
            teacher = self.llm(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"],
                               logits_to_keep=1, use_cache=False, output_hidden_states=True).hidden_states[1:]
        span = self._state_positions(batch)  # (B,): 0 for padding rows
        rows = torch.arange(len(span), device=span.device).repeat_interleave(span)  # (N,)
        back = torch.cat([torch.arange(n, 0, -1, device=span.device) for n in span.tolist()])  # (N,) from the row's end
        student_at = batch["attention_mask"].sum(1)[rows] - back
        teacher_at = batch["teacher_attention_mask"].sum(1)[rows] - back
        distance = sum((1 - F.cosine_similarity(s[rows, student_at].float(), t[rows, teacher_at].float(), dim=-1)).sum()
                       for s, t in zip(states, teacher))
        return distance / len(states)

    @staticmethod
    def _state_positions(batch: dict) -> torch.Tensor:
        return batch["state_span"] * (batch["weight"] != 0)

    def ser_loss(self, emotion: torch.Tensor, label: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """The SER head's summed cross-entropy (``ser_sum``) and mean (``ser_loss``); padding rows (weight 0) left out."""
        logits = self.ser_head(emotion).float()  # (B, classes)
        target = label.masked_fill(weight == 0, IGNORE)  # (B,)
        n_clips = (target != IGNORE).sum()
        ser_sum = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
        correct = ((logits.argmax(-1) == target) & (target != IGNORE)).sum()
        return {"ser_sum": ser_sum, "ser_loss": (ser_sum / n_clips.clamp(min=1)).detach(),
                "ser_correct": correct.detach(), "ser_clips": n_clips.detach()}

    def reply_loss(self, embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                   states: bool = False) -> dict[str, torch.Tensor]:
        """Next-token cross-entropy on labelled positions; logits only where a label follows (``states``: also every
        layer's hidden states)."""
        return next_token_loss(self.llm, embeds, attention_mask, labels, states)
