"""Shared fixtures of the evaluation tests: SpokenQA shards and a stage-1 run that evaluated them while training.

Import the fixtures into a test module (``from eval_runs import qa_shards, stage1_run``).
"""

from __future__ import annotations

import pytest

from conftest import REPO, cached_build, stage1_overrides, torchrun

CONFIG = str(REPO / "configs" / "stage1_tiny.yaml")
QA_ITEMS = 37
"""Not a multiple of the world size (2) nor of the batch size (4)."""
QA_VOICES = slice(6, None)
TRAIN_SOURCES = ("fe_train", "configs/stage1_tiny.yaml", "ds_configs/zero3_tiny.json", "tests/eval_runs.py", "tests/conftest.py")


@pytest.fixture(scope="module")
def qa_shards(assets):
    from fe_train.data import synthetic
    from fe_train.fixtures.spokenqa_shards import write_spokenqa_shards

    return cached_build("spokenqa_shards", lambda out: write_spokenqa_shards(out, synthetic.VOICES[QA_VOICES], limit=QA_ITEMS))


@pytest.fixture(scope="module")
def stage1_run(assets, qa_shards):
    """Stage 1 on 2 ranks with SpokenQA evaluated during training (72 steps; cached per source digest: ~1.5 min to build)."""

    def train(out):
        overrides = stage1_overrides(assets, out / "run", **{
            "train.epochs": 2, "train.eval_every": 40, "data.eval_shards": qa_shards,
            "eval.tasks": "[spokenqa]", "eval.batch_size": 4, "eval.max_new_tokens": 12})
        proc = torchrun(["-m", "fe_train", "train", "--config", CONFIG, *overrides])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    return cached_build("stage1_qa_run", train, sources=TRAIN_SOURCES) / "run"
