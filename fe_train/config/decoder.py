"""``decoder``: the stage-3 streaming speech decoder and its fusion."""

from __future__ import annotations

from dataclasses import dataclass, field

from fe_train.config.checks import require


@dataclass
class DecoderConfig:
    path: str = ""
    """Speech decoder: a Qwen2-architecture causal LM saved with save_pretrained (extended here), or a stage-3 decoder export."""
    n_units: int = 8192
    """Speech-unit vocabulary size N; unit u is decoder token ``sep + 1 + u``."""
    codebook: str = ""
    """Name of the units' codebook (speech tokenizer); when set, a sample whose units name another (or none) is
    refused, counted as units_codebook ('' accepts any: fe-shards join --units --codebook names them)."""
    read_tokens: int = 3
    """R: reply positions read before each write."""
    write_units: int = 15
    """W: units written after each read."""
    max_length: int = 2048
    """Decoder positions kept per example (longer sequences are cut)."""
    fusion: str = "linear"
    """Projection of the LLM state into the decoder (a key of ``fe_train.model.registry.FUSION_PROJECTIONS``)."""
    fusion_hidden_dim: int = 0
    """Hidden width of the ``ffn`` projection (0: twice the LLM width)."""
    init_fusion: str = ""
    """A ``fusion.safetensors`` export to start the fusion from (stage 3b after 3a)."""
    lora: bool = False
    """Train LoRA adapters (peft) on the decoder instead of all its weights."""
    lora_rank: int = 16
    """LoRA rank r."""
    lora_alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch."""
    lora_targets: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    """Decoder linear layers that get LoRA adapters."""
    lora_modules_to_save: list = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    """Decoder modules trained in full next to LoRA: the embeddings, which hold the new <sep> and unit rows."""
    max_new_units: int = 2048
    """Generation: units written at most after the reply ends."""
    unit_temperature: float = 1.0
    """Generation: units are sampled at this temperature (the paper's 1.0; seeded by eval.seed); 0 writes the most likely."""
    unit_top_k: int = 0
    """Generation: sample among the k most likely units (0: among all)."""

    def __post_init__(self):
        for key in ("n_units", "read_tokens", "write_units", "max_length", "lora_rank", "lora_alpha", "max_new_units"):
            require(getattr(self, key) >= 1, f"decoder.{key}", getattr(self, key), "an integer >= 1")
        require(self.fusion_hidden_dim >= 0, "decoder.fusion_hidden_dim", self.fusion_hidden_dim, "an integer >= 0")
        require(0.0 <= self.lora_dropout < 1.0, "decoder.lora_dropout", self.lora_dropout, "a fraction in [0, 1)")
        require(self.unit_temperature >= 0.0, "decoder.unit_temperature", self.unit_temperature, "a number >= 0")
        require(self.unit_top_k >= 0, "decoder.unit_top_k", self.unit_top_k, "an integer >= 0")
