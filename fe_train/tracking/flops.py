"""Model FLOPs of a micro-batch from the recipe's arithmetic, and MFU.

Per the recipe (``freezeempath-recipe.md``, cost arithmetic), with N the parameters
a token passes through (embedding lookups excluded, they are no matmul):

- frozen speech encoder: forward only, 2 N_enc per encoder frame of the padded window;
- frozen LLM, stages 1-2: forward 2 N plus the input-gradient backward 2 N = 4 N per
  token (no weight gradients); stage 3: forward only, 2 N per token;
- the LM head runs only where a label follows (``logits_to_keep``; stage 3: once per row);
- trainable modules before the LLM (adapter, emotion extractor): 6 N per soft token
  they write (forward, input and weight gradients);
- stage 3's speech decoder and fusion: 4 N per decoder position (forward and input
  gradients) plus 2 N_trainable (weight gradients: all of it, or LoRA's part);
- stage 1's hidden-state term (``train.state_distill``): the frozen LLM's forward on the
  transcript row, 2 N per token, and its head at one position per row.

Attention-score FLOPs (quadratic in length) are left out, as in the 6N convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by GPU name fragment."""


@dataclass(frozen=True)
class FlopCounter:
    encoder_params: int
    encoder_frames: int
    """Encoder positions per clip (1500 for Whisper's 30 s window)."""
    llm_body_params: int
    """LLM parameters a token passes through: all but the input embedding and the LM head."""
    llm_head_params: int
    llm_backward: bool
    """True in stages 1-2 (gradients flow back through the frozen LLM to the inputs)."""
    trainable_params: int
    encoder_passes: int = 1
    """Encoder forward passes per sample (2 when content and emotion come from different clips)."""
    decoder_params: int = 0
    """Stage 3: speech decoder and fusion parameters a decoder position passes through."""
    decoder_trainable_params: int = 0
    encoder_round_frames: int = 0
    """The encoder's window rounding in mel frames (``model.encoder_window_s``); 0: the whole window always."""

    @classmethod
    def for_model(cls, model, llm_backward: bool) -> FlopCounter:
        """Count a FreezeEmpath model's parts, or a stage-3 model's (its ``speech_llm``, ``decoder`` and
        ``fusion``); partitioned parameters counted at full size."""
        from fe_train.model.freezing import numel

        def size(module) -> int:
            return sum(numel(p) for p in module.parameters()) if module is not None else 0

        decoder, fusion = getattr(model, "decoder", None), getattr(model, "fusion", None)
        decoder_parts = [m for m in (decoder, fusion) if m is not None]
        model = getattr(model, "speech_llm", model)
        llm = model.llm
        embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        head_params = numel(head.weight) if head is not None else 0
        tied = head is not None and head.weight is embed.weight
        encoder = getattr(model, "encoder", None)
        return cls(
            encoder_params=size(encoder),
            encoder_frames=encoder.n_frames // 2 if encoder is not None else 0,
            encoder_round_frames=getattr(encoder, "round_frames", 0),
            llm_body_params=size(llm) - size(embed) - (0 if tied else head_params),
            llm_head_params=head_params,
            llm_backward=llm_backward,
            trainable_params=sum(numel(p) for p in model.parameters() if p.requires_grad),
            decoder_params=sum(size(m) for m in decoder_parts) - (_lookup_only(decoder.lm, size) if decoder else 0),
            decoder_trainable_params=sum(numel(p) for m in decoder_parts for p in m.parameters() if p.requires_grad),
        )

    def micro_batch(self, batch: dict) -> float:
        """Model FLOPs of one micro-batch as the recipe counts them."""
        clips = int(batch["attention_mask"].shape[0])
        tokens = float(batch["attention_mask"].sum())
        head_positions = float((batch["labels"][:, 1:] != -100).sum())
        if self.decoder_params:
            head_positions = float(clips)  # stage 3 reads the LLM's states; its head runs at one position per row
        llm_factor = 4.0 if self.llm_backward else 2.0
        flops = 2.0 * self.encoder_params * self.encoder_positions(batch) * clips * self.encoder_passes
        flops += llm_factor * (self.llm_body_params * tokens + self.llm_head_params * head_positions)
        flops += 6.0 * self.trainable_params * float((batch["slots"] > 0).sum())
        if self.decoder_params:
            positions = float(batch["unit_attention_mask"].sum())
            flops += (4.0 * self.decoder_params + 2.0 * self.decoder_trainable_params) * positions
        if "teacher_attention_mask" in batch:
            flops += 2.0 * (self.llm_body_params * float(batch["teacher_attention_mask"].sum()) + self.llm_head_params * clips)
        return flops


    def encoder_positions(self, batch: dict) -> int:
        """Encoder positions per clip of this micro-batch: the whole window's, or its rounded longest clip's."""
        if not self.encoder_round_frames or "mel" not in batch:
            return self.encoder_frames
        from fe_train.model.speech_encoder import window_frames

        return window_frames(batch["mel"].shape[-1], 2 * self.encoder_frames, self.encoder_round_frames) // 2


def _lookup_only(lm, size) -> int:
    """Parameters of an LM's input embedding that no matmul uses (none when the output head shares them)."""
    embed, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    return 0 if head is not None and head.weight is embed.weight else size(embed)


def peak_flops(device: torch.device, override_tflops: float = 0.0) -> float:
    """Peak FLOP/s of this device (0 when unknown, e.g. on a CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    for fragment, tflops in PEAK_TFLOPS_BF16.items():
        if fragment in name:
            return tflops * 1e12
    return 0.0


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: counted FLOPs / (time x peak)."""
    return flops / (seconds * peak) if peak and seconds > 0 else 0.0
