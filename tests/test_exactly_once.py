"""Exactly-once reading across SIGKILL and resume, also onto another number of ranks, with length grouping on.

The runs read a copy of the world's training shards with its ``lengths.json`` (``fe-shards lengths``) and
``data.group_by_length=on``: the grouped plan is the one a user's shards built by ``fe-shards build`` get.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, dist_env, free_port, kill_tree, running, stage1_overrides
from fe_train.checkpoint.store import CheckpointStore
from fe_train.cli import shards_main
from fe_train.data.lengths import LENGTHS_NAME
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.tracking.tracker import read_metrics

CONFIG = str(REPO / "configs" / "stage1_tiny.yaml")


@pytest.fixture(scope="module")
def grouped(assets, tmp_path_factory) -> Path:
    """The world's training shards with their lengths: a folder the plan groups by length."""
    folder = tmp_path_factory.mktemp("grouped") / "train"
    shutil.copytree(assets.train_shards, folder)
    assert shards_main(["lengths", str(folder)]) == 0 and (folder / LENGTHS_NAME).is_file()
    return folder


def launch(shards: Path, assets, out: Path, nproc: int, resume: bool = False) -> subprocess.Popen:
    # One global batch on every world size (the accumulation adapts), as a resume onto other GPUs keeps the config:
    # steps then count the same samples before and after it.
    overrides = stage1_overrides(assets, out, **{
        "train.epochs": 1, "train.micro_batch_size": 4, "train.global_batch_size": 16,
        "train.log_every": 1, "train.eval_every": 0, "train.save_every": 3, "train.keep_last": 3,
        "data.eval_shards": "", "run.log_keys": "true", "data.train_shards": shards, "data.group_by_length": "on",
    })
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
           "-m", "fe_train", "train", "--config", CONFIG, *(["--resume"] if resume else []), *overrides]
    return subprocess.Popen(cmd, env=dist_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def logged_steps(out: Path) -> list[int]:
    return [r["step"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]


def still_running(out: Path) -> list[int]:
    """Processes (not zombies) whose command line names the run's folder: the launcher and its ranks."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            named = str(out).encode() in cmdline.read_bytes()
        except OSError:
            continue
        if named and running(int(cmdline.parent.name)):
            found.append(int(cmdline.parent.name))
    return found


def kill_after_step(proc: subprocess.Popen, out: Path, nproc: int, step: int, extra_s: float) -> int:
    """SIGKILL the launcher and every rank, as a node failure would, once ``step`` is logged and ``extra_s`` more
    have passed. Returns the last step logged before the kill."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logged = logged_steps(out)
        if logged and logged[-1] >= step:
            break
        time.sleep(0.05)
    time.sleep(extra_s)  # lands anywhere: mid-accumulation, mid-step, mid-checkpoint
    assert proc.poll() is None, "the run ended before the kill: " + proc.communicate()[0][-3000:]
    killed = kill_tree(proc.pid)
    proc.communicate(timeout=60)
    assert len(killed) > nproc, f"the launcher and its {nproc} rank(s) were killed, not just {killed}"
    assert not still_running(out), "no process of the killed run is left"
    logged = logged_steps(out)
    return logged[-1] if logged else 0


def keys_log(out: Path) -> list[dict]:
    records = []
    for path in sorted((out / "keys").glob("rank*.jsonl")):
        records += [dict(json.loads(line), rank=path.stem) for line in path.read_text().splitlines() if line.strip()]
    return records


def committed_keys(records: list[dict], epoch: int, micro: int) -> Counter:
    """Keys of micro-batches at or before a checkpoint's data position (later ones were rolled back)."""
    return Counter(k for r in records if (r["epoch"], r["micro"]) <= (epoch, micro) for k in r["keys"])


def all_keys(shards: Path) -> Counter:
    return Counter(raw["__key__"] for shard in resolve_shards(str(shards)) for _, raw in iter_shard(shard.url))


def run_killed_then_resumed(shards: Path, assets, out: Path, first_nproc: int, second_nproc: int, kill_step: int,
                            extra_s: float):
    """Run, kill every process at a step, resume: the checkpoint resumed from, and every key read (committed
    before the kill, then after the resume). Fails when the kill came after the run's last checkpoint."""
    proc = launch(shards, assets, out, first_nproc)
    killed_after = kill_after_step(proc, out, first_nproc, kill_step, extra_s)
    store = CheckpointStore(out, 0, 3)
    tag = store.latest_tag()
    assert tag is not None, "a complete checkpoint exists"
    state = store.read_state(tag)
    before = committed_keys(keys_log(out), state.epoch, state.micro_in_epoch)
    (out / "keys").rename(out / "keys-first")
    resumed = launch(shards, assets, out, second_nproc, resume=True)
    try:
        log = resumed.communicate(timeout=600)[0]
    finally:
        if resumed.poll() is None:
            kill_tree(resumed.pid)
    assert resumed.returncode == 0, log[-4000:]
    assert "length grouping: windows of 256 samples" in log, log[-4000:]
    final_step = store.read_state(store.latest_tag()).step
    print(f"killed {first_nproc} rank(s) after step {killed_after} (waited for step {kill_step} + {extra_s:.2f} s); "
          f"resumed on {second_nproc} from {tag} (step {state.step}, epoch {state.epoch}, micro-batch "
          f"{state.micro_in_epoch}); the run ends at step {final_step}")
    assert state.step < final_step, f"resumed from {tag}, the run's last checkpoint: the kill came too late"
    after = Counter(k for r in keys_log(out) for k in r["keys"])
    return state, before + after


@pytest.mark.parametrize("kill_step, extra_s", [(4, 0.13)])
def test_sigkill_and_resume_reads_every_sample_once(grouped, assets, tmp_path, kill_step, extra_s):
    state, seen = run_killed_then_resumed(grouped, assets, tmp_path / "run", 2, 2, kill_step, extra_s)
    assert state.step >= 3
    assert seen == all_keys(grouped)


@pytest.mark.parametrize("first, second", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_resume_on_another_world_size_reads_every_sample_once(grouped, assets, tmp_path, first, second):
    state, seen = run_killed_then_resumed(grouped, assets, tmp_path / "run", first, second, kill_step=4, extra_s=0.0)
    assert state.geometry["world_size"] == first
    assert seen == all_keys(grouped)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sigkill_at_random_points(grouped, assets, tmp_path, seed):
    rng = random.Random(seed)
    _, seen = run_killed_then_resumed(grouped, assets, tmp_path / "run", 2, 2, rng.randint(3, 25), rng.uniform(0.0, 1.0))
    assert seen == all_keys(grouped)
