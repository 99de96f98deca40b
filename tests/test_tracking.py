"""Rank 0's tracker: wandb lives in a process of its own, receives every record, and can neither stall nor stop training."""

from __future__ import annotations

import logging
import threading
import time

from fe_train.config import Config
from fe_train.tracking.tracker import Tracker, read_metrics


def tracker_for(tmp_path, mode: str) -> Tracker:
    cfg = Config.load(None, [f"run.wandb_mode={mode}", "run.wandb_project=fe-train-test"])
    return Tracker(cfg, tmp_path, is_main=True)


def test_wandb_gets_every_record_from_its_own_process(tmp_path):
    before = {t.ident for t in threading.enumerate()}
    tracker = tracker_for(tmp_path, "offline")
    tracker.start_bar(5, 0, setting=True)
    for step in range(1, 6):
        tracker.log(step, {"train/loss": 1.0 / step, "train/sentinel_metric": float(step)})
        tracker.advance()
    started = [t.name for t in threading.enumerate() if t.ident not in before]
    tracker.close()
    assert started == [], f"threads in the rank that forks DataLoader workers: {started}"
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    (run,) = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    # The offline run file holds each history record (and the summary) with the metric's name.
    assert run.read_bytes().count(b"train/sentinel_metric") >= 5, run


def test_wandb_that_fails_leaves_training_alone(tmp_path, monkeypatch, caplog):
    """wandb online without an API key (or network) fails in its process: one warning, every record in metrics.jsonl."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    caplog.set_level(logging.WARNING, logger="fe_train")
    tracker = tracker_for(tmp_path, "online")
    started = time.perf_counter()
    for step in range(1, 4):
        tracker.log(step, {"train/loss": 1.0})
        time.sleep(1.0)  # the sink has long failed by now
    tracker.close()
    assert time.perf_counter() - started < 30
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    warnings = [r.getMessage() for r in caplog.records if "wandb stopped" in r.getMessage()]
    assert len(warnings) == 1 and "training goes on, metrics go to metrics.jsonl" in warnings[0], caplog.text


def test_wandb_settings_come_from_the_config_when_set_else_the_environment_else_offline(tmp_path, monkeypatch):
    from fe_train.errors import UserError
    from fe_train.tracking.tracker import wandb_settings

    unset = Config.load(None).run
    assert wandb_settings(unset, {}) == ("offline", "fe-train")
    assert wandb_settings(unset, {"WANDB_MODE": "disabled", "WANDB_PROJECT": "mine"}) == ("disabled", "mine")
    chosen = Config.load(None, ["run.wandb_mode=online", "run.wandb_project=p"]).run
    assert wandb_settings(chosen, {"WANDB_MODE": "disabled", "WANDB_PROJECT": "mine"}) == ("online", "p")
    try:
        wandb_settings(unset, {"WANDB_MODE": "dryrun-ish"})
        raise AssertionError("an unknown WANDB_MODE was accepted")
    except UserError as error:
        assert "WANDB_MODE='dryrun-ish'" in str(error)
    # WANDB_MODE=disabled with the config silent: no wandb run, no wandb folder; metrics.jsonl as always.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = Tracker(Config.load(None), tmp_path, is_main=True)
    tracker.log(1, {"train/loss": 1.0})
    tracker.close()
    assert tracker.run is None and not (tmp_path / "wandb").exists()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_evaluations_reach_the_console_also_under_a_progress_bar(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fe_train")
    tracker = tracker_for(tmp_path, "disabled")
    tracker.start_bar(10, 0, setting=True)
    tracker.log(5, {"train/loss": 0.5})
    tracker.log(5, {"eval/loss": 0.25, "eval/spokenqa/accuracy": 0.75})
    tracker.close()
    shown = [r.getMessage() for r in caplog.records]
    assert any("eval/loss=0.25" in m and "eval/spokenqa/accuracy=0.75" in m for m in shown), shown
    assert not any("train/loss" in m for m in shown), shown  # the bar shows training's records
