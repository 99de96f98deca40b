"""Distributed start-up and the DeepSpeed engine: the only place DeepSpeed is touched."""

from __future__ import annotations

import contextlib
import logging
import math
from datetime import timedelta
from typing import Any

import deepspeed
import torch
from torch import nn

from fe_train.config import Config
from fe_train.engine import ds_config
from fe_train.launch import env as launch_env
from fe_train.launch.env import LaunchEnv
from fe_train.model.freezing import trainable_params
from fe_train.model.pretrained import precision_dtype

log = logging.getLogger(__name__)


def device_for(launch: LaunchEnv) -> torch.device:
    cuda = torch.cuda.is_available()
    launch_env.check_device(cuda)
    if cuda:
        return torch.device("cuda", launch_env.cuda_device_index(launch.local_rank, torch.cuda.device_count()))
    return torch.device("cpu")


def init_distributed(launch: LaunchEnv, cfg: Config) -> torch.device:
    """Start torch.distributed through DeepSpeed with the launcher record; returns this rank's device."""
    device = device_for(launch)
    launch_env.export(launch, device.index if device.type == "cuda" else None)
    backend = cfg.engine.dist_backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    deepspeed.init_distributed(
        dist_backend=backend,
        auto_mpi_discovery=False,
        timeout=timedelta(seconds=cfg.engine.timeout_s),
        rank=launch.rank,
        world_size=launch.world_size,
        verbose=False,
    )
    return device


class PartitionedBuild:
    """Context in which transformers' ``from_pretrained`` builds ZeRO-3-partitioned models.

    NOTE(deepspeed): transformers keeps only a weak reference to ``HfDeepSpeedConfig``;
    the object must stay alive while models are built, or every rank loads a full copy.
    https://huggingface.co/docs/transformers/main/en/deepspeed#non-trainer-deepspeed-integration
    """

    def __init__(self, ds: dict[str, Any]):
        self.ds = ds
        self.hf_config = None

    def load_causal_lm(self, path: str, dtype: torch.dtype, activation_checkpointing: bool = False) -> nn.Module:
        """The frozen LLM: under ZeRO-3 built partitioned, each rank reading only its slices; else a plain load."""
        from fe_train.model.frozen_llm import load_llm

        if self.ds["zero_optimization"]["stage"] != 3:
            return load_llm(path, dtype, activation_checkpointing)
        from fe_train.engine.partitioned_load import load_causal_lm

        llm = load_causal_lm(path, self.ds, dtype, torch.distributed.get_rank())
        if activation_checkpointing:
            llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return llm

    def __enter__(self):
        from transformers.integrations import HfDeepSpeedConfig

        if self.ds["zero_optimization"]["stage"] == 3:
            self.hf_config = HfDeepSpeedConfig(self.ds)
        return self

    def __exit__(self, *exc):
        return False


class WholeBuild(contextlib.nullcontext):
    """``partitioned()`` of a plan that keeps the frozen models whole: every part loads plainly, none under zero.Init."""

    def load_causal_lm(self, path: str, dtype: torch.dtype, activation_checkpointing: bool = False) -> nn.Module:
        from fe_train.model.frozen_llm import load_llm

        return load_llm(path, dtype, activation_checkpointing)


def warmup_cosine(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """LR multiplier: linear warmup over ``warmup_ratio`` of the steps, then cosine to ``min_lr_ratio``."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def cast_unpartitioned(model: nn.Module, dtype: torch.dtype) -> None:
    """Every parameter not built under ``zero.Init`` (the trained modules, and frozen ones loaded whole) in ``dtype``.

    NOTE(deepspeed): the engine casts its module to the config's precision only when no part of it was built
    under ``zero.Init``; with the frozen LLM built partitioned, the adapter, extractor, heads and fusion would
    stay fp32 beside a bf16 LLM and decoder (ZeRO-3 then refuses the mixed dtypes of stage 3).
    ZeRO-3 keeps the fp32 master copy of each trained parameter in the optimizer.
    """
    for param in model.parameters():
        if not hasattr(param, "ds_id") and param.dtype != dtype and param.is_floating_point():
            param.data = param.data.to(dtype)


def build_engine(model: nn.Module, ds: dict[str, Any], cfg: Config, total_steps: int):
    """A DeepSpeed engine whose optimizer holds state for the trainable parameters only."""
    cast_unpartitioned(model, precision_dtype(cfg.train.precision))
    params = trainable_params(model)
    train = cfg.train
    if ds_config.optimizer_impl(cfg, ds) == "deepspeed_cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(params, lr=train.lr, betas=tuple(train.adam_betas), weight_decay=train.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=train.lr, betas=tuple(train.adam_betas), weight_decay=train.weight_decay)
    factor = warmup_cosine(total_steps, train.warmup_ratio, train.min_lr_ratio)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor),
        config=ds,
        dist_init_required=False,
    )
    return engine


def build_inference_engine(model: nn.Module, ds: dict[str, Any]):
    """A DeepSpeed engine without an optimizer (every weight frozen), partitioned by the same policy as training."""
    engine, *_ = deepspeed.initialize(model=model, config=ds, dist_init_required=False)
    engine.eval()
    return engine


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a small float64 tensor over ranks (on the engine's device)."""
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)
    return values


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def shutdown(synchronize: bool = True) -> None:
    """Tear the process group down before the interpreter exits.

    NOTE(torch): a gloo/NCCL process group left alive until interpreter teardown can
    abort the process ("terminate called without an active exception") after all work
    is done; destroying it explicitly while Python is still intact avoids that.
    """
    if torch.distributed.is_initialized():
        if synchronize:
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
