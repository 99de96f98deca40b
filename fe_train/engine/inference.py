"""The frozen LLM partitioned over ranks for generation: DeepSpeed ZeRO-3 inference, no optimizer."""

from __future__ import annotations

from collections.abc import Callable

import deepspeed
import torch
from torch import nn

from fe_train.engine import ds_config
from fe_train.engine.build import PartitionedBuild
from fe_train.errors import UserError


def zero3_inference(load: Callable[[], nn.Module], policy_path: str, dtype: torch.dtype, micro_batch_size: int,
                    world_size: int):
    """A DeepSpeed engine whose ``module`` is the LLM that ``load()`` builds, its weights partitioned over ranks.

    Every forward gathers each layer's weights from all ranks, so every rank must run
    the same number of forwards: pass ``synced_gpus=True`` to ``generate`` and make the
    same number of ``generate`` calls on every rank. Keep the engine alive while its
    module generates.

    NOTE(deepspeed): with no optimizer, ``deepspeed.initialize`` builds ZeRO-3's parameter
    offload only (DeepSpeedZeRoOffload); the engine's ``__del__`` removes its hooks.
    https://deepspeed.readthedocs.io/en/latest/zero3.html
    """
    ds = ds_config.read_policy(policy_path)
    if ds["zero_optimization"]["stage"] != 3:
        raise UserError(f"config engine.ds_config = {policy_path!r}: expected zero_optimization.stage 3 for "
                        "generate.llm_placement=zero3")
    ds.update(
        train_micro_batch_size_per_gpu=micro_batch_size,
        train_batch_size=micro_batch_size * world_size,
        gradient_accumulation_steps=1,
        bf16={"enabled": dtype == torch.bfloat16},
        steps_per_print=2**31 - 1,
    )
    with PartitionedBuild(ds):
        llm = load()
    engine, *_ = deepspeed.initialize(model=llm, config=ds, dist_init_required=False)
    engine.module.eval()
    return engine
