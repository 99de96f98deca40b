"""Corpus importers keyed by short name: each reads one published layout into ``Clip``s.

An importer is ``scan(root, labels, skips) -> Iterator[Clip]`` plus ``LABELS``,
its raw label -> class table (``None`` drops the label). It reads names, label
files and transcripts only, never the audio (the build probes and decodes it),
yields clips in a fixed order, counts what it skips in ``skips``, and raises one
``UserError`` naming the expected layout when the root does not match it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fe_train.data import manifest
from fe_train.data.clip import Clip
from fe_train.data.corpora import cremad, esd, iemocap, instructs2s, meld, ravdess
from fe_train.data.labels import LabelMap
from fe_train.data.stats import Skips
from fe_train.errors import UserError


@dataclass(frozen=True)
class Importer:
    scan: Callable[[Path, LabelMap, Skips], Iterator[Clip]]
    labels: Mapping[str, str | None]


IMPORTERS: dict[str, Importer] = {
    "ravdess": Importer(ravdess.scan, ravdess.LABELS),
    "cremad": Importer(cremad.scan, cremad.LABELS),
    "esd": Importer(esd.scan, esd.LABELS),
    "iemocap": Importer(iemocap.scan, iemocap.LABELS),
    "meld": Importer(meld.scan, meld.LABELS),
    "manifest": Importer(manifest.scan, manifest.LABELS),
    "instructions": Importer(manifest.scan_instructions, manifest.LABELS),
    "instructs2s": Importer(instructs2s.scan, instructs2s.LABELS),
}


def canonical(name: str) -> str:
    """The importer's key for a corpus name as people write it: case, '-', '_' and spaces aside (CREMA-D: cremad)."""
    key = "".join(c for c in name.lower() if c not in "-_ ")
    if key not in IMPORTERS:
        raise UserError(f"--corpus {name!r}: expected one of {sorted(IMPORTERS)}")
    return key


def importer(name: str) -> Importer:
    return IMPORTERS[canonical(name)]


def scan(name: str, root: str | Path, skips: Skips, label_overrides: Mapping[str, str | None] = ()) -> Iterator[Clip]:
    """The clips of corpus ``name`` at ``root``, labels mapped by its table updated with ``label_overrides``."""
    chosen = importer(name)
    return chosen.scan(Path(root), LabelMap(chosen.labels, label_overrides), skips)
