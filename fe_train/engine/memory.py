"""The memory plan: which way of holding the frozen LLM fits a GPU, and what it costs.

Per GPU, in bytes, for a frozen LLM of N parameters in bf16, T trainable parameters
and W ranks (ZeRO partitions over all of them):

| plan | frozen LLM + encoder | trainable (bf16 weight + fp32 master + 2 AdamW moments) |
|---|---|---|
| replicated (``zero3_replicated.json``: frozen models whole beside the engine) | 2 N | 2 T + 12 T / W |
| partitioned (``zero3.json``) | 2 N / W + gather buffers | 2 T / W + 12 T / W |
| offloaded (``zero3_offload.json``) | gather buffers (the rest in host memory) | 2 T / W (master and moments on the host) |

T counts the stage's trained modules (``fe_train.model.assembly.trained_parameters``): the adapter
(stage 1), the emotion extractor and SER head (2a, 2b), the speech decoder and fusion (3a, 3b).

Plus activations. Stages 1 and 2: gradients flow back through the frozen LLM to the soft tokens,
so its activations are kept (per layer about 34 s h + 5 a s^2 bytes per sample in bf16,
Korthikanti et al. 2022), or only its inputs with activation checkpointing (2 s h). Stage 3:
the LLM runs forward only (one layer's activations at a time) and the trained decoder keeps
its own (the same per-layer formula at its width, over the same s positions).
Stage 1's hidden-state term (``train.state_distill``) adds the frozen LLM's forward on the
transcript row (one layer's activations at a time) and its every-layer states (2 (L + 1) s h, bf16),
and the cosine's three fp32 tensors of the positions it compares, kept for the backward
(12 L s h): the transcript row and those positions are counted as long as the sample's row.
Fastest first: replicated needs no gathers, partitioned all-gathers each layer
in forward and backward, offloaded also crosses PCIe.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
PLANS = ("zero3_replicated.json", "zero3.json", "zero3_offload.json")


@dataclass(frozen=True)
class Workload:
    llm_params: int
    llm_layers: int
    llm_hidden: int
    llm_heads: int
    encoder_params: int
    trainable_params: int
    world_size: int
    micro_batch: int
    seq_len: int
    activation_checkpointing: bool = False
    llm_backward: bool = True
    """Gradients flow back through the frozen LLM (stages 1, 2); in stage 3 it runs forward only."""
    decoder_shape: tuple[int, int, int] = (0, 0, 0)
    """(layers, hidden, heads) of a trained decoder after the LLM (stage 3), whose activations are kept."""
    llm_body_params: int = 0
    """LLM parameters a token passes through (all but the input embedding and the LM head): the FLOP count."""
    llm_head_params: int = 0
    encoder_frames: int = 0
    """Encoder positions of the padded window (1500 for Whisper's 30 s)."""
    speech_positions: int = 0
    """Soft tokens the trained modules before the LLM write per sample (the window's frames stacked by the adapter)."""
    decoder_params: int = 0
    """Stage 3: speech decoder and fusion parameters a decoder position passes through (their trained parameters: the
    whole decoder, whose tied embedding is its head; with decoder.lora only LoRA's part, an undercount)."""
    state_distill: bool = False
    """Stage 1's hidden-state term is on (``train.state_distill`` > 0): the LLM also reads each sample's transcript."""


@dataclass(frozen=True)
class PlanEstimate:
    ds_config: str
    gpu_bytes: int
    host_bytes: int

    def fits(self, gpu_bytes: int, headroom: float = 0.9) -> bool:
        return self.gpu_bytes <= headroom * gpu_bytes


def activation_bytes(w: Workload) -> int:
    s, b = w.seq_len, w.micro_batch

    def per_layer(h: int, a: int) -> int:
        return 34 * s * b * h + 5 * a * s * s * b

    if not w.llm_backward:
        layers, hidden, heads = w.decoder_shape
        return per_layer(w.llm_hidden, w.llm_heads) + layers * per_layer(hidden, heads)
    kept = w.llm_layers * (2 * s * b * w.llm_hidden if w.activation_checkpointing else per_layer(w.llm_hidden, w.llm_heads))
    if w.state_distill:
        kept += per_layer(w.llm_hidden, w.llm_heads) + (2 * (w.llm_layers + 1) + 12 * w.llm_layers) * s * b * w.llm_hidden
    return kept


def estimate(w: Workload) -> list[PlanEstimate]:
    frozen = 2 * (w.llm_params + w.encoder_params)
    layer = 2 * w.llm_params // max(w.llm_layers, 1)
    gather = 2 * layer  # ZeRO-3 keeps about the current and the prefetched layer whole
    act = activation_bytes(w)
    moments = 12 * w.trainable_params // w.world_size
    return [
        PlanEstimate(PLANS[0], frozen + 2 * w.trainable_params + moments + act, 0),
        PlanEstimate(PLANS[1], frozen // w.world_size + gather + 2 * w.trainable_params // w.world_size + moments + act, 0),
        PlanEstimate(PLANS[2], gather + 2 * w.trainable_params // w.world_size + act, frozen + moments * w.world_size),
    ]


def recommend(w: Workload, gpu_bytes: int) -> PlanEstimate | None:
    """The fastest plan whose estimate fits ``gpu_bytes`` (None: none fits)."""
    return next((plan for plan in estimate(w) if plan.fits(gpu_bytes)), None)


def describe(w: Workload, gpu_bytes: int) -> str:
    lines = [f"memory plan for a {w.llm_params / 1e9:.2f}B frozen LLM, {w.trainable_params / 1e6:.1f}M trainable, "
             f"{w.world_size} rank(s), micro batch {w.micro_batch} x {w.seq_len} tokens, GPU {gpu_bytes / GIB:.0f} GiB:"]
    best = recommend(w, gpu_bytes)
    for plan in estimate(w):
        mark = "<- fastest that fits" if plan == best else ("fits" if plan.fits(gpu_bytes) else "does not fit")
        host = f", host {plan.host_bytes / GIB:.1f} GiB" if plan.host_bytes else ""
        lines.append(f"  {plan.ds_config:24s} ~{plan.gpu_bytes / GIB:7.1f} GiB/GPU{host}  {mark}")
    if best is None:
        lines.append("  nothing fits: lower train.micro_batch_size or turn on model.llm_activation_checkpointing")
    return "\n".join(lines)


def sample_flops(w: Workload, reply_tokens: int) -> float:
    """Model FLOPs of one sample of ``w.seq_len`` positions (``reply_tokens`` of them labelled; stage 3: as many decoder
    positions), counted by the training runs' own counter (``fe_train.tracking.flops``)."""
    import torch

    from fe_train.tracking.flops import FlopCounter

    s = w.seq_len
    decoder = w.decoder_params > 0
    counter = FlopCounter(
        encoder_params=w.encoder_params, encoder_frames=w.encoder_frames, llm_body_params=w.llm_body_params,
        llm_head_params=w.llm_head_params, llm_backward=w.llm_backward,
        trainable_params=0 if decoder else w.trainable_params, decoder_params=w.decoder_params,
        decoder_trainable_params=w.trainable_params if decoder else 0)
    labels = torch.full((1, s), -100)
    labels[0, s - min(reply_tokens, s - 1):] = 0
    slots = torch.zeros(1, s, dtype=torch.long)
    slots[0, 1:1 + w.speech_positions] = 1
    ones = torch.ones(1, s, dtype=torch.long)
    batch = {"attention_mask": ones, "labels": labels, "slots": slots, "unit_attention_mask": ones}
    if w.state_distill:
        batch["teacher_attention_mask"] = ones  # the transcript row, counted as long as the sample's
    return counter.micro_batch(batch)


def describe_time(w: Workload, flops_per_sample: float, global_batch: int, gpu: str, mfu: float, samples: int,
                  epochs: int) -> str:
    """Wall-clock and GPU-hours at ``mfu`` of ``gpu``'s dense bf16 peak (``PEAK_TFLOPS_BF16``): per optimizer step,
    and for ``epochs`` over ``samples`` training examples when ``samples`` is given."""
    from fe_train.errors import UserError
    from fe_train.tracking.flops import PEAK_TFLOPS_BF16

    if gpu not in PEAK_TFLOPS_BF16 or not 0 < mfu <= 1:
        raise UserError(f"--gpu {gpu} --mfu {mfu}: expected one of {sorted(PEAK_TFLOPS_BF16)} and 0 < mfu <= 1")
    peak = PEAK_TFLOPS_BF16[gpu] * 1e12
    step_s = flops_per_sample * global_batch / (w.world_size * peak * mfu)
    lines = [f"time at MFU {mfu:.2f} of {w.world_size} x {gpu} ({PEAK_TFLOPS_BF16[gpu]:g} TFLOP/s bf16 each), every sample "
             f"{w.seq_len} positions: {flops_per_sample / 1e12:.1f} TFLOP per sample, {step_s:.2f} s per optimizer step "
             f"of {global_batch} samples"]
    if samples:
        steps = -(-samples * epochs // global_batch)
        hours = steps * step_s / 3600
        lines.append(f"  {samples} samples x {epochs} epoch(s) = {steps} steps: {hours:.1f} h wall-clock, "
                     f"{hours * w.world_size:.0f} GPU-hours")
    return "\n".join(lines)


def workload_for(cfg, world_size: int, seq_len: int, recipe) -> Workload:
    """The workload of a run config for ``recipe`` (its ``trains``; ``llm_backward`` and ``reads_speech``, default
    True), with parameter counts from the checkpoints' configs (no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from fe_train.model.assembly import trained_parameters
    from fe_train.model.pretrained import pretrained_dir

    llm_config = AutoConfig.from_pretrained(pretrained_dir(cfg.model.llm_path, "model.llm_path", config_only=True))
    reads_speech = getattr(recipe, "reads_speech", True)
    encoder_params, encoder_hidden, encoder_frames = 0, 0, 0
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(llm_config)
        llm_params = sum(p.numel() for p in llm.parameters())
        embed, head = llm.get_input_embeddings().weight, llm.get_output_embeddings().weight
        llm_body_params = llm_params - embed.numel() - (0 if head is embed else head.numel())
        if reads_speech:
            encoder_path = pretrained_dir(cfg.model.encoder_path, "model.encoder_path", config_only=True)
            encoder_config = WhisperConfig.from_pretrained(encoder_path)
            encoder_params = sum(p.numel() for p in WhisperEncoder(encoder_config).parameters())
            encoder_hidden = encoder_config.d_model
            encoder_frames = encoder_config.max_source_positions
    trained = trained_parameters(cfg, recipe.trains, encoder_hidden, llm_config.hidden_size)
    decoder_shape = (0, 0, 0)
    if "decoder" in recipe.trains:
        d = AutoConfig.from_pretrained(pretrained_dir(cfg.decoder.path, "decoder.path", config_only=True))
        decoder_shape = (d.num_hidden_layers, d.hidden_size, d.num_attention_heads)
    return Workload(
        llm_params=llm_params, llm_layers=llm_config.num_hidden_layers, llm_hidden=llm_config.hidden_size,
        llm_heads=llm_config.num_attention_heads, encoder_params=encoder_params, trainable_params=sum(trained.values()),
        world_size=world_size, micro_batch=cfg.train.micro_batch_size, seq_len=seq_len,
        activation_checkpointing=cfg.model.llm_activation_checkpointing,
        llm_backward=getattr(recipe, "llm_backward", True), decoder_shape=decoder_shape,
        llm_body_params=llm_body_params, llm_head_params=head.numel(), encoder_frames=encoder_frames,
        speech_positions=encoder_frames // cfg.model.adapter_stack_frames,
        decoder_params=trained.get("decoder", 0) + trained.get("fusion", 0),
        state_distill=cfg.train.state_distill > 0,
    )
