"""Length-grouped micro-batches (issue 18): lengths.json, the grouped plan, exact resume, the real-token fraction."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter

import numpy as np
import pytest

from conftest import REPO
from fe_train.cli import shards_main
from fe_train.config import Config
from fe_train.data.collate import Collate
from fe_train.data.lengths import LENGTHS_NAME, real_fraction, with_lengths
from fe_train.data.pipeline import Example, ShardStream, build_loader, iter_shard, resolve_shards
from fe_train.data.plan import EpochPlan, Geometry, Shard
from fe_train.data.schema import Meta
from fe_train.data.sources import shards_digest
from fe_train.data.writer import encode_sample, write_shards
from fe_train.errors import UserError

sys.path.insert(0, str(REPO / "bench"))
from length_grouping import fractions, mix_shards  # noqa: E402

WINDOW = 16


def random_shards(seed: int, counts=(40, 33, 57, 21, 48, 36), weights=None) -> list[Shard]:
    rng = np.random.default_rng(seed)
    weights = weights or [1.0] * len(counts)
    return [Shard(f"s{i}.tar", n, weights[i], i % 2, lengths=rng.integers(5, 500, n).astype(np.float64))
            for i, n in enumerate(counts)]


def entries(plan: EpochPlan, spans) -> Counter:
    orders = {i: plan.sample_order(i) for i in range(len(plan.shards))}
    return Counter((s.shard, int(orders[s.shard][p])) for s in spans for p in range(s.start, s.stop))


def test_grouping_reorders_within_a_shard_only():
    shards = random_shards(0)
    geo = Geometry(2, 2, 4)
    plain, grouped = EpochPlan(shards, 1, 3, True, geo), EpochPlan(shards, 1, 3, True, geo, group=WINDOW)
    for i, shard in enumerate(shards):
        a, b = plain.sample_order(i), grouped.sample_order(i)
        assert sorted(a) == sorted(b) and list(a) != list(b)
        for start in range(0, len(b), WINDOW):  # each window is sorted one way or the other
            key = shard.lengths[b[start : start + WINDOW]]
            assert (np.diff(key) >= 0).all() or (np.diff(key) <= 0).all()
    assert [plain.rank_batches(r) for r in range(2)] == [grouped.rank_batches(r) for r in range(2)]  # same spans
    # Geometry-free: the order a resume on other ranks, workers or micro-batch reads is the same order.
    other = EpochPlan(shards, 1, 3, True, Geometry(3, 1, 5), group=WINDOW)
    assert all(list(other.sample_order(i)) == list(grouped.sample_order(i)) for i in range(len(shards)))
    # Without shuffle the order stays the file order; a shard without lengths is not grouped.
    assert list(EpochPlan(shards, 1, 3, False, geo, group=WINDOW).sample_order(0)) == list(range(40))
    bare = [Shard(s.url, s.count, s.weight, s.source) for s in shards]
    assert list(EpochPlan(bare, 1, 3, True, geo, group=WINDOW).sample_order(2)) == list(plain.sample_order(2))


@pytest.mark.parametrize("old, new", [(Geometry(2, 2, 3), Geometry(1, 2, 3)), (Geometry(1, 1, 4), Geometry(2, 2, 4)),
                                      (Geometry(2, 1, 2), Geometry(4, 2, 5))])
def test_grouped_resume_on_another_geometry_reads_exactly_the_rest(old, new):
    """Weighted sources too: every planned sample once, before the resume or after it (the same geometry's resume,
    the next micro-batches, is read through real shards below)."""
    shards = random_shards(1, counts=(40, 33, 57, 21, 48, 36, 29, 44), weights=[2.0, 0.5, 2.0, 0.5, 1.0, 1.0, 1.5, 1.0])
    first = EpochPlan(shards, 2, 5, True, old, group=WINDOW)
    full = entries(first, first.epoch_spans())
    for micro in (1, first.batches_per_rank // 3, first.batches_per_rank // 2):
        consumed = first.consumed_after(micro)
        second = EpochPlan(shards, 2, 5, True, new, consumed, group=WINDOW)
        rest = [span for r in range(new.world_size) for b in second.rank_batches(r) for span in b.spans]
        assert entries(first, consumed) + entries(second, rest) == full


def test_real_token_fraction_on_the_documented_mix():
    """Issue 18, must-show 1: at least 0.9 of the LLM's positions are real with grouping (8 ranks, micro-batch 4);
    docs/shards.md's table is what ``bench/length_grouping.py`` prints."""
    doc = (REPO / "docs" / "shards.md").read_text()
    for name in ("instructs2s", "ser"):
        row = re.search(rf"^\| {name} [^|]*\| ([0-9.]+)(?:-([0-9.]+))? \| ([0-9.]+) \|$", doc, re.M)
        plain = [fractions(name, seed, 256, Geometry(8, 2, 4)) for seed in (0, 1, 2)]
        print(name, [f"{a:.3f} -> {b:.3f}" for a, b in plain])
        low, high = row.group(1), row.group(2) or row.group(1)
        assert (f"{min(a for a, _ in plain):.3f}", f"{max(a for a, _ in plain):.3f}") == (low, high)
        assert {f"{b:.3f}" for _, b in plain} == {row.group(3)}
        assert all(b >= 0.9 for _, b in plain) and all(a < b for a, b in plain)
    assert 0 < real_fraction(EpochPlan(mix_shards("ser", 8, 0), 0, 0, True, Geometry(2, 1, 4), group=256)) <= 1


def write_varied(folder, count: int = 60, max_count: int = 10):
    """Clips of 0.1-1.5 s with replies of 1-60 words, so that lengths differ a lot."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        wave = (rng.standard_normal(int(16000 * rng.uniform(0.1, 1.5))) * 0.1).astype(np.float32)
        meta = Meta(key=f"clip-{i:03d}", text=f"t{i}", reply=" ".join(["word"] * int(rng.integers(1, 60))))
        samples.append(encode_sample(meta, wave, 16000))
    write_shards(samples, folder, prefix="train", max_count=max_count)
    return folder


def lengths_build(raw):
    meta = json.loads(raw["json"])
    return Example(raw["__key__"], {"n": meta["duration_s"] * 10 + len(meta["reply"].encode()) / 4})


def read_batches(shards, world, workers, micro, group, skip=0):
    per_rank = []
    for rank in range(world):
        stream = ShardStream(shards, rank, Geometry(world, workers, micro), 1, True, lengths_build, Collate(0), group)
        stream.set_epoch(0, skip_batches=skip)
        per_rank.append([b["keys"] for b in build_loader(stream)])
    return per_rank


def test_lengths_file_and_grouped_stream_over_real_shards(tmp_path, capsys):
    folder = write_varied(tmp_path / "train")
    with pytest.raises(UserError, match=rf"group_by_length=on: .* has no up-to-date {LENGTHS_NAME}; run fe-shards lengths"):
        with_lengths(resolve_shards(str(folder)), "on")
    shards, why = with_lengths(resolve_shards(str(folder)), "auto")
    assert all(s.lengths is None for s in shards) and "fe-shards lengths" in why[0]
    assert shards_main(["lengths", str(tmp_path)]) == 0 and f"wrote {folder / LENGTHS_NAME}" in capsys.readouterr().out
    shards, why = with_lengths(resolve_shards(str(folder)), "auto")
    assert not why and all(len(s.lengths) == s.count for s in shards)
    assert with_lengths(resolve_shards(str(folder)), "off")[0][0].lengths is None
    assert shards_digest(shards, WINDOW) != shards_digest(shards) == shards_digest(resolve_shards(str(folder)))

    length = {raw["__key__"]: lengths_build(raw).fields["n"] for s in shards for _, raw in iter_shard(s.url)}
    fraction = {}
    for group in (0, WINDOW):
        ranks = read_batches(shards, 2, 2, 4, group)
        keys = Counter(k for rank in ranks for batch in rank for k in batch)
        assert set(keys.values()) == {1} and len(keys) == 60  # every clip once per epoch
        assert [rank[3:] for rank in ranks] == read_batches(shards, 2, 2, 4, group, skip=3)  # resume: the rest
        batches = [[length[k] for k in batch] for rank in ranks for batch in rank]
        fraction[group] = sum(map(sum, batches)) / sum(max(b) * len(b) for b in batches)
    print(f"real fraction of the stream's micro-batches: {fraction[0]:.3f} ungrouped, {fraction[WINDOW]:.3f} grouped")
    assert fraction[WINDOW] > fraction[0] + 0.1
    plan = EpochPlan(shards, 0, 1, True, Geometry(2, 2, 4), group=WINDOW)
    assert fraction[WINDOW] == pytest.approx(real_fraction(plan), rel=1e-2)  # lengths.json rounds to 1 ms, 1 token

    (folder / "train-000000.tar").write_bytes((folder / "train-000001.tar").read_bytes())  # a shard rewritten
    shards, why = with_lengths(resolve_shards(str(folder)), "auto")
    assert all(s.lengths is None for s in shards) and why
    (folder / LENGTHS_NAME).write_text("{not json")
    with pytest.raises(UserError, match=rf"{LENGTHS_NAME}: unreadable lengths file; delete it and run fe-shards lengths"):
        with_lengths(resolve_shards(str(folder)), "auto")


def test_group_by_length_setting(tmp_path):
    path = tmp_path / "c.yaml"
    for written, meant in (("on", "on"), ("off", "off"), ("auto", "auto"), ("true", "on")):
        path.write_text(f"data:\n  group_by_length: {written}\n")  # YAML 1.1 reads on/off as booleans
        assert Config.load(path, []).data.group_by_length == meant
    assert Config().data.group_by_length == "auto" and Config().data.length_window == 256
    with pytest.raises(UserError, match="config data.group_by_length = 'sorted': expected one of auto, on, off"):
        Config.load(None, ["data.group_by_length=sorted"])
    with pytest.raises(UserError, match="data.length_window = 0: expected an integer >= 1"):
        Config.load(None, ["data.length_window=0"])
