"""What every importer does with a corpus root: check it, list its files in a fixed order, count what it skips."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from fe_train.data.schema import SampleError
from fe_train.data.stats import Skips
from fe_train.errors import UserError

APPLEDOUBLE = "._"
"""macOS resource-fork files (``._name.wav``) that some copies of IEMOCAP and others carry."""


def directory(root: str | Path, corpus: str, expected: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{corpus} root {root}: no such directory (expected {expected})")
    return root


def mismatch(corpus: str, root: Path, expected: str) -> UserError:
    return UserError(f"{corpus} root {root} does not match the {corpus} layout: expected {expected}")


def first_with(root: Path, *patterns: str) -> list[Path]:
    """The sorted matches of the first pattern that matches anything under ``root``."""
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found
    return []


def files(paths: Iterable[Path], skips: Skips) -> Iterator[Path]:
    """``paths`` sorted, files only, with AppleDouble ``._*`` files counted and left out."""
    for path in sorted(paths):
        if path.name.startswith(APPLEDOUBLE):
            skips.add("appledouble", str(path))
        elif path.is_file():
            yield path


def where(place: str | Path, exc: SampleError) -> str:
    return f"{place} ({exc.detail})" if exc.detail else str(place)


def read_text(path: Path) -> str:
    """A transcript file in UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030 (Mandarin corpora)."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UserError(f"{path}: not UTF-8, UTF-16 or GB18030 text")
