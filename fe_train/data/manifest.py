"""The generic JSONL manifest importer: one clip per line, any soundfile-readable audio.

Each line is an object with the audio as ``audio`` (a path, relative to the
manifest's folder or absolute) or ``audio_base64`` (the bytes of a
soundfile-readable file, base64-encoded), and optionally ``key``, ``text``,
``reply``, ``emotion``, ``pseudo_emotion``, ``speaker``, ``corpus``, ``split``
and ``units`` (a list of ints or a ``"<n><n>..."`` string, stored as
``{key}.units.npy``). Every other field is kept in the sample's JSON untouched.

``emotion`` goes through the label map: by default the five classes as the
recipe spells them, and ``--label joy=happy --label fear=drop`` maps any other
corpus's names. For speech instructions (corpus ``instructions``), ``text`` is
the instruction (required) and ``reply`` its reply text. A line that cannot be
used is skipped and counted by reason with its ``file:line``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path

from fe_train.data.clip import Clip, parse_units, safe_key
from fe_train.data.labels import IDENTITY, LabelMap
from fe_train.data.schema import KNOWN_FIELDS, Meta, SampleError
from fe_train.data.stats import Skips
from fe_train.errors import UserError

__all__ = ["Clip", "Skips", "read_manifest", "safe_key"]

NAME = "manifest"
LABELS = IDENTITY


def read_manifest(path: str | Path, skips: Skips, labels: LabelMap | None = None,
                  require_text: bool = False) -> Iterator[Clip]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path}: no such file (expected a JSONL file with one clip per line)")
    labels = labels or LabelMap(LABELS)
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield _clip(json.loads(line), path, number, labels, require_text)
            except json.JSONDecodeError:
                skips.add("bad_json", where)
            except SampleError as exc:
                skips.add(exc.reason, f"{where} ({exc.detail})" if exc.detail else where)


def scan(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    return read_manifest(root, skips, labels)


def scan_instructions(root: str | Path, labels: LabelMap, skips: Skips) -> Iterator[Clip]:
    return read_manifest(root, skips, labels, require_text=True)


def _clip(record, manifest: Path, number: int, labels: LabelMap, require_text: bool) -> Clip:
    if not isinstance(record, dict):
        raise SampleError("bad_json", "not an object")
    audio, encoded = record.pop("audio", None), record.pop("audio_base64", None)
    if isinstance(audio, str) and audio:
        source: Path | bytes = Path(audio) if Path(audio).is_absolute() else manifest.parent / audio
        default_key = Path(audio).with_suffix("").as_posix()
    elif isinstance(encoded, str) and encoded:
        try:
            source = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise SampleError("bad_base64") from None
        default_key = f"{manifest.stem}-{number}"
    else:
        raise SampleError("missing_field:audio", "expected 'audio' (a path) or 'audio_base64'")
    if require_text and not (isinstance(record.get("text"), str) and record["text"].strip()):
        raise SampleError("missing_transcript", "an instruction needs its 'text'")
    if record.get("emotion"):
        record["label_raw"] = record["emotion"]
        record["emotion"] = labels(str(record["emotion"]))
    units = record.pop("units", None)
    units = parse_units(units) if units is not None else None
    key = safe_key(str(record.pop("key", "") or default_key))
    if not key:
        raise SampleError("bad_key", "empty after removing characters other than A-Z a-z 0-9 _ -")
    known = {name: record.pop(name) for name in KNOWN_FIELDS if name in record and name != "key"}
    where = f"{manifest}:{number}"
    return Clip(Meta(key=key, **known, extra=record), source, where=where, units=units)
