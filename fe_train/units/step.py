"""The unit step: each sample's reply spoken by espeak-ng, the speech turned into units by a speech tokenizer.

``fit_codebook`` fits the built-in k-means tokenizer on the spoken replies of
training shards; ``make_units`` writes the units of every sample's reply, as
``fe-shards join --units`` reads them: ``units.jsonl`` lines ``{"key", "units",
"reply_digest"}`` and ``manifest.json`` (the codebook, the tokenizer, the voice,
counts, and the samples skipped, by reason with example keys). A sample is never
dropped silently: one without a reply, a JSON record or any speech is counted.
The TTS is the built-in espeak-ng voice, several replies rendered at once (``fe_train.data.synthetic.speak_each``).

A killed ``make_units`` (a preempted job, a lost node) leaves what it wrote in ``.units.jsonl.partial`` beside the
settings it was run with; run again with the same settings and ``--out``, it continues after the last whole line and
writes what an uninterrupted run writes. A run that fails on its input (an exception) leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
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

log = logging.getLogger(__name__)

UNITS_NAME = "units.jsonl"
PARTIAL_NAME = f".{UNITS_NAME}.partial"
"""What a run has written so far (not *.jsonl: a join never reads half a file)."""
PARTIAL_SETTINGS = ".units.partial.json"
"""The settings of the run that writes ``PARTIAL_NAME``: a run with other settings does not continue it."""
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
    """Write the units of each reply to ``out_dir`` (a new or empty folder, or one this step wrote before, whole or
    killed part-way: then it continues)."""
    out = Path(out_dir)
    ours = (UNITS_NAME, MANIFEST_NAME, PARTIAL_NAME, PARTIAL_SETTINGS)
    others = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if others:
        raise UserError(f"--out {out}: holds other files ({', '.join(others[:3])}); expected a new folder for the "
                        f"units (fe-shards join --units reads every .npy and .jsonl file in it)")
    out.mkdir(parents=True, exist_ok=True)
    manifest = UnitsManifest(tokenizer.codebook, tokenizer.n_units, tokenizer.sample_rate_hz, tokenizer_spec,
                             asdict(voice), replies.source)
    settings = {k: v for k, v in asdict(manifest).items() if k in ("codebook", "n_units", "sample_rate_hz", "tokenizer",
                                                                    "voice", "shards")}
    done = _continue(out, settings)
    for line in done.values():  # in the order they were written, as an uninterrupted run adds them up
        _count(manifest, line)
    if done:
        log.info("units make: continuing a killed run in %s after its %d replies' units", out, len(done))
    partial = out / PARTIAL_NAME
    try:
        with open(partial, "a") as stream:
            batch: list[tuple[str, str, np.ndarray]] = []
            todo = progress_bar("speak and tokenize replies", "reply", progress, iterable=replies)
            said = (((key, reply), reply, voice) for key, reply in todo if not _was_done(done, key, reply, out))
            for (key, reply), wave in speak_each(said, tokenizer.sample_rate_hz):
                batch.append((key, reply, wave))
                if len(batch) == BATCH:
                    _write_batch(batch, tokenizer, stream, manifest, replies.skips)
                    batch = []
            _write_batch(batch, tokenizer, stream, manifest, replies.skips)
    except Exception:
        partial.unlink(missing_ok=True)
        (out / PARTIAL_SETTINGS).unlink(missing_ok=True)
        raise
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # an older run's: it may name another codebook
    os.replace(partial, out / UNITS_NAME)
    (out / PARTIAL_SETTINGS).unlink()
    manifest.samples, manifest.skipped = replies.samples, replies.skips.to_dict()
    atomic_write(out / MANIFEST_NAME, manifest.to_json().encode())
    return manifest


def _continue(out: Path, settings: dict) -> dict[str, dict]:
    """The whole lines of a killed run's partial file in ``out`` (by key, in order), cut after the last one; or, with
    none, an empty start that records ``settings``."""
    partial, saved = out / PARTIAL_NAME, out / PARTIAL_SETTINGS
    if not partial.is_file():
        atomic_write(saved, json.dumps(settings, sort_keys=True).encode())
        return {}
    if not saved.is_file() or json.loads(saved.read_text()) != settings:
        raise UserError(f"--out {out}: holds the units of a killed run with other settings ({PARTIAL_SETTINGS}: codebook, "
                        f"tokenizer, voice, shards); rerun with those, or remove {PARTIAL_NAME} to start again")
    done, whole = {}, 0
    with open(partial, "rb") as stream:
        for line in stream:
            try:
                record = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                record = None
            if record is None:
                break  # the line the kill cut: written again
            done[record["key"]] = record
            whole += len(line)
    os.truncate(partial, whole)
    return done


def _was_done(done: dict[str, dict], key: str, reply: str, out: Path) -> bool:
    if key not in done:
        return False
    if done[key][REPLY_DIGEST] != text_digest(reply):
        raise UserError(f"--out {out}: the killed run's units of {key!r} are of another reply (the shards changed); "
                        f"remove {PARTIAL_NAME} to start again")
    return True


def _count(manifest: UnitsManifest, line: dict) -> None:
    manifest.written += 1
    manifest.units += len(line["units"])
    manifest.speech_s += line["speech_s"]


def _write_batch(batch: list[tuple[str, str, np.ndarray]], tokenizer: SpeechTokenizer, stream,
                 manifest: UnitsManifest, skips: Skips) -> None:
    if not batch:
        return
    for (key, reply, wave), units in zip(batch, tokenize(tokenizer, [wave for _, _, wave in batch]), strict=True):
        if len(units) == 0:
            skips.add("no_units", key)  # speech too short for one unit
            continue
        line = {"key": key, "units": units.tolist(), REPLY_DIGEST: text_digest(reply),
                "speech_s": len(wave) / tokenizer.sample_rate_hz}
        stream.write(json.dumps(line) + "\n")
        _count(manifest, line)
    stream.flush()  # a kill after this loses none of the batch
