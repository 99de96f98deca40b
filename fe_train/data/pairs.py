"""Stage 2b's pseudo pairs: SER clips (the planned stream) x speech instructions (a pool beside it).

The SER clips are the primary stream and go through the epoch plan as every other
stream does, with one change: each clip is planned as ``K`` pair entries plus, per
shard, enough plain SER entries that they make ``ser_mix_ratio`` of all entries
(``PairLayout``). The plan therefore fixes, exactly and independently of the
instructions, which clip each micro-batch holds and in which role, so the plan's
guarantees hold for the primary stream: every rank does the same number of
micro-batches, and a resumed run (``--resume``, same or another geometry) continues
at the exact next entry.

The instructions are a secondary stream: each DataLoader worker reads the
instruction shards sequentially, in a seeded order that changes every pass, and
keeps up to ``buffer`` instructions per pseudo label; a pair entry of a clip with
label y takes a random buffered instruction whose ``pseudo_emotion`` is y. What a
resume guarantees for it: pairs still match labels, each clip still gets K of them
and the SER share is unchanged, but the instructions drawn after a resume are not
those the uninterrupted run would have drawn (the pool is seeded anew from the
seed, epoch, rank, worker and resume position, and is not checkpointed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch

from fe_train.config import EMOTIONS
from fe_train.data.pipeline import RawSample, ShardStream, iter_shard, shard_runs, stream_positions
from fe_train.data.plan import Shard, Span
from fe_train.data.schema import Meta, SampleError
from fe_train.errors import UserError

PAIR_KEY = "__pair__"
"""Key of the instruction sample attached to a SER sample in a pair entry."""
SER_ROLE = -1
"""Role of a plain SER entry (pair entries have roles 0..K-1)."""


class PairLayout:
    """How a shard of ``count`` SER clips becomes entries: K pair entries per clip, then the SER entries."""

    def __init__(self, pairs_per_clip: int, ser_mix_ratio: float):
        self.k = pairs_per_clip
        self.ser_per_pair = ser_mix_ratio / (1.0 - ser_mix_ratio)

    def ser_entries(self, count: int) -> int:
        return round(count * self.k * self.ser_per_pair)

    def entries(self, count: int) -> int:
        return count * self.k + self.ser_entries(count)

    def entry(self, count: int, index: int) -> tuple[int, int]:
        """(file position of the clip, role) of entry ``index``; SER entries are spread evenly over the clips."""
        if index < count * self.k:
            return index // self.k, index % self.k
        return (index - count * self.k) * count // self.ser_entries(count), SER_ROLE


class InstructionPool:
    """Instructions by pseudo label, read in seeded passes over the shards; ``take`` draws one of a label."""

    def __init__(self, shards: list[Shard], seed: tuple[int, ...], buffer: int, where: str):
        self.shards, self.buffer, self.where = shards, buffer, where
        self.rng = np.random.default_rng(list(seed))
        self.buckets: dict[str, list[RawSample]] = {label: [] for label in EMOTIONS}
        self.read_since = Counter()
        """Instructions read since one of each label was last read."""
        self.skipped: Counter[str] = Counter()
        self.total = sum(shard.count for shard in shards)
        self.source = self._read()

    def take(self, label: str) -> RawSample:
        bucket = self.buckets[label]
        while not bucket:
            if self.read_since[label] > self.total:
                raise UserError(f"{self.where}: no instruction with pseudo_emotion {label!r} (a full pass found none)")
            self._add(next(self.source))
        pick = int(self.rng.integers(len(bucket)))
        bucket[pick], bucket[-1] = bucket[-1], bucket[pick]
        return bucket.pop()

    def drain_skipped(self) -> Counter[str]:
        skipped, self.skipped = self.skipped, Counter()
        return skipped

    def _add(self, raw: RawSample) -> None:
        for label in EMOTIONS:
            self.read_since[label] += 1
        try:
            if "json" not in raw:
                raise SampleError("missing_member:json")
            label = Meta.from_json(raw["json"]).pseudo_emotion
            if label not in EMOTIONS:
                raise SampleError("bad_pseudo_emotion" if label else "missing_field:pseudo_emotion")
        except SampleError as exc:
            self.skipped[f"pair:{exc.reason}"] += 1
            return
        self.read_since[label] = 0
        bucket = self.buckets[label]
        if len(bucket) < self.buffer:
            bucket.append(raw)
        else:
            bucket[int(self.rng.integers(len(bucket)))] = raw

    def _read(self) -> Iterator[RawSample]:
        while True:
            read = 0
            for shard in self.rng.permutation(len(self.shards)).tolist():
                for _, raw in iter_shard(self.shards[shard].url):
                    read += 1
                    yield raw
            if not read:
                raise UserError(f"{self.where}: the instruction shards hold no readable sample")


class PairStream(ShardStream):
    """A ``ShardStream`` over SER clips whose pair entries carry an instruction of the clip's label."""

    def __init__(self, shards: list[Shard], pair_shards: list[Shard], rank, geometry, seed: int, shuffle: bool,
                 build, collate, layout: PairLayout, buffer: int, where: str = "emotion.pair_shards"):
        self.ser_shards, self.pair_shards, self.layout = shards, pair_shards, layout
        self.buffer, self.where = buffer, where
        # Entries are not samples of the shard: their order is not grouped by length.
        entries = [replace(shard, count=layout.entries(shard.count), lengths=None) for shard in shards]
        super().__init__(entries, rank, geometry, seed, shuffle, build, collate)

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        slot = info.id if info is not None else 0
        seed = (self.seed, self.plan.epoch, self.rank, slot, self.skip_batches)
        self.pool = InstructionPool(self.pair_shards, seed, self.buffer, self.where)
        yield from super().__iter__()

    def _batches(self, batches):
        for out in super()._batches(batches):
            out["skipped"] = dict(Counter(out["skipped"]) + self.pool.drain_skipped())
            yield out

    def _samples(self, spans: list[Span]) -> Iterator[tuple[str, RawSample | SampleError]]:
        for run in shard_runs(spans):
            shard = run[0].shard
            count, url = self.ser_shards[shard].count, self.ser_shards[shard].url
            order = self.plan.sample_order(shard)
            entries = [self.layout.entry(count, int(order[pos])) for span in run for pos in range(span.start, span.stop)]
            for (_, role), raw in zip(entries, stream_positions(url, [position for position, _ in entries])):
                if raw is None:
                    yield url, SampleError("missing_in_shard", url)
                else:
                    yield url, raw if role == SER_ROLE else self._paired(raw)

    def _paired(self, raw: RawSample) -> RawSample | SampleError:
        if "json" not in raw:
            return SampleError("missing_member:json")
        try:
            label = Meta.from_json(raw["json"]).emotion
        except SampleError as exc:
            return exc
        if not label:
            return SampleError("missing_field:emotion")
        return {**raw, PAIR_KEY: self.pool.take(label)}
