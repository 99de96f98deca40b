"""Shards written by the project's writer, read back by the project's pipeline and by plain webdataset."""

from __future__ import annotations

import os
import subprocess
import tarfile
import threading
from collections import Counter

import numpy as np
import pytest
import webdataset as wds

from fe_train.data.collate import Collate
from fe_train.data.pipeline import Example, ShardStream, build_loader, resolve_shards, stream_positions
from fe_train.data.plan import EpochPlan, Geometry
from fe_train.data.schema import Meta
from fe_train.data.sources import describe_sources, resolve_sources, shards_digest
from fe_train.data.writer import encode_sample, write_shards
from fe_train.errors import UserError


def write_clips(out, prefix: str, count: int, max_count: int):
    rng = np.random.default_rng(0)
    samples = [encode_sample(Meta(key=f"{prefix}-{i:03d}", text=f"t{i}", speaker=f"s{i % 3}"),
                             (rng.standard_normal(1600 + 10 * i) * 0.1).astype(np.float32), 16000) for i in range(count)]
    write_shards(samples, out, prefix="train", max_count=max_count)
    return out


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("shards"), "clip", 53, 7)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A second corpus: 20 clips in 4 shards, keys ``other-NNN``."""
    return write_clips(tmp_path_factory.mktemp("other"), "other", 20, 5)


def keys_build(raw):
    return Example(raw["__key__"], {"n": len(raw["flac"])})


def read_epoch(shards, world, workers, batch, epoch=0, skip=0, consumed=()):
    per_rank = []
    for rank in range(world):
        stream = ShardStream(shards, rank, Geometry(world, workers, batch), seed=1, shuffle=True, build=keys_build, collate=Collate(0))
        stream.set_epoch(epoch, skip_batches=skip, consumed=consumed)
        per_rank.append([b["keys"] for b in build_loader(stream)])
    return per_rank


def test_writer_layout_and_plain_webdataset(shard_dir):
    shards = resolve_shards(str(shard_dir))
    assert [s.count for s in shards] == [7] * 7 + [4]
    members = subprocess.run(["tar", "-tf", shards[0].url], capture_output=True, text=True, check=True).stdout.split()
    assert members[:2] == [f"{members[0].split('.')[0]}.flac", f"{members[0].split('.')[0]}.json"]
    plain = list(wds.WebDataset([s.url for s in shards], shardshuffle=False))
    assert len(plain) == 53 and {"flac", "json", "__key__"} <= set(plain[0])


def test_every_key_once_per_epoch_across_ranks_and_workers(shard_dir):
    shards = resolve_shards(str(shard_dir))
    per_rank = read_epoch(shards, world=2, workers=2, batch=4)
    assert len(per_rank[0]) == len(per_rank[1])
    seen = Counter(k for batches in per_rank for batch in batches for k in batch)
    assert len(seen) == 53 and set(seen.values()) == {1}


def test_resume_continues_with_the_same_batches(shard_dir):
    shards = resolve_shards(str(shard_dir))
    full = read_epoch(shards, world=2, workers=2, batch=3, epoch=4)
    for skip in (1, 2, 5):
        resumed = read_epoch(shards, world=2, workers=2, batch=3, epoch=4, skip=skip)
        assert resumed == [batches[skip:] for batches in full]


def test_positions_come_in_plan_order_with_repeats_and_gaps(shard_dir):
    url = resolve_shards(str(shard_dir))[0].url
    keys = [raw["__key__"] if raw else None for raw in stream_positions(url, [5, 2, 5, 0, 99, 2])]
    assert keys == ["clip-005", "clip-002", "clip-005", "clip-000", None, "clip-002"]


def test_a_shard_is_streamed_not_read_whole_before_the_first_sample(tmp_path):
    """The samples wanted first leave while the rest of the shard has not even been written (a FIFO)."""
    url = resolve_shards(str(write_clips(tmp_path / "one", "clip", 40, 40)))[0].url
    data = open(url, "rb").read()
    with tarfile.open(url) as tar:
        members = tar.getmembers()
    cut = -(-(members[41].offset_data + members[41].size) // 512) * 512  # the end of sample 20 (2 members each)
    fifo, rest_written = str(tmp_path / "shard.tar"), threading.Event()
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as stream:
            stream.write(data[:cut])
            stream.flush()
            finished.wait(timeout=10)
            rest_written.set()
            stream.write(data[cut:])

    finished = threading.Event()
    thread = threading.Thread(target=writer)
    thread.start()
    samples = stream_positions(fifo, [1, 0, 3, 30])
    early = [(next(samples)["__key__"], rest_written.is_set()) for _ in range(3)]
    finished.set()
    last = next(samples)["__key__"]
    thread.join()
    assert early == [("clip-001", False), ("clip-000", False), ("clip-003", False)]
    assert last == "clip-030"


def test_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(UserError, match="matches no shard"):
        resolve_shards(str(tmp_path / "none-{000..009}.tar"))


def test_brace_pattern_and_glob(shard_dir):
    assert len(resolve_shards(str(shard_dir / "train-{000000..000002}.tar"))) == 3
    assert len(resolve_shards(str(shard_dir / "train-*.tar"))) == 8


def test_rewrite_is_byte_identical(shard_dir, tmp_path):
    write_clips(tmp_path, "clip", 53, 7)
    for shard in resolve_shards(str(shard_dir)):
        name = shard.url.rsplit("/", 1)[1]
        assert (tmp_path / name).read_bytes() == (shard_dir / name).read_bytes()


def test_two_weighted_sources_read_end_to_end(shard_dir, other_dir):
    """1.5 x 53 clips (each once, 27 of them twice) and 0.5 x 20 (10 once) per epoch, through the real stream."""
    shards = resolve_sources([{"shards": str(shard_dir), "weight": 1.5}, {"shards": str(other_dir), "weight": 0.5}])
    halves = []
    for epoch in (0, 1):
        per_rank = read_epoch(shards, world=2, workers=2, batch=4, epoch=epoch)
        assert len(per_rank[0]) == len(per_rank[1]) == 12  # 90 samples: 45 per rank in micro-batches of 4
        seen = Counter(k for batches in per_rank for batch in batches for k in batch)
        clips = Counter(n for key, n in seen.items() if key.startswith("clip-"))
        others = Counter(n for key, n in seen.items() if key.startswith("other-"))
        assert clips == Counter({1: 26, 2: 27}) and others == Counter({1: 10})
        halves.append({key for key in seen if key.startswith("other-")})
    assert halves[0] != halves[1]  # another half of the second source each epoch
    full = read_epoch(shards, world=2, workers=2, batch=4, epoch=1)
    resumed = read_epoch(shards, world=2, workers=2, batch=4, epoch=1, skip=5)
    assert resumed == [batches[5:] for batches in full]
    consumed = EpochPlan(shards, 1, 1, True, Geometry(2, 2, 4)).consumed_after(5)
    rest = read_epoch(shards, world=1, workers=2, batch=3, epoch=1, consumed=consumed)  # resumed on one rank
    keys = Counter(k for batches in full for batch in batches[:5] for k in batch)
    assert keys + Counter(k for batch in rest[0] for k in batch) == Counter(k for b in full for batch in b for k in batch)


def test_sources_resolve_in_order_with_weights(shard_dir, other_dir):
    plain = resolve_shards(str(shard_dir))
    assert resolve_sources(str(shard_dir)) == plain == resolve_sources([{"shards": str(shard_dir), "weight": 1}])
    both = resolve_sources([str(other_dir), {"shards": str(shard_dir / "train-00000[0-2].tar"), "weight": 2.5}])
    assert [(s.count, s.weight, s.source) for s in both] == [(5, 1.0, 0)] * 4 + [(7, 2.5, 1)] * 3
    lines = describe_sources([str(other_dir), {"shards": str(shard_dir / "train-00000[0-2].tar"), "weight": 2.5}],
                             "data.train_shards", EpochPlan(both, 0, 1, True, Geometry(2, 1, 4)))
    assert lines == [f"data.train_shards {other_dir}: 4 shards, 20 samples, weight 1, 20 samples per epoch",
                     f"data.train_shards {shard_dir}/train-00000[0-2].tar: 3 shards, 21 samples, weight 2.5, "
                     "53 samples per epoch",  # 2.5 x 21 = 52.5, halves up
                     "data.train_shards: 73 samples per epoch, 10 micro-batches per rank"]


def test_checkpoint_digest_of_a_pattern_and_of_sources(shard_dir, other_dir):
    """A resume compares this digest: the same shards at weight 1 in any form match, another weight does not."""
    digest = shards_digest(resolve_shards(str(shard_dir)))
    assert digest == shards_digest(resolve_sources([str(shard_dir)]))
    assert digest == shards_digest(resolve_sources([{"shards": str(shard_dir), "weight": 1.0}]))
    assert digest != shards_digest(resolve_sources([{"shards": str(shard_dir), "weight": 2}]))
    mixed = [str(other_dir), {"shards": str(shard_dir), "weight": 0.5}]
    assert shards_digest(resolve_sources(mixed)) != shards_digest(resolve_sources(mixed[:1] + [str(shard_dir)]))
    assert shards_digest(resolve_sources(mixed)) != shards_digest(resolve_sources(mixed[::-1]))


@pytest.mark.parametrize("sources, message", [
    (["{other}", "{missing}"], "data.train_shards[1] = '{missing}' matches no shard"),
    (["{shards}", {"shards": "{shards}/train-000001.tar", "weight": 2}],
     "data.train_shards: shard {shards}/train-000001.tar is in source 0 ('{shards}') and source 1 "
     "('{shards}/train-000001.tar'); expected each shard in one source"),
    ([], "data.train_shards is empty"),
])
def test_bad_sources_are_one_line(shard_dir, other_dir, tmp_path, sources, message):
    names = {"shards": str(shard_dir), "other": str(other_dir), "missing": str(tmp_path / "nothing")}
    sources = [{k: v.format(**names) if isinstance(v, str) else v for k, v in s.items()} if isinstance(s, dict)
               else s.format(**names) for s in sources]
    with pytest.raises(UserError) as err:
        resolve_sources(sources)
    assert str(err.value).startswith(message.format(**names)) and "\n" not in str(err.value)
