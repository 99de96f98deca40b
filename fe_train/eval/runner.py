"""Running an evaluation task over shards on every rank: standalone (``fe-train eval``) or during training.

Each rank reads its part of the shards through the epoch plan (every sample on
exactly one rank; a rank that runs short gets zero-weight copies, which are not
scored), scores its batches, and the records of all ranks are gathered; rank 0
summarises them and writes ``<task>.json``, ``<task>.md`` and ``<task>.records.jsonl``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import torch

from fe_train.config import Config
from fe_train.data.collate import Collate
from fe_train.data.pipeline import MIDRUN_WORKERS, ShardStream, build_loader, resolve_shards
from fe_train.data.plan import Shard, eval_geometry
from fe_train.data.schema import what_is_needed
from fe_train.engine.placement import Placed
from fe_train.engine.placement import place as place_model
from fe_train.errors import UserError
from fe_train.eval import assembly
from fe_train.eval.checkpoints import load_config
from fe_train.eval.gather import gather_records, repeated_keys
from fe_train.eval.registry import task_class
from fe_train.eval.report import write_report
from fe_train.eval.tasks import run_task
from fe_train.launch.env import LaunchEnv
from fe_train.launch.progress import progress_bar
from fe_train.model.pretrained import precision_dtype

log = logging.getLogger(__name__)


def task_stream(task, tokenizer, shards: list[Shard], rank: int, world_size: int, cfg: Config,
                workers: int | None = None) -> ShardStream:
    """The rank's prompt-only batches of ``shards`` in file order (no shuffle), ``eval.batch_size`` per batch;
    ``workers``: DataLoader workers (default ``data.num_workers``)."""
    workers = cfg.data.num_workers if workers is None else workers
    geometry = eval_geometry(shards, world_size, workers, cfg.eval.batch_size)
    return ShardStream(shards, rank, geometry, cfg.train.seed, False, task.build, Collate(tokenizer.pad_token_id))


def score_stream(task, model, stream: ShardStream, device: torch.device, bar: bool | None = False,
                 is_main: bool = True) -> tuple[list[dict], Counter]:
    """Every rank's records (sorted by key) and skipped samples (collective); ``bar``: ``run.progress_bar``."""
    stream.set_epoch(0)
    batches = progress_bar(f"eval {task.name}", "batch", bar, is_main, total=len(stream),
                           iterable=build_loader(stream, pin_memory=device.type == "cuda"))
    records, skipped = run_task(task, model, batches, device)
    return gather_records(records, skipped)


def place(cfg: Config, exports: dict[str, Path], launch: LaunchEnv, device: torch.device) -> Placed:
    dtype = precision_dtype(cfg.train.precision)
    return place_model(lambda partitioned: assembly.build(cfg, set(exports), dtype, partitioned), cfg.eval.placement,
                       cfg.engine.ds_config, dtype, cfg.eval.batch_size, device, launch.world_size, "eval.placement")


def start(cfg: Config, launch: LaunchEnv) -> torch.device:
    """A process group only when needed: several ranks, or ZeRO-3 (which needs one even alone)."""
    from fe_train.engine.build import device_for, init_distributed

    if not launch.distributed and cfg.eval.placement == "replicate":
        return device_for(launch)
    return init_distributed(launch, cfg)


def evaluate(task_name: str, checkpoints: list[str], shards: str, out_dir: str, launch: LaunchEnv,
             config_path: str | None = None, overrides: list[str] = ()) -> dict | None:
    """Collective: score ``shards`` with the model of ``checkpoints``; the result on rank 0 (None elsewhere)."""
    from fe_train.engine.build import shutdown

    cfg, exports = load_config(checkpoints, config_path, overrides)
    task_class(task_name)  # an unknown task fails before any model loads
    shard_list = resolve_shards(shards, "--shards")
    device = start(cfg, launch)
    try:
        placed = place(cfg, exports, launch, device)
        task = task_class(task_name)(cfg, placed.model, placed.tokenizer, placed.synced)
        stream = task_stream(task, placed.tokenizer, shard_list, launch.rank, launch.world_size, cfg)
        records, skipped = score_stream(task, placed.model, stream, device, cfg.run.progress_bar, launch.is_main)
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
    if not launch.is_main:
        return None
    return write_outputs(task, records, skipped, out_dir, {"checkpoints": checkpoints, "shards": shards,
                                                            "world_size": launch.world_size})


def write_outputs(task, records: list[dict], skipped: Counter, out_dir: str, context: dict) -> dict:
    if not records:
        raise UserError(f"no sample of {context['shards']} could be scored (skipped by reason: {dict(skipped)})"
                        f"{what_is_needed(skipped)}")
    result, table = task.summarize(records)
    result = {"task": task.name, **context, "skipped": dict(skipped), "repeated_keys": repeated_keys(records), **result}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if hasattr(task, "figures"):
        result["figures"] = [str(path) for path in task.figures(result, Path(out_dir))]
    write_report(out_dir, task.name, result, table)
    with open(Path(out_dir) / f"{task.name}.records.jsonl", "w", encoding="utf-8") as stream:
        stream.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    log.info("%s: %d items scored, %d skipped %s; results in %s", task.name, len(records), sum(skipped.values()),
             dict(skipped), out_dir)
    return result


class TrainingEvaluator:
    """One task on ``data.eval_shards`` inside ``Trainer.evaluate``: returns ``eval/<task>/<scalar>`` on every rank."""

    def __init__(self, task, stream: ShardStream):
        self.task, self.stream = task, stream

    def __call__(self, model, device: torch.device) -> dict[str, float]:
        records, skipped = score_stream(self.task, model, self.stream, device)
        prefix = f"eval/{self.task.name}"
        metrics = {f"{prefix}/items": float(len(records)), f"{prefix}/skipped": float(sum(skipped.values()))}
        if records:
            result, _ = self.task.summarize(records)
            metrics.update({f"{prefix}/{key}": value for key, value in self.task.scalars(result).items()})
        return metrics


def training_evaluators(cfg: Config, model, tokenizer, shards: list[Shard] | None, launch: LaunchEnv) -> list[TrainingEvaluator]:
    """The evaluators of ``eval.tasks`` for the training engine's model (partitioned over every rank: synced)."""
    if not cfg.eval.tasks:
        return []
    if shards is None:
        raise UserError(f"config eval.tasks = {cfg.eval.tasks}: needs data.eval_shards to evaluate on")
    evaluators = []
    for name in cfg.eval.tasks:
        task = task_class(name)(cfg, model, tokenizer, synced=launch.world_size > 1)
        stream = task_stream(task, tokenizer, shards, launch.rank, launch.world_size, cfg, workers=MIDRUN_WORKERS)
        evaluators.append(TrainingEvaluator(task, stream))
    return evaluators
