"""Where the frozen LLM lives during generation (a registry keyed by ``generate.llm_placement``).

replicate: a whole copy on every rank; ranks generate independently.
zero3: one copy partitioned over all ranks by DeepSpeed ZeRO-3 (policy from
``engine.ds_config``); every rank gathers each layer for every forward, so the ranks
step together. For a model that does not fit on one device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fe_train.config import Config
from fe_train.model.frozen_llm import load_llm
from fe_train.model.pretrained import precision_dtype


@dataclass
class PlacedLLM:
    model: nn.Module
    """What ``generate`` is called on."""
    synced: bool
    """Every rank must make the same generate calls and forwards (ZeRO-3 over several ranks)."""
    owner: object = None
    """The DeepSpeed engine that owns the partitioning hooks, kept alive with the model."""


def replicate(cfg: Config, device: torch.device, world_size: int) -> PlacedLLM:
    return PlacedLLM(load_llm(cfg.model.llm_path, precision_dtype(cfg.generate.precision)).to(device), synced=False)


def zero3(cfg: Config, device: torch.device, world_size: int) -> PlacedLLM:
    from fe_train.engine.inference import zero3_inference

    engine = zero3_inference(lambda: load_llm(cfg.model.llm_path, precision_dtype(cfg.generate.precision)), cfg.engine.ds_config, precision_dtype(cfg.generate.precision),
                             cfg.generate.batch_size, world_size)
    return PlacedLLM(engine.module, synced=world_size > 1, owner=engine)


PLACEMENTS = {"replicate": replicate, "zero3": zero3}
