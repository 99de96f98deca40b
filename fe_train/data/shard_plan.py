"""The plan of a shard build: which clips go into which shard, in which order, fixed before anything is written.

Clips are grouped by split, sorted by key, shuffled with the seed (a global
shuffle over the whole split) and cut into shards of at most ``max_count``
clips and about ``max_bytes`` bytes. Sizes come from the probed durations:
a shard's FLAC audio is bounded by its 16-bit PCM size at the target rate.
The plan depends only on the clips and these numbers, never on the number of
workers or array tasks, so every task of an array computes the same plan and
writes a disjoint slice of it (shard ``n`` belongs to task ``n % task_count``).
The fingerprint hashes the plan with every clip's metadata and source: a rerun
must have the same one to continue a build.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fe_train.data.clip import Clip

PCM_BYTES_PER_SAMPLE = 2


@dataclass
class ShardJob:
    split: str
    name: str
    """File name without ``.tar``: ``{split}-{NNNNNN}``."""
    number: int
    """Position in the whole plan (all splits), which decides the array task that writes it."""
    clips: list[Clip] = field(default_factory=list)


@dataclass
class BuildPlan:
    jobs: list[ShardJob]
    fingerprint: str

    def slice(self, task_id: int, task_count: int) -> list[ShardJob]:
        return [job for job in self.jobs if job.number % task_count == task_id]

    def splits(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for job in self.jobs:
            out.setdefault(job.split, []).append(job.name)
        return out


def make_plan(clips: Sequence[Clip], seed: int, max_count: int, max_bytes: int, sample_rate_hz: int,
              identity: dict) -> BuildPlan:
    """Shuffle each split with ``seed`` and cut it into shards; ``identity`` (options) enters the fingerprint."""
    by_split: dict[str, list[Clip]] = {}
    for clip in clips:
        by_split.setdefault(clip.meta.split, []).append(clip)
    jobs: list[ShardJob] = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda clip: clip.meta.key)
        order = np.random.default_rng([seed, zlib.crc32(split.encode())]).permutation(len(ordered))
        shuffled = [ordered[i] for i in order]
        for number, group in enumerate(_cut(shuffled, max_count, max_bytes, sample_rate_hz)):
            jobs.append(ShardJob(split, f"{split}-{number:06d}", len(jobs), group))
    return BuildPlan(jobs, _fingerprint(jobs, identity))


def _cut(clips: list[Clip], max_count: int, max_bytes: int, sample_rate_hz: int) -> list[list[Clip]]:
    groups: list[list[Clip]] = []
    size = 0
    for clip in clips:
        nbytes = int(clip.duration_s * sample_rate_hz) * PCM_BYTES_PER_SAMPLE
        if not groups or len(groups[-1]) >= max_count or (groups[-1] and size + nbytes > max_bytes):
            groups.append([])
            size = 0
        groups[-1].append(clip)
        size += nbytes
    return groups


def _fingerprint(jobs: list[ShardJob], identity: dict) -> str:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    for job in jobs:
        digest.update(f"\n{job.name}".encode())
        for clip in job.clips:
            digest.update(b"\0" + clip.meta.to_json() + b"\0" + clip.where.encode())
            if isinstance(clip.audio, bytes):
                digest.update(hashlib.sha256(clip.audio).digest())
            if clip.units is not None:
                digest.update(clip.units.tobytes())
    return digest.hexdigest()[:16]
