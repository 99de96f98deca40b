"""Per-item evaluation records of every rank, in one list: exact totals however the data divides.

The epoch plan gives every sample to exactly one rank and fills a rank that runs
short with zero-weight copies (``MicroBatch.pad``); ``real_rows`` keeps only the
rows of real samples, so the gathered records hold each sample once. Records are
sorted by key, so that the result does not depend on the number of ranks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch


def real_rows(batch: dict[str, Any]) -> list[tuple[int, str]]:
    """(row, key) of the batch's real samples; padding copies (weight 0) are left out.

    ``Collate`` lists the keys of real samples only, in row order, and padding rows come last.
    """
    rows = [i for i, weight in enumerate(batch["weight"].tolist()) if weight > 0]
    return list(zip(rows, batch["keys"]))


def gather_objects(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order (collective)."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return [item]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, item)
    return gathered


def gather_records(records: list[dict], skipped: Counter) -> tuple[list[dict], Counter]:
    """All ranks' records sorted by key, and their skipped samples summed by reason (collective)."""
    everything: list[dict] = []
    total: Counter = Counter()
    for rank_records, rank_skipped in gather_objects((records, dict(skipped))):
        everything += rank_records
        total.update(rank_skipped)
    return sorted(everything, key=lambda r: r["key"]), total


def repeated_keys(records: list[dict]) -> dict[str, int]:
    """Keys that occur more than once (two samples with one key in the data; the plan never repeats a sample)."""
    return {key: n for key, n in Counter(r["key"] for r in records).items() if n > 1}
