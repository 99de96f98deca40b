"""Building shards from a corpus importer's clips: decode, mono, resample, FLAC, shard, index."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fe_train.data import audio
from fe_train.data.manifest import Clip, Skips
from fe_train.data.schema import SampleError
from fe_train.data.writer import EncodedSample, ShardIndex, encode_sample, write_shards


@dataclass
class BuildOptions:
    out_dir: Path
    prefix: str = "train"
    sample_rate_hz: int = 16000
    max_count: int = 1000
    max_bytes: int = 256 << 20
    min_duration_s: float = 0.2
    max_duration_s: float = 30.0


def encode_clips(clips: Iterable[Clip], opts: BuildOptions, skips: Skips) -> Iterator[EncodedSample]:
    seen: set[str] = set()
    for clip in clips:
        if clip.meta.key in seen:
            skips.add("duplicate_key", str(clip.audio))
            continue
        try:
            wave = audio.decode(str(clip.audio), opts.sample_rate_hz)
        except SampleError as exc:
            skips.add(exc.reason, str(clip.audio))
            continue
        duration = len(wave) / opts.sample_rate_hz
        if not opts.min_duration_s <= duration <= opts.max_duration_s:
            skips.add("too_short" if duration < opts.min_duration_s else "too_long", str(clip.audio))
            continue
        seen.add(clip.meta.key)
        yield encode_sample(clip.meta, wave, opts.sample_rate_hz)


def build(clips: Iterable[Clip], opts: BuildOptions, skips: Skips) -> ShardIndex:
    index = write_shards(encode_clips(clips, opts, skips), opts.out_dir, opts.prefix, opts.max_count, opts.max_bytes)
    report = {"written": index.count, "hours": round(index.hours, 4), "shards": len(index.shards),
              "skipped": skips.counts, "skipped_examples": skips.examples}
    (Path(opts.out_dir) / f"{opts.prefix}.report.json").write_text(json.dumps(report, indent=1))
    return index
