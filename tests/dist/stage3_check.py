"""Run a stage-3 recipe under torchrun and record what the tests assert: the speech LLM runs forward only,
under no_grad, and receives no gradient; its weights (LLM, encoder, adapter) are bit-identical after training;
optimizer state exists only for the decoder and the fusion; and the trained decoder's outputs on a fixed probe,
which the test compares with the exports loaded back. Usage: stage3_check.py RESULT_DIR CONFIG [overrides...]"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import deepspeed
import torch

from fe_train import stages
from fe_train.launch.logs import setup_logging
from fe_train.config import Config
from fe_train.launch.env import from_environ
from fe_train.model.freezing import numel
from fe_train.model.frozen_llm import load_llm
from fe_train.model.speech_encoder import WhisperSpeechEncoder
from fe_train.stages import runner

result_dir, config_path, *overrides = sys.argv[1:]
result_dir = Path(result_dir)
launch = from_environ()
setup_logging(launch.rank)
cfg = Config.load(config_path, overrides)
# Reference copies of the frozen weights, loaded plainly before any DeepSpeed context exists.
reference = {f"speech_llm.llm.{k}": v.clone() for k, v in load_llm(cfg.model.llm_path, torch.float32).state_dict().items()}
if cfg.model.encoder_path:
    encoder = WhisperSpeechEncoder.from_pretrained(cfg.model.encoder_path, torch.float32)
    reference.update({f"speech_llm.encoder.{k}": v.clone() for k, v in encoder.state_dict().items()})
watch = {"llm_forward_with_grad": 0, "llm_forwards": 0, "speech_llm_backward_calls": 0}
report = {}
recipe = stages.recipe(cfg.train.stage)


def build_model(cfg, dtype, partitioned):
    """The recipe's model, with hooks on the frozen speech LLM and a copy of the (not yet partitioned) adapter."""
    model, tokenizer = recipe.build_model(cfg, dtype, partitioned)
    speech_llm = model.speech_llm
    if speech_llm.adapter is not None:
        reference.update({f"speech_llm.adapter.{k}": v.detach().clone() for k, v in speech_llm.adapter.state_dict().items()})

    def on_forward(module, args, output):
        watch["llm_forwards"] += 1
        watch["llm_forward_with_grad"] += int(torch.is_grad_enabled())

    def on_backward(module, grad_input, grad_output):
        watch["speech_llm_backward_calls"] += 1

    speech_llm.llm.register_forward_hook(on_forward)
    for module in speech_llm.modules():
        if list(module.parameters(recurse=False)):  # the layers that hold weights; their outputs are tensors
            module.register_full_backward_hook(on_backward)
    return model, tokenizer


def probe_outputs(model) -> dict[str, torch.Tensor]:
    """The decoder's logits and the fusion's output on fixed inputs (every rank runs them: ZeRO-3 gathers)."""
    generator = torch.Generator().manual_seed(0)
    vocab = model.decoder.vocab
    ids = torch.tensor([[3, 5, vocab.sep_id, vocab.unit_offset, vocab.unit_offset + 7, vocab.eos_id]])
    states = torch.randn(1, 4, model.speech_llm.llm.config.hidden_size, generator=generator)
    embeds = torch.randn(1, 4, model.decoder.hidden_size, generator=generator)
    model.eval()
    with torch.no_grad():
        logits = model.decoder.lm(input_ids=ids).logits.float()
        fused = model.fusion(states, embeds).float()
    model.train()
    return {"ids": ids, "logits": logits, "states": states, "embeds": embeds, "fused": fused}


def inspect(trainer):
    engine = trainer.engine
    model = engine.module
    mismatched, checked, frozen_elems, trainable_elems = [], 0, 0, 0
    grads_seen, unreferenced = 0, set()
    for name, param in model.named_parameters():
        if param.requires_grad:
            trainable_elems += numel(param)
            continue
        frozen_elems += numel(param)
        grads_seen += int(param.grad is not None)
        if name not in reference:
            unreferenced.add(name.split(".")[0])  # the decoder's frozen base weights under LoRA
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if not torch.equal(param.data.cpu(), reference[name]):
                mismatched.append(name)
            checked += 1
    opt = engine.optimizer
    trainable_ids = {id(p) for p in model.parameters() if p.requires_grad}
    tracked = [p for group in opt.fp16_groups for p in group]
    names = {id(p): n for n, p in model.named_parameters()}
    state_elems = sum(t.numel() for s in opt.optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0)
    partition_elems = sum(t.numel() for t in opt.fp32_partitioned_groups_flat)
    counts = [state_elems, partition_elems, grads_seen, *watch.values()]
    sums = torch.tensor(counts, dtype=torch.float64)
    torch.distributed.all_reduce(sums)  # over ranks: every rank's hooks and grads count
    watched = dict(zip(watch, (int(v) for v in sums[3:])))
    probe = probe_outputs(model)
    report.update(
        frozen_checked=checked, frozen_unreferenced=sorted(unreferenced), frozen_mismatched=mismatched, frozen_elems=frozen_elems,
        trainable_elems=trainable_elems, optimizer_tracks_only_trainable=all(id(p) in trainable_ids for p in tracked),
        optimizer_tracked_elems=sum(numel(p) for p in tracked), optimizer_state_elems=int(sums[0]),
        fp32_partition_elems=int(sums[1]), trainable_tensors=len(tracked), world_size=launch.world_size,
        trainable_top=sorted({names[id(p)].split(".")[0] for p in tracked}), frozen_grads_seen=int(sums[2]), **watched,
    )
    if launch.is_main:
        result_dir.mkdir(parents=True, exist_ok=True)
        torch.save(probe, result_dir / "probe.pt")


wrapped = SimpleNamespace(name=recipe.name, trains=recipe.trains, build_model=build_model,
                          example_builder=recipe.example_builder, llm_backward=recipe.llm_backward)
outcome = runner.run(wrapped, cfg, launch, resume=False, hooks=runner.Hooks(after_train=inspect))
if launch.is_main:
    report["checkpoint"] = str(outcome.checkpoint)
    report["exports"] = [str(p) for p in outcome.exports]
    (result_dir / "report.json").write_text(json.dumps(report, indent=1))
