"""The generic JSONL manifest importer: one clip per line, any soundfile-readable audio.

Each line is an object with ``audio`` (a path, relative to the manifest's folder
or absolute) and optionally ``key``, ``text``, ``reply``, ``emotion``,
``pseudo_emotion``, ``speaker``, ``corpus``, ``split``; every other field is kept in
the sample's JSON untouched. A line that cannot be used is skipped and counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fe_train.config import EMOTIONS
from fe_train.data.schema import KNOWN_FIELDS, Meta, SampleError
from fe_train.errors import UserError

KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(text: str) -> str:
    """A sample key WebDataset groups correctly: no dots or slashes (``a/b.c`` -> ``a-b-c``)."""
    return KEY_CHARS.sub("-", text).strip("-")


@dataclass
class Clip:
    meta: Meta
    audio: Path


@dataclass
class Skips:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str, keep: int = 5) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < keep:
            self.examples[reason].append(where)


def read_manifest(path: str | Path, skips: Skips) -> Iterator[Clip]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path}: no such file (expected a JSONL file with one clip per line)")
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield _clip(json.loads(line), path.parent, where)
            except json.JSONDecodeError:
                skips.add("bad_json", where)
            except SampleError as exc:
                skips.add(exc.reason, where)


def _clip(record, base: Path, where: str) -> Clip:
    if not isinstance(record, dict):
        raise SampleError("bad_json")
    audio = record.pop("audio", None)
    if not isinstance(audio, str) or not audio:
        raise SampleError("missing_field:audio")
    audio_path = Path(audio) if Path(audio).is_absolute() else base / audio
    if record.get("emotion") and record["emotion"] not in EMOTIONS:
        raise SampleError("unknown_label")
    key = safe_key(str(record.pop("key", "") or Path(audio).with_suffix("").as_posix()))
    known = {name: record.pop(name) for name in KNOWN_FIELDS if name in record and name != "key"}
    return Clip(Meta(key=key, **known, extra=record), audio_path)
