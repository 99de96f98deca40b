"""Logging set up by a command run in-process keeps working after the stream it was set up under is closed;
a rank terminated by its launcher prints its stack."""

from __future__ import annotations

import io
import logging
import sys

from conftest import REPO, torchrun
from fe_train.launch.logs import setup_logging


def test_records_go_to_the_stderr_of_the_moment(monkeypatch):
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(0)
    first.close()  # as pytest closes a test's capture
    monkeypatch.setattr(sys, "stderr", second)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    logging.getLogger("fe_train.test").info("after the close")
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers.test").error("transformers after the close")
    written = second.getvalue()
    assert "Logging error" not in written and "closed file" not in written, written
    assert "[rank 0] INFO fe_train.test: after the close" in written
    assert "ERROR transformers.test: transformers after the close" in written


def test_a_terminated_rank_prints_where_it_was_stuck():
    """torchrun ends the other ranks with SIGTERM when one fails: the stuck rank's stack comes out first."""
    proc = torchrun([str(REPO / "tests" / "dist" / "stuck_rank.py")], timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "wait_for_the_peer" in out and "stuck_rank.py" in out, out[-3000:]
