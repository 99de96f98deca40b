"""Reading every sample of a shard directory back through the training pipeline's decoders."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fe_train.config import SAMPLE_RATE_HZ
from fe_train.data import audio
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.schema import INDEX_NAME, UNITS_EXT, UNITS_FIELD, Meta, SampleError, sample_units
from fe_train.data.writer import ShardIndex
from fe_train.launch.progress import progress_bar


@dataclass
class ShardReport:
    name: str
    expected: int
    found: int = 0
    problems: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems and self.found == self.expected


def verify(directory: str | Path, sample_rate_hz: int = SAMPLE_RATE_HZ, progress: bool | None = None) -> list[ShardReport]:
    """Every shard of a shard folder, or of each split folder of a build folder (``OUT/<split>/``)."""
    directory = Path(directory)
    splits = sorted(p for p in directory.iterdir() if (p / INDEX_NAME).is_file()) if directory.is_dir() else []
    if splits and not any(directory.glob("*.tar")):
        reports = []
        for split in splits:
            for report in _verify_folder(split, sample_rate_hz, progress):
                report.name = f"{split.name}/{report.name}"
                reports.append(report)
        return reports
    return _verify_folder(directory, sample_rate_hz, progress)


def _verify_folder(directory: Path, sample_rate_hz: int, progress: bool | None) -> list[ShardReport]:
    indexed = {}
    if (directory / INDEX_NAME).is_file():
        indexed = {r.name: r.count for r in ShardIndex.read(directory / INDEX_NAME).shards}
    reports = []
    shards = resolve_shards(str(directory), "shard directory")
    for shard in progress_bar(f"verify {directory.name}", "shard", progress, iterable=shards):
        name = Path(shard.url).name
        report = ShardReport(name, indexed.get(name, -1))
        if name not in indexed:
            report.problems["not_in_index"] += 1
        for _, raw in iter_shard(shard.url):
            report.found += 1
            try:
                if "json" not in raw:
                    raise SampleError("missing_member:json")
                meta = Meta.from_json(raw["json"])
                if meta.key != raw["__key__"]:
                    raise SampleError("key_mismatch")
                has_units = UNITS_EXT in raw or UNITS_FIELD in meta.extra
                if "flac" in raw:
                    audio.decode(raw["flac"], sample_rate_hz)
                elif not has_units:  # a text reply with its units (stage 3a) needs no audio
                    raise SampleError("missing_member:flac")
                if has_units:
                    sample_units(raw, meta, n_units=2**31 - 1)
            except SampleError as exc:
                report.problems[exc.reason] += 1
        if report.expected >= 0 and report.found != report.expected:
            report.problems["count_mismatch"] += 1
        reports.append(report)
    return reports
