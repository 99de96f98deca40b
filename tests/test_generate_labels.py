"""Pseudo labels of the empathy task: reproducible per key, independent of ranks and order, true to the distribution."""

from __future__ import annotations

import numpy as np
import pytest

from fe_train.config import EMOTIONS, Config
from fe_train.data.schema import Meta
from fe_train.data.writer import encode_sample, write_shards
from fe_train.errors import UserError
from fe_train.generate.labels import LabelDistribution
from fe_train.generate.plan import GenerationPlan, Item
from fe_train.generate.tasks import build_task


def test_draw_depends_only_on_seed_and_key():
    dist = LabelDistribution.from_weights([1, 2, 3, 4, 5], "test")
    keys = [f"utt-{i:05d}" for i in range(2000)]
    forward = {key: dist.draw(key, seed=7) for key in keys}
    backward = {key: dist.draw(key, seed=7) for key in reversed(keys)}
    assert forward == backward
    # Rank r of a world of w draws only its own slice: the union over any world size is the same labelling.
    for world in (1, 2, 3, 8):
        sliced = {key: dist.draw(key, seed=7) for rank in range(world) for key in keys[rank::world]}
        assert sliced == forward
    other_seed = {key: dist.draw(key, seed=8) for key in keys}
    assert sum(forward[k] != other_seed[k] for k in keys) > 0.5 * len(keys)


def test_draw_follows_the_distribution():
    weights = [0.1, 0.0, 0.2, 0.3, 0.4]
    dist = LabelDistribution.from_weights(weights, "test")
    n = 20000
    labels = [dist.draw(f"k{i}", seed=0) for i in range(n)]
    counts = np.array([labels.count(label) for label in EMOTIONS])
    assert counts[EMOTIONS.index("surprised")] == 0  # a zero weight is never drawn
    expected = np.array(weights) * n
    # Binomial standard deviation is at most sqrt(n/4) = 71; allow 4 of them.
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(n * 0.25)), counts


def test_distribution_from_ser_shards(tmp_path):
    labels = ["angry"] * 6 + ["happy"] * 3 + ["neutral"] * 1 + [""] * 2  # two clips without a label
    wave = np.zeros(1600, dtype=np.float32)
    samples = [encode_sample(Meta(key=f"ser-{i:03d}", emotion=label), wave, 16000) for i, label in enumerate(labels)]
    write_shards(samples, tmp_path / "ser", prefix="ser", max_count=5)
    cfg = Config.load(None, [f"generate.label_shards={tmp_path / 'ser'}"])
    task = build_task("empathy", cfg)
    assert task.labels.as_dict() == {"angry": 0.6, "surprised": 0.0, "happy": 0.3, "sad": 0.0, "neutral": 0.1}
    assert task.user("how are you", "happy") == "how are you(with a happy emotional tone)."
    assert task.system.startswith("You are an empathetic spoken chatbot.")


def test_empathy_without_a_distribution_is_a_user_error():
    with pytest.raises(UserError, match="generate.label_shards"):
        build_task("empathy", Config())
    with pytest.raises(UserError, match="generate.label_weights"):
        Config.load(None, ["generate.label_weights=[1, 2]"])
    with pytest.raises(UserError, match="--task 'summarise'"):
        build_task("summarise", Config())


def test_plan_batches_do_not_depend_on_world_size_or_done_keys():
    items = [Item(f"k{i:03d}", tuple(range(i % 13 + 1)), "", "") for i in range(50)]
    plan = GenerationPlan(items, batch_size=8)
    lengths = [len(item.prompt_ids) for batch in plan.batches for item in batch.items]
    assert lengths == sorted(lengths, reverse=True) and len(plan.batches) == 7
    pending = plan.pending(set())
    for world in (1, 2, 3):
        dealt = [b.index for rank in range(world) for b in plan.for_rank(pending, rank, world)]
        assert sorted(dealt) == list(range(7))
        assert plan.steps(pending, world) == -(-7 // world)
    done = set(plan.batches[0].keys) | set(plan.batches[3].keys)
    assert [b.index for b in plan.pending(done)] == [1, 2, 4, 5, 6]
    assert all(b.items == plan.batches[b.index].items for b in plan.pending(done))
