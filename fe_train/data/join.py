"""Attaching generated targets to shard samples by key: replies, pseudo labels, stage-3 units.

The join rewrites the shards with the writer (same shard names, same sample order,
a new ``index.json``) rather than looking targets up at read time: the epoch plan
counts samples from the index, so samples dropped for lack of a target must be gone
before training, not skipped unevenly across ranks; joined shards are
self-contained and ``fe-shards verify`` checks them; the training pipeline stays a
plain reader; and the join is paid once, not every epoch.

A target is attached only to the sample whose tar key equals the target's key, and
a reply only when the sample's text still has the digest the reply was generated
from. Samples without a target are counted, with example keys, and kept or dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fe_train.data.manifest import Skips
from fe_train.data.pipeline import iter_shard
from fe_train.data.plan import Shard
from fe_train.data.schema import (
    META_EXT,
    UNITS_CODEBOOK,
    UNITS_EXT,
    UNITS_FIELD,
    UNITS_REPLY,
    Meta,
    SampleError,
    encode_units,
    text_digest,
)
from fe_train.data.units import UnitFiles
from fe_train.data.writer import EncodedSample, ShardIndex, write_tar
from fe_train.errors import UserError
from fe_train.launch.progress import progress_bar

REPORT_NAME = "join.report.json"


@dataclass(frozen=True)
class Target:
    reply: str
    pseudo_emotion: str = ""
    text_digest: str = ""
    """Digest of the instruction text the reply was generated from ('' to attach without the check)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Target:
        return cls(record["reply"], record.get("pseudo_emotion", ""), record.get("text_digest", ""))


@dataclass
class JoinReport:
    samples: int = 0
    written: int = 0
    attached: dict[str, int] = field(default_factory=lambda: {"reply": 0, "units": 0})
    replaced_replies: int = 0
    """Samples that had another reply before the join."""
    stale_units_dropped: int = 0
    """Samples whose reply changed here and whose old units (of the old reply) were removed."""
    problems: Skips = field(default_factory=Skips)
    """Counts with example keys: without_reply, without_units, text_mismatch, bad_units, key_mismatch, dropped, ..."""
    unused: dict[str, int] = field(default_factory=dict)
    """Targets whose key no sample has."""

    def to_json(self) -> str:
        tree = asdict(self)
        tree["problems"] = {"counts": self.problems.counts, "examples": self.problems.examples}
        return json.dumps(tree, indent=1, sort_keys=True)


def join_shards(shards: list[Shard], out_dir: str | Path, replies: Mapping[str, Target] | None = None,
                units: UnitFiles | None = None, drop_missing: bool = False, progress: bool | None = None,
                codebook: str = "") -> JoinReport:
    """Write each shard of ``shards`` to ``out_dir`` with its targets attached; returns what happened.

    Attached units record ``codebook`` (the speech tokenizer's name) and the digest of the reply they speak; a
    sample whose reply a join changes loses units it had of the old reply (``stale_units_dropped``), unless new
    units are attached with it.
    ``drop_missing``: leave out samples that lack a requested target (else they are kept unchanged).
    ``progress``: a bar over the shards (None: when stderr is a terminal).
    """
    if replies is None and units is None:
        raise UserError("nothing to join: expected replies, units or both")
    out = Path(out_dir)
    if any(Path(shard.url).resolve().parent == out.resolve() for shard in shards):
        raise UserError(f"--out {out}: holds the input shards; expected a new directory for the joined shards")
    out.mkdir(parents=True, exist_ok=True)
    join = _Joiner(replies, units, codebook)
    index = ShardIndex()
    for shard in progress_bar("join", "shard", progress, iterable=shards):
        samples, read = [], 0
        for _, raw in iter_shard(shard.url):
            read += 1
            sample, complete = join.sample(raw)
            if complete or not drop_missing:
                samples.append(sample)
            else:
                join.report.problems.add("dropped", sample.key)
        if read < shard.count:
            raise UserError(f"shard {shard.url}: read {read} of its {shard.count} samples (truncated or corrupt tar)")
        join.report.samples += read
        if samples:
            index.shards.append(write_tar(out / Path(shard.url).name, samples))
            join.report.written += len(samples)
    index.write(out)
    report = join.report
    report.unused = {"reply": len(set(replies or ()) - join.matched["reply"]),
                     "units": len((units.keys() if units is not None else set()) - join.matched["units"])}
    (out / REPORT_NAME).write_text(report.to_json())
    return report


class _Joiner:
    def __init__(self, replies: Mapping[str, Target] | None, units: UnitFiles | None, codebook: str = ""):
        self.replies, self.units, self.codebook = replies, units, codebook
        self.report = JoinReport()
        self.matched: dict[str, set[str]] = {"reply": set(), "units": set()}

    def sample(self, raw: dict) -> tuple[EncodedSample, bool]:
        """The sample with its targets, and whether it got every requested target."""
        key = raw["__key__"]
        members = {ext: data for ext, data in raw.items() if not ext.startswith("__")}
        sample = EncodedSample(key, members)
        problems = self.report.problems
        try:
            if META_EXT not in members:
                raise SampleError(f"missing_member:{META_EXT}")
            meta = Meta.from_json(members[META_EXT])
            if meta.key != key:
                raise SampleError("key_mismatch")
        except SampleError as exc:
            problems.add(exc.reason, key)  # kept unchanged: no target goes to a sample we cannot identify
            return sample, False
        sample.duration_s = meta.duration_s
        complete = True
        if self.replies is not None:
            old_reply = meta.reply
            complete &= self._attach_reply(meta, key)
            if meta.reply != old_reply and (self.units is None or key not in self.units):
                self._drop_units(members, meta)
        if self.units is not None:
            complete &= self._attach_units(members, meta, key)
        members[META_EXT] = meta.to_json()
        return sample, complete

    def _drop_units(self, members: dict[str, bytes], meta: Meta) -> None:
        """The units of a reply that was just replaced: they speak the old one."""
        had = members.pop(UNITS_EXT, None) is not None
        had |= meta.extra.pop(UNITS_FIELD, None) is not None
        for name in (UNITS_CODEBOOK, UNITS_REPLY):
            meta.extra.pop(name, None)
        self.report.stale_units_dropped += had

    def _attach_reply(self, meta: Meta, key: str) -> bool:
        target = self.replies.get(key)
        if target is None:
            self.report.problems.add("without_reply", key)
            return False
        self.matched["reply"].add(key)
        if target.text_digest and target.text_digest != text_digest(meta.text):
            # The key was reused for another text: this reply answers a different instruction.
            self.report.problems.add("text_mismatch", key)
            return False
        if meta.reply and meta.reply != target.reply:
            self.report.replaced_replies += 1
        meta.reply = target.reply
        if target.pseudo_emotion:
            meta.pseudo_emotion = target.pseudo_emotion
        self.report.attached["reply"] += 1
        return True

    def _attach_units(self, members: dict[str, bytes], meta: Meta, key: str) -> bool:
        if key not in self.units:
            self.report.problems.add("without_units", key)
            return False
        self.matched["units"].add(key)
        spoken = self.units.reply_digest(key)
        if spoken and spoken != text_digest(meta.reply):
            # Made from another reply than the sample has now (or before the reply was joined): they speak the wrong text.
            self.report.problems.add("stale_units", key)
            return False
        try:
            members[UNITS_EXT] = encode_units(self.units.load(key))
        except SampleError as exc:
            self.report.problems.add(exc.reason, key)
            return False
        meta.extra.pop(UNITS_FIELD, None)  # the member replaces a JSON list
        for name, value in ((UNITS_CODEBOOK, self.codebook), (UNITS_REPLY, text_digest(meta.reply) if meta.reply else "")):
            if value:
                meta.extra[name] = value
            else:
                meta.extra.pop(name, None)
        self.report.attached["units"] += 1
        return True
