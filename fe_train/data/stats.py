"""What a shard build kept and what it skipped: counts per split, corpus, label and speaker, and per skip reason.

Both are plain counters that merge: every shard of a build carries its own, and
``fe-shards merge`` (or the end of a build) adds them up in plan order, so the
report of a build cut into array tasks equals that of a build run in one piece.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_REASON = 5
"""How many paths are listed for each skip reason."""

NO_VALUE = "(none)"


@dataclass
class Skips:
    """Skipped inputs: a count per reason and the first few places (path or ``file:line``) of each."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str, keep: int = EXAMPLES_PER_REASON) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < keep:
            self.examples[reason].append(where)

    def merge(self, other: Skips) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            room = EXAMPLES_PER_REASON - len(self.examples.setdefault(reason, []))
            self.examples[reason] += other.examples.get(reason, [])[:max(room, 0)]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": dict(sorted(self.examples.items()))}

    @classmethod
    def from_dict(cls, tree: dict) -> Skips:
        return cls(dict(tree.get("counts", {})), {k: list(v) for k, v in tree.get("examples", {}).items()})


@dataclass
class Stats:
    """Written samples and audio seconds per split, and sample counts per split x (corpus, label, speaker)."""

    samples: Counter = field(default_factory=Counter)
    seconds: Counter = field(default_factory=Counter)
    corpora: dict[str, Counter] = field(default_factory=dict)
    labels: dict[str, Counter] = field(default_factory=dict)
    speakers: dict[str, Counter] = field(default_factory=dict)

    def add(self, split: str, corpus: str, label: str, speaker: str, duration_s: float) -> None:
        self.samples[split] += 1
        self.seconds[split] += duration_s
        self.corpora.setdefault(split, Counter())[corpus or NO_VALUE] += 1
        self.labels.setdefault(split, Counter())[label or NO_VALUE] += 1
        self.speakers.setdefault(split, Counter())[speaker or NO_VALUE] += 1

    def merge(self, other: Stats) -> None:
        self.samples.update(other.samples)
        self.seconds.update(other.seconds)
        for mine, theirs in ((self.corpora, other.corpora), (self.labels, other.labels), (self.speakers, other.speakers)):
            for split, counts in theirs.items():
                mine.setdefault(split, Counter()).update(counts)

    def shared_speakers(self) -> dict[str, list[str]]:
        """Speakers found in more than one split (``(none)`` is not a speaker)."""
        where: dict[str, list[str]] = {}
        for split in sorted(self.speakers):
            for speaker in self.speakers[split]:
                if speaker != NO_VALUE:
                    where.setdefault(speaker, []).append(split)
        return {speaker: splits for speaker, splits in sorted(where.items()) if len(splits) > 1}

    def to_dict(self) -> dict:
        def table(by_split: dict[str, Counter]) -> dict:
            return {split: dict(sorted(by_split[split].items())) for split in sorted(by_split)}

        return {
            "samples": dict(sorted(self.samples.items())),
            "seconds": {split: round(s, 4) for split, s in sorted(self.seconds.items())},
            "corpora": table(self.corpora), "labels": table(self.labels), "speakers": table(self.speakers),
        }

    @classmethod
    def from_dict(cls, tree: dict) -> Stats:
        def table(name: str) -> dict[str, Counter]:
            return {split: Counter(counts) for split, counts in tree.get(name, {}).items()}

        return cls(Counter(tree.get("samples", {})), Counter(tree.get("seconds", {})),
                   table("corpora"), table("labels"), table("speakers"))
