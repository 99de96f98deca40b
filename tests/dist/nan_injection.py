"""Stage 1 under torchrun with NaN planted in one rank's adapter output at chosen micro-batches.

Usage: nan_injection.py RANK MICRO_FROM MICRO_TO CONFIG [overrides...]
(micro-batches counted from 1 on that rank; MICRO_TO = -1 means forever)."""

import sys

import torch

from fe_train import stages
from fe_train.cli import setup_logging
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.stages import runner

bad_rank, first, last = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
config_path, *overrides = sys.argv[4:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
calls = {"n": 0}


def poison(module, inputs, output):
    if not module.training:
        return output
    calls["n"] += 1
    if launch.rank == bad_rank and calls["n"] >= first and (last < 0 or calls["n"] <= last):
        tokens, counts = output
        return tokens * torch.tensor(float("nan")), counts
    return output


def before(trainer):
    trainer.engine.module.adapter.register_forward_hook(poison)


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(before_train=before))
