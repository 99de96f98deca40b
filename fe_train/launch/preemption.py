"""Checkpoint signals caught from the first moment of the process.

SLURM's ``--signal=USR1@<s>`` can arrive while a rank is still importing or loading
models; Python's default for SIGUSR1 would kill it and lose the requeue. The CLI
installs this handler first thing; the trainer reads ``requested()`` at every step.
"""

from __future__ import annotations

import faulthandler
import signal
import sys

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


def print_stacks_on_sigterm() -> None:
    """On SIGTERM, print every thread's Python stack to stderr first, then end as before.

    torchrun sends SIGTERM to the other ranks when one fails (e.g. a collective timed out), and Slurm does on
    ``scancel`` or at the time limit: the stack of a rank that was stuck says where it waited.
    """
    if sys.__stderr__ is not None:  # the process's own stderr: a command run in-process may see a captured sys.stderr
        faulthandler.register(signal.SIGTERM, file=sys.__stderr__, all_threads=True, chain=True)
