"""The generation output directory: ``key -> reply`` records in jsonl parts, written atomically.

::

    DIR/generate.json                 the settings the replies were made with (a resume must match them)
    DIR/part-BBBBBBBB-HHHHHHHH.jsonl  records of whole batches; B = first batch, H = hash of its first key
    DIR/summary.json                  written when every key has its reply

A part is written under a temporary name and renamed when complete, so a killed
run leaves only whole parts (and a ``.tmp`` file that readers ignore). A part
holds whole batches and a pending batch's keys are in no part, so a new part's
first key, and hence its name, is never one that exists.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fe_train.data.writer import atomic_write
from fe_train.errors import UserError

SETTINGS_NAME = "generate.json"
SUMMARY_NAME = "summary.json"
PART_GLOB = "part-*.jsonl"


@dataclass
class Records:
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    part_of: dict[str, str] = field(default_factory=dict)
    """Key -> name of the part that holds it."""
    repeated: int = 0
    """Records whose key an earlier part already held with the same reply."""


class PartStore:
    def __init__(self, out_dir: str | os.PathLike):
        self.root = Path(out_dir)

    def parts(self) -> list[Path]:
        return sorted(self.root.glob(PART_GLOB))

    def read(self) -> Records:
        """Every record of every part; a key with two different replies is a ``UserError`` naming both parts."""
        records = Records()
        for part in self.parts():
            for number, line in enumerate(part.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{part}:{number}: not a JSON line (expected a record written by fe-train generate)") from None
                if not isinstance(record, dict) or not isinstance(record.get("key"), str) or not isinstance(record.get("reply"), str):
                    raise UserError(f"{part}:{number}: expected an object with string 'key' and 'reply'")
                key = record["key"]
                if key in records.by_key:
                    if records.by_key[key]["reply"] != record["reply"]:
                        raise UserError(f"key {key!r} has two different replies, in {records.part_of[key]} and {part.name}")
                    records.repeated += 1
                    continue
                records.by_key[key] = record
                records.part_of[key] = part.name
        return records

    def write(self, first_batch: int, records: list[dict[str, Any]]) -> Path:
        first_key_hash = hashlib.sha1(records[0]["key"].encode()).hexdigest()[:8]
        path = self.root / f"part-{first_batch:08d}-{first_key_hash}.jsonl"
        if path.exists():
            raise UserError(f"{path} exists already: two runs are writing into {self.root}")
        lines = "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records)
        atomic_write(path, lines.encode("utf-8"))
        return path

    def check_settings(self, settings: dict[str, Any], write: bool) -> None:
        """Refuse a directory whose replies were made with other settings; ``write``: record ours if absent."""
        path = self.root / SETTINGS_NAME
        if path.is_file():
            stored = json.loads(path.read_text())
            changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
            if changed:
                raise UserError(f"{self.root} holds replies generated with other settings (differs: {', '.join(changed)}): "
                                f"use another --out, or the settings in {path}")
        elif write:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(path, json.dumps(settings, indent=1, sort_keys=True).encode())

    def write_summary(self, summary: dict[str, Any]) -> Path:
        path = self.root / SUMMARY_NAME
        atomic_write(path, json.dumps(summary, indent=1, sort_keys=True).encode())
        return path
