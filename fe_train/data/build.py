"""Building shards from an importer's clips: probe, filter, split, plan, then decode, resample, FLAC and write in parallel.

Steps, each deterministic: drop repeated keys (the first in the importer's
order stays), probe every header in the worker pool, filter by duration, assign
splits, plan the shards (``shard_plan``), claim the output folder
(``ledger``), then write this task's unfinished shards, one shard per worker
process at a time. A worker decodes any soundfile-readable input, downmixes to
mono, resamples to 16 kHz with one torch thread (the same bytes whatever the
machine's core count), skips silent or undecodable clips by reason, and writes
the tar under a temporary name that it renames once the shard's record is
written. When every planned shard exists, the indexes and the report are merged.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fe_train.config import SAMPLE_RATE_HZ
from fe_train.data import audio
from fe_train.data.clip import Clip
from fe_train.data.ledger import Ledger, MergeResult
from fe_train.data.probe import probe
from fe_train.data.schema import SampleError
from fe_train.data.shard_plan import BuildPlan, ShardJob, make_plan
from fe_train.data.splits import Holdout, assign, split_name
from fe_train.data.stats import Skips, Stats
from fe_train.data.writer import encode_sample, write_tar
from fe_train.errors import UserError

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-3
"""A clip whose peak stays below -60 dBFS is ``silent_audio`` (e.g. CREMA-D 1076_MTI_SAD_XX)."""
MAX_KEY_CHARS = 90
"""USTAR member names hold 100 bytes: ``{key}.units.npy`` must fit."""


@dataclass
class BuildOptions:
    out_dir: Path
    prefix: str = "train"
    """Split (folder and shard-name prefix) of clips that have none of their own."""
    sample_rate_hz: int = SAMPLE_RATE_HZ
    max_count: int = 1000
    """Samples per shard at most."""
    max_bytes: int = 256 << 20
    """Audio bytes per shard at most, counted as 16-bit PCM at ``sample_rate_hz`` (FLAC is smaller)."""
    min_duration_s: float = 0.2
    max_duration_s: float = 30.0
    seed: int = 0
    """Seed of the global shuffle of each split across its shards."""
    workers: int = 1
    """Worker processes that decode and write shards (one torch thread each)."""
    holdout: tuple[Holdout, ...] = ()
    holdout_split: str = "test"
    corpus_splits: bool = True
    """Keep the split an importer gives (MELD train/dev/test, ESD's old train/evaluation/test folders)."""
    task_id: int = 0
    """This process's slice of the plan (an array task), 0 <= task_id < task_count."""
    task_count: int = 1
    source: dict = field(default_factory=dict)
    """What the clips came from (corpus, root, label overrides): recorded and fingerprinted."""

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        self.prefix = split_name(self.prefix, "--prefix")
        self.holdout_split = split_name(self.holdout_split, "--holdout-split")
        flags = {"sample_rate_hz": "--sample-rate", "max_count": "--max-count", "max_bytes": "--max-mb",
                 "workers": "--workers", "task_count": "--task-count"}
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise UserError(f"{flag} {getattr(self, name)}: expected a positive number")
        if not 0 <= self.task_id < self.task_count:
            raise UserError(f"--task-id {self.task_id}: expected 0 <= task id < task count {self.task_count}")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise UserError(f"durations {self.min_duration_s}..{self.max_duration_s} s: expected 0 <= min < max")

    def identity(self) -> dict:
        """What the shards' bytes depend on (not the workers, nor the task)."""
        fixed = asdict(self)
        for name in ("out_dir", "workers", "task_id", "task_count", "source"):
            fixed.pop(name)
        fixed["holdout"] = [str(rule) for rule in self.holdout]
        return {**self.source, **fixed}


@dataclass
class BuildResult:
    plan: BuildPlan
    written: list[str]
    """Shards this call wrote (the rest of its slice was finished already)."""
    merged: MergeResult


def build(clips: Iterable[Clip], opts: BuildOptions, skips: Skips) -> BuildResult:
    ledger = Ledger(opts.out_dir)
    with _workers(opts.workers) as pool:
        kept = _probed(list(_unique(clips, skips)), opts, skips, pool)
        assign(kept, opts.holdout, opts.holdout_split, opts.prefix, opts.corpus_splits)
        plan = make_plan(kept, opts.seed, opts.max_count, opts.max_bytes, opts.sample_rate_hz, opts.identity())
        ledger.claim(plan, opts.identity(), skips)
        mine = plan.slice(opts.task_id, opts.task_count)
        todo = [job for job in mine if not ledger.finished(job, plan.fingerprint)]
        log.info("%d clips planned into %d shards (fingerprint %s); task %d/%d: %d of its %d shards to write with "
                 "%d worker(s)", len(kept), len(plan.jobs), plan.fingerprint, opts.task_id, opts.task_count,
                 len(todo), len(mine), opts.workers)
        write = functools.partial(write_shard, out_dir=opts.out_dir, fingerprint=plan.fingerprint,
                                  sample_rate_hz=opts.sample_rate_hz)
        written = []
        for name in pool(write, todo, ordered=False):
            written.append(name)
            log.info("wrote %s (%d/%d)", name, len(written), len(todo))
    return BuildResult(plan, written, ledger.merge())


def write_shard(job: ShardJob, out_dir: Path, fingerprint: str, sample_rate_hz: int) -> str:
    """Encode and write one planned shard and its record (runs in a worker process)."""
    ledger, stats, skips = Ledger(out_dir), Stats(), Skips()

    def samples():
        for clip in job.clips:
            try:
                wave = audio.decode(clip.audio if isinstance(clip.audio, bytes) else str(clip.audio), sample_rate_hz)
                if max(float(wave.max()), -float(wave.min())) < SILENCE_PEAK:
                    raise SampleError("silent_audio", f"peak below {SILENCE_PEAK}")
            except SampleError as exc:
                skips.add(exc.reason, f"{clip.where} ({exc.detail})" if exc.detail else clip.where)
                continue
            sample = encode_sample(clip.meta, wave, sample_rate_hz, clip.units)
            stats.add(job.split, clip.meta.corpus, clip.meta.emotion, clip.meta.speaker, sample.duration_s)
            yield sample

    write_tar(ledger.shard_path(job), samples(),
              before_rename=lambda record: ledger.write_record(job, fingerprint, record, stats, skips))
    return job.name


def _unique(clips: Iterable[Clip], skips: Skips) -> Iterator[Clip]:
    seen: set[str] = set()
    for clip in clips:
        key = clip.meta.key
        if len(key) > MAX_KEY_CHARS:
            key = f"{key[:MAX_KEY_CHARS - 17]}-{hashlib.sha1(key.encode()).hexdigest()[:16]}"
            clip.meta.extra.setdefault("long_key", clip.meta.key)
            clip.meta.key = key
        if key in seen:
            skips.add("duplicate_key", f"{clip.where} ({key})")
            continue
        seen.add(key)
        yield clip


def _probed(clips: list[Clip], opts: BuildOptions, skips: Skips, pool) -> list[Clip]:
    kept = []
    for clip, (duration_s, error) in zip(clips, pool(_probe_one, [clip.audio for clip in clips], ordered=True)):
        if error is not None:
            reason, detail = error
            skips.add(reason, f"{clip.where} ({detail})" if detail else clip.where)
        elif duration_s < opts.min_duration_s:
            skips.add("too_short", f"{clip.where} ({duration_s:.3f} s)")
        elif duration_s > opts.max_duration_s:
            skips.add("too_long", f"{clip.where} ({duration_s:.3f} s)")
        else:
            clip.duration_s = duration_s
            kept.append(clip)
    return kept


def _probe_one(source: Path | bytes) -> tuple[float, tuple[str, str] | None]:
    try:
        return probe(source), None
    except SampleError as exc:
        return 0.0, (exc.reason, exc.detail)


Pool = Callable[..., Iterator]


@contextmanager
def _workers(count: int) -> Iterator[Pool]:
    """``pool(fn, items, ordered)``: in this process for one worker, else in forked processes of one thread each."""
    if count == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield lambda fn, items, ordered: map(fn, items)
        finally:
            torch.set_num_threads(threads)
        return
    with multiprocessing.get_context("fork").Pool(count, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        def run(fn, items: Sequence, ordered: bool) -> Iterator:
            chunk = max(1, min(256, len(items) // (4 * count))) if ordered else 1
            return (pool.imap if ordered else pool.imap_unordered)(fn, items, chunksize=chunk)

        yield run
