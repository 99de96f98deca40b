"""Evaluation across ranks: exact totals on a set that does not divide by the world size, during training and after.

One 2-rank stage-1 run (real DeepSpeed ZeRO-3, gloo) evaluates SpokenQA by generation at
``train.eval_every`` on 37 held-out spoken questions; its exports are then scored by
``fe-train eval spokenqa`` in one process (a whole model) and in two (the LLM partitioned
by ZeRO-3, one question per batch, so that rank 0 runs one zero-weight padding batch).
"""

from __future__ import annotations

import json

import pytest
from eval_runs import QA_ITEMS

from conftest import torchrun
from fe_train.cli import train_main
from fe_train.tracking.tracker import read_metrics

pytest_plugins = ("eval_runs",)  # qa_shards, stage1_run


def test_training_evaluates_spokenqa_on_every_rank_with_exact_totals(stage1_run):
    evals = [r for r in read_metrics(stage1_run / "metrics.jsonl") if "eval/spokenqa/accuracy" in r]
    steps = [r["step"] for r in evals]
    assert steps[0] == 0 and 40 in steps and steps[-1] > 40  # start, every 40 steps, end
    for record in evals:
        assert record["eval/spokenqa/items"] == QA_ITEMS and record["eval/spokenqa/skipped"] == 0
        assert 0.0 <= record["eval/spokenqa/accuracy"] <= 1.0
        assert "eval/loss" in record  # beside the eval loss, in the same record


def test_one_and_two_process_evaluations_agree(stage1_run, qa_shards, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["eval.max_new_tokens=12", "run.progress_bar=false"]
    assert train_main(["eval", "spokenqa", "--ckpt", str(stage1_run), "--shards", str(qa_shards), "--out", str(one),
                       "eval.batch_size=4", *common]) == 0
    proc = torchrun(["-m", "fe_train", "eval", "spokenqa", "--ckpt", str(stage1_run), "--shards", str(qa_shards),
                     "--out", str(two), "eval.batch_size=1", "eval.placement=zero3", *common])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    a, b = (json.loads((d / "spokenqa.json").read_text()) for d in (one, two))
    assert a["items"] == b["items"] == QA_ITEMS
    assert a["correct"] == b["correct"] and a["accuracy"] == b["accuracy"]
    assert (a["world_size"], b["world_size"]) == (1, 2) and a["repeated_keys"] == b["repeated_keys"] == {}
    records = [[json.loads(line) for line in (d / "spokenqa.records.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [r["key"] for r in records[0]] == [r["key"] for r in records[1]]  # each sample once, none twice
    assert len({r["key"] for r in records[1]}) == QA_ITEMS
    assert [r["reply"] for r in records[0]] == [r["reply"] for r in records[1]]
    # the evaluation during training scored the same final model on the same data
    final = [r for r in read_metrics(stage1_run / "metrics.jsonl") if "eval/spokenqa/accuracy" in r][-1]
    assert final["eval/spokenqa/accuracy"] == pytest.approx(a["accuracy"]["value"])
    assert "| all | 37 |" in (one / "spokenqa.md").read_text()
