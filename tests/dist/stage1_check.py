"""Run stage 1 under torchrun and record what the tests assert: frozen weights untouched,
optimizer state only for trainable parameters. Usage: stage1_check.py RESULT.json CONFIG [overrides...]"""

import json
import sys

import deepspeed
import torch

from fe_train import stages
from fe_train.launch.logs import setup_logging
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.model.freezing import numel, outside_parts
from fe_train.model.frozen_llm import load_llm
from fe_train.model.speech_encoder import WhisperSpeechEncoder
from fe_train.stages import runner
from fe_train.model.pretrained import precision_dtype

result_path, config_path, *overrides = sys.argv[1:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
# Reference copies of the frozen weights in the run's precision, loaded plainly before any DeepSpeed context exists.
dtype = precision_dtype(cfg.train.precision)
reference = {f"encoder.{k}": v.clone() for k, v in WhisperSpeechEncoder.from_pretrained(cfg.model.encoder_path, dtype).state_dict().items()}
reference.update({f"llm.{k}": v.clone() for k, v in load_llm(cfg.model.llm_path, dtype).state_dict().items()})
report = {}


def inspect(trainer):
    engine = trainer.engine
    model = engine.module
    mismatched, checked, frozen_elems, trainable_elems, dtypes = [], 0, 0, 0, set()
    outside = outside_parts(model)  # frozen parts a replicated plan keeps out of the engine
    in_engine_frozen = sum(numel(p) for p in model.parameters() if not p.requires_grad)
    named = [*model.named_parameters(), *((f"{part}.{n}", p) for part, m in outside.items() for n, p in m.named_parameters())]
    for name, param in named:
        if param.requires_grad:
            trainable_elems += numel(param)
            dtypes.add(str(param.dtype))
            continue
        frozen_elems += numel(param)
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if not torch.equal(param.data.cpu(), reference[name]):
                mismatched.append(name)
            checked += 1
    opt = engine.optimizer
    trainable_ids = {id(p) for p in model.parameters() if p.requires_grad}
    tracked = [p for group in opt.fp16_groups for p in group]
    state_elems = sum(t.numel() for s in opt.optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    partition_elems = sum(t.numel() for t in opt.fp32_partitioned_groups_flat)
    sums = torch.tensor([state_elems, partition_elems], dtype=torch.float64)
    torch.distributed.all_reduce(sums)
    report.update(
        frozen_checked=checked, frozen_mismatched=mismatched, frozen_elems=frozen_elems,
        trainable_elems=trainable_elems, optimizer_tracks_only_trainable=all(id(p) in trainable_ids for p in tracked),
        optimizer_tracked_elems=sum(numel(p) for p in tracked), optimizer_state_elems=int(sums[0]),
        fp32_partition_elems=int(sums[1]), trainable_tensors=len(tracked), world_size=launch.world_size,
        outside=sorted(outside), outside_requires_grad=any(p.requires_grad for m in outside.values() for p in m.parameters()),
        in_engine_frozen_elems=in_engine_frozen, outside_devices=sorted({str(p.device) for m in outside.values() for p in m.parameters()}),
        trainable_dtypes=sorted(dtypes), master_dtypes=sorted({str(t.dtype) for t in opt.fp32_partitioned_groups_flat}),
    )


outcome = runner.run(stages.recipe(cfg.train.stage), cfg, launch, resume=False, hooks=runner.Hooks(after_train=inspect))
if launch.is_main:
    report["checkpoint"] = str(outcome.checkpoint)
    report["exports"] = [str(p) for p in outcome.exports]
    with open(result_path, "w") as stream:
        json.dump(report, stream, indent=1)
