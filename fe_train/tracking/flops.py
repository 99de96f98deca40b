"""Model FLOPs of a micro-batch from the recipe's arithmetic, and MFU.

Per the recipe (``freezeempath-recipe.md``, cost arithmetic), with N the parameters
a token passes through (embedding lookups excluded, they are no matmul):

- frozen speech encoder: forward only, 2 N_enc per encoder frame of the padded window;
- frozen LLM, stages 1-2: forward 2 N plus the input-gradient backward 2 N = 4 N per
  token (no weight gradients); stage 3: forward only, 2 N per token;
- the LM head runs only where a label follows (``logits_to_keep``);
- trainable modules before the LLM (adapter, emotion extractor): 6 N per soft token
  they write (forward, input and weight gradients).

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

    @classmethod
    def for_model(cls, model, llm_backward: bool) -> FlopCounter:
        """Count a FreezeEmpath model's parts (partitioned parameters counted at full size)."""
        from fe_train.model.freezing import numel

        def size(module) -> int:
            return sum(numel(p) for p in module.parameters()) if module is not None else 0

        llm = model.llm
        embed, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        head_params = numel(head.weight) if head is not None else 0
        tied = head is not None and head.weight is embed.weight
        encoder = getattr(model, "encoder", None)
        return cls(
            encoder_params=size(encoder),
            encoder_frames=encoder.n_frames // 2 if encoder is not None else 0,
            llm_body_params=size(llm) - size(embed) - (0 if tied else head_params),
            llm_head_params=head_params,
            llm_backward=llm_backward,
            trainable_params=sum(numel(p) for p in model.parameters() if p.requires_grad),
        )

    def micro_batch(self, batch: dict) -> float:
        """Model FLOPs of one micro-batch as the recipe counts them."""
        clips = int(batch["attention_mask"].shape[0])
        tokens = float(batch["attention_mask"].sum())
        head_positions = float((batch["labels"][:, 1:] != -100).sum())
        llm_factor = 4.0 if self.llm_backward else 2.0
        flops = 2.0 * self.encoder_params * self.encoder_frames * clips * self.encoder_passes
        flops += llm_factor * (self.llm_body_params * tokens + self.llm_head_params * head_positions)
        flops += 6.0 * self.trainable_params * float((batch["slots"] > 0).sum())
        return flops


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
