"""The metadata of every sample of shards or a JSONL manifest, read without decoding any audio.

Target generation needs each instruction's key and text, and the pseudo-label
distribution needs the ``emotion`` of every SER clip; both read only the JSON
members. A local tar is read with seeks over the audio members; a ``pipe:`` URL is
streamed.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from collections.abc import Iterator

from fe_train.data.manifest import Skips, read_manifest
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.schema import META_EXT, Meta, SampleError
from fe_train.errors import UserError

MANIFEST_SUFFIX = ".jsonl"


def shard_metas(url: str, skips: Skips) -> Iterator[Meta]:
    """The parsed JSON member of each sample of one shard; unusable samples are counted in ``skips``."""
    keys: set[str] = set()
    with_meta: set[str] = set()
    for key, data in _json_members(url, keys):
        with_meta.add(key)
        try:
            meta = Meta.from_json(data)
        except SampleError as exc:
            skips.add(exc.reason, f"{url}:{key}")
            continue
        if meta.key != key:
            skips.add("key_mismatch", f"{url}:{key} holds key {meta.key!r}")
            continue
        yield meta
    for key in sorted(keys - with_meta):
        skips.add("missing_member:json", f"{url}:{key}")


def _json_members(url: str, keys: set[str]) -> Iterator[tuple[str, bytes]]:
    if not os.path.isfile(url):
        for _, raw in iter_shard(url):
            keys.add(raw["__key__"])
            if META_EXT in raw:
                yield raw["__key__"], raw[META_EXT]
        return
    try:
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                key, _, ext = member.name.rsplit("/", 1)[-1].partition(".")
                keys.add(key)
                if ext == META_EXT and member.isfile():
                    yield key, tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"shard {url}: unreadable tar ({exc})") from None


def sample_metas(source: str, skips: Skips, what: str = "--input") -> Iterator[Meta]:
    """Every sample's metadata from shards (directory, brace pattern, glob) or a ``.jsonl`` manifest."""
    if source.endswith(MANIFEST_SUFFIX):
        for clip in read_manifest(source, skips):
            yield clip.meta
        return
    for shard in resolve_shards(source, what):
        yield from shard_metas(shard.url, skips)


def instruction_texts(source: str, skips: Skips) -> list[tuple[str, str]]:
    """(key, text) of each instruction in input order; a repeated key or an empty text is skipped and counted."""
    seen: set[str] = set()
    out = []
    for meta in sample_metas(source, skips):
        if meta.key in seen:
            skips.add("duplicate_key", meta.key)
        elif not meta.text.strip():
            skips.add("missing_field:text", meta.key)
        else:
            seen.add(meta.key)
            out.append((meta.key, meta.text))
    return out


def emotion_counts(source: str, skips: Skips) -> Counter[str]:
    """How many samples carry each ``emotion`` label (samples without one are counted in ``skips``)."""
    counts: Counter[str] = Counter()
    for meta in sample_metas(source, skips, what="generate.label_shards"):
        if meta.emotion:
            counts[meta.emotion] += 1
        else:
            skips.add("no_emotion", meta.key)
    return counts
