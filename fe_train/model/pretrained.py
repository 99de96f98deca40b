"""Where a pretrained model is (a ``save_pretrained`` folder or a hub id in the Hugging Face cache), checked before
anything is loaded from it, and loading an export."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from fe_train.errors import UserError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
"""A Hugging Face hub model id (``Qwen/Qwen2.5-7B-Instruct``)."""
WEIGHTS = ("*.safetensors", "*.bin")


def pretrained_dir(path: str, key: str, config_only: bool = False) -> str:
    """The local folder of the model that config ``key`` names: ``path`` itself when it holds a ``config.json``
    (``save_pretrained``), else the snapshot of hub id ``path`` in the Hugging Face cache (``HF_HOME``), fetched
    from the hub unless ``HF_HUB_OFFLINE`` is set (only its ``config.json`` when ``config_only``: ``fe-train plan``).
    Anything else is one ``UserError`` naming ``key``, the value and what to do."""
    if not path:
        raise UserError(f"config {key} is empty: expected a directory saved with save_pretrained, or a hub id")
    if (Path(path) / "config.json").is_file():
        return path
    if Path(path).exists() or not HUB_ID.match(path):
        raise UserError(f"config {key} = {path!r}: no such model directory (expected config.json from save_pretrained, "
                        f"or a hub id such as Qwen/Qwen2.5-7B-Instruct)")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = constants.HF_HUB_OFFLINE
    patterns = ["config.json"] if config_only else None
    try:
        folder = Path(snapshot_download(path, allow_patterns=patterns, local_files_only=offline))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        where = "HF_HUB_OFFLINE is set" if offline else f"the hub did not answer ({type(exc).__name__})"
        raise UserError(f"config {key} = {path!r}: no such local folder, and the hub id is not in the Hugging Face cache "
                        f"{constants.HF_HUB_CACHE} ({where}): download it first with `hf download {path}` or give "
                        f"the folder that holds it") from None
    weights = config_only or any(next(folder.glob(pattern), None) for pattern in WEIGHTS)
    if not (folder / "config.json").is_file() or not weights:
        raise UserError(f"config {key} = {path!r}: the Hugging Face cache holds only part of it ({folder}): "
                        f"download it with `hf download {path}`")
    return str(folder)


def load_module(module: nn.Module, path: str, key: str) -> None:
    """Load an export into a module that is not yet partitioned (before the engine is built)."""
    if not Path(path).is_file():
        raise UserError(f"config {key} = {path!r}: no such file (expected an export such as adapter.safetensors)")
    state = load_file(path)
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: the config that shapes the module is not the exporting run's
        mismatch = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise UserError(f"config {key} = {path!r}: does not fit the configured {type(module).__name__} ({mismatch}); "
                        f"give the config values of the run that exported it") from None
    if missing or unexpected:
        raise UserError(f"{path}: does not fit the configured module (missing {missing[:3]}, unexpected {unexpected[:3]})")


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a config precision (``train.precision``, ``generate.precision``): bf16 or fp32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32
