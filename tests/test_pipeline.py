"""Shards written by the project's writer, read back by the project's pipeline and by plain webdataset."""

from __future__ import annotations

import subprocess
from collections import Counter

import numpy as np
import pytest
import webdataset as wds

from fe_train.data.collate import Collate
from fe_train.data.pipeline import Example, ShardStream, build_loader, resolve_shards
from fe_train.data.plan import Geometry
from fe_train.data.schema import Meta
from fe_train.data.writer import encode_sample, write_shards
from fe_train.errors import UserError


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    samples = [encode_sample(Meta(key=f"clip-{i:03d}", text=f"t{i}", speaker=f"s{i % 3}"),
                             (rng.standard_normal(1600 + 10 * i) * 0.1).astype(np.float32), 16000) for i in range(53)]
    write_shards(samples, out, prefix="train", max_count=7)
    return out


def keys_build(raw):
    return Example(raw["__key__"], {"n": len(raw["flac"])})


def read_epoch(shards, world, workers, batch, epoch=0, skip=0):
    per_rank = []
    for rank in range(world):
        stream = ShardStream(shards, rank, Geometry(world, workers, batch), seed=1, shuffle=True, build=keys_build, collate=Collate(0))
        stream.set_epoch(epoch, skip_batches=skip)
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


def test_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(UserError, match="matches no shard"):
        resolve_shards(str(tmp_path / "none-{000..009}.tar"))


def test_brace_pattern_and_glob(shard_dir):
    assert len(resolve_shards(str(shard_dir / "train-{000000..000002}.tar"))) == 3
    assert len(resolve_shards(str(shard_dir / "train-*.tar"))) == 8


def test_rewrite_is_byte_identical(shard_dir, tmp_path):
    rng = np.random.default_rng(0)
    samples = [encode_sample(Meta(key=f"clip-{i:03d}", text=f"t{i}", speaker=f"s{i % 3}"),
                             (rng.standard_normal(1600 + 10 * i) * 0.1).astype(np.float32), 16000) for i in range(53)]
    write_shards(samples, tmp_path, prefix="train", max_count=7)
    for shard in resolve_shards(str(shard_dir)):
        name = shard.url.rsplit("/", 1)[1]
        assert (tmp_path / name).read_bytes() == (shard_dir / name).read_bytes()
