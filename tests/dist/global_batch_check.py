"""One optimizer step of stage 1 under torchrun, recording the reduced gradient of the trainable weights after
every backward (the running sum over the accumulation window) and each micro-batch's loss counts.

Usage: global_batch_check.py RESULT.pt NAN_MICRO CONFIG [overrides...]. The probes wrap ``engine.backward`` and the
model's ``loss_counts`` and call through to them; rank 0 writes ``{"grads": [flat (P,) per backward], "counts": [...]}``.
NAN_MICRO > 0 multiplies the adapter's output by NaN at that training forward (counted from 1) on rank 0.
"""

import sys

import torch
from deepspeed.utils import safe_get_full_grad

from fe_train import stages
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.launch.logs import setup_logging
from fe_train.stages import runner

result_path, nan_micro, config_path, *overrides = sys.argv[1], int(sys.argv[2]), *sys.argv[3:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
record = {"grads": [], "counts": []}
forwards = {"n": 0}


def poison(module, inputs, output):
    forwards["n"] += module.training
    if not (module.training and launch.rank == 0 and forwards["n"] == nan_micro):
        return output
    tokens, counts = output
    return tokens * torch.tensor(float("nan")), counts


def probe(trainer):
    engine, model = trainer.engine, trainer.engine.module
    backward, loss_counts = engine.backward, model.loss_counts
    trainable = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]

    def recorded_backward(loss, **kwargs):
        out = backward(loss, **kwargs)
        # Every rank joins the gathers (collectives); the reduced gradient is the same on each.
        record["grads"].append(torch.cat([safe_get_full_grad(p).flatten().double().cpu() for p in trainable]))
        return out

    def recorded_counts(batch):
        counts = loss_counts(batch)
        record["counts"].append(counts.tolist())
        return counts

    engine.backward = recorded_backward
    model.loss_counts = recorded_counts
    model.adapter.register_forward_hook(poison)


runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(before_train=probe))
if launch.is_main:
    torch.save(record, result_path)
