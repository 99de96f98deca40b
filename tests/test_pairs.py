"""Stage 2b's sampler: pairs of matching labels only, K per SER clip, the SER share, exact primary resume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fe_train.config import EMOTIONS
from fe_train.data.collate import Collate
from fe_train.data.pairs import PAIR_KEY, PairLayout, PairStream
from fe_train.data.pipeline import Example, build_loader, resolve_shards
from fe_train.data.plan import Geometry
from fe_train.data.schema import Meta
from fe_train.data.sources import resolve_sources
from fe_train.data.writer import encode_sample, write_shards
from fe_train.errors import UserError

WAVE = np.zeros(160, np.float32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    ser = [encode_sample(Meta(key=f"clip{i:03d}", emotion=EMOTIONS[i % 5], text="t"), WAVE, 16000) for i in range(47)]
    write_shards(ser, root / "ser", prefix="ser", max_count=6)
    # Labels deliberately uneven (surprised is rare), plus records the pool must skip and count.
    labels = [EMOTIONS[i % 5] for i in range(40)] + ["angry"] * 20 + ["neutral"] * 5
    instructions = [encode_sample(Meta(key=f"inst{i:03d}", text="q", reply="r", pseudo_emotion=label), WAVE, 16000)
                    for i, label in enumerate(labels)]
    instructions.append(encode_sample(Meta(key="inst-none", text="q", reply="r"), WAVE, 16000))
    write_shards(instructions, root / "inst", prefix="inst", max_count=9)
    no_sad = [encode_sample(Meta(key=f"other{i}", pseudo_emotion=EMOTIONS[i % 2]), WAVE, 16000) for i in range(8)]
    write_shards(no_sad, root / "no_sad", prefix="inst", max_count=4)
    return root


def record(raw):
    """What each entry became: (clip, clip label, instruction or None, its pseudo label or None)."""
    clip = Meta.from_json(raw["json"])
    pair = Meta.from_json(raw[PAIR_KEY]["json"]) if PAIR_KEY in raw else None
    return Example(clip.key, {"entry": (clip.key, clip.emotion, pair and pair.key, pair and pair.pseudo_emotion)})


def read(root, world, workers, k, ratio, epoch=0, skip=0, pair_dir="inst"):
    out = []
    for rank in range(world):
        stream = PairStream(resolve_shards(str(root / "ser")), resolve_shards(str(root / pair_dir)), rank,
                            Geometry(world, workers, 4), seed=3, shuffle=True, build=record, collate=Collate(0),
                            layout=PairLayout(k, ratio), buffer=4)
        stream.set_epoch(epoch, skip_batches=skip)
        out.append([(batch["entry"], batch["skipped"]) for batch in build_loader(stream)])
    return out


def entries(per_rank):
    return [entry for batches in per_rank for batch, _ in batches for entry in batch]


@pytest.mark.parametrize("world, workers, k, ratio", [(1, 0, 3, 0.2), (2, 2, 2, 0.5), (2, 1, 4, 0.0)])
def test_pairs_match_labels_k_per_clip_and_ser_share(shards, world, workers, k, ratio):
    per_rank = read(shards, world, workers, k, ratio)
    got = entries(per_rank)
    pairs = [e for e in got if e[2] is not None]
    ser = [e for e in got if e[2] is None]
    assert pairs and all(label == pseudo for _, label, _, pseudo in pairs)
    assert Counter(clip for clip, *_ in pairs) == {f"clip{i:03d}": k for i in range(47)}
    # The SER share is the ratio up to rounding per shard (8 shards).
    assert abs(len(ser) - ratio / (1 - ratio) * len(pairs)) <= 8 * 0.5 + 1e-9
    assert len({clip for clip, *_ in ser}) == len(ser) or ratio > 1 / (k + 1)  # spread over distinct clips
    # Every rank does the same number of micro-batches (the epoch plan of the entries).
    assert len({len(batches) for batches in per_rank}) == 1
    skipped = sum((Counter(s) for batches in per_rank for _, s in batches), Counter())
    assert set(skipped) <= {"pair:missing_field:pseudo_emotion"}


def test_layout_counts():
    layout = PairLayout(pairs_per_clip=4, ser_mix_ratio=0.2)
    assert layout.ser_entries(10) == 10 and layout.entries(10) == 50
    roles = [layout.entry(10, i) for i in range(50)]
    assert Counter(pos for pos, role in roles if role >= 0) == {pos: 4 for pos in range(10)}
    assert sorted(pos for pos, role in roles if role < 0) == list(range(10))
    assert PairLayout(3, 0.0).entries(7) == 21


def test_resume_continues_the_primary_stream_exactly(shards):
    full = read(shards, 2, 1, 2, 0.2)
    resumed = read(shards, 2, 1, 2, 0.2, skip=3)
    for rank in range(2):
        full_clips = [[(clip, pair is None) for clip, _, pair, _ in batch] for batch, _ in full[rank][3:]]
        resumed_clips = [[(clip, pair is None) for clip, _, pair, _ in batch] for batch, _ in resumed[rank]]
        assert resumed_clips == full_clips  # same clips in the same roles, micro-batch by micro-batch
    assert all(label == pseudo for _, label, pair, pseudo in entries(resumed) if pair)


def test_a_label_without_instructions_is_a_user_error(shards):
    with pytest.raises(UserError, match="no instruction with pseudo_emotion '(happy|sad|neutral)'"):
        read(shards, 1, 0, 1, 0.0, pair_dir="no_sad")


def test_a_source_weight_plans_the_entries_that_many_times(shards):
    """Stage 2b under a weighted ``data.train_shards``: weight 2 with K = 2 makes 4 matching pairs of every clip."""
    ser = resolve_sources([{"shards": str(shards / "ser"), "weight": 2}])
    stream = PairStream(ser, resolve_shards(str(shards / "inst")), 0, Geometry(1, 0, 4), seed=3, shuffle=True,
                        build=record, collate=Collate(0), layout=PairLayout(2, 0.0), buffer=4)
    pairs = [entry for batch in build_loader(stream) for entry in batch["entry"] if entry[2] is not None]
    assert Counter(clip for clip, *_ in pairs) == {f"clip{i:03d}": 4 for i in range(47)}
    assert all(label == pseudo for _, label, _, pseudo in pairs)
