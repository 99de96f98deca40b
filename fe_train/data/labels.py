"""Mapping a corpus's own emotion labels onto the five classes of the recipe, dropping the rest by name."""

from __future__ import annotations

from collections.abc import Mapping

from fe_train.config import EMOTIONS
from fe_train.data.schema import SampleError
from fe_train.errors import UserError

DROP = "drop"
"""The override value that drops a label (``--label calm=drop``)."""


def fold(label: str) -> str:
    """A label as compared: case and surrounding space aside ("Angry ", "ANGRY" and "angry" are one label)."""
    return label.strip().lower()


class LabelMap:
    """Raw corpus label -> one of ``EMOTIONS``; a label mapped to ``None`` is dropped and counted by name.
    Labels, overrides and classes are compared without case (``fold``)."""

    def __init__(self, table: Mapping[str, str | None], overrides: Mapping[str, str | None] = ()):
        self.table = {fold(raw): target for raw, target in table.items()}
        for raw, target in dict(overrides).items():
            self.table[fold(raw)] = None if target is None or fold(target) == DROP else fold(target)
        for raw, target in self.table.items():
            if target is not None and target not in EMOTIONS:
                raise UserError(f"label map {raw!r} -> {target!r}: expected one of {list(EMOTIONS)} or {DROP!r}")

    def __call__(self, raw: str) -> str:
        """The class of ``raw``; ``SampleError('dropped_label:<raw>')`` or ``('unknown_label')`` otherwise."""
        if fold(raw) not in self.table:
            raise SampleError("unknown_label", repr(raw))
        target = self.table[fold(raw)]
        if target is None:
            raise SampleError(f"dropped_label:{raw}")
        return target


IDENTITY = {name: name for name in EMOTIONS}
"""The five classes spelled as the recipe spells them (the generic manifest's default)."""


def parse_overrides(items: list[str]) -> dict[str, str | None]:
    """``["calm=neutral", "exc=drop"]`` -> ``{"calm": "neutral", "exc": None}``."""
    out: dict[str, str | None] = {}
    for item in items:
        raw, sep, target = item.partition("=")
        if not sep or not raw:
            raise UserError(f"--label {item!r}: expected RAW=CLASS with CLASS in {list(EMOTIONS)} or {DROP!r}")
        out[raw] = None if fold(target) == DROP else target
    return out
