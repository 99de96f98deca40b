"""Files that ship with fe-train (``configs/*.yaml`` presets, ``ds_configs/*.json``), found from any directory.

A relative path is looked up in the working directory first, then in the source checkout (a clone or an
editable install), then where pip put the wheel's data files (``<prefix>/share/fe-train/``, setup.cfg's
``data_files``): ``fe-train train --config configs/stage1_tiny.yaml`` works from anywhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
INSTALLED = Path(sys.prefix) / "share" / "fe-train"


def shipped(relative: str | os.PathLike) -> Path:
    """The shipped file at ``relative`` (e.g. ``configs/stage1_tiny.yaml``): the checkout's, else the installed one."""
    for root in (CHECKOUT, INSTALLED):
        if (root / relative).is_file():
            return root / relative
    return CHECKOUT / relative


def shipped_file(path: str | os.PathLike) -> Path:
    """``path`` itself when it exists or is absolute, else the shipped file of that relative path (if any)."""
    file = Path(path)
    if file.is_file() or file.is_absolute() or not shipped(file).is_file():
        return file
    return shipped(file)
