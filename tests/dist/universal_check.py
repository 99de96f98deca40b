"""Stage 1 under torchrun, recording the trainable state around checkpoints for the universal-resume test.

Usage: universal_check.py DUMP_DIR RESUME CONFIG [overrides...]   (RESUME: 0 or 1)

Rank 0 writes to DUMP_DIR, each a dict {parameter name: {fp32, exp_avg, exp_avg_sq}} plus the optimizer's
``step`` per parameter group, gathered from the ZeRO-3 partitions of every rank:
``saved<step>.pt`` right after every checkpoint save, ``loaded.pt`` right after a resume loaded its
checkpoint (before any step; the eval loss at that point is then logged at the checkpoint's step),
and ``final.pt`` after the last step."""

import sys
from pathlib import Path

import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

from fe_train import stages
from fe_train.launch.logs import setup_logging
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.stages import runner

dump_dir, resume, config_path, *overrides = sys.argv[1:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)


def dump(trainer, name: str) -> None:
    """Collective: every rank gathers every trainable parameter's full fp32 value and Adam moments."""
    engine = trainer.engine
    params = {}
    for pname, param in engine.module.named_parameters():
        if param.requires_grad:
            params[pname] = {"fp32": safe_get_full_fp32_param(param).clone(),
                             "exp_avg": safe_get_full_optimizer_state(param, "exp_avg").clone(),
                             "exp_avg_sq": safe_get_full_optimizer_state(param, "exp_avg_sq").clone()}
    steps = [float(state["step"]) for state in engine.optimizer.optimizer.state.values() if "step" in state]
    if launch.is_main:
        torch.save({"params": params, "optimizer_steps": steps, "trainer_step": trainer.state.step}, Path(dump_dir) / name)


def before(trainer):
    save = trainer.save

    def save_and_dump():
        save()
        dump(trainer, f"saved{trainer.state.step}.pt")

    trainer.save = save_and_dump
    if trainer.state.step:
        dump(trainer, "loaded.pt")
        trainer.evaluate()


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=resume == "1",
           hooks=runner.Hooks(before_train=before, after_train=lambda trainer: dump(trainer, "final.pt")))
