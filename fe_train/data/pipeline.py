"""Streaming WebDataset tar shards into micro-batches, following the epoch plan.

Shards are found from a directory, a brace pattern or a glob; their sample
counts come from the directory's ``index.json`` (or a scan of the tar). Each
DataLoader worker reads the shards of its part of the plan once, sequentially,
keeps only its samples, decodes them with explicit decoders (never pickle), and
yields whole collated micro-batches. A sample that cannot be used is skipped and
counted by reason; the counts travel with the next batch.
"""

from __future__ import annotations

import glob
import os
import socket
import stat
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import braceexpand
import torch
from webdataset import gopen
from webdataset.tariterators import group_by_keys, tar_file_iterator

from fe_train.data.plan import EpochPlan, Geometry, MicroBatch, Shard, Span
from fe_train.data.schema import INDEX_NAME, SampleError
from fe_train.data.writer import ShardIndex
from fe_train.errors import UserError
from fe_train.launch.progress import progress_bar

RawSample = dict[str, Any]
"""``__key__`` plus extension -> member bytes, as grouped from the tar."""


def resolve_shards(pattern: str, what: str = "data.train_shards") -> list[Shard]:
    """Shard URLs with sample counts; an empty match is a ``UserError`` naming the pattern."""
    if not pattern:
        raise UserError(f"{what} is empty: expected a shard directory, brace pattern or glob")
    if os.path.isdir(pattern):
        urls = sorted(glob.glob(os.path.join(pattern, "*.tar")))
    else:
        urls = []
        for item in braceexpand.braceexpand(pattern):
            matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
            urls.extend(url for url in matches if url.startswith("pipe:") or os.path.isfile(url))
    if not urls:
        raise UserError(f"{what} = {pattern!r} matches no shard (expected .tar files written by fe-shards build)")
    counts = _indexed_counts(urls)
    uncounted = [url for url in urls if url not in counts]
    for url in progress_bar("scan shard headers (no index.json)", "shard", None, iterable=uncounted):
        counts[url] = count_samples(url)
    return [Shard(url, counts[url]) for url in urls]


def _indexed_counts(urls: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for directory in {os.path.dirname(url) for url in urls if not url.startswith("pipe:")}:
        path = Path(directory) / INDEX_NAME
        if path.is_file():
            for record in ShardIndex.read(path).shards:
                counts[os.path.join(directory, record.name)] = record.count
    return counts


def count_samples(url: str) -> int:
    """Count the sample keys of a shard without an index entry (reads the tar headers)."""
    keys = set()
    try:
        with gopen(url, "rb") as stream:
            for member in tar_file_iterator(stream):
                keys.add(member["fname"].split("/")[-1].split(".", 1)[0])
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"shard {url}: unreadable tar ({exc})") from None
    return len(keys)


def iter_shard(url: str) -> Iterator[tuple[int, RawSample]]:
    """(file position, sample) for each sample of a shard; a truncated tar just ends early."""
    with gopen(url, "rb") as stream:
        members = (dict(member, __url__=url) for member in tar_file_iterator(stream))
        samples = group_by_keys(members)
        position = 0
        while True:
            try:
                sample = next(samples)
            except StopIteration:
                return
            except (tarfile.TarError, OSError, ValueError, EOFError):
                return
            yield position, sample
            position += 1


@dataclass
class Example:
    """What a stage's example builder made of one sample, ready for its collate."""

    key: str
    fields: dict[str, Any]
    pad: bool = False


class ShardStream(torch.utils.data.IterableDataset):
    """One rank's micro-batches of an epoch plan; ``set_epoch`` before each ``iter``."""

    def __init__(
        self,
        shards: list[Shard],
        rank: int,
        geometry: Geometry,
        seed: int,
        shuffle: bool,
        build: Callable[[RawSample], Example],
        collate: Callable[[list[Example]], dict[str, Any]],
        group: int = 0,
    ):
        super().__init__()
        self.shards, self.rank, self.geometry = shards, rank, geometry
        self.seed, self.shuffle = seed, shuffle
        self.group = group
        """Length window of the plan (``EpochPlan.group``): used for the shards that carry lengths."""
        self.build, self.collate = build, collate
        self.set_epoch(0)

    def set_epoch(self, epoch: int, skip_batches: int = 0, consumed: list[Span] = ()) -> EpochPlan:
        """Plan ``epoch``; the first ``skip_batches`` micro-batches of this plan are not yielded."""
        self.plan = EpochPlan(self.shards, epoch, self.seed, self.shuffle, self.geometry, list(consumed), self.group)
        self.skip_batches = skip_batches
        return self.plan

    def __len__(self) -> int:
        return self.plan.batches_per_rank - self.skip_batches

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        slot = info.id if info is not None else 0
        streams = self.geometry.streams
        # The DataLoader starts every iterator at worker 0: after a resume, worker slot `slot`
        # serves the worker whose micro-batch comes next, keeping the round-robin order.
        worker = (slot + self.skip_batches) % streams
        batches = self.plan.worker_batches(self.rank, worker)
        done = -(-(self.skip_batches - worker) // streams) if self.skip_batches > worker else 0
        yield from self._batches(batches[done:])

    def _batches(self, batches: list[MicroBatch]) -> Iterator[dict[str, Any]]:
        skipped: Counter[str] = Counter()
        skipped_in: Counter[str] = Counter()
        samples = self._samples([span for batch in batches for span in batch.spans])
        fallback: Example | None = None
        for batch in batches:
            examples = []
            for _ in range(batch.size - batch.pad):
                url, raw = next(samples)
                try:
                    if isinstance(raw, SampleError):
                        raise raw
                    examples.append(self.build(raw))
                except SampleError as exc:
                    skipped[exc.reason] += 1
                    skipped_in[os.path.basename(url)] += 1
            if batch.pad or not examples:
                # A rank that ran short, or a micro-batch whose samples all failed: every rank must
                # still step, so the micro-batch is filled with a zero-weight copy of a good sample.
                filler = examples[0] if examples else (fallback or self._first_example())
                examples += [Example(filler.key, filler.fields, pad=True)] * max(batch.pad, 1 - len(examples))
            fallback = examples[0]
            out = self.collate(examples)
            out["skipped"], out["skipped_shards"] = dict(skipped), dict(skipped_in)
            skipped.clear()
            skipped_in.clear()
            yield out

    def _first_example(self) -> Example:
        for span in self.plan.remaining:
            for _, raw in self._samples([Span(span.shard, span.start, span.stop)]):
                if not isinstance(raw, SampleError):
                    try:
                        return self.build(raw)
                    except SampleError:
                        continue
        raise UserError("no usable sample in the shards to pad a micro-batch with")

    def _samples(self, spans: list[Span]) -> Iterator[tuple[str, RawSample | SampleError]]:
        """(shard url, sample) at ``spans`` in plan order; each shard is read once per run of spans, streamed.

        A sample the shard does not deliver (a truncated tar) comes as a ``SampleError``.
        """
        for run in shard_runs(spans):
            shard = run[0].shard
            order = self.plan.sample_order(shard)
            url = self.shards[shard].url
            wanted = [int(order[pos]) for span in run for pos in range(span.start, span.stop)]
            for raw in stream_positions(url, wanted):
                yield url, raw if raw is not None else SampleError("missing_in_shard", url)


def shard_runs(spans: list[Span]) -> list[list[Span]]:
    """Consecutive spans of the same shard grouped, so that each group reads its shard once."""
    runs: list[list[Span]] = []
    for span in spans:
        if runs and runs[-1][-1].shard == span.shard:
            runs[-1].append(span)
        else:
            runs.append([span])
    return runs


def stream_positions(url: str, wanted: list[int]) -> Iterator[RawSample | None]:
    """The samples at file positions ``wanted`` of a shard, in that order, each as soon as the shard is read up to it.

    One pass over the shard: a sample read before its turn waits in memory until then (and until its last use, for a
    position wanted more than once); a sample no position wants is never kept, and reading stops after the last one
    wanted. So the first micro-batch leaves as soon as its samples are read, not after the whole shard. A position
    the shard does not deliver (a truncated or missing tar) comes as None.
    """
    uses = Counter(wanted)
    held: dict[int, RawSample] = {}
    turn = 0

    def release(position: int) -> RawSample | None:
        uses[position] -= 1
        return held.get(position) if uses[position] else held.pop(position, None)

    try:
        for position, raw in iter_shard(url):
            if position in uses:
                held[position] = raw
            while turn < len(wanted) and wanted[turn] in held:
                turn += 1
                yield release(wanted[turn - 1])
            if turn == len(wanted):
                return
    except OSError:
        pass
    for position in wanted[turn:]:
        yield release(position)


MIDRUN_WORKERS = 0
"""DataLoader workers of the evaluations run during training: none, each rank reads its evaluation data itself.

NOTE(torch): a DataLoader worker forked mid-epoch, while the training loader's workers and queue feeder threads
run, now and then never delivered a batch (2-rank CPU runs with evaluations during training: 1 in about 40 here,
and 3 red CI runs); its rank then waited forever and the other rank timed out in its next collective. Reading the
evaluation data in the rank's own process forks nothing mid-run; evaluation sets are small.
"""

def build_loader(stream: ShardStream, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    workers = stream.geometry.num_workers
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
        worker_init_fn=close_inherited_connections,
    )


def close_inherited_connections(worker_id: int) -> None:
    """Close, in a forked DataLoader worker, its copies of the rank's TCP connections (gloo's among them).

    A worker forked after the process group exists holds every connection of its rank. When the rank is
    killed the worker lives on until its watchdog notices (5 s), and until then the peers' collectives
    wait instead of failing at once. Closing the child's copy leaves the rank's own socket open.
    """
    if not os.path.isdir("/proc/self/fd"):
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.close()
        else:
            sock.detach()
