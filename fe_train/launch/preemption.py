"""Checkpoint signals caught from the first moment of the process.

SLURM's ``--signal=USR1@<s>`` can arrive while a rank is still importing or loading
models; Python's default for SIGUSR1 would kill it and lose the requeue. The CLI
installs this handler first thing; the trainer reads ``requested()`` at every step.
"""

from __future__ import annotations

import signal

_requested = False


def _note(signum, frame) -> None:
    global _requested
    _requested = True


def install(names: list[str]) -> None:
    """Catch ``names`` (e.g. ``["SIGUSR1"]``): from now on they only set the request flag."""
    for name in names:
        signal.signal(getattr(signal, name), _note)


def requested() -> bool:
    return _requested
