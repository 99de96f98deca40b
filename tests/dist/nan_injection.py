"""Stage 1 under torchrun with a non-finite value planted on one rank at chosen micro-batches.

Usage: nan_injection.py RANK MICRO_FROM MICRO_TO VALUE CONFIG [overrides...]
(micro-batches counted from 1 on that rank; MICRO_TO = -1 means forever). VALUE ``nan`` multiplies the
adapter's output by NaN, which the network carries into the loss; ``inf`` adds +inf to the loss itself
(planted upstream, inf meets inf - inf in softmax and arrives as NaN)."""

import sys

import torch

from fe_train import stages
from fe_train.launch.logs import setup_logging
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.stages import runner

bad_rank, first, last, value = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config_path, *overrides = sys.argv[5:]
if value not in ("nan", "inf"):
    raise SystemExit(f"VALUE must be nan or inf, not {value!r}")
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
calls = {"n": 0}


def planted(module) -> bool:
    """True on the bad rank at the chosen training micro-batches (counts every training forward)."""
    if not module.training:
        return False
    calls["n"] += 1
    return launch.rank == bad_rank and calls["n"] >= first and (last < 0 or calls["n"] <= last)


def poison_adapter(module, inputs, output):
    if not planted(module):
        return output
    tokens, counts = output
    return tokens * torch.tensor(float("nan")), counts


def poison_loss(module, inputs, output):
    if not planted(module):
        return output
    return {**output, "loss": output["loss"] + float("inf")}


def before(trainer):
    model = trainer.engine.module
    if value == "nan":
        model.adapter.register_forward_hook(poison_adapter)
    else:
        model.register_forward_hook(poison_loss)


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(before_train=before))
