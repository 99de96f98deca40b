"""Stage 3's model: the frozen speech LLM's reply states and tokens feed the speech decoder.

``speech_llm`` is the stage-1 composite (``FreezeEmpath``: the LLM, and for spoken
queries the encoder and adapter); it runs forward only, under ``no_grad``, over the
prompt and the teacher-forced reply. The decoder reads the interleaved sequence of
``fe_train.data.interleave``: at a text position, the fusion of the LLM state that
predicted the reply token with the decoder's embedding of that token; elsewhere
the embedding of ``<sep>``, a unit or eos. Only ``decoder`` and ``fusion`` train.
"""

from __future__ import annotations

import torch

from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.freezing import Assembly
from fe_train.model.fusion import GatedFusion, paired_states
from fe_train.model.loss_terms import labelled_targets, weighted_loss
from fe_train.model.speech_decoder import SpeechDecoder


class SpokenReply(Assembly):
    def __init__(self, speech_llm: FreezeEmpath, decoder: SpeechDecoder, fusion: GatedFusion):
        super().__init__()
        self.speech_llm = speech_llm
        self.decoder = decoder
        self.fusion = fusion

    def train(self, mode: bool = True):
        """The speech LLM stays in eval mode: it only ever runs forward."""
        super().train(mode)
        self.speech_llm.eval()
        return self

    @torch.no_grad()
    def llm_states(self, batch: dict) -> torch.Tensor:
        """The LLM's last hidden states (B, T, D_llm) over the prompt (with its soft tokens) and the reply."""
        embeds = self.speech_llm.embed(batch)  # (B, T, D_llm)
        out = self.speech_llm.llm(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                  output_hidden_states=True, logits_to_keep=1, use_cache=False)
        return out.hidden_states[-1]

    def decoder_inputs(self, states: torch.Tensor, input_ids: torch.Tensor, llm_positions: torch.Tensor) -> torch.Tensor:
        """Decoder input embeddings (B, S, D_dec): fused at text positions (``llm_positions`` >= 0)."""
        embeds = self.decoder.embed(input_ids)  # (B, S, D_dec)
        fused = self.fusion(paired_states(states, llm_positions), embeds)  # (B, S, D_dec)
        return torch.where((llm_positions >= 0)[..., None], fused, embeds)

    loss_weights = (1.0,)
    """One loss term: the decoder's labelled (unit and eos) positions."""

    def loss_counts(self, batch: dict) -> torch.Tensor:
        """How many labelled decoder targets ``batch`` holds, from the host batch."""
        return torch.tensor([labelled_targets(batch["unit_labels"])], dtype=torch.float64)

    def forward(self, batch: dict, loss_norm: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The unit loss; ``loss_norm`` as in ``fe_train.model.loss_terms``."""
        states = self.llm_states(batch)
        embeds = self.decoder_inputs(states, batch["unit_input_ids"], batch["unit_llm_positions"])
        out = self.decoder.unit_loss(embeds, batch["unit_attention_mask"], batch["unit_labels"])
        return {**out, **weighted_loss([out["loss_sum"]], [out["n_tokens"]], self.loss_weights, loss_norm)}
