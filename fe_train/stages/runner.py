"""What every stage shares: start-up, data streams, engine, resume, training, export.

A recipe (``fe_train.stages.<name>``) says which modules exist, which of them
train, and how a shard sample becomes an example; ``run`` does the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from fe_train.checkpoint.store import CheckpointStore, TrainerState
from fe_train.config import Config
from fe_train.data.collate import Collate
from fe_train.data.lengths import with_lengths
from fe_train.data.pipeline import MIDRUN_WORKERS, Example, RawSample, ShardStream
from fe_train.data.plan import Geometry, Shard, eval_geometry
from fe_train.data.sources import describe_sources, resolve_sources, shards_digest
from fe_train.engine import ds_config
from fe_train.engine.build import (
    PartitionedBuild,
    WholeBuild,
    barrier,
    build_engine,
    cast_unpartitioned,
    init_distributed,
    shutdown,
)
from fe_train.engine.export import export_modules
from fe_train.engine.loop import Trainer, total_steps
from fe_train.engine.universal import convert, enable_universal_load
from fe_train.errors import UserError
from fe_train.launch.env import LaunchEnv
from fe_train.model.freezing import keep_frozen_outside, set_trainable
from fe_train.model.pretrained import precision_dtype
from fe_train.tracking.flops import FlopCounter, peak_flops
from fe_train.tracking.plot import plot_losses
from fe_train.tracking.tracker import Tracker

log = logging.getLogger(__name__)


class Recipe(Protocol):
    name: str
    trains: tuple[str, ...]

    def build_model(self, cfg: Config, dtype: torch.dtype, partitioned: Callable) -> tuple[nn.Module, object]:
        """The model and the LLM tokenizer. ``partitioned()`` gives a ``PartitionedBuild``: the frozen LLM
        comes from its ``load_causal_lm``; other large HF models load inside ``with partitioned():``."""

    def example_builder(self, cfg: Config, model: nn.Module, tokenizer) -> Callable[[RawSample], Example]:
        """Turns one raw shard sample into an example (raises ``SampleError`` to skip it)."""

    # Optional: ``train_stream(cfg, shards, rank, geometry, build, collate) -> ShardStream`` replaces
    # ``default_stream`` (stage 2b pairs its planned SER clips with a second stream).


@dataclass
class Outcome:
    state: TrainerState
    output_dir: Path
    checkpoint: Path
    exports: list[Path]


def _needs_universal(store: CheckpointStore, tag: str, launch: LaunchEnv) -> bool:
    """A checkpoint from another world size is converted (by rank 0) to DeepSpeed's universal form."""
    saved = store.read_state(tag).geometry.get("world_size", launch.world_size)
    if saved == launch.world_size:
        return False
    if launch.is_main:
        convert(store.root / tag, store.universal_dir(tag))
    barrier()
    return True


def default_stream(cfg: Config, shards: list[Shard], rank: int, geometry: Geometry, build, collate) -> ShardStream:
    """The training stream of a recipe without ``train_stream``: the shards through the epoch plan."""
    return ShardStream(shards, rank, geometry, cfg.train.seed, cfg.data.shuffle, build, collate, cfg.data.length_window)


@dataclass
class Hooks:
    """Callables run on every rank with the ``Trainer``: before training starts and after it ends (before export).

    For tests, benchmarks and fault injection; training itself never needs them.
    """

    before_train: Callable | None = None
    after_train: Callable | None = None


def run(recipe: Recipe, cfg: Config, launch: LaunchEnv, resume: bool, hooks: Hooks | None = None,
        evaluators: Callable | None = None) -> Outcome:
    """Train ``recipe`` from ``cfg`` on this rank; ``resume`` continues the latest checkpoint.

    ``evaluators(cfg, model, tokenizer, eval_shards, launch)`` makes the evaluation tasks of ``eval.tasks`` run at each
    evaluation (``fe-train train`` passes ``fe_train.eval.runner.training_evaluators``); without it none may be asked for.
    """
    if cfg.eval.tasks and evaluators is None:
        raise UserError(f"config eval.tasks = {cfg.eval.tasks}: this entry point runs no evaluation task (use fe-train train)")
    out = Path(cfg.run.output_dir)
    store = CheckpointStore(out, launch.rank, cfg.train.keep_last)
    tag = store.latest_tag()
    if tag and not resume:
        raise UserError(f"{out} already holds checkpoint {tag}: pass --resume to continue it, or set run.output_dir")
    shards, ungrouped = with_lengths(resolve_sources(cfg.data.train_shards), cfg.data.group_by_length)
    eval_shards = resolve_sources(cfg.data.eval_shards, "data.eval_shards") if cfg.data.eval_shards else None
    device = init_distributed(launch, cfg)
    try:
        outcome = _train(recipe, cfg, launch, device, store, tag if resume else None, shards, eval_shards, hooks or Hooks(),
                         evaluators, ungrouped)
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
    return outcome


def _train(recipe, cfg, launch, device, store, tag, shards, eval_shards, hooks: Hooks, make_evaluators,
           ungrouped: list[str]) -> Outcome:
    ds = ds_config.resolve(cfg, launch.world_size)
    whole = ds_config.keeps_frozen_whole(ds)
    dtype = precision_dtype(cfg.train.precision)
    torch.manual_seed(cfg.train.seed)  # identical trainable init on every rank and world size
    model, tokenizer = recipe.build_model(cfg, dtype, WholeBuild if whole else lambda: PartitionedBuild(ds))
    counts = set_trainable(model, recipe.trains)
    log.info("stage %s: %s; training %s", recipe.name, counts.describe(), ", ".join(recipe.trains))
    if whole:
        outside = keep_frozen_outside(model)
        for part in outside.values():
            cast_unpartitioned(part, dtype)
            part.to(device)
        log.info("%s: frozen %s whole on every rank, outside the engine", cfg.engine.ds_config, ", ".join(outside))

    build = recipe.example_builder(cfg, model, tokenizer)
    collate = Collate(tokenizer.pad_token_id)
    geometry = Geometry(launch.world_size, cfg.data.num_workers, cfg.train.micro_batch_size)
    stream = getattr(recipe, "train_stream", default_stream)(cfg, shards, launch.rank, geometry, build, collate)
    eval_stream = None
    if eval_shards is not None:
        eval_stream = ShardStream(eval_shards, launch.rank, eval_geometry(eval_shards, launch.world_size, MIDRUN_WORKERS,
                                                                          cfg.train.micro_batch_size),
                                  cfg.train.seed, False, build, collate)
    lines = describe_sources(cfg.data.train_shards, "data.train_shards", stream.plan)
    if eval_stream is not None:
        lines += describe_sources(cfg.data.eval_shards, "data.eval_shards", eval_stream.plan)
    grouped = any(shard.lengths is not None for shard in stream.shards) and cfg.data.shuffle
    lines.append("length grouping: " + (f"windows of {stream.group} samples" if grouped else
                                         (ungrouped or ["off (this stage's stream or data.shuffle=false)"])[0]))
    for line in lines:
        log.info("%s", line)

    accumulation = ds_config.gradient_accumulation(cfg, launch.world_size)
    steps = total_steps(cfg, stream.plan.batches_per_rank, accumulation)
    universal = tag is not None and _needs_universal(store, tag, launch)
    if universal:
        enable_universal_load(ds)
    engine = build_engine(model, ds, cfg, steps)

    state = TrainerState()
    digest = shards_digest(stream.shards, stream.group if grouped else 0)
    if tag:
        state = store.load(engine, tag, universal=universal)
        state.preempted = False
        if state.shards_digest != digest:
            raise UserError(f"data.train_shards changed since checkpoint {tag}: resume needs the same shards and weights")
        if state.global_batch_size and state.global_batch_size != cfg.train.global_batch_size:
            raise UserError(
                f"config train.global_batch_size = {cfg.train.global_batch_size}: checkpoint {tag} counts its "
                f"{state.step} steps in batches of {state.global_batch_size}; resume with {state.global_batch_size}, "
                f"or start a new run from its exports"
            )
        log.info("resumed from %s at step %d (epoch %d, micro-batch %d)", tag, state.step, state.epoch, state.micro_in_epoch)
    out = Path(cfg.run.output_dir)
    if launch.is_main:
        cfg.save(out / "config.yaml")
    tracker = Tracker(cfg, out, launch.is_main, wandb_id=state.wandb_id)
    flops = FlopCounter.for_model(model, llm_backward=getattr(recipe, "llm_backward", True))
    evaluators = make_evaluators(cfg, model, tokenizer, eval_shards, launch) if make_evaluators else []
    trainer = Trainer(engine, stream, eval_stream, cfg, launch, device, tracker, store, state, digest,
                      flops=flops.micro_batch, peak=peak_flops(device, cfg.run.peak_tflops), evaluators=evaluators)
    if hooks.before_train is not None:
        hooks.before_train(trainer)
    state = trainer.fit()
    if hooks.after_train is not None:
        hooks.after_train(trainer)
    exports = [] if state.preempted else export_modules(engine.module, recipe.trains, out / "export", launch.is_main)
    if launch.is_main:
        plot_losses(out / "metrics.jsonl", out / "loss.png")
    return Outcome(state, out, store.root / (store.latest_tag() or ""), exports)
