"""Run a stage-2 recipe under torchrun and record what the tests assert: frozen weights untouched,
optimizer state only for the extractor and the SER head, and the SER accuracy of the trained
model on data.eval_shards under the review's controls (same weights, same data), scored by the one SER
evaluation (``fe_train.eval.ser``, as ``fe-train eval ser``) on the training engine's model.
Usage: stage2_check.py RESULT.json CONFIG [overrides...]"""

import dataclasses
import json
import sys

import deepspeed
import torch

from fe_train import stages
from fe_train.launch.logs import setup_logging
from fe_train.config import Config
from fe_train.data.pipeline import MIDRUN_WORKERS
from fe_train.data.sources import resolve_sources
from fe_train.model.pretrained import load_module
from fe_train.eval.runner import score_stream, task_stream
from fe_train.eval.ser import SERTask
from fe_train.launch.env import from_environ
from fe_train.model.adapter import StackFFNAdapter
from fe_train.model.freezing import numel
from fe_train.model.frozen_llm import load_llm, load_tokenizer
from fe_train.model.speech_encoder import WhisperSpeechEncoder
from fe_train.stages import runner

CONTROLS = ("extractor", "random_label", "gold_label", "transcript")
"""``eval.control`` values scored; the report has one entry per control."""

result_path, config_path, *overrides = sys.argv[1:]
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
recipe = stages.recipe(cfg.train.stage)
# Reference copies of the frozen weights (the stage-1 adapter included), loaded plainly before any DeepSpeed context.
encoder = WhisperSpeechEncoder.from_pretrained(cfg.model.encoder_path, torch.float32)
llm = load_llm(cfg.model.llm_path, torch.float32)
adapter = StackFFNAdapter(encoder.hidden_size, llm.config.hidden_size, cfg.model.adapter_stack_frames, cfg.model.adapter_hidden_dim)
load_module(adapter, cfg.train.init_adapter, "train.init_adapter")
reference = {f"{prefix}.{k}": v.clone() for prefix, module in (("encoder", encoder), ("llm", llm), ("adapter", adapter))
             for k, v in module.state_dict().items()}
del encoder, llm, adapter
tokenizer = load_tokenizer(cfg.model.llm_path)
report = {}


def frozen_and_optimizer(engine):
    model = engine.module
    mismatched, checked, frozen_elems, trainable_elems, trainable_names, frozen_names = [], 0, 0, 0, set(), set()
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable_elems += numel(param)
            trainable_names.add(name.split(".")[0])
            continue
        frozen_elems += numel(param)
        frozen_names.add(name.split(".")[0])
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
        frozen_checked=checked, frozen_mismatched=mismatched, frozen_elems=frozen_elems, trainable_modules=sorted(trainable_names),
        frozen_modules=sorted(frozen_names),
        trainable_elems=trainable_elems, optimizer_tracks_only_trainable=all(id(p) in trainable_ids for p in tracked),
        optimizer_tracked_elems=sum(numel(p) for p in tracked), optimizer_state_elems=int(sums[0]),
        fp32_partition_elems=int(sums[1]), trainable_tensors=len(tracked), world_size=launch.world_size,
    )


def controls(engine):
    """SER accuracy under each control: the same engine weights, the same held-out shards."""
    shards = resolve_sources(cfg.data.eval_shards, "data.eval_shards")
    engine.eval()
    for control in CONTROLS:
        variant = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, control=control))
        task = SERTask(variant, engine.module, tokenizer, synced=launch.world_size > 1)
        stream = task_stream(task, tokenizer, shards, launch.rank, launch.world_size, variant, workers=MIDRUN_WORKERS)
        records, skipped = score_stream(task, engine.module, stream, torch.device("cpu"))
        result, _ = task.summarize(records)
        readers = result["readers"]
        report[control] = {"clips": result["clips"], "skipped": dict(skipped), "confusion": readers["word"]["confusion"],
                           **{f"{reader}_accuracy": readers[reader]["overall"]["wa"]["value"] for reader in readers}}
    engine.train()


def inspect(trainer):
    frozen_and_optimizer(trainer.engine)
    controls(trainer.engine)


outcome = runner.run(recipe, cfg, launch, resume=False, hooks=runner.Hooks(after_train=inspect))
if launch.is_main:
    report["exports"] = [str(p) for p in outcome.exports]
    report["steps"] = outcome.state.step
    with open(result_path, "w") as stream:
        json.dump(report, stream, indent=1)
