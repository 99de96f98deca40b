"""Where a frozen model lives for inference: ``eval.placement``, ``generate.llm_placement`` and ``fe-train infer``.

replicate: a whole copy on every rank; ranks run independently.
zero3: one copy partitioned over all ranks by DeepSpeed ZeRO-3 (the policy of ``engine.ds_config``); every
rank gathers each layer for every forward, so every rank must make the same forwards and ``generate``
calls (``synced``: pass ``synced_gpus=True``). For a model that does not fit on one device.

NOTE(deepspeed): with no optimizer, ``deepspeed.initialize`` builds ZeRO-3's parameter offload only
(DeepSpeedZeRoOffload); the engine's ``__del__`` removes its hooks, so it is kept alive with the model.
https://deepspeed.readthedocs.io/en/latest/zero3.html
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fe_train.config import PLACEMENTS
from fe_train.engine import ds_config
from fe_train.engine.build import PartitionedBuild, WholeBuild, build_inference_engine
from fe_train.errors import UserError


@dataclass
class Placed:
    model: nn.Module
    """What forwards and ``generate`` are called on."""
    tokenizer: Any
    synced: bool
    """Every rank must make the same forwards and ``generate`` calls (ZeRO-3 over several ranks)."""
    owner: object = None
    """The DeepSpeed engine that owns the partitioning hooks, kept alive with the model."""


def place(build: Callable[[Callable], tuple[nn.Module, Any]], how: str, policy_path: str, dtype: torch.dtype,
          batch_size: int, device: torch.device, world_size: int, key: str) -> Placed:
    """Place what ``build(partitioned)`` returns, ``(model, tokenizer)``, as ``how`` says (the value of config ``key``).

    ``build`` loads its frozen LLM with ``partitioned().load_causal_lm`` and other large parts inside
    ``with partitioned():``, as the recipes' builders do.
    """
    if how == "replicate":
        model, tokenizer = build(WholeBuild)
        # Every part in the run's precision, as a DeepSpeed engine holds the model it trains (the trainable parts are
        # built in fp32 and the frozen ones loaded in ``dtype``: mixed, a bf16 decoder would meet fp32 fused inputs).
        return Placed(model.to(device=device, dtype=dtype).eval(), tokenizer, synced=False)
    if how != "zero3":
        raise UserError(f"config {key} = {how!r}: expected one of {PLACEMENTS}")
    ds = inference_config(policy_path, dtype, batch_size, world_size, f"{key}=zero3")
    model, tokenizer = build(lambda: PartitionedBuild(ds))
    engine = build_inference_engine(model, ds)
    return Placed(engine.module, tokenizer, synced=world_size > 1, owner=engine)


def inference_config(policy_path: str, dtype: torch.dtype, micro_batch_size: int, world_size: int, use: str) -> dict:
    """The ZeRO-3 policy of ``policy_path`` with the numbers of an inference run (no optimizer, no accumulation)."""
    ds = ds_config.read_policy(policy_path)
    if ds["zero_optimization"]["stage"] != 3:
        raise UserError(f"config engine.ds_config = {policy_path!r}: expected zero_optimization.stage 3 for {use}")
    ds.update(
        train_micro_batch_size_per_gpu=micro_batch_size,
        train_batch_size=micro_batch_size * world_size,
        gradient_accumulation_steps=1,
        bf16={"enabled": dtype == torch.bfloat16},
        steps_per_print=2**31 - 1,
    )
    return ds
