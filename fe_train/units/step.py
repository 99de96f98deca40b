"""The unit step: each sample's reply spoken by espeak-ng, the speech turned into units by a speech tokenizer.

``fit_codebook`` fits the built-in k-means tokenizer on the spoken replies of
training shards; ``make_units`` writes the units of every sample's reply, as
``fe-shards join --units`` reads them: ``units.jsonl`` lines ``{"key", "units",
"reply_digest"}`` and ``manifest.json`` (the codebook, the tokenizer, the voice,
counts, and the samples skipped, by reason with example keys). A sample is never
dropped silently: one without a reply, a JSON record or any speech is counted.
The TTS is the built-in espeak-ng voice, several replies rendered at once (``fe_train.data.synthetic.speak_each``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fe_train.data.pipeline import iter_shard
from fe_train.data.plan import Shard
from fe_train.data.schema import META_EXT, Meta, SampleError, text_digest
from fe_train.data.stats import Skips
from fe_train.data.synthetic import Voice, speak_each
from fe_train.data.units import MANIFEST_NAME, REPLY_DIGEST
from fe_train.data.writer import atomic_write
from fe_train.errors import UserError
from fe_train.launch.progress import progress_bar
from fe_train.units.frames import FrameSettings, LogMelFrames
from fe_train.units.kmeans import KMeansUnits, fit_units
from fe_train.units.tokenizer import SpeechTokenizer, tokenize

UNITS_NAME = "units.jsonl"
BATCH = 16
"""Waves per tokenizer call."""


@dataclass
class Replies:
    """The (key, reply) of each sample of some shards, in shard order; what cannot be spoken goes to ``skips``."""

    shards: list[Shard]
    source: str = ""
    """The shard pattern, recorded with what is made of the replies."""
    max_samples: int = 0
    """Stop after this many replies (0: all)."""
    skips: Skips = field(default_factory=Skips)
    samples: int = 0
    """Samples read so far."""

    def __iter__(self) -> Iterator[tuple[str, str]]:
        seen: set[str] = set()
        for shard in self.shards:
            read = 0
            for _, raw in iter_shard(shard.url):
                key = raw["__key__"]
                read += 1
                self.samples += 1
                try:
                    if META_EXT not in raw:
                        raise SampleError(f"missing_member:{META_EXT}")
                    meta = Meta.from_json(raw[META_EXT])
                except SampleError as exc:
                    self.skips.add(exc.reason, key)
                    continue
                if not meta.reply.strip():
                    self.skips.add("without_reply", key)
                elif key in seen:
                    self.skips.add("duplicate_key", key)
                else:
                    seen.add(key)
                    yield key, meta.reply
                    if self.max_samples and len(seen) >= self.max_samples:
                        return
            if read < shard.count:  # iter_shard ends quietly at a broken tar: its missing samples would go uncounted
                raise UserError(f"shard {shard.url}: read {read} of its {shard.count} samples (truncated or corrupt tar)")


def fit_codebook(replies: Replies, k: int, voice: Voice, seed: int = 0, settings: FrameSettings = FrameSettings(),
                 progress: bool | None = None) -> KMeansUnits:
    """The built-in tokenizer fitted on ``replies`` spoken by ``voice``."""
    frames, features, speech_s = LogMelFrames(settings), [], 0.0
    said = ((reply, reply, voice) for _, reply in progress_bar("speak replies", "reply", progress, iterable=replies))
    for _, wave in speak_each(said, settings.sample_rate_hz):
        speech_s += len(wave) / settings.sample_rate_hz
        features.append(frames(wave))
    fitted_on = {"shards": replies.source, "shard_count": len(replies.shards), "replies": len(features),
                 "speech_s": round(speech_s, 3), "voice": asdict(voice), "skipped": replies.skips.to_dict()}
    return fit_units(features, k, seed, settings, fitted_on)


@dataclass
class UnitsManifest:
    """What ``make_units`` wrote (``manifest.json``)."""

    codebook: str
    n_units: int
    sample_rate_hz: int
    tokenizer: dict
    voice: dict
    shards: str
    """The shard pattern the replies were read from."""
    samples: int = 0
    """Samples read."""
    written: int = 0
    """Samples whose units were written."""
    units: int = 0
    """Units written, all samples together."""
    speech_s: float = 0.0
    """Seconds of speech the written units were made of."""
    skipped: dict = field(default_factory=dict)
    """Samples without units: counts by reason and example keys."""

    @property
    def units_per_s(self) -> float:
        return self.units / self.speech_s if self.speech_s else 0.0

    def to_json(self) -> str:
        tree = dict(asdict(self), speech_s=round(self.speech_s, 3), units_per_s=round(self.units_per_s, 3))
        return json.dumps(tree, indent=1, sort_keys=True) + "\n"


def make_units(replies: Replies, tokenizer: SpeechTokenizer, out_dir: str | Path, voice: Voice,
               tokenizer_spec: dict, progress: bool | None = None) -> UnitsManifest:
    """Write the units of each reply to ``out_dir`` (a new or empty folder, or one this step wrote before)."""
    out = Path(out_dir)
    others = sorted(p.name for p in out.iterdir() if p.name not in (UNITS_NAME, MANIFEST_NAME)) if out.is_dir() else []
    if others:
        raise UserError(f"--out {out}: holds other files ({', '.join(others[:3])}); expected a new folder for the "
                        f"units (fe-shards join --units reads every .npy and .jsonl file in it)")
    out.mkdir(parents=True, exist_ok=True)
    manifest = UnitsManifest(tokenizer.codebook, tokenizer.n_units, tokenizer.sample_rate_hz, tokenizer_spec,
                             asdict(voice), replies.source)
    tmp = out / f".{UNITS_NAME}.{os.getpid()}.tmp"  # not *.jsonl: a join never reads half a file
    try:
        with open(tmp, "w") as stream:
            batch: list[tuple[str, str, np.ndarray]] = []
            said = (((key, reply), reply, voice)
                    for key, reply in progress_bar("speak and tokenize replies", "reply", progress, iterable=replies))
            for (key, reply), wave in speak_each(said, tokenizer.sample_rate_hz):
                batch.append((key, reply, wave))
                if len(batch) == BATCH:
                    _write_batch(batch, tokenizer, stream, manifest, replies.skips)
                    batch = []
            _write_batch(batch, tokenizer, stream, manifest, replies.skips)
        (out / MANIFEST_NAME).unlink(missing_ok=True)  # an older run's: it may name another codebook
        os.replace(tmp, out / UNITS_NAME)
    finally:
        tmp.unlink(missing_ok=True)
    manifest.samples, manifest.skipped = replies.samples, replies.skips.to_dict()
    atomic_write(out / MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def _write_batch(batch: list[tuple[str, str, np.ndarray]], tokenizer: SpeechTokenizer, stream,
                 manifest: UnitsManifest, skips: Skips) -> None:
    if not batch:
        return
    for (key, reply, wave), units in zip(batch, tokenize(tokenizer, [wave for _, _, wave in batch]), strict=True):
        if len(units) == 0:
            skips.add("no_units", key)  # speech too short for one unit
            continue
        stream.write(json.dumps({"key": key, "units": units.tolist(), REPLY_DIGEST: text_digest(reply)}) + "\n")
        manifest.written += 1
        manifest.units += len(units)
        manifest.speech_s += len(wave) / tokenizer.sample_rate_hz
