"""Stage recipes, keyed by the name ``train.stage`` takes."""

from __future__ import annotations

from types import ModuleType

from fe_train.errors import UserError


def recipe(name: str) -> ModuleType:
    from fe_train.stages import align, decoder_joint, decoder_pretrain, empathy, ser

    stages = {"align": align, "ser": ser, "empathy": empathy, "decoder_pretrain": decoder_pretrain,
              "decoder_joint": decoder_joint}
    if name not in stages:
        raise UserError(f"config train.stage = {name!r}: expected one of {sorted(stages)}")
    return stages[name]
