"""Which split each clip is written to: its corpus's own split, or a held-out one chosen by speaker, session...

``--holdout speaker=Actor_01,Actor_02`` or ``--holdout session=Session5`` (shell
patterns allowed: ``speaker=Ses05*``) sends every clip whose field matches to
the held-out split, whatever split the corpus gave it, so no held-out speaker
is ever trained on. A rule that matches no clip is an error (a typo would
otherwise leave the test set empty). Each split is written to its own folder.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from fe_train.data.clip import Clip, safe_key
from fe_train.data.schema import KNOWN_FIELDS, Meta
from fe_train.errors import UserError


@dataclass(frozen=True)
class Holdout:
    field: str
    """A ``Meta`` field (``speaker``, ``corpus``, ...) or an importer's extra (``session``, ``gender``, ...)."""
    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Holdout:
        field, sep, values = text.partition("=")
        patterns = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or not field.strip() or not patterns:
            raise UserError(f"--holdout {text!r}: expected FIELD=VALUE[,VALUE...], e.g. speaker=Actor_01,Actor_02")
        return cls(field.strip(), patterns)

    def value(self, meta: Meta) -> str:
        found = getattr(meta, self.field) if self.field in KNOWN_FIELDS else meta.extra.get(self.field, "")
        return str(found)

    def matches(self, meta: Meta) -> bool:
        value = self.value(meta)
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in self.patterns)

    def __str__(self) -> str:
        return f"{self.field}={','.join(self.patterns)}"


def split_name(name: str, what: str) -> str:
    cleaned = safe_key(name)
    if not cleaned or cleaned != name:
        raise UserError(f"{what} {name!r}: expected a split name of A-Z a-z 0-9 _ - (it names a folder)")
    return cleaned


def assign(clips: Sequence[Clip], holdouts: Sequence[Holdout], holdout_split: str, default_split: str,
           corpus_splits: bool) -> None:
    """Set ``clip.meta.split`` of every clip; a rule that matches nothing is a ``UserError``."""
    hits: Counter[Holdout] = Counter()
    for clip in clips:
        split = safe_key(clip.meta.split) if corpus_splits and clip.meta.split else default_split
        for rule in holdouts:
            if rule.matches(clip.meta):
                hits[rule] += 1
                split = holdout_split
        clip.meta.split = split
    for rule in holdouts:
        if not hits[rule]:
            seen = sorted({rule.value(c.meta) for c in clips})
            raise UserError(f"--holdout {rule}: matches no clip (values of {rule.field!r}: {seen[:12]}"
                            f"{' ...' if len(seen) > 12 else ''})")
