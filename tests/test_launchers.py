"""The one-machine launchers of the README: the ``deepspeed`` launcher (torchrun: test_stage1_distributed.py)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from conftest import REPO, dist_env, free_port, stage1_overrides
from fe_train.tracking.tracker import read_metrics

CONFIG = "configs/stage1_tiny.yaml"


def test_deepspeed_launcher_trains_stage1(assets, tmp_path):
    """``deepspeed --num_gpus 2 --module fe_train train ...``: 2 CPU processes (gloo, ZeRO-3), no ssh."""
    out = tmp_path / "run"
    launcher = Path(sys.executable).parent / "deepspeed"  # the console script of the deepspeed package
    overrides = stage1_overrides(assets, out, **{"train.epochs": 1, "train.max_steps": 4, "train.log_every": 1,
                                                 "train.eval_every": 0, "data.eval_shards": ""})
    cmd = [str(launcher), "--num_gpus", "2", "--master_port", str(free_port()),
           "--module", "fe_train", "train", "--config", CONFIG, *overrides]
    proc = subprocess.run(cmd, env=dist_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    records = sorted(re.findall(r"rank (\d)/(\d) \(local (\d)/(\d)\) on \S+ \(\S*\) via (\w+)", log))
    assert records == [("0", "2", "0", "2", "deepspeed"), ("1", "2", "1", "2", "deepspeed")], log[-6000:]
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3, 4]
    assert (out / "export" / "adapter.safetensors").is_file()


def test_a_single_process_trains_while_the_default_port_is_taken(assets, tmp_path):
    """``fe-train train`` without a launcher rendezvouses on a free port: a torchrun job (or another program) holding
    29500 on the same machine does not stop it."""
    out = tmp_path / "run"
    overrides = stage1_overrides(assets, out, **{"train.max_steps": 2, "train.log_every": 1, "train.eval_every": 0,
                                                 "data.eval_shards": ""})
    with socket.socket() as held:
        held.bind(("127.0.0.1", 29500))
        held.listen()
        proc = subprocess.run([sys.executable, "-m", "fe_train", "train", "--config", CONFIG, *overrides], env=dist_env(),
                              cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r] == [1, 2]
