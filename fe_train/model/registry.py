"""Registries of interchangeable components, keyed by the short names configs use."""

from __future__ import annotations

from collections.abc import Callable

from fe_train.errors import UserError
from fe_train.model.adapter import StackFFNAdapter
from fe_train.model.emotion_extractor import AttentionPool, LastBlock, LayerGate, MeanPool
from fe_train.model.fusion import ffn_projection, linear_projection
from fe_train.model.speech_encoder import WhisperSpeechEncoder

ENCODERS: dict[str, Callable] = {"whisper": WhisperSpeechEncoder.from_pretrained}
"""name -> (path, dtype) -> speech encoder with ``n_mels``, ``n_frames``, ``hidden_size``."""

ADAPTERS: dict[str, Callable] = {
    "stack_ffn": lambda encoder_dim, llm_dim, cfg: StackFFNAdapter(
        encoder_dim, llm_dim, cfg.adapter_stack_frames, cfg.adapter_hidden_dim
    ),
}
"""name -> (encoder_dim, llm_dim, ModelConfig) -> adapter module."""

FUSION_PROJECTIONS: dict[str, Callable] = {"linear": linear_projection, "ffn": ffn_projection}
"""name -> (llm_dim, decoder_dim, hidden_dim) -> the map of LLM states into the speech decoder's width."""

EMOTION_MIXES: dict[str, Callable] = {
    "gate": lambda encoder_dim, cfg: LayerGate(encoder_dim, cfg.gate_hidden_dim),
    "last": lambda encoder_dim, cfg: LastBlock(),
}
"""name -> (encoder_dim, EmotionConfig) -> how the emotion extractor mixes the encoder blocks."""

EMOTION_POOLS: dict[str, Callable] = {
    "attention": lambda encoder_dim, cfg: AttentionPool(encoder_dim, cfg.pool_heads),
    "mean": lambda encoder_dim, cfg: MeanPool(),
}
"""name -> (encoder_dim, EmotionConfig) -> how the emotion extractor pools over time."""


def lookup(registry: dict[str, Callable], name: str, key: str) -> Callable:
    if name not in registry:
        raise UserError(f"config {key} = {name!r}: expected one of {sorted(registry)}")
    return registry[name]
