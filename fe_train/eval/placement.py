"""Where the evaluated model lives (``eval.placement``): a whole copy per rank, or the LLM partitioned by ZeRO-3."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fe_train.config import Config
from fe_train.model.pretrained import precision_dtype


@dataclass
class PlacedModel:
    model: nn.Module
    tokenizer: object
    synced: bool
    """Every rank must make the same forwards and ``generate`` calls (ZeRO-3 over several ranks)."""
    owner: object = None
    """The DeepSpeed engine that owns the partitioning hooks, kept alive with the model."""


def replicate(cfg: Config, build: Callable, device: torch.device, world_size: int) -> PlacedModel:
    from fe_train.engine.build import WholeBuild

    model, tokenizer = build(precision_dtype(cfg.train.precision), WholeBuild)
    return PlacedModel(model.to(device).eval(), tokenizer, synced=False)


def zero3(cfg: Config, build: Callable, device: torch.device, world_size: int) -> PlacedModel:
    from fe_train.engine.build import PartitionedBuild
    from fe_train.engine.inference import inference_config, inference_engine

    ds = inference_config(cfg.engine.ds_config, precision_dtype(cfg.train.precision), cfg.eval.batch_size, world_size, "eval.placement=zero3")
    model, tokenizer = build(precision_dtype(cfg.train.precision), lambda: PartitionedBuild(ds))
    engine = inference_engine(model, ds)
    return PlacedModel(engine.module, tokenizer, synced=world_size > 1, owner=engine)


PLACEMENTS = {"replicate": replicate, "zero3": zero3}
"""``eval.placement`` -> (cfg, build(dtype, partitioned), device, world size) -> ``PlacedModel``."""
