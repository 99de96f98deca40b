"""Stage-3 unit targets from an external TTS, one sequence of ints per sample key.

Accepted: a directory of ``{key}.npy`` (or ``{key}.units.npy``) files, each a 1-D
integer array; a ``.jsonl`` file of ``{"key": ..., "units": [ints]}`` lines; or a
directory holding both kinds. Files are indexed first and read when a sample
needs them, so a corpus of units does not have to fit in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fe_train.data.manifest import Skips
from fe_train.data.schema import UNITS_EXT, SampleError, decode_units
from fe_train.errors import UserError


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

    def load(self, key: str) -> np.ndarray:
        """The units of ``key`` as int64; ``SampleError('bad_units')`` when they are not 1-D non-negative ints."""
        if key in self._npy:
            units = decode_units(self._npy[key].read_bytes())
        else:
            file, offset = self._jsonl[key]
            with open(file, "rb") as stream:
                stream.seek(offset)
                values = json.loads(stream.readline()).get("units")
            if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise SampleError("bad_units", f"{file}: units of {key!r} are not a list of ints")
            units = np.asarray(values, dtype=np.int64)
        if len(units) == 0 or units.min() < 0:
            raise SampleError("bad_units", f"units of {key!r}: expected a non-empty sequence of non-negative ints")
        return units
