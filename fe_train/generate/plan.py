"""Which prompts go into which batch on which rank.

Every instruction's prompt is tokenized, the prompts are sorted by length (longest
first, so that a batch that does not fit in memory fails at once, and a batch
wastes little on padding), then cut into batches. The batches do not depend on the
number of ranks or on what an earlier run finished. A run generates the pending
batches (those with a key not yet written), dealt round robin over the ranks; as
parts hold whole batches, a resumed run makes exactly the batches that the
uninterrupted run would have made, so even sampled replies match.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    key: str
    prompt_ids: tuple[int, ...]
    label: str
    """The pseudo label the prompt was made with ('' for the distill task)."""
    text_digest: str


@dataclass(frozen=True)
class Batch:
    index: int
    """Position in the full plan, fixed for a given input and batch size."""
    items: tuple[Item, ...]

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]

    def seed(self, seed: int) -> int:
        """The sampling seed of this batch: from the run seed and its keys, not from the rank."""
        digest = hashlib.sha256(f"{seed}\0{self.index}\0{self.items[0].key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % 2**63


class GenerationPlan:
    def __init__(self, items: list[Item], batch_size: int):
        ordered = sorted(items, key=lambda item: (-len(item.prompt_ids), item.key))
        self.batches = [Batch(i // batch_size, tuple(ordered[i:i + batch_size])) for i in range(0, len(ordered), batch_size)]
        self.keys = [item.key for item in ordered]

    def pending(self, done: set[str]) -> list[Batch]:
        """The batches that still have a key without a reply, with only those keys."""
        out = []
        for batch in self.batches:
            items = tuple(item for item in batch.items if item.key not in done)
            if items:
                out.append(Batch(batch.index, items))
        return out

    @staticmethod
    def for_rank(pending: list[Batch], rank: int, world_size: int) -> list[Batch]:
        return pending[rank::world_size]

    @staticmethod
    def steps(pending: list[Batch], world_size: int) -> int:
        """Generate calls every rank makes when they must step together (ZeRO-3): the most any rank has."""
        return -(-len(pending) // world_size)
