"""``generate``: target generation by the frozen LLM (stage 1 and stage 2b replies)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fe_train.config.checks import require
from fe_train.config.prompts import EMOTION_TURN, EMPATHY_SYSTEM, SYSTEM_PROMPTS, named
from fe_train.config.sections import EMOTIONS, PLACEMENTS, PRECISIONS


@dataclass
class GenerateConfig:
    """Target generation by the frozen LLM (``fe-train generate``): stage 1 and stage 2b replies."""

    llm_placement: str = "replicate"
    """replicate: a whole LLM per rank; zero3: partitioned over ranks by DeepSpeed ZeRO-3 (policy: engine.ds_config)."""
    precision: str = "bf16"
    """Weights and compute of the LLM: bf16 or fp32."""
    batch_size: int = 16
    """Prompts per generate call per rank (prompts are sorted by length, longest first)."""
    max_new_tokens: int = 512
    """Reply tokens generated at most; a reply cut here is stored and counted as unfinished."""
    do_sample: bool = False
    """Sample instead of greedy decoding."""
    temperature: float = 1.0
    """Sampling temperature (with do_sample)."""
    top_p: float = 1.0
    """Nucleus sampling mass (with do_sample; 1.0: off)."""
    top_k: int = 0
    """Sample from the k most likely tokens (with do_sample; 0: off)."""
    repetition_penalty: float = 1.0
    """HF repetition penalty (1.0: off). Set explicitly so a model's generation_config.json cannot change it."""
    seed: int = 0
    """Seed of the sampling and of the pseudo labels."""
    batches_per_part: int = 8
    """Batches a rank generates before writing them as one jsonl part (the work lost to a kill, at most)."""
    empathy_system: str = EMPATHY_SYSTEM
    """System prompt of the empathy task (or a name of ``SYSTEM_PROMPTS``: ``empathy``)."""
    empathy_user: str = EMOTION_TURN
    """User turn of the empathy task: ``<speech>`` becomes the instruction text, ``<emotion>`` the pseudo label word."""
    label_shards: str = ""
    """SER training shards whose ``emotion`` counts give the pseudo-label distribution (the recipe's default)."""
    label_weights: list = field(default_factory=list)
    """Pseudo-label weights in the order of EMOTIONS, instead of label_shards (e.g. [1, 1, 1, 1, 1])."""

    def __post_init__(self):
        self.empathy_system = named(self.empathy_system, SYSTEM_PROMPTS)
        require(self.llm_placement in PLACEMENTS, "generate.llm_placement", self.llm_placement, f"one of {PLACEMENTS}")
        require(self.precision in PRECISIONS, "generate.precision", self.precision, f"one of {PRECISIONS}")
        for key in ("batch_size", "max_new_tokens", "batches_per_part"):
            require(getattr(self, key) >= 1, f"generate.{key}", getattr(self, key), "an integer >= 1")
        require(self.temperature > 0, "generate.temperature", self.temperature, "a positive number")
        require(0.0 < self.top_p <= 1.0, "generate.top_p", self.top_p, "a fraction in (0, 1]")
        require(self.top_k >= 0, "generate.top_k", self.top_k, "an integer >= 0")
        require(self.repetition_penalty > 0, "generate.repetition_penalty", self.repetition_penalty, "a positive number")
        weights_ok = not self.label_weights or (
            len(self.label_weights) == len(EMOTIONS)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in self.label_weights)
            and sum(self.label_weights) > 0)
        require(weights_ok, "generate.label_weights", self.label_weights,
                 f"{len(EMOTIONS)} non-negative numbers, not all zero, in the order {list(EMOTIONS)}")

