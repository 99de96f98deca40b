"""The paper presets on 8 to 64 GPUs: the optimizer-step geometry each gets, or the one line that says what to change;
evaluation on any number of shards."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from fe_train.config import Config
from fe_train.data.plan import EpochPlan, Shard, eval_geometry
from fe_train.engine.ds_config import gradient_accumulation
from fe_train.errors import UserError

PRESETS = ["stage1_paper", "stage2a_paper", "stage2b_paper", "stage3a_paper", "stage3b_paper"]


def named_fix(message: str) -> str:
    return re.search(r": set (train\.\w+=\d+)", message).group(1)


def geometry(preset: str, gpus: int, overrides=()) -> str:
    cfg = Config.load(str(REPO / "configs" / f"{preset}.yaml"), list(overrides))
    try:
        steps = gradient_accumulation(cfg, gpus)
    except UserError as error:
        return f"error: {error}"
    return f"micro {cfg.train.micro_batch_size} x {gpus} GPUs x accumulation {steps} = {cfg.train.global_batch_size}"


def test_geometry_table_of_the_paper_presets():
    table = {(preset, gpus): geometry(preset, gpus) for preset in PRESETS for gpus in (8, 16, 32, 64)}
    for (preset, gpus), line in table.items():
        print(f"{preset:14s} {gpus:3d} GPUs: {line}")
    assert table["stage1_paper", 8] == "micro 4 x 8 GPUs x accumulation 4 = 128"
    assert table["stage1_paper", 32] == "micro 4 x 32 GPUs x accumulation 1 = 128"
    assert table["stage1_paper", 64] == ("error: config train.global_batch_size = 128 is not a multiple of "
                                         "train.micro_batch_size (4) x world size (64): set train.micro_batch_size=2 "
                                         "(keeps the global batch)")
    assert table["stage3a_paper", 64].endswith("set train.global_batch_size=256, or run on a world size that divides 32")
    for (preset, gpus), line in table.items():
        if line.startswith("error: "):
            fix = named_fix(line)
            assert geometry(preset, gpus, [fix]).startswith("micro "), (preset, gpus, fix)


@pytest.mark.parametrize("glob, micro, world", [(128, 16, 24), (96, 8, 7), (10, 4, 3)])
def test_the_named_fix_works(glob, micro, world):
    cfg = Config.load(None, [f"train.global_batch_size={glob}", f"train.micro_batch_size={micro}"])
    with pytest.raises(UserError) as caught:
        gradient_accumulation(cfg, world)
    fix = named_fix(str(caught.value))
    assert gradient_accumulation(Config.load(None, [f"train.global_batch_size={glob}", f"train.micro_batch_size={micro}", fix]), world) >= 1


@pytest.mark.parametrize("counts, gpus", [([37, 41], 8), ([300], 64), ([5] * 50, 32), ([3], 16)])
def test_evaluation_runs_on_any_number_of_shards(counts, gpus):
    """A 2-shard dev set on 8 GPUs x 4 workers stopped stage 2 before step 1: evaluation now shares shards and
    caps its workers, every rank steps the same number of times, and every sample is read exactly once."""
    shards = [Shard(f"dev-{i:03d}.tar", count) for i, count in enumerate(counts)]
    geometry = eval_geometry(shards, gpus, num_workers=4, micro_batch=16)
    plan = EpochPlan(shards, 0, seed=1, shuffle=False, geometry=geometry)
    read = []
    for rank in range(gpus):
        batches = [batch for worker in range(geometry.streams) for batch in plan.worker_batches(rank, worker)]
        assert len(batches) == plan.batches_per_rank
        read += [(span.shard, position) for batch in batches for span in batch.spans for position in range(span.start, span.stop)]
    assert sorted(read) == [(i, p) for i, count in enumerate(counts) for p in range(count)]
