"""Resumability: a finished step leaves ``<out>/.pipeline/<step>.done`` holding its command and digests.

A step's digest covers its resolved command, the preset file it names and the digests of the steps it depends on, so
a changed upstream step changes every step after it. In Slurm mode the planner writes ``<step>.done.pending`` at
submission and the job renames it when it succeeds (``FE_PIPELINE_MARKER``): a failed or cancelled job leaves none."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fe_train.config.files import shipped_file
from fe_train.errors import UserError
from fe_train.reproduce.steps import Step


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def config_digest(argv: list[str]) -> str:
    """The resolved command and the bytes of the preset it names (``--config``)."""
    preset = argv[argv.index("--config") + 1] if "--config" in argv else ""
    text = shipped_file(preset).read_text() if preset and shipped_file(preset).is_file() else ""
    return sha256(json.dumps([argv, text]))


@dataclass(frozen=True)
class Marker:
    step: str
    command: list[str]
    config_digest: str
    inputs_digest: str
    """Digest of the markers of the steps this one depends on."""

    @property
    def digest(self) -> str:
        return sha256(self.config_digest + self.inputs_digest)

    def text(self) -> str:
        return json.dumps({"step": self.step, "command": self.command, "config_digest": self.config_digest,
                           "inputs_digest": self.inputs_digest, "digest": self.digest}, indent=1) + "\n"


def marker_dir(out: Path) -> Path:
    return out / ".pipeline"


def marker_path(out: Path, step: str) -> Path:
    return marker_dir(out) / f"{step}.done"


def expected_markers(steps: list[Step], commands: dict[str, list[str]]) -> dict[str, Marker]:
    """The marker each step will leave when it finishes with today's commands and config."""
    markers: dict[str, Marker] = {}
    for step in steps:
        inputs = sha256(json.dumps([markers[d].digest for d in step.deps]))
        markers[step.name] = Marker(step.name, commands[step.name], config_digest(commands[step.name]), inputs)
    return markers


def read_digest(path: Path) -> str:
    try:
        return json.loads(path.read_text())["digest"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{path}: unreadable pipeline marker ({exc}); delete it to run the step again") from exc
