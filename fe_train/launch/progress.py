"""The one progress bar of every long command: tqdm on rank 0, on when stderr is a terminal unless asked.

A Slurm log is not a terminal: there a bar would write a line per refresh, so it is off
unless ``run.progress_bar: true`` (or ``--progress`` of ``fe-shards``) asks for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable


def bar_wanted(setting: bool | None, is_main: bool | None = None) -> bool:
    """``setting`` None: show the bar when stderr is a terminal; True/False: as said. Only on rank 0
    (``is_main`` None: the launcher's ``RANK``, 0 without one)."""
    if is_main is None:
        is_main = os.environ.get("RANK", "0") == "0"
    return is_main and (sys.stderr.isatty() if setting is None else setting)


def progress_bar(desc: str, unit: str, setting: bool | None, is_main: bool | None = None, total: int | None = None,
                 initial: int = 0, iterable: Iterable | None = None):
    """A tqdm bar, over ``iterable`` if given; where ``bar_wanted`` says no, a disabled one (it still iterates)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread in a rank that forks DataLoader workers
    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=True,
                disable=not bar_wanted(setting, is_main))
