"""Typed run configuration: dataclass defaults, YAML overrides, ``key=value`` overrides.

Every number lives here once. YAML files and command-line overrides only change
fields that exist; an unknown key is a ``UserError`` naming it. The resolved
config is written beside the checkpoints (``Config.save``), without secrets.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fe_train.config.checks import require
from fe_train.config.decoder import DecoderConfig
from fe_train.config.emotion import EmotionConfig
from fe_train.config.evaluation import CONTROLS, EvalConfig
from fe_train.config.generate import GenerateConfig
from fe_train.config.loading import from_tree, key_lines, merge_overrides, read_yaml
from fe_train.config.prompts import EMOTION_TURN, EMPATHY_SYSTEM, HELPFUL_SYSTEM
from fe_train.config.sections import (
    EMOTIONS,
    PLACEMENTS,
    PRECISIONS,
    SAMPLE_RATE_HZ,
    DataConfig,
    EngineConfig,
    ModelConfig,
    PromptConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "CONTROLS", "EMOTIONS", "EMOTION_TURN", "EMPATHY_SYSTEM", "HELPFUL_SYSTEM", "PLACEMENTS",
    "PRECISIONS", "SAMPLE_RATE_HZ", "Config", "DataConfig", "DecoderConfig", "EmotionConfig", "EngineConfig",
    "EvalConfig", "GenerateConfig", "ModelConfig", "PromptConfig", "RunConfig", "TrainConfig", "from_tree",
    "merge_overrides", "read_yaml", "require",
]

@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    run: RunConfig = field(default_factory=RunConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    emotion: EmotionConfig = field(default_factory=EmotionConfig)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
        """Defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
        tree: dict[str, Any] = {}
        if path is not None:
            tree = read_yaml(path)
        merge_overrides(tree, overrides)
        overridden = {item.partition("=")[0] for item in overrides}
        lines = {key: line for key, line in key_lines(path).items() if key not in overridden} if path else None
        return from_tree(cls, tree, where=str(path) if path else "overrides", lines=lines)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        os.replace(tmp, path)

