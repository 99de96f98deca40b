"""Exporting trained modules from a (ZeRO-3 partitioned) engine to safetensors, and loading them back."""

from __future__ import annotations

import shutil
from pathlib import Path

import deepspeed
from safetensors.torch import save_file
from torch import nn


def export_modules(model: nn.Module, names: tuple[str, ...], out_dir: str | Path, is_main: bool) -> list[Path]:
    """Collective: gather each named submodule's full weights and write them (fp32).

    A module with a ``save_pretrained(directory, state_dict)`` method (the speech decoder: a
    transformers or peft model) writes the directory ``<name>/``; any other writes ``<name>.safetensors``.
    """
    out = Path(out_dir)
    written = []
    for name in names:
        module = getattr(model, name)
        params = list(module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if is_main:
                out.mkdir(parents=True, exist_ok=True)
                tensors = {key: value.detach().float().cpu().contiguous() for key, value in module.state_dict().items()}
                if hasattr(module, "save_pretrained"):
                    written.append(_save_pretrained(module, tensors, out / name))
                    continue
                path = out / f"{name}.safetensors"
                tmp = path.with_name(path.name + ".tmp")
                save_file(tensors, str(tmp), metadata={"module": name, "format": "pt"})
                tmp.replace(path)
                written.append(path)
    return written


def _save_pretrained(module: nn.Module, tensors: dict, path: Path) -> Path:
    """Write into a temporary directory and rename it, so that a reader never sees half an export."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(tmp, state_dict=tensors)
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)
    return path
