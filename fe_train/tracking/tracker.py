"""Metrics out of a run: console, ``metrics.jsonl``, wandb (rank 0 only, in a process of its own), a tqdm bar."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

from fe_train.config import Config, RunConfig
from fe_train.config.sections import WANDB_MODES
from fe_train.errors import UserError
from fe_train.launch.progress import bar_wanted, progress_bar
from fe_train.tracking.wandb_sink import WandbSink

log = logging.getLogger("fe_train")


def wandb_settings(run: RunConfig, environ=os.environ) -> tuple[str, str]:
    """(mode, project): the config's when set, else wandb's own ``WANDB_MODE``/``WANDB_PROJECT``, else offline and
    fe-train (nothing leaves the machine unless asked)."""
    mode = run.wandb_mode or environ.get("WANDB_MODE", "") or "offline"
    if mode not in WANDB_MODES:
        raise UserError(f"environment WANDB_MODE={mode!r}: expected one of {WANDB_MODES} (or set run.wandb_mode)")
    return mode, run.wandb_project or environ.get("WANDB_PROJECT", "") or "fe-train"


class Tracker:
    """Writes metrics on the main rank; every other rank's tracker does nothing."""

    def __init__(self, cfg: Config, output_dir: Path, is_main: bool, wandb_id: str = ""):
        self.is_main = is_main
        self.path = output_dir / "metrics.jsonl"
        self.wandb_id = wandb_id or uuid.uuid4().hex[:12]
        self.run = None
        self.bar = None
        if not is_main:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        mode, project = wandb_settings(cfg.run)
        if mode != "disabled":
            self.run = WandbSink(dict(
                project=project,
                name=cfg.run.name or output_dir.name,
                id=self.wandb_id,
                resume="allow",
                mode=mode,
                dir=str(output_dir),
                config=cfg.to_dict(),
                settings=dict(console="off", silent=True, x_disable_stats=True),
            ))

    def start_bar(self, total: int, initial: int, setting: bool | None) -> None:
        if bar_wanted(setting, self.is_main):
            self.bar = progress_bar("train", "step", setting, self.is_main, total=total, initial=initial)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if self.run is not None:
            self.run.log(metrics, step)
        if self.bar is not None and "train/loss" in metrics:
            self.bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", sps=f"{metrics.get('train/samples_per_s', 0):.1f}")
        else:  # without a bar every record; with one, evaluations and the rest (the bar shows training's)
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
            log.info("step %d %s", step, shown)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.run is not None:
            self.run.finish()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
