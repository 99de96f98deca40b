"""The shards of a ``data.train_shards`` / ``data.eval_shards`` value, every source's with its weight.

A value is one pattern or a list of sources (``fe_train.config.sources``); each
source is resolved as a pattern is (``resolve_shards``), in the order written,
and its shards carry the source's weight and index into the epoch plan
(``fe_train.data.plan``). A shard may belong to one source only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from fe_train.config.sources import parse_sources
from fe_train.data.pipeline import resolve_shards
from fe_train.data.plan import EpochPlan, Shard, planned_per_source
from fe_train.errors import UserError


def resolve_sources(value: str | list, what: str = "data.train_shards") -> list[Shard]:
    """Every source's shards, in the order written; a source without shards or a shard in two sources is a ``UserError``."""
    sources = parse_sources(value, what)
    if not sources:
        raise UserError(f"{what} is empty: expected a shard directory, brace pattern or glob, or a list of them")
    shards: list[Shard] = []
    owner: dict[str, int] = {}
    for index, source in enumerate(sources):
        where = what if isinstance(value, str) else f"{what}[{index}]"
        for shard in resolve_shards(source.shards, where):
            path = shard.url if shard.url.startswith("pipe:") else os.path.realpath(shard.url)
            if path in owner:
                first = sources[owner[path]].shards
                raise UserError(f"{what}: shard {shard.url} is in source {owner[path]} ({first!r}) and source {index} "
                                f"({source.shards!r}); expected each shard in one source")
            owner[path] = index
            shards.append(replace(shard, weight=source.weight, source=index))
    return shards


def describe_sources(value: str | list, what: str, plan: EpochPlan) -> list[str]:
    """Log lines: per source its shards, samples, weight and samples per epoch, then the epoch's size."""
    sources = parse_sources(value, what)
    planned = planned_per_source(plan.shards)
    lines = []
    for index, source in enumerate(sources):
        shards = [shard for shard in plan.shards if shard.source == index]
        lines.append(f"{what} {source.shards}: {len(shards)} shards, {sum(s.count for s in shards)} samples, "
                     f"weight {source.weight:g}, {planned.get(index, 0)} samples per epoch")
    return [*lines, f"{what}: {plan.epoch_size} samples per epoch, {plan.batches_per_rank} micro-batches per rank"]


def shards_digest(shards: list[Shard], group: int = 0) -> str:
    """What makes the plan, kept in checkpoints: shard names and counts, plus weight and source where a weight is not
    1 (so a pattern and the same shards as sources of weight 1 have one digest, the digest of before weights), plus the
    length window and the lengths where the plan groups by length (``group`` > 0)."""
    text = "\n".join(f"{Path(s.url).name}\t{s.count}" + (f"\t{s.weight!r}\t{s.source}" if s.weight != 1 else "")
                     for s in shards)
    if group:
        lengths = b"".join(s.lengths.tobytes() for s in shards if s.lengths is not None)
        text += f"\ngroup {group} {hashlib.sha256(lengths).hexdigest()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
