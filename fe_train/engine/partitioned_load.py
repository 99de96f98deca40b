"""Loading a frozen causal LM straight into its ZeRO-3 partitions: each rank reads only its slice.

transformers' own ZeRO-3 path materialises every full tensor on the ranks while it
partitions them, so a rank's peak host memory exceeds a plain load's
(bench/load_memory.py: 1.6x for a 0.3B model on 2 ranks). Here the model is built
under ``deepspeed.zero.Init`` from its config, already partitioned, and every rank
reads from the safetensors files only the elements it owns (plain reads, no memory
map): peak host memory per rank is about 1/world of the weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path

import deepspeed
import torch
from torch import nn

from fe_train.errors import UserError
from fe_train.model.pretrained import pretrained_dir

log = logging.getLogger(__name__)


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


class SafetensorsFile:
    """Reads element ranges of a safetensors file's tensors with plain file reads.

    The format is an 8-byte header length, a JSON header (name -> dtype, shape, byte offsets) and the
    data. Reading with ``os.pread`` instead of a memory map keeps the file out of the process's resident
    memory: a rank holds its partition and nothing else.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        (length,) = struct.unpack("<Q", os.pread(self.fd, 8, 0))
        self.header = json.loads(os.pread(self.fd, length, 8))
        self.header.pop("__metadata__", None)
        self.data_start = 8 + length

    def numel(self, name: str) -> int:
        return math.prod(self.header[name]["shape"])

    def read_into(self, name: str, start: int, out: torch.Tensor) -> None:
        """Fill the 1-D CPU tensor ``out`` with elements [start, start + len(out)) of tensor ``name``."""
        entry = self.header[name]
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise UserError(f"{self.path}: tensor {name!r} has dtype {entry['dtype']}, expected a float type")
        target = out if out.dtype == dtype and out.is_contiguous() else torch.empty(out.numel(), dtype=dtype)
        size = target.element_size()
        offset = self.data_start + entry["data_offsets"][0] + start * size
        view = memoryview(target.view(torch.uint8).numpy())
        while view.nbytes:  # pread may return fewer bytes than asked
            done = os.preadv(self.fd, [view], offset)
            if done <= 0:
                raise UserError(f"{self.path}: truncated while reading {name!r}")
            view, offset = view[done:], offset + done
        if target is not out:
            out.copy_(target)

    def close(self) -> None:
        os.close(self.fd)


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (single file or sharded index)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return {name: path / file for name, file in json.loads(index.read_text())["weight_map"].items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise UserError(f"model.llm_path = '{path}': no model.safetensors(.index.json) to load partitions from")
    return dict.fromkeys(SafetensorsFile(single).header, single)


def load_causal_lm(path: str, ds: dict, dtype: torch.dtype, rank: int) -> nn.Module:
    """A frozen, eval-mode causal LM built partitioned under ZeRO-3 ``ds`` with its weights from ``path``."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    path = pretrained_dir(path, "model.llm_path")
    root = Path(path)
    files = weight_files(root)
    # NOTE(deepspeed): zero.Init takes its dtype from the config (bf16.enabled), not from `dtype=`.
    # NOTE(transformers): no_init_weights skips torch's and transformers' initialisers, which would write into
    # the empty partitioned tensors (and fail) and are wasted work: every weight is read from disk next.
    with deepspeed.zero.Init(config_dict_or_path=ds), no_init_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    model.tie_weights()  # tied embeddings become one parameter, stored (and read) once
    restore_rotary_buffers(model)
    readers = {file: SafetensorsFile(file) for file in set(files.values())}
    for name, param in model.named_parameters():
        if name not in files:
            raise UserError(f"{path}: the checkpoint has no tensor {name!r} (expected a save_pretrained directory)")
        reader = readers[files[name]]
        if reader.numel(name) != param.ds_numel:
            raise UserError(f"{path}: tensor {name!r} has {reader.numel(name)} elements, the model expects {param.ds_numel}")
        part = param.ds_tensor.ds_numel
        start, stop = part * rank, min(part * (rank + 1), param.ds_numel)
        if start < stop:
            with torch.no_grad():
                destination = param.ds_tensor[: stop - start]
                if destination.device.type == "cpu":
                    reader.read_into(name, start, destination)
                else:
                    staging = torch.empty(stop - start, dtype=destination.dtype)
                    reader.read_into(name, start, staging)
                    destination.copy_(staging)
    for reader in readers.values():
        reader.close()
    model.requires_grad_(False)
    model.eval()
    log.info("loaded frozen LLM from %s straight into ZeRO-3 partitions (rank %d reads 1/%d of it)",
             path, rank, torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)
    return model


def restore_rotary_buffers(model: nn.Module) -> None:
    """The rotary inverse frequencies in fp32, computed by transformers as a plain ``from_pretrained`` computes them.

    NOTE(deepspeed): under ``zero.Init`` tensor factories such as ``torch.arange`` return the config's dtype, and
    ``no_init_weights`` skips transformers' recomputation of these buffers: with a bf16 config the inverse frequencies
    come out rounded to bf16 (for Qwen2.5-7B the rotary angle at position 800 is off by 0.9 rad).
    """
    for module in model.modules():
        if "RotaryEmbedding" in type(module).__name__ and hasattr(module, "original_inv_freq"):
            for name in ("inv_freq", "original_inv_freq"):
                module.register_buffer(name, torch.zeros_like(getattr(module, name), dtype=torch.float32), persistent=False)
            model._init_weights(module)  # transformers' own rule per rope type (default, dynamic, yarn, ...)
