"""wandb in a process of its own, fed one JSON line per call by rank 0, which never waits for it.

Rank 0 is a training rank: it must reach every collective in step with the others, and it forks
DataLoader workers, which must not inherit wandb's threads (wandb/wandb#12079: "things are still
likely to break when forking"). A ``wandb.init`` or ``finish`` that stalls (a service slow to start,
a network that does not answer) would otherwise leave every other rank waiting in its next collective
until ``engine.timeout_s`` ends the job. Here wandb runs beside the job: if it is slow, the records
wait in the pipe; if it fails, rank 0 says so once and trains on. ``metrics.jsonl`` stays the record
of the run either way.

    python -m fe_train.tracking.wandb_sink    (stdin: {"init": kwargs}, {"log": metrics, "step": n}, {"finish": true})
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger("fe_train")

BACKLOG_BYTES = 8 << 20
"""Records rank 0 holds while the sink is behind; past this, new ones are dropped (and counted)."""


class WandbSink:
    """Rank 0's end: starts the sink and writes to it without blocking."""

    def __init__(self, init: dict[str, Any]):
        self.proc = subprocess.Popen([sys.executable, "-m", "fe_train.tracking.wandb_sink"], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, close_fds=True)
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.pending = b""
        self.dropped = 0
        self.failed = False
        self._send({"init": init})

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._send({"log": metrics, "step": step})

    def finish(self, timeout_s: float = 120.0) -> None:
        """Send the rest, let the sink finish the run; after ``timeout_s`` it is stopped (its records are in metrics.jsonl)."""
        self._send({"finish": True})
        deadline = time.monotonic() + timeout_s
        while self.pending and self.proc.poll() is None and time.monotonic() < deadline:
            select.select([], [self.proc.stdin], [], 1.0)
            self._flush()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            log.warning("wandb did not finish within %.0f s and was stopped: the run's metrics are in metrics.jsonl", timeout_s)
        if self.dropped:
            log.warning("wandb fell behind: %d records were not sent to it (they are in metrics.jsonl)", self.dropped)

    def _send(self, record: dict[str, Any]) -> None:
        if self._gone():
            return
        line = (json.dumps(record, default=str) + "\n").encode()
        if len(self.pending) + len(line) > BACKLOG_BYTES:
            self.dropped += 1
            return
        self.pending += line
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            try:
                written = os.write(self.proc.stdin.fileno(), self.pending)
            except BlockingIOError:
                return
            except (BrokenPipeError, OSError):
                self._gone()
                self.pending = b""
                return
            self.pending = self.pending[written:]

    def _gone(self) -> bool:
        """True once the sink has exited; said once, as a warning."""
        code = self.proc.poll()
        if code is not None and not self.failed:
            self.failed = True
            log.warning("wandb stopped (exit status %d, its error above): training goes on, metrics go to metrics.jsonl", code)
        return self.failed


def serve(lines) -> int:
    """The sink's side: one wandb run from the records read; EOF before ``finish`` (rank 0 died) ends it as failed."""
    import wandb

    run = None
    for line in lines:
        record = json.loads(line)
        if "init" in record:
            kwargs = record["init"]
            kwargs["settings"] = wandb.Settings(**kwargs.get("settings", {}))
            try:
                run = wandb.init(**kwargs)
            except Exception as exc:  # wandb's own errors: one line, and rank 0 trains on without it
                print(f"wandb: init failed: {exc}".splitlines()[0], file=sys.stderr, flush=True)
                return 1
        elif "log" in record:
            run.log(record["log"], step=record["step"])
        elif "finish" in record:
            run.finish()
            return 0
    if run is not None:
        run.finish(exit_code=1)
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin))
