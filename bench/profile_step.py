"""Where a training step's wall time goes: cProfile of fe-train's loop after its warm-up steps (rank 0).

    torchrun --nproc_per_node 1 bench/profile_step.py OUT.txt CONFIG [overrides...]

Profiling starts at the fourth optimizer step and stops when training ends; OUT.txt gets the
functions by own time and by cumulative time. Data-loader waits show as the loader's queue ``get``,
DeepSpeed's ZeRO-3 module hooks as ``fetch_sub_module`` / ``release_sub_module`` and their callers.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys

from fe_train import stages
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.launch.logs import setup_logging
from fe_train.stages import runner

WARMUP_STEPS = 3

out_path, config_path, *overrides = sys.argv[1:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
profile = cProfile.Profile()


def before(trainer):
    step = trainer.engine.step
    seen = {"steps": 0}

    def counted_step(*args, **kwargs):
        result = step(*args, **kwargs)
        seen["steps"] += 1
        if seen["steps"] == WARMUP_STEPS and launch.is_main:
            profile.enable()
        return result

    trainer.engine.step = counted_step


def after(trainer):
    profile.disable()
    if launch.is_main:
        text = io.StringIO()
        stats = pstats.Stats(profile, stream=text)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumtime").print_stats(45)
        with open(out_path, "w") as stream:
            stream.write(text.getvalue())


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(before, after))
