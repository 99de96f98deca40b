"""The paper presets on 8 to 64 GPUs: the optimizer-step geometry each gets, or the one line that says what to change."""

from __future__ import annotations

import re

import pytest

from fe_train.config import Config
from fe_train.engine.ds_config import gradient_accumulation
from fe_train.errors import UserError

from conftest import REPO

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
    assert table["stage1_paper", 8] == "micro 16 x 8 GPUs x accumulation 1 = 128"
    assert table["stage1_paper", 32] == ("error: config train.global_batch_size = 128 is not a multiple of "
                                         "train.micro_batch_size (16) x world size (32): set train.micro_batch_size=4 "
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
