"""Stage-3 unit targets from an external TTS, one sequence of ints per sample key.

Accepted: a directory of ``{key}.npy`` (or ``{key}.units.npy``) files, each a 1-D
integer array; a ``.jsonl`` file of ``{"key": ..., "units": [ints]}`` lines; or a
directory holding both kinds. Files are indexed first and read when a sample
needs them, so a corpus of units does not have to fit in memory.

A directory that ``fe-shards units make`` wrote also holds ``manifest.json``,
which names the codebook of its units (the join records it when ``--codebook``
is not given, and refuses a ``--codebook`` that disagrees), and each of its
lines carries ``reply_digest``, the ``text_digest`` of the reply that was spoken:
units of a reply that changed since are not attached.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fe_train.data.manifest import Skips
from fe_train.data.schema import UNITS_EXT, SampleError, decode_units
from fe_train.errors import UserError

MANIFEST_NAME = "manifest.json"
"""What ``fe-shards units make`` made: the codebook, the tokenizer, counts and skipped samples."""
REPLY_DIGEST = "reply_digest"
"""Field of a units line: ``text_digest`` of the reply the units speak."""


class UnitFiles:
    def __init__(self, path: str | Path, skips: Skips):
        self.root = Path(path)
        self._npy: dict[str, Path] = {}
        self._jsonl: dict[str, tuple[Path, int]] = {}
        """Key -> (file, byte offset of its line)."""
        if self.root.is_dir():
            for file in sorted(self.root.glob("*.npy")):
                self._add(file.name.removesuffix(".npy").removesuffix(".units"), file, self._npy)
            files = sorted(self.root.glob("*.jsonl"))
        elif self.root.is_file() and self.root.suffix == ".jsonl":
            files = [self.root]
        else:
            raise UserError(f"--units {path}: expected a directory of {{key}}.npy / {{key}}.{UNITS_EXT} files or a .jsonl file")
        for file in files:
            self._index_jsonl(file, skips)
        self.codebook = self._manifest_codebook()
        """The codebook the manifest names ('' without one)."""

    def _manifest_codebook(self) -> str:
        manifest = self.root / MANIFEST_NAME if self.root.is_dir() else self.root.with_name(MANIFEST_NAME)
        if not manifest.is_file():
            return ""
        try:
            codebook = json.loads(manifest.read_text()).get("codebook", "")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            codebook = None
        if not isinstance(codebook, str):
            raise UserError(f"--units {self.root}: {manifest} is not a JSON object with a codebook name (expected the "
                            f"manifest fe-shards units make writes)")
        return codebook

    def codebook_for(self, given: str) -> str:
        """The codebook to record: ``given`` (``--codebook``) or the manifest's; a ``UserError`` when they differ."""
        if given and self.codebook and given != self.codebook:
            raise UserError(f"--codebook {given}: the units in {self.root} are of codebook {self.codebook!r} "
                            f"(its {MANIFEST_NAME}); leave --codebook out or make the units again")
        return given or self.codebook

    def _add(self, key: str, where, table: dict) -> None:
        if key in self._npy or key in self._jsonl:
            raise UserError(f"--units {self.root}: key {key!r} has two unit sequences (second one in {where})")
        table[key] = where

    def _index_jsonl(self, file: Path, skips: Skips) -> None:
        offset = 0
        with open(file, "rb") as stream:
            for number, line in enumerate(stream, 1):
                if line.strip():
                    try:
                        key = json.loads(line).get("key")
                    except (json.JSONDecodeError, AttributeError):
                        key = None
                    if isinstance(key, str) and key:
                        self._add(key, (file, offset), self._jsonl)
                    else:
                        skips.add("bad_units_line", f"{file}:{number}")
                offset += len(line)

    def keys(self) -> set[str]:
        return set(self._npy) | set(self._jsonl)

    def __contains__(self, key: str) -> bool:
        return key in self._npy or key in self._jsonl

    def _line(self, key: str) -> dict:
        file, offset = self._jsonl[key]
        with open(file, "rb") as stream:
            stream.seek(offset)
            return json.loads(stream.readline())

    def reply_digest(self, key: str) -> str:
        """``text_digest`` of the reply the units of ``key`` speak, where its line records it ('' otherwise)."""
        return str(self._line(key).get(REPLY_DIGEST, "")) if key in self._jsonl else ""

    def load(self, key: str) -> np.ndarray:
        """The units of ``key`` as int64; ``SampleError('bad_units')`` when they are not 1-D non-negative ints."""
        if key in self._npy:
            units = decode_units(self._npy[key].read_bytes())
        else:
            values = self._line(key).get("units")
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise SampleError("bad_units", f"{self._jsonl[key][0]}: units of {key!r} are not a list of ints")
            units = np.asarray(values, dtype=np.int64)
        if len(units) == 0 or units.min() < 0:
            raise SampleError("bad_units", f"units of {key!r}: expected a non-empty sequence of non-negative ints")
        return units
