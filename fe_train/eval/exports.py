"""Scoring trained exports on held-out shards: training's start-up, model and streams, no optimizer.

``fe-train eval-ser --config X [overrides]`` builds the recipe's model with the exports
the config names (``train.init_adapter``, ``emotion.init_extractor``,
``emotion.init_ser_head``), partitions it on a ZeRO-3 engine without optimizer, and
scores the SER examples of ``data.eval_shards``. The review's controls are overrides
of the same command (``emotion.emotion_source``, ``emotion.content_source``): the same
exports on the same data.
"""

from __future__ import annotations

import logging

import torch

from fe_train.config import Config
from fe_train.data.collate import Collate
from fe_train.data.pipeline import ShardStream, build_loader, resolve_shards
from fe_train.data.plan import eval_geometry
from fe_train.engine import ds_config
from fe_train.engine.build import PartitionedBuild, build_inference_engine, init_distributed, shutdown
from fe_train.eval.ser_score import SERScore, evaluate_ser
from fe_train.launch.env import LaunchEnv
from fe_train.launch.progress import progress_bar
from fe_train.model.freezing import count_params
from fe_train.model.pretrained import precision_dtype

log = logging.getLogger(__name__)


def evaluate(recipe, cfg: Config, launch: LaunchEnv) -> SERScore:
    """Collective: the SER score of ``data.eval_shards`` (the same on every rank)."""
    shards = resolve_shards(cfg.data.eval_shards, "data.eval_shards")
    device = init_distributed(launch, cfg)
    try:
        ds = ds_config.resolve(cfg, launch.world_size)
        torch.manual_seed(cfg.train.seed)
        model, tokenizer = recipe.build_model(cfg, precision_dtype(cfg.train.precision), lambda: PartitionedBuild(ds))
        model.requires_grad_(False)
        log.info("evaluating stage %s exports (%s)", recipe.name, count_params(model).describe())
        engine = build_inference_engine(model, ds)
        geometry = eval_geometry(shards, launch.world_size, cfg.data.num_workers, cfg.train.micro_batch_size)
        build = recipe.example_builder(cfg, engine.module, tokenizer)
        stream = ShardStream(shards, launch.rank, geometry, cfg.train.seed, False, build, Collate(tokenizer.pad_token_id))
        batches = progress_bar("eval-ser", "batch", cfg.run.progress_bar, launch.is_main, total=len(stream),
                               iterable=build_loader(stream))
        score = evaluate_ser(engine.module, batches, tokenizer, device, cfg.emotion.eval_max_new_tokens)
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
    return score
