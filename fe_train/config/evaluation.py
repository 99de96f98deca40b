"""``eval``: evaluation, inference and the generation-based metrics of training."""

from __future__ import annotations

from dataclasses import dataclass, field

from fe_train.config.checks import require
from fe_train.config.sections import PLACEMENTS

CONTROLS = ("speech", "transcript", "gold_label", "random_label", "extractor")
"""What fills a user turn's slots (``eval.control``): the one vocabulary, ``fe_train.data.user_turn``."""


@dataclass
class EvalConfig:
    """Evaluation (``fe-train eval``, ``fe-train infer``) and the generation-based metrics of training."""

    tasks: list = field(default_factory=list)
    """Generation-based evaluations run with the eval loss at ``train.eval_every`` on data.eval_shards (e.g. [spokenqa])."""
    batch_size: int = 8
    """Items per rank per generate call."""
    max_new_tokens: int = 64
    """Reply tokens generated at most (greedy)."""
    placement: str = "replicate"
    """replicate: a whole model per rank; zero3: the frozen LLM partitioned over the ranks (policy: engine.ds_config)."""
    bootstrap_resamples: int = 1000
    """Resamples of the bootstrap confidence intervals."""
    confidence: float = 0.95
    """Coverage of the confidence intervals."""
    seed: int = 0
    """Seed of the bootstrap (and of the random-label control)."""
    vocoder: str = ""
    """Turns speech units into a wav: ``module:callable`` or the name of an ``fe_train.vocoders`` entry point ('' for none)."""
    control: str = "speech"
    """What fills the user turn: speech (the audio; the extractor's soft token in <emotion>), transcript (the text in
    place of <speech>), gold_label or random_label (a label word in place of <emotion>), extractor (as speech, and
    the turn must have <emotion>); see fe_train.data.user_turn."""
    controls: list = field(default_factory=lambda: ["speech", "transcript"])
    """The controls ``fe-train eval ablate`` compares, one table row each."""

    def __post_init__(self):
        require(isinstance(self.tasks, list) and all(isinstance(t, str) for t in self.tasks), "eval.tasks", self.tasks,
                 "a list of task names")
        for key in ("batch_size", "max_new_tokens", "bootstrap_resamples"):
            require(getattr(self, key) >= 1, f"eval.{key}", getattr(self, key), "an integer >= 1")
        require(self.placement in PLACEMENTS, "eval.placement", self.placement, f"one of {PLACEMENTS}")
        require(0.0 < self.confidence < 1.0, "eval.confidence", self.confidence, "a fraction in (0, 1)")
        require(self.control in CONTROLS, "eval.control", self.control, f"one of {CONTROLS}")
        require(isinstance(self.controls, list) and bool(self.controls) and set(self.controls) <= set(CONTROLS),
                 "eval.controls", self.controls, f"a non-empty list of {CONTROLS}")
