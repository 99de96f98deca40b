"""``data.train_shards`` / ``data.eval_shards``: one shard pattern, or a list of sources with mixing weights.

A source is a pattern (a shard directory, brace pattern or glob) with weight 1, or a mapping
``{shards: <pattern>, weight: <number > 0>}``. What a weight does to an epoch is the plan's
(``fe_train.data.plan``); here the value is only checked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fe_train.config.checks import require

SOURCE_KEYS = ("shards", "weight")


@dataclass(frozen=True)
class ShardSource:
    shards: str
    """A shard directory, brace pattern or glob."""
    weight: float = 1.0
    """Times each of its samples is planned per epoch, in expectation."""


def parse_sources(value, key: str) -> list[ShardSource]:
    """The sources of a ``data.*_shards`` value: '' or [] (none), a pattern, or a list of patterns and mappings."""
    if isinstance(value, str):
        return [ShardSource(value)] if value else []
    require(isinstance(value, list), key, value, "a shard pattern or a list of sources (patterns or {shards, weight})")
    return [_source(item, f"{key}[{index}]") for index, item in enumerate(value)]


def _source(item, key: str) -> ShardSource:
    if isinstance(item, dict):
        unknown = sorted(str(name) for name in item if name not in SOURCE_KEYS)
        require(not unknown, key, item, f"keys shards and weight only, not {', '.join(unknown)}")
        shards, weight = item.get("shards"), item.get("weight", 1.0)
        require(isinstance(shards, str) and bool(shards), f"{key}.shards", shards,
                "a shard directory, brace pattern or glob")
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        require(number and math.isfinite(weight) and weight > 0, f"{key}.weight", weight, "a number > 0")
        return ShardSource(shards, float(weight))
    require(isinstance(item, str) and bool(item), key, item,
            "a shard pattern or a mapping {shards: <pattern>, weight: <number > 0>}")
    return ShardSource(item)
