"""The epoch plan: every sample exactly once, equal micro-batches per rank, exact continuation."""

from __future__ import annotations

from collections import Counter

import pytest

from fe_train.data.plan import EpochPlan, Geometry, Shard, Span, eval_geometry, taken_by_worker, worker_run
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


WEIGHTS = (2.0, 0.5, 1.25)
"""Weights of the three sources of ``WEIGHTED``: shards 0-2 (25 samples), 3-5 (24) and 6-7 (14)."""
WEIGHTED = [Shard(s.url, s.count, WEIGHTS[source], source)
            for s, source in zip(SHARDS, [0, 0, 0, 1, 1, 1, 2, 2])]


def samples(plan: EpochPlan, spans) -> Counter:
    """(shard, file position) of every planned sample at ``spans`` (a sample planned twice counts twice)."""
    orders = {i: plan.sample_order(i) for i in range(len(plan.shards))}
    return Counter((s.shard, int(orders[s.shard][p])) for s in spans for p in range(s.start, s.stop))


def source_counts(plan: EpochPlan, seen: Counter) -> list[int]:
    return [sum(n for (shard, _), n in seen.items() if plan.shards[shard].source == k) for k in range(len(WEIGHTS))]


@pytest.mark.parametrize("seed", [0, 3, 11])
@pytest.mark.parametrize("world, workers, batch", [(1, 1, 4), (2, 2, 3), (3, 2, 5), (4, 2, 1)])
def test_weighted_sources_plan_weight_times_their_samples(seed, world, workers, batch):
    for epoch in range(3):
        plan = EpochPlan(WEIGHTED, epoch, seed, True, Geometry(world, workers, batch))
        entries, seen = Counter(), Counter()
        for rank in range(world):
            batches = rank_order(plan, rank)
            assert len(batches) == plan.batches_per_rank
            entries.update(positions(batches))
            seen += samples(plan, [span for b in batches for span in b.spans])
        assert set(entries.values()) == {1} and sum(entries.values()) == plan.epoch_size == 50 + 12 + 18
        assert source_counts(plan, seen) == [50, 12, 18]  # floor(w * n + 1/2): 2 x 25, 0.5 x 24, 1.25 x 14 = 17.5
        times = [Counter(seen[(i, p)] for i, s in enumerate(WEIGHTED) if s.source == k for p in range(s.count))
                 for k in range(3)]
        assert times == [Counter({2: 25}), Counter({0: 12, 1: 12}), Counter({1: 10, 2: 4})]


def test_weight_one_is_the_plan_without_weights():
    ones = [Shard(s.url, s.count, 1.0, source) for s, source in zip(SHARDS, [0, 0, 0, 1, 1, 1, 2, 2])]
    for shuffle in (True, False):
        plain, weighted = (EpochPlan(shards, 3, 5, shuffle, Geometry(2, 2, 3)) for shards in (SHARDS, ones))
        assert [plain.rank_batches(r) for r in range(2)] == [weighted.rank_batches(r) for r in range(2)]
        assert all(list(plain.sample_order(i)) == list(weighted.sample_order(i)) for i in range(len(SHARDS)))


def test_fractional_subsets_change_each_epoch_and_reproduce():
    geo = Geometry(2, 2, 4)
    picked = [{(i, int(p)) for i, ps in EpochPlan(WEIGHTED, epoch, 7, True, geo).picks.items() for p in ps}
              for epoch in range(4)]
    assert [len(p) for p in picked] == [12 + 4] * 4  # source 1's 12 of 24, source 2's 4 of 14
    assert len({frozenset(p) for p in picked}) == 4
    again = EpochPlan(WEIGHTED, 2, 7, True, geo)
    assert {(i, int(p)) for i, ps in again.picks.items() for p in ps} == picked[2]
    assert [list(again.sample_order(i)) for i in range(8)] == [list(EpochPlan(WEIGHTED, 2, 7, True, geo).sample_order(i))
                                                               for i in range(8)]
    other_seed = EpochPlan(WEIGHTED, 2, 8, True, geo)
    assert {(i, int(p)) for i, ps in other_seed.picks.items() for p in ps} != picked[2]
    unshuffled = EpochPlan(WEIGHTED, 2, 7, False, geo)  # the subset is drawn whether or not the order is shuffled
    assert {(i, int(p)) for i, ps in unshuffled.picks.items() for p in ps} == picked[2]


@pytest.mark.parametrize("old, new", [(Geometry(2, 2, 3), Geometry(2, 2, 3)), (Geometry(2, 2, 3), Geometry(1, 2, 3)),
                                      (Geometry(1, 1, 4), Geometry(2, 2, 4)), (Geometry(2, 1, 2), Geometry(4, 2, 5))])
def test_weighted_resume_reads_exactly_the_rest(old, new):
    """Mid-epoch resume, at the same geometry (skip the micro-batches done) or another (plan the rest anew)."""
    first = EpochPlan(WEIGHTED, 2, 5, True, old)
    full = samples(first, first.epoch_spans())
    # Planned anew, the rest needs a micro-batch per worker: another geometry resumes by half the epoch at most.
    last = first.batches_per_rank - 1 if new == old else first.batches_per_rank // 2
    for micro in (1, first.batches_per_rank // 3, last):
        consumed = first.consumed_after(micro)
        if new == old:
            rest = [span for r in range(old.world_size) for b in rank_order(first, r, skip=micro) for span in b.spans]
        else:
            second = EpochPlan(WEIGHTED, 2, 5, True, new, consumed)
            assert len({len(second.rank_batches(r)) for r in range(new.world_size)}) == 1
            rest = [span for r in range(new.world_size) for b in rank_order(second, r) for span in b.spans]
        entries = Counter((s.shard, p) for s in consumed + rest for p in range(s.start, s.stop))
        assert set(entries.values()) == {1} and sum(entries.values()) == first.epoch_size
        assert samples(first, consumed) + samples(first, rest) == full


def test_eval_geometry_counts_the_weighted_samples():
    """8 shards of 10 at weight 0.25 plan 20 samples: 3 micro-batches of 8, so 3 workers, not 4."""
    shards = [Shard(f"e{i}.tar", 10, 0.25, 0) for i in range(8)]
    geometry = eval_geometry(shards, world_size=1, num_workers=4, micro_batch=8)
    assert geometry.num_workers == 3
    plan = EpochPlan(shards, 0, 0, False, geometry)
    assert (plan.epoch_size, plan.batches_per_rank) == (20, 3)
