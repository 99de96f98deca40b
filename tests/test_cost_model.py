"""The FLOP counter follows the recipe's arithmetic; the memory plan picks the fastest plan that fits."""

from __future__ import annotations

import pytest
import torch

from fe_train.engine.memory import GIB, Workload, estimate, recommend
from fe_train.errors import UserError
from fe_train.tracking.flops import FlopCounter, mfu


def batch(tokens_per_row: list[int], labels_per_row: list[int], speech_per_row: list[int]) -> dict:
    length = max(tokens_per_row)
    mask = torch.zeros(len(tokens_per_row), length, dtype=torch.long)
    labels = torch.full_like(mask, -100)
    slots = torch.zeros_like(mask)
    for row, (n, m, s) in enumerate(zip(tokens_per_row, labels_per_row, speech_per_row)):
        mask[row, :n] = 1
        labels[row, n - m:n] = 7
        slots[row, 2:2 + s] = 1
    return {"attention_mask": mask, "labels": labels, "slots": slots}


def test_stage1_flops_match_the_recipe():
    # Whisper-large-v3 encoder and Qwen2.5-7B-shaped numbers from the recipe.
    counter = FlopCounter(encoder_params=int(0.64e9), encoder_frames=1500, llm_body_params=int(6.5e9),
                          llm_head_params=int(0.545e9), llm_backward=True, trainable_params=int(25e6))
    b = batch([100, 80], [20, 10], [50, 40])
    expected = 2 * 0.64e9 * 1500 * 2 + 4 * (6.5e9 * 180 + 0.545e9 * 30) + 6 * 25e6 * 90
    assert counter.micro_batch(b) == pytest.approx(expected, rel=1e-6)


def test_the_hidden_state_term_adds_the_llm_forward_on_the_transcript_row():
    """``train.state_distill``: the frozen LLM also reads each transcript row, forward only (2 N per token), its head
    at one position per row (``logits_to_keep=1``)."""
    counter = FlopCounter(encoder_params=0, encoder_frames=0, llm_body_params=1000, llm_head_params=100,
                          llm_backward=True, trainable_params=0)
    b = batch([100, 80], [20, 10], [50, 40])
    teacher = {**b, "teacher_attention_mask": batch([60, 45], [20, 10], [0, 0])["attention_mask"]}
    assert counter.micro_batch(teacher) - counter.micro_batch(b) == 2 * (1000 * 105 + 100 * 2)


def test_stage3_llm_runs_forward_only():
    forward = FlopCounter(1, 0, 1000, 0, llm_backward=False, trainable_params=0)
    both = FlopCounter(1, 0, 1000, 0, llm_backward=True, trainable_params=0)
    b = batch([10], [1], [0])
    assert both.micro_batch(b) == 2 * forward.micro_batch(b)


def test_mfu():
    assert mfu(500e12, 1.0, 1000e12) == 0.5
    assert mfu(1.0, 1.0, 0.0) == 0.0


def qwen7b(world: int, micro: int = 4, seq: int = 1024, ckpt: bool = False) -> Workload:
    return Workload(llm_params=int(7.6e9), llm_layers=28, llm_hidden=3584, llm_heads=28, encoder_params=int(0.64e9),
                    trainable_params=int(25e6), world_size=world, micro_batch=micro, seq_len=seq, activation_checkpointing=ckpt)


def test_partitioning_and_offload_shrink_gpu_memory():
    replicated, partitioned, offloaded = estimate(qwen7b(8))
    assert replicated.gpu_bytes > partitioned.gpu_bytes > offloaded.gpu_bytes
    assert offloaded.host_bytes >= 2 * 8.2e9  # the bf16 weights live in host memory
    frozen = 2 * (7.6e9 + 0.64e9)
    # partitioning saves 7/8 of the frozen weights, less the two layers it gathers at a time
    assert 0.85 * frozen * 7 / 8 < replicated.gpu_bytes - partitioned.gpu_bytes < frozen * 7 / 8


def test_recommendation_is_the_fastest_that_fits():
    assert recommend(qwen7b(8, micro=1, ckpt=True), 80 * GIB).ds_config == "zero3_replicated.json"
    assert recommend(qwen7b(8, micro=1, ckpt=True), 16 * GIB).ds_config == "zero3.json"
    assert recommend(qwen7b(8, micro=1, seq=256, ckpt=True), 3 * GIB).ds_config == "zero3_offload.json"
    assert recommend(qwen7b(1, micro=64, seq=4096), 24 * GIB) is None



def test_the_planner_counts_a_sample_as_the_training_runs_do():
    """``fe-train plan``'s time: one sample of seq_len positions by the recipe's arithmetic (stage 1: encoder forward,
    4N per LLM token, the head where a label follows, 6N per soft token; stage 3: 2N per LLM token, the head once,
    4N + 2N per decoder position), then FLOPs / (GPUs x peak x MFU) per optimizer step."""
    from fe_train.engine.memory import describe_time, sample_flops

    stage1 = Workload(llm_params=int(7.6e9), llm_layers=28, llm_hidden=3584, llm_heads=28, encoder_params=int(0.64e9),
                      trainable_params=int(25e6), world_size=8, micro_batch=4, seq_len=1000, llm_body_params=int(6.5e9),
                      llm_head_params=int(0.545e9), encoder_frames=1500, speech_positions=300)
    expected = 2 * 0.64e9 * 1500 + 4 * (6.5e9 * 1000 + 0.545e9 * 201) + 6 * 25e6 * 300
    assert sample_flops(stage1, 201) == pytest.approx(expected, rel=1e-9)  # the head at each of the 201 labels
    stage3 = Workload(llm_params=int(7.6e9), llm_layers=28, llm_hidden=3584, llm_heads=28, encoder_params=0,
                      trainable_params=int(0.5e9), world_size=8, micro_batch=4, seq_len=2000, llm_backward=False,
                      llm_body_params=int(6.5e9), llm_head_params=int(0.545e9), decoder_params=int(0.5e9))
    assert sample_flops(stage3, 1025) == pytest.approx(2 * (6.5e9 * 2000 + 0.545e9) + 6 * 0.5e9 * 2000, rel=1e-9)
    line = describe_time(stage1, 989e12 * 0.5, 128, "H100", 0.5, 1000, 2)  # one GPU-second per sample at MFU 0.5
    assert "16.00 s per optimizer step of 128 samples" in line  # 128 GPU-seconds on 8 GPUs
    assert "1000 samples x 2 epoch(s) = 16 steps: 0.1 h wall-clock, 1 GPU-hours" in line  # 256 s, 0.57 GPU-hours
    with pytest.raises(UserError, match="--gpu V100 --mfu 0.5: expected one of"):
        describe_time(stage1, 1.0, 128, "V100", 0.5, 0, 1)
