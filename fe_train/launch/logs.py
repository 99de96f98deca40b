"""Logging of every command's process: one format with the rank, INFO on rank 0, the noisy libraries quieted."""

from __future__ import annotations

import logging
import os
import sys


class StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment a record is emitted, not of the moment the handler was made.

    A command run in-process (tests, notebooks) may set up logging while ``sys.stderr`` is a stream that is
    closed later (pytest's capture); a handler bound to it would raise "I/O operation on closed file"
    at every later record.
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr


def setup_logging(rank: int = 0) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(level=level, format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
                        handlers=[StderrHandler()], force=True)
    logging.getLogger("fe_train.launch").setLevel(logging.INFO)  # every rank says who and where it is
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        hf_logging.disable_default_handler()  # bound to sys.stderr when made, like any StreamHandler
        hf_logging.enable_propagation()  # to the StderrHandler above
    except ImportError:
        pass


def setup_rank(rank: int) -> None:
    """A distributed command's process: logging, and every thread's stack printed if it is terminated."""
    from fe_train.launch import preemption

    setup_logging(rank)
    preemption.print_stacks_on_sigterm()
