"""Per-sample lengths of a shard folder, and the length-grouped order of a shard's samples.

``lengths.json`` sits beside ``index.json``: for each shard (by name, with its size in bytes, so that a rewritten
shard is noticed) the user audio's duration, the reply's length in tokens (estimated as UTF-8 bytes / 4) and the
number of speech units, per sample in file order. ``fe-shards build`` and ``fe-shards join`` write it; ``fe-shards
lengths DIR`` writes it for shards built before (it reads each shard once, its JSON and unit members only).

With ``data.group_by_length`` the epoch plan orders each shard's samples by length within windows of
``data.length_window`` samples of its shuffled order (``grouped_order``), so consecutive samples, and the
micro-batches cut from them, have similar lengths. The order depends on the seed, the epoch, the shard and the
lengths only, never on the number of ranks, workers or the micro-batch, so exact resume at any geometry still holds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from fe_train.data.plan import Shard
from fe_train.data.schema import INDEX_NAME, Meta, SampleError, decode_units
from fe_train.data.writer import ShardIndex, atomic_write
from fe_train.errors import UserError

log = logging.getLogger(__name__)

LENGTHS_NAME = "lengths.json"
LENGTHS_VERSION = 1
SPEECH_POSITIONS_PER_S = 10.0
"""LLM positions per second of speech: Whisper's 50 frames per second stacked by 5 (the paper's adapter)."""
TEXT_BYTES_PER_TOKEN = 4
"""UTF-8 bytes of English text per BPE token, roughly (Qwen2.5's tokenizer on replies)."""


def sample_lengths(raw: dict) -> tuple[float, int, int]:
    """(audio seconds, reply tokens, units) of one raw shard sample; zeros where the sample cannot say."""
    try:
        meta = Meta.from_json(raw["json"])
    except (KeyError, SampleError):
        return 0.0, 0, 0
    units = 0
    if "units.npy" in raw:
        try:
            units = len(decode_units(raw["units.npy"]))
        except SampleError:
            units = 0
    return float(meta.duration_s), -(-len(meta.reply.encode()) // TEXT_BYTES_PER_TOKEN), units


def scan_shard(url: str) -> dict:
    """The lengths record of one shard (reads it once)."""
    from fe_train.data.pipeline import iter_shard

    audio, reply, units = [], [], []
    for _, raw in iter_shard(url):
        a, r, u = sample_lengths(raw)
        audio.append(round(a, 3))
        reply.append(r)
        units.append(u)
    return {"bytes": os.path.getsize(url), "audio_s": audio, "reply_tokens": reply, "units": units}


def write_lengths(directory: str | os.PathLike) -> Path:
    """Write ``lengths.json`` for the shards ``index.json`` lists, rescanning only shards that changed."""
    directory = Path(directory)
    index_path = directory / INDEX_NAME
    if not index_path.is_file():
        raise UserError(f"{directory}: no {INDEX_NAME} (expected a folder written by fe-shards build or join)")
    old = read_file(directory)
    shards = {}
    for record in ShardIndex.read(index_path).shards:
        url = str(directory / record.name)
        kept = old.get(record.name)
        fresh = kept is not None and os.path.isfile(url) and kept["bytes"] == os.path.getsize(url)
        shards[record.name] = kept if fresh else scan_shard(url)
    path = directory / LENGTHS_NAME
    atomic_write(path, json.dumps({"version": LENGTHS_VERSION, "shards": shards}).encode())
    return path


def write_folders(root: str | os.PathLike) -> list[Path]:
    """``write_lengths`` for ``root`` if it holds an ``index.json``, else for each of its folders that holds one."""
    root = Path(root)
    folders = [root] if (root / INDEX_NAME).is_file() else sorted(p.parent for p in root.glob(f"*/{INDEX_NAME}"))
    if not folders:
        raise UserError(f"{root}: no {INDEX_NAME} in it or its folders (expected the --out of fe-shards build or join)")
    return [write_lengths(folder) for folder in folders]


def read_file(directory: Path) -> dict[str, dict]:
    path = directory / LENGTHS_NAME
    if not path.is_file():
        return {}
    try:
        tree = json.loads(path.read_text())
        return dict(tree["shards"]) if tree.get("version") == LENGTHS_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{path}: unreadable lengths file; delete it and run fe-shards lengths {directory}") from None


def sample_key(record: dict) -> np.ndarray:
    """One number per sample to group by: its LLM positions, roughly (speech, reply and units)."""
    audio = np.asarray(record["audio_s"], dtype=np.float64)
    return audio * SPEECH_POSITIONS_PER_S + np.asarray(record["reply_tokens"]) + np.asarray(record["units"])


def with_lengths(shards: list[Shard], mode: str, what: str = "data.train_shards") -> tuple[list[Shard], list[str]]:
    """The shards with their samples' lengths attached where grouping applies; and why it does not, where it does not.

    ``on`` needs every shard's lengths (a ``UserError`` names the first folder without); ``auto`` groups when every
    shard has them and otherwise leaves every shard ungrouped; ``off`` attaches nothing.
    """
    if mode == "off":
        return shards, ["off (data.group_by_length=off)"]
    files: dict[str, dict[str, dict]] = {}
    out, missing = [], []
    for shard in shards:
        directory, name = os.path.split(shard.url)
        if directory not in files:
            files[directory] = {} if shard.url.startswith("pipe:") else read_file(Path(directory))
        record = None if shard.url.startswith("pipe:") else files[directory].get(name)
        fresh = (record is not None and len(record["audio_s"]) == shard.count
                 and record["bytes"] == os.path.getsize(shard.url))
        if not fresh:
            missing.append(directory)
        out.append(replace(shard, lengths=sample_key(record)) if fresh else shard)
    if not missing:
        return out, []
    folders = sorted(set(missing))
    if mode == "on":
        raise UserError(f"data.group_by_length=on: {what} folder {folders[0]} has no up-to-date {LENGTHS_NAME}; "
                        f"run fe-shards lengths {folders[0]}")
    return shards, [f"off ({len(folders)} folder(s) without an up-to-date {LENGTHS_NAME}, e.g. {folders[0]}: "
                    f"fe-shards lengths <folder> writes it)"]


def real_fraction(plan) -> float:
    """Fraction of the padded positions of the plan's micro-batches (every rank's) that hold a sample's length.

    A micro-batch is padded to its longest sample; needs lengths on every shard of the plan.
    """
    real = padded = 0.0
    orders: dict[int, np.ndarray] = {}
    for rank in range(plan.geometry.world_size):
        for batch in plan.rank_batches(rank):
            lengths = []
            for span in batch.spans:
                if span.shard not in orders:
                    orders[span.shard] = plan.sample_order(span.shard)
                positions = orders[span.shard][span.start : span.stop]
                lengths.extend(plan.shards[span.shard].lengths[positions])
            real += float(np.sum(lengths))
            padded += float(np.max(lengths)) * len(lengths)
    return real / max(padded, 1e-9)
