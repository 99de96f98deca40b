"""Converting a ZeRO checkpoint to DeepSpeed's universal form, to resume on another number of ranks."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

from fe_train.errors import UserError

log = logging.getLogger(__name__)


def convert(source: Path, target: Path) -> Path:
    """Write the universal form of checkpoint folder ``source`` to ``target`` (atomically; kept if present)."""
    if target.is_dir():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source),
               "--output_folder", str(partial), "--num_extract_workers", "1", "--num_merge_workers", "1"]
    log.info("converting %s to a universal checkpoint for a new world size", source)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise UserError(f"checkpoint {source}: conversion to the universal form failed ({tail[0]})")
    partial.rename(target)
    return target


def enable_universal_load(ds: dict) -> None:
    """NOTE(deepspeed): a universal checkpoint loads only with ``checkpoint.load_universal`` in the config."""
    ds.setdefault("checkpoint", {})["load_universal"] = True
