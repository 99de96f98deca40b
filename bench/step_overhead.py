"""Training-step overhead: fe-train's stage-1 loop vs a minimal hand-written DeepSpeed loop.

    torchrun --nproc_per_node 2 bench/step_overhead.py OUT.json CONFIG [overrides...]

One launch, one engine, one model, one micro batch and config, one data stream. Before
training, a minimal loop (for batch in DataLoader: engine(batch); engine.backward(loss);
engine.step()) is timed; then fe-train's Trainer runs (agreement all-reduce, metering,
logging, the checkpoint-signal check); after it, the minimal loop again. Both read the
same DataLoader over the same shards, so the ratio isolates the training loop's own
overhead (the data pipeline has its own benchmark, bench/data_pipeline.py). Per
optimizer step, medians; the ratio fe-train / minimal is the overhead (goal <= 1.05).
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from fe_train import stages
from fe_train.config import Config
from fe_train.data.pipeline import build_loader
from fe_train.engine.build import barrier
from fe_train.engine.loop import to_device
from fe_train.launch.env import from_environ
from fe_train.launch.logs import setup_logging
from fe_train.stages import runner

out_path, config_path, *overrides = sys.argv[1:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
timings: dict[str, list[float]] = {"minimal": [], "fe_train": []}


def minimal_loop(trainer, epoch: int) -> None:
    engine = trainer.engine
    accumulation = engine.gradient_accumulation_steps()
    trainer.stream.set_epoch(epoch)
    barrier()
    last = time.perf_counter()
    for n, batch in enumerate(build_loader(trainer.stream)):
        loss = engine(to_device(batch, trainer.device))["loss"]
        engine.backward(loss)
        engine.step()
        if (n + 1) % accumulation == 0:
            now = time.perf_counter()
            timings["minimal"].append(now - last)
            last = now


def before(trainer):
    minimal_loop(trainer, epoch=100)
    step = trainer.engine.step
    state = {"last": None}

    def timed_step(*args, **kwargs):
        boundary = trainer.engine.is_gradient_accumulation_boundary()
        result = step(*args, **kwargs)
        if boundary:
            now = time.perf_counter()
            if state["last"] is not None:
                timings["fe_train"].append(now - state["last"])
            state["last"] = now
        return result

    trainer.engine.step = timed_step


def after(trainer):
    trainer.engine.step = type(trainer.engine).step.__get__(trainer.engine)
    minimal_loop(trainer, epoch=101)


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(before, after))
if launch.is_main:
    warm = {name: values[3:] for name, values in timings.items()}  # drop the first steps (warm-up, first epoch)
    medians = {name: statistics.median(values) for name, values in warm.items()}
    result = {"median_step_s": medians, "steps": {k: len(v) for k, v in warm.items()},
              "ratio_fe_train_over_minimal": medians["fe_train"] / medians["minimal"],
              "world_size": launch.world_size, "micro_batch": cfg.train.micro_batch_size,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
    print(json.dumps(result))
    with open(out_path, "w") as stream:
        json.dump(result, stream, indent=1)
