"""The epoch plan: every sample exactly once, equal micro-batches per rank, exact continuation."""

from __future__ import annotations

from collections import Counter

import pytest

from fe_train.data.plan import EpochPlan, Geometry, Shard, Span, taken_by_worker, worker_run
from fe_train.errors import UserError

SHARDS = [Shard(f"s{i}.tar", n) for i, n in enumerate([7, 13, 5, 9, 11, 4, 8, 6])]


def positions(batches):
    return [(span.shard, pos) for batch in batches for span in batch.spans for pos in range(span.start, span.stop)]


def rank_order(plan: EpochPlan, rank: int, skip: int = 0):
    """Micro-batches of a rank in DataLoader (round-robin over workers) order, from micro-batch ``skip``."""
    streams = plan.geometry.streams
    per_worker = [plan.worker_batches(rank, w) for w in range(streams)]
    order = []
    for j in range(skip, plan.batches_per_rank):
        w = j % streams
        order.append(per_worker[w][j // streams])
    return order


@pytest.mark.parametrize("world, workers, batch", [(1, 1, 4), (2, 2, 3), (3, 2, 5), (4, 2, 1), (2, 4, 2)])
def test_each_sample_once_and_equal_batches(world, workers, batch):
    plan = EpochPlan(SHARDS, epoch=1, seed=3, shuffle=True, geometry=Geometry(world, workers, batch))
    seen = Counter()
    for rank in range(world):
        batches = rank_order(plan, rank)
        assert len(batches) == plan.batches_per_rank
        assert all(1 <= b.size <= batch for b in batches)
        seen.update(positions(batches))
    assert sum(seen.values()) == sum(s.count for s in SHARDS)
    assert set(seen.values()) == {1}


def test_epochs_reshuffle_deterministically():
    geo = Geometry(2, 2, 4)
    a = EpochPlan(SHARDS, 0, 7, True, geo)
    b = EpochPlan(SHARDS, 0, 7, True, geo)
    c = EpochPlan(SHARDS, 1, 7, True, geo)
    assert a.rank_batches(0) == b.rank_batches(0)
    assert a.rank_batches(0) != c.rank_batches(0)
    assert list(a.sample_order(1)) == list(b.sample_order(1)) != list(c.sample_order(1))


def test_consumed_after_matches_round_robin_prefix():
    geo = Geometry(2, 2, 3)
    plan = EpochPlan(SHARDS, 0, 1, True, geo)
    for micro in range(plan.batches_per_rank + 1):
        expected = Counter()
        for rank in range(2):
            expected.update(positions(rank_order(plan, rank)[:micro]))
        got = Counter((s.shard, p) for s in plan.consumed_after(micro) for p in range(s.start, s.stop))
        assert got == expected


@pytest.mark.parametrize("old, new", [(Geometry(2, 2, 3), Geometry(1, 2, 3)), (Geometry(1, 1, 4), Geometry(2, 2, 4)),
                                      (Geometry(2, 1, 2), Geometry(4, 2, 5))])
def test_geometry_change_loses_and_repeats_nothing(old, new):
    first = EpochPlan(SHARDS, 2, 5, True, old)
    micro = first.batches_per_rank // 2
    consumed = first.consumed_after(micro)
    second = EpochPlan(SHARDS, 2, 5, True, new, consumed)
    seen = Counter((s.shard, p) for s in consumed for p in range(s.start, s.stop))
    for rank in range(new.world_size):
        seen.update(positions(rank_order(second, rank)))
    assert sum(seen.values()) == sum(s.count for s in SHARDS) and set(seen.values()) == {1}


def test_worker_runs_are_balanced():
    assert [worker_run(10, 3, w) for w in range(3)] == [(0, 4), (4, 3), (7, 3)]
    assert [taken_by_worker(5, 3, w) for w in range(3)] == [2, 2, 1]


def test_too_few_shards_is_a_clear_error():
    with pytest.raises(UserError, match=r"3 shard\(s\) for 2 rank\(s\) x 2 worker\(s\)"):
        EpochPlan(SHARDS[:3], 0, 0, True, Geometry(2, 2, 4))


def test_padding_only_when_a_rank_runs_short():
    shards = [Shard("a", 3), Shard("b", 2)]
    plan = EpochPlan(shards, 0, 0, False, Geometry(2, 1, 1))
    sizes = [[(b.size, b.pad) for b in plan.rank_batches(r)] for r in range(2)]
    assert sizes == [[(1, 0), (1, 0), (1, 1)], [(1, 0)] * 3]  # 5 samples, 2 ranks, micro batch 1
    assert sum(len(s) for r in range(2) for b in plan.rank_batches(r) for s in b.spans) == 5
    assert EpochPlan(shards, 0, 0, False, Geometry(1, 1, 3)).rank_batches(0)[0].spans == (Span(0, 0, 3),)
