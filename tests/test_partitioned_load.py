"""The frozen LLM loaded straight into its ZeRO-3 partitions (2 CPU ranks, real DeepSpeed), in fp32 and bf16."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from conftest import REPO, torchrun


def long_context_llm(directory: Path) -> Path:
    """A 1-layer Qwen2 with Qwen2.5's rotary base and head size, saved as a checkpoint: rotary angles at
    position 1000 show any rounding of its inverse frequencies."""
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=97, hidden_size=128, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=1024, rope_theta=1e6, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return directory


def test_partitions_hold_the_checkpoint_and_compute_the_same_logits(assets, tmp_path):
    report = tmp_path / "report.json"
    long_llm = long_context_llm(tmp_path / "long_llm")
    proc = torchrun([str(REPO / "tests" / "dist" / "partitioned_load_check.py"), str(assets.llm), str(report), str(long_llm)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(report.read_text())
    assert result["unequal"] == [], "every weight equals the one in model.safetensors"
    assert result["tied"], "tied input/output embeddings stay one parameter"
    assert result["logits_diff"] == 0.0
    assert result["held"] <= result["total"] // 2 + result["count"], "a rank holds half the elements (+1 pad per tensor)"
    assert result["trainable"] == 0 and not result["training"]
    # bf16 as the paper presets run: the rotary buffers are fp32 and equal a plain load's, and so are the logits
    assert all(dtype == "torch.float32" and same for dtype, same in result["bf16_buffers"].values()), result["bf16_buffers"]
    assert result["bf16_logits_diff"] == 0.0, (result["bf16_logits_diff"], result["bf16_positions"])
