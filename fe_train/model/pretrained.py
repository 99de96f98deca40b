"""Checks on ``save_pretrained`` directories before anything is loaded from them, and loading an export."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fe_train.errors import UserError


def require_pretrained(path: str, key: str) -> None:
    """Raise a ``UserError`` naming ``key`` unless ``path`` holds a saved model's config.json."""
    if not path:
        raise UserError(f"config {key} is empty: expected a directory saved with save_pretrained")
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"config {key} = {path!r}: no such model directory (expected config.json from save_pretrained)")


def load_module(module: nn.Module, path: str, key: str) -> None:
    """Load an export into a module that is not yet partitioned (before the engine is built)."""
    if not Path(path).is_file():
        raise UserError(f"config {key} = {path!r}: no such file (expected an export such as adapter.safetensors)")
    state = load_file(path)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: does not fit the configured module (missing {missing[:3]}, unexpected {unexpected[:3]})")


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a config precision (``train.precision``, ``generate.precision``): bf16 or fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32
