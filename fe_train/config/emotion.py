"""``emotion``: the stage-2 emotion extractor, SER head, controls and 2b pairing."""

from __future__ import annotations

from dataclasses import dataclass

from fe_train.config.checks import require
from fe_train.config.prompts import SER_QUESTION


@dataclass
class EmotionConfig:
    layer_mix: str = "gate"
    """How the extractor mixes the encoder blocks (``fe_train.model.registry.EMOTION_MIXES``): gate, or last (ablation)."""
    pool: str = "attention"
    """How it pools over time (``EMOTION_POOLS``): attention (one query), or mean (ablation)."""
    gate_hidden_dim: int = 128
    """Hidden width of the layer gate's scoring MLP."""
    pool_heads: int = 4
    """Heads of the attention pooling."""
    hidden_dim: int = 2048
    """Hidden width of the FFN from the encoder width to the LLM width."""
    mask_padding: bool = False
    """Gate means and pooling see only frames of real audio (True) or Whisper's whole padded window, as the released code (False)."""
    aux_weight: float = 0.8
    """Weight of the SER head's cross-entropy in the loss (0: aux loss off; the head then gets no gradient)."""
    init_extractor: str = ""
    """An ``emotion_extractor.safetensors`` export to start from ('' for a fresh init; stage 2b takes stage 2a's)."""
    init_ser_head: str = ""
    """A ``ser_head.safetensors`` export to start the SER head from ('' for a fresh init)."""
    ser_question: str = SER_QUESTION
    """The SER question, after ``prompt.user_speech`` (stage 2a's examples, those mixed into 2b, ``fe-train eval ser``);
    the target is the label word."""
    pair_shards: str = ""
    """Stage 2b: speech-instruction shards whose JSON has ``pseudo_emotion`` and the empathetic ``reply``."""
    pairs_per_clip: int = 4
    """Stage 2b: instructions paired with each SER clip (K), each with pseudo label = the clip's label."""
    ser_mix_ratio: float = 0.2
    """Stage 2b: fraction of the examples that are plain SER examples (the clip with the SER prompt)."""
    pair_buffer: int = 256
    """Stage 2b: instructions buffered per label while reading the instruction stream."""

    def __post_init__(self):
        for key in ("gate_hidden_dim", "pool_heads", "hidden_dim", "pairs_per_clip", "pair_buffer"):
            require(getattr(self, key) >= 1, f"emotion.{key}", getattr(self, key), "an integer >= 1")
        require(self.aux_weight >= 0.0, "emotion.aux_weight", self.aux_weight, "a number >= 0")
        require(0.0 <= self.ser_mix_ratio < 1.0, "emotion.ser_mix_ratio", self.ser_mix_ratio, "a fraction in [0, 1)")
        require(isinstance(self.ser_question, str) and bool(self.ser_question.strip()), "emotion.ser_question", self.ser_question, "a question (the label word answers it)")
