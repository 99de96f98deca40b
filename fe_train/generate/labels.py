"""Pseudo emotion labels for the empathy task: one per instruction, drawn from a label distribution.

The draw for a key depends only on the seed and the key (a SHA-256 of both), so it
is the same on any number of ranks, in any order, and after a resume.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fe_train.config import EMOTIONS
from fe_train.errors import UserError


@dataclass(frozen=True)
class LabelDistribution:
    probabilities: tuple[float, ...]
    """One probability per label of ``EMOTIONS``, in that order."""
    source: str
    """Where the distribution came from (shards or configured weights), for the run record."""

    @classmethod
    def from_weights(cls, weights: Sequence[float], source: str) -> LabelDistribution:
        total = float(sum(weights))
        if len(weights) != len(EMOTIONS) or total <= 0 or min(weights) < 0:
            raise UserError(f"label weights {list(weights)} from {source}: expected {len(EMOTIONS)} non-negative numbers, not all zero")
        return cls(tuple(float(w) / total for w in weights), source)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], source: str) -> LabelDistribution:
        if sum(counts.get(label, 0) for label in EMOTIONS) == 0:
            raise UserError(f"{source}: no sample carries an emotion label of {list(EMOTIONS)} (expected SER training shards)")
        return cls.from_weights([counts.get(label, 0) for label in EMOTIONS], source)

    def as_dict(self) -> dict[str, float]:
        return {label: round(p, 6) for label, p in zip(EMOTIONS, self.probabilities)}

    def draw(self, key: str, seed: int) -> str:
        """The pseudo label of ``key``: inverse CDF at a uniform number hashed from (seed, key)."""
        digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
        uniform = int.from_bytes(digest[:8], "big") / 2.0**64  # in [0, 1)
        cumulative, total = [], 0.0
        for p in self.probabilities:
            total += p
            cumulative.append(total)
        index = min(bisect.bisect_right(cumulative, uniform * total), len(EMOTIONS) - 1)
        while self.probabilities[index] == 0:  # float rounding at a boundary must not pick an empty label
            index -= 1
        return EMOTIONS[index]
