"""The epoch plan: which samples each rank and worker reads, in which order, per micro-batch.

The plan is a pure function of the shard list (with per-shard counts), the seed,
the epoch, the geometry (world size, workers per rank, micro batch) and the
samples already consumed, so every process computes the same plan without
talking to the others, and a resumed run computes the plan it was in.

Order of an epoch: the shards in a seeded permutation (the identity without
shuffle), each shard's samples in a seeded permutation of their own; laid end to
end this is the epoch's global sample order. Samples already consumed (after a
resume with another geometry) are removed from it. Rank ``r`` of ``W`` takes the
contiguous ``r``-th of ``W`` near-equal slices, which it cuts into the same
number ``K`` of micro-batches as every other rank. Worker ``w`` of ``n`` takes a
contiguous run of those micro-batches, and the DataLoader yields them round-robin
(micro-batch ``j`` of the rank comes from worker ``j % n``).

Weights (a list of sources in ``data.train_shards``): every shard carries its
source's weight ``w``. A source of ``n`` samples is planned ``floor(w * n + 1/2)``
times per epoch: each sample ``floor(w)`` times whole, plus a subset of the rest
of that size drawn without replacement over the whole source from the seed, the
epoch and the source's index (another subset each epoch). A shard's epoch
positions are those planned samples in a seeded permutation, so a sample planned
twice may meet itself in one micro-batch. The epoch's size is the same in every
epoch, and with weight 1 everywhere the plan is the one without weights.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from fe_train.errors import UserError


@dataclass(frozen=True)
class Shard:
    url: str
    count: int
    weight: float = 1.0
    """Times each of its samples is planned per epoch, in expectation (its source's weight)."""
    source: int = 0
    """Index of its source in ``data.train_shards``; a fractional weight draws its subset over a whole source."""
    lengths: np.ndarray | None = field(default=None, compare=False, repr=False)
    """Each sample's length (by file position) where the plan groups by length (``fe_train.data.lengths``)."""


@dataclass(frozen=True)
class Span:
    """Samples ``[start, stop)`` of shard number ``shard``, counted in that shard's epoch order."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Geometry:
    world_size: int
    num_workers: int
    """Workers per rank (0 means the main process reads: one stream)."""
    micro_batch: int
    share_shards: bool = False
    """Let streams read parts of one shard (evaluation on few shards); training gives each stream whole shards."""

    @property
    def streams(self) -> int:
        return max(1, self.num_workers)


def eval_geometry(shards: list[Shard], world_size: int, num_workers: int, micro_batch: int) -> Geometry:
    """Evaluation's geometry: any number of shards on any number of ranks.

    Workers are capped by the shards and by the micro-batches each rank gets (none: the rank reads in its own
    process); with fewer shards than streams, the streams share shards, each reading only its own samples.
    """
    total = sum(planned_per_source(shards).values())
    batches = math.ceil(math.ceil(total / world_size) / micro_batch)
    workers = max(0, min(num_workers, len(shards) // world_size, batches))
    return Geometry(world_size, workers, micro_batch, share_shards=len(shards) < world_size * max(1, workers))


@dataclass(frozen=True)
class MicroBatch:
    spans: tuple[Span, ...]
    pad: int = 0
    """Copies of the rank's first sample added with zero loss weight (only when a rank runs short)."""

    @property
    def size(self) -> int:
        return sum(len(span) for span in self.spans) + self.pad


@dataclass
class EpochPlan:
    shards: list[Shard]
    epoch: int
    seed: int
    shuffle: bool
    geometry: Geometry
    consumed: list[Span] = field(default_factory=list)
    group: int = 0
    """Sort each shard's shuffled samples by length within windows of this many (0: no grouping)."""

    def __post_init__(self):
        geo = self.geometry
        if len(self.shards) < geo.world_size * geo.streams and not geo.share_shards:
            raise UserError(
                f"{len(self.shards)} shard(s) for {geo.world_size} rank(s) x {geo.streams} worker(s): every worker "
                "needs at least one shard; write more, smaller shards or lower data.num_workers"
            )
        self.picks = fractional_picks(self.shards, self.seed, self.epoch)
        # Samples each shard has in this epoch's order: its count at weight 1.
        self.planned = [math.floor(s.weight) * s.count + len(self.picks.get(i, ())) for i, s in enumerate(self.shards)]
        self.epoch_size = sum(self.planned)
        self.remaining = subtract(self.epoch_spans(), self.consumed)
        self.total = sum(len(span) for span in self.remaining)
        per_rank = math.ceil(self.total / geo.world_size)
        self.batches_per_rank = math.ceil(per_rank / geo.micro_batch)
        if self.total and self.batches_per_rank < geo.streams:
            raise UserError(
                f"{self.total} sample(s) left in epoch {self.epoch} make {self.batches_per_rank} micro-batch(es) per "
                f"rank, fewer than the {geo.streams} worker(s) per rank"
            )

    def epoch_spans(self) -> list[Span]:
        order = range(len(self.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.shards)).tolist()
        return [Span(i, 0, self.planned[i]) for i in order if self.planned[i] > 0]

    def sample_order(self, shard: int) -> np.ndarray:
        """File position (order of samples in the tar) of each of the shard's epoch positions."""
        count, weight = self.shards[shard].count, self.shards[shard].weight
        planned = np.concatenate([np.tile(np.arange(count), math.floor(weight)), self.picks.get(shard, NO_PICKS)])
        if not self.shuffle:
            return planned
        salt = zlib.crc32(self.shards[shard].url.rsplit("/", 1)[-1].encode())
        rng = np.random.default_rng([self.seed, self.epoch, salt])
        order = planned[rng.permutation(len(planned))]
        lengths = self.shards[shard].lengths
        if not self.group or lengths is None:
            return order
        return grouped_order(order, lengths, self.group, descending_first=bool(rng.integers(2)))

    def rank_batches(self, rank: int) -> list[MicroBatch]:
        geo = self.geometry
        lo = self.total * rank // geo.world_size
        hi = self.total * (rank + 1) // geo.world_size
        sizes = batch_sizes(hi - lo, self.batches_per_rank, geo.micro_batch)
        batches, start = [], lo
        for size in sizes:
            real = min(size, hi - start)
            batches.append(MicroBatch(tuple(take(self.remaining, start, start + real)), pad=size - real))
            start += real
        return batches

    def worker_batches(self, rank: int, worker: int) -> list[MicroBatch]:
        """The contiguous run of the rank's micro-batches that worker ``worker`` reads."""
        batches = self.rank_batches(rank)
        first, count = worker_run(len(batches), self.geometry.streams, worker)
        return batches[first : first + count]

    def consumed_after(self, micro_batches: int) -> list[Span]:
        """Every sample consumed once each rank has taken ``micro_batches`` micro-batches."""
        spans = list(self.consumed)
        streams = self.geometry.streams
        for rank in range(self.geometry.world_size):
            batches = self.rank_batches(rank)
            for worker in range(streams):
                first, count = worker_run(len(batches), streams, worker)
                for batch in batches[first : first + min(count, taken_by_worker(micro_batches, streams, worker))]:
                    spans.extend(batch.spans)
        return spans


NO_PICKS = np.zeros(0, dtype=np.int64)
PICK_SALT = 0x50494B
"""Keeps the subsets' random stream apart from the shard orders' (``[seed, epoch, salt]``)."""


def planned_per_source(shards: list[Shard]) -> dict[int, int]:
    """Source index -> samples planned per epoch: ``floor(weight * samples + 1/2)``."""
    samples, weights = {}, {}
    for shard in shards:
        samples[shard.source] = samples.get(shard.source, 0) + shard.count
        weights[shard.source] = shard.weight
    return {source: math.floor(weights[source] * n + 0.5) for source, n in samples.items()}


def fractional_picks(shards: list[Shard], seed: int, epoch: int) -> dict[int, np.ndarray]:
    """Shard index -> file positions (sorted) its source's fractional weight adds in ``epoch``, drawn over the source."""
    members: dict[int, list[int]] = {}
    for index, shard in enumerate(shards):
        members.setdefault(shard.source, []).append(index)
    picks = {}
    for source, planned in planned_per_source(shards).items():
        counts = [shards[i].count for i in members[source]]
        extra = planned - math.floor(shards[members[source][0]].weight) * sum(counts)
        if extra <= 0:
            continue
        chosen = np.random.default_rng([seed, epoch, PICK_SALT, source]).choice(sum(counts), extra, replace=False)
        chosen.sort()
        edges = np.cumsum([0, *counts])  # the source's samples laid end to end, shard after shard
        cuts = np.searchsorted(chosen, edges)
        for index, lo, first, stop in zip(members[source], edges[:-1], cuts[:-1], cuts[1:]):
            picks[index] = chosen[first:stop] - lo
    return picks


def grouped_order(order: np.ndarray, key: np.ndarray, window: int, descending_first: bool) -> np.ndarray:
    """``order`` (file positions) sorted by ``key`` within consecutive windows of ``window`` positions.

    Windows alternate ascending and descending, so a micro-batch that straddles two windows joins like lengths.
    """
    out = order.copy()
    for number, start in enumerate(range(0, len(order), window)):
        chunk = order[start : start + window]
        sort = np.argsort(key[chunk], kind="stable")
        out[start : start + window] = chunk[sort[::-1] if (number % 2 == 0) == descending_first else sort]
    return out


def batch_sizes(samples: int, batches: int, micro_batch: int) -> list[int]:
    """Split a rank's samples into ``batches`` micro-batches of ``micro_batch`` but the last ones.

    Ranks differ by at most one sample; when that leaves this rank's last micro-batch
    empty, its second-to-last gives one sample to it, or (micro batch 1) it is padded.
    """
    sizes = [micro_batch] * batches
    if batches:
        sizes[-1] = samples - micro_batch * (batches - 1)
        if sizes[-1] <= 0 and batches >= 2 and micro_batch >= 2:
            sizes[-2] -= 1
            sizes[-1] = 1
    return [max(size, 1) for size in sizes]


def worker_run(batches: int, streams: int, worker: int) -> tuple[int, int]:
    """(first, count) of the contiguous micro-batches of ``worker``; the first workers get one more."""
    base, extra = divmod(batches, streams)
    first = worker * base + min(worker, extra)
    return first, base + (1 if worker < extra else 0)


def taken_by_worker(micro_batches: int, streams: int, worker: int) -> int:
    """Micro-batches of ``worker`` among the first ``micro_batches`` yielded round-robin."""
    return max(0, -(-(micro_batches - worker) // streams))


def take(spans: list[Span], start: int, stop: int) -> list[Span]:
    """The spans covering positions ``[start, stop)`` of the sequence ``spans`` lays end to end."""
    out, offset = [], 0
    for span in spans:
        lo, hi = max(start, offset), min(stop, offset + len(span))
        if lo < hi:
            out.append(Span(span.shard, span.start + lo - offset, span.start + hi - offset))
        offset += len(span)
        if offset >= stop:
            break
    return out


def subtract(spans: list[Span], removed: list[Span]) -> list[Span]:
    """``spans`` without the positions in ``removed`` (order kept)."""
    by_shard: dict[int, list[tuple[int, int]]] = {}
    for span in removed:
        by_shard.setdefault(span.shard, []).append((span.start, span.stop))
    out = []
    for span in spans:
        cuts = sorted(by_shard.get(span.shard, []))
        cursor = span.start
        for lo, hi in cuts:
            if hi <= cursor or lo >= span.stop:
                continue
            if lo > cursor:
                out.append(Span(span.shard, cursor, lo))
            cursor = max(cursor, hi)
        if cursor < span.stop:
            out.append(Span(span.shard, cursor, span.stop))
    return out
