"""One input clip as an importer found it: its metadata, where its audio is, and what probing it learnt."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fe_train.data.schema import Meta, SampleError

KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(text: str) -> str:
    """A sample key WebDataset groups correctly: no dots or slashes (``a/b.c`` -> ``a-b-c``)."""
    return KEY_CHARS.sub("-", text).strip("-")


@dataclass
class Clip:
    meta: Meta
    audio: Path | bytes
    """A soundfile-readable file, or the bytes of one (a manifest's ``audio_base64``)."""
    where: str = ""
    """Where the clip came from, for the skip report: its path, or ``manifest:line``."""
    units: np.ndarray | None = None
    """Speech units of the reply, stored as ``{key}.units.npy`` (InstructS2S ``unit`` strings)."""
    duration_s: float = 0.0
    """Duration read from the audio header by the probe, before decoding."""

    def __post_init__(self):
        if not self.where:
            self.where = str(self.audio) if isinstance(self.audio, Path) else self.meta.key


UNIT_TOKEN = re.compile(r"<(\d+)>")


def parse_units(value) -> np.ndarray:
    """Units from a list of ints or a ``"<776><1312>..."`` string (InstructS2S); anything else is ``bad_units``."""
    if isinstance(value, str):
        text = value.strip()
        if not text or UNIT_TOKEN.sub("", text):
            raise SampleError("bad_units", f"expected '<n><n>...', got {text[:40]!r}")
        return np.array([int(n) for n in UNIT_TOKEN.findall(text)], dtype=np.int32)
    if isinstance(value, list) and value and all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return np.array(value, dtype=np.int32)
    raise SampleError("bad_units", "expected a list of integers or a '<n><n>...' string")
