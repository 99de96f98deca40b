"""DeepSpeed config resolution: memory policy from ``ds_configs/*.json``, numbers from the run config."""

from __future__ import annotations

import json
from typing import Any

from fe_train.config import Config
from fe_train.config.files import shipped_file
from fe_train.errors import UserError

INJECTED = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
    "bf16",
    "fp16",
)
"""Keys the run config owns; a ds_config JSON that sets one is rejected (no second source of truth)."""


def read_policy(path: str) -> dict[str, Any]:
    """Load a ds_config JSON and check that it holds engine and memory policy only.

    A relative path is looked up in the working directory, then among the shipped ``ds_configs/``.
    """
    file = shipped_file(path)
    if not file.is_file():
        raise UserError(f"config engine.ds_config = {path!r}: no such file (expected a JSON under ds_configs/)")
    try:
        policy = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(policy, dict):
        raise UserError(f"{path}: expected a JSON object")
    repeated = [key for key in INJECTED if key in policy]
    if repeated:
        raise UserError(f"{path}: sets {repeated}, which come from the run config (train.*); remove them from the JSON")
    if "zero_optimization" not in policy or "stage" not in policy["zero_optimization"]:
        raise UserError(f"{path}: expected zero_optimization.stage")
    return policy


WHOLE = 10**12
"""A ``stage3_param_persistence_threshold`` at least this large keeps every tensor whole (``zero3_replicated.json``)."""


def keeps_frozen_whole(ds: dict[str, Any]) -> bool:
    """The policy keeps every frozen weight whole on every rank: the frozen models then stay out of the engine
    (``fe_train.model.freezing.keep_frozen_outside``) and only the trained modules are ZeRO-3's."""
    zero = ds["zero_optimization"]
    return zero["stage"] == 3 and zero.get("stage3_param_persistence_threshold", 0) >= WHOLE


def gradient_accumulation(cfg: Config, world_size: int) -> int:
    """Micro-batches per rank per optimizer step: global batch / (micro batch x ranks), a whole number."""
    glob, micro = cfg.train.global_batch_size, cfg.train.micro_batch_size
    if glob % (micro * world_size):
        raise UserError(
            f"config train.global_batch_size = {glob} is not a multiple of train.micro_batch_size ({micro}) x "
            f"world size ({world_size}): {batch_fix(glob, micro, world_size)}"
        )
    return glob // (micro * world_size)


def batch_fix(glob: int, micro: int, world_size: int) -> str:
    """The smallest change that makes the global batch split over ``world_size`` ranks."""
    if glob % world_size == 0:
        fits = max(m for m in range(1, min(micro, glob // world_size) + 1) if (glob // world_size) % m == 0)
        return f"set train.micro_batch_size={fits} (keeps the global batch)"
    larger = -(-glob // (micro * world_size)) * micro * world_size
    return f"set train.global_batch_size={larger}, or run on a world size that divides {glob}"


def resolve(cfg: Config, world_size: int) -> dict[str, Any]:
    """The full DeepSpeed config for this run."""
    ds = read_policy(cfg.engine.ds_config)
    ds.update(
        train_batch_size=cfg.train.global_batch_size,
        train_micro_batch_size_per_gpu=cfg.train.micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation(cfg, world_size),
        gradient_clipping=cfg.train.grad_clip,
        bf16={"enabled": cfg.train.precision == "bf16"},
        steps_per_print=2**31 - 1,
    )
    if optimizer_impl(cfg, ds) == "torch":
        # NOTE(deepspeed): with an offloaded optimizer DeepSpeed insists on DeepSpeedCPUAdam unless told
        # otherwise; a torch AdamW is the right choice on CPU-only machines (no 70 s JIT build).
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds


def optimizer_impl(cfg: Config, ds: dict[str, Any]) -> str:
    """torch or deepspeed_cpu: ``auto`` takes DeepSpeedCPUAdam only for an offloaded optimizer on a GPU machine."""
    if cfg.engine.optimizer != "auto":
        return cfg.engine.optimizer
    import torch

    device = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return "deepspeed_cpu" if device not in (None, "none") and torch.cuda.is_available() else "torch"
