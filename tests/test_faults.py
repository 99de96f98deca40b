"""Planted faults: truncated tar, garbage FLAC, missing fields, pickle members, NaN losses, a dead rank."""

from __future__ import annotations

import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, dist_env, free_port, stage1_overrides, torchrun
from fe_train.data.pipeline import iter_shard, resolve_shards
from fe_train.data.writer import EncodedSample, ShardIndex, write_tar
from fe_train.tracking.tracker import read_metrics

CONFIG = str(REPO / "configs" / "stage1_tiny.yaml")
MARKER = "/tmp/fe-train-pickle-was-executed"


class Exploit:
    """Unpickling this runs a shell command: it must never happen."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.fixture(scope="module")
def faulty_shards(assets, tmp_path_factory):
    """A copy of the training shards with one planted fault in each of four shards."""
    out = tmp_path_factory.mktemp("faulty")
    shards = resolve_shards(str(assets.train_shards))
    index = ShardIndex.read(Path(assets.train_shards) / "index.json")
    for number, shard in enumerate(shards):
        samples = []
        for position, raw in iter_shard(shard.url):
            members = {ext: data for ext, data in raw.items() if not ext.startswith("__")}
            if number == 1 and position == 3:
                members["flac"] = b"fLaC" + os.urandom(300)  # garbage FLAC
            if number == 2 and position == 5:
                members["json"] = members["json"].replace(b'"reply"', b'"rply"')  # required field missing
            if number == 3 and position in (0, 7):
                members["pyd"] = pickle.dumps(Exploit())
                members["pth"] = pickle.dumps(Exploit())
            samples.append(EncodedSample(raw["__key__"], members))
        path = out / Path(shard.url).name
        write_tar(path, samples)
        if number == 0:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])  # truncated mid-member
    shutil.copy(Path(assets.train_shards) / "index.json", out / "index.json")
    assert index.count == sum(s.count for s in shards)
    return out


def test_faults_are_counted_and_pickles_never_run(assets, faulty_shards, tmp_path):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    out = tmp_path / "run"
    proc = torchrun(["-m", "fe_train", "train", "--config", CONFIG, *stage1_overrides(assets, out, **{
        "data.train_shards": faulty_shards, "data.eval_shards": "", "data.max_skip_fraction": 0.2,
        "train.epochs": 1, "train.log_every": 1})])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r][-1]
    assert last["data/skipped/bad_audio"] == 1
    assert last["data/skipped/missing_field:reply"] == 1
    assert 10 <= last["data/skipped/missing_in_shard"] < 48  # the truncated shard's lost tail
    assert not os.path.exists(MARKER), "a pickle member was unpickled"


def test_too_many_faults_stop_with_the_shards_named(assets, faulty_shards, tmp_path):
    proc = torchrun(["-m", "fe_train", "train", "--config", CONFIG, *stage1_overrides(assets, tmp_path / "run", **{
        "data.train_shards": faulty_shards, "data.eval_shards": "", "train.epochs": 1, "train.log_every": 1})])
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors and "data.max_skip_fraction" in errors[0] and "train-000000.tar" in errors[0], proc.stderr[-3000:]


@pytest.mark.parametrize("value", ["nan", pytest.param("inf", marks=pytest.mark.slow)])
def test_nonfinite_loss_is_skipped_on_every_rank(assets, tmp_path, value):
    out = tmp_path / "run"
    proc = torchrun([str(REPO / "tests" / "dist" / "nan_injection.py"), "1", "5", "6", value, CONFIG, *stage1_overrides(
        assets, out, **{"data.eval_shards": "", "train.epochs": 1, "train.log_every": 1})])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert records[-1]["train/nonfinite_skipped"] == 2
    assert all(math.isfinite(r["train/loss"]) for r in records), f"no {value} reached the logged losses"


@pytest.mark.parametrize("value", ["nan", pytest.param("inf", marks=pytest.mark.slow)])
def test_persistent_nonfinite_loss_stops_with_last_good_checkpoint(assets, tmp_path, value):
    out = tmp_path / "run"
    proc = torchrun([str(REPO / "tests" / "dist" / "nan_injection.py"), "0", "9", "-1", value, CONFIG, *stage1_overrides(
        assets, out, **{"data.eval_shards": "", "train.epochs": 1, "train.max_nonfinite_steps": 3})])
    assert proc.returncode != 0
    assert "loss non-finite for 3 micro-batches in a row" in proc.stderr
    # 8 good micro-batches, one optimizer step each (micro batch 8 x 2 ranks = global batch 16)
    assert (out / "checkpoints" / "step00000008" / "trainer_state.json").is_file()


def test_a_killed_rank_ends_the_other_within_the_bound(assets, tmp_path):
    """No launcher to clean up: rank 0 must notice by itself that rank 1 is gone, through the closed gloo
    connection and not through the collective timeout (engine.timeout_s=300 here)."""
    out, port = tmp_path / "run", free_port()
    args = [sys.executable, "-m", "fe_train", "train", "--config", CONFIG, *stage1_overrides(
        assets, out, **{"data.eval_shards": "", "train.epochs": 3, "train.log_every": 1, "engine.timeout_s": 300})]
    procs = []
    for rank in range(2):
        env = dist_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.time(), line) for line in procs[0].stdout), daemon=True)
    reader.start()
    deadline = time.time() + 300
    while time.time() < deadline and not [r for r in read_metrics(out / "metrics.jsonl") if r.get("step", 0) >= 5]:
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    try:
        procs[0].wait(timeout=60)
    finally:
        procs[0].kill()
    waited = time.time() - killed
    reader.join(timeout=10)
    log = "".join(line for _, line in lines)
    noticed = [t - killed for t, line in lines if t > killed and ("Connection" in line or "closed" in line)]
    print(f"rank 0 saw the closed connection {noticed[0] if noticed else float('nan'):.2f} s and exited "
          f"{waited:.2f} s after rank 1 was killed")
    assert procs[0].returncode not in (0, None)
    assert "timed out" not in log.lower(), log[-3000:]
    assert noticed, log[-3000:]
    # Before a DataLoader worker dropped its copy of the gloo connections, the dead rank's worker held them
    # open until its 5 s watchdog fired.
    assert noticed[0] < 4.0, noticed[0]
    assert waited < 30, waited


def test_shard_members_are_decoded_only_by_explicit_decoders(faulty_shards):
    if os.path.exists(MARKER):
        os.remove(MARKER)
    members = set()
    for shard in resolve_shards(str(faulty_shards)):
        for _, raw in iter_shard(shard.url):
            members.update(k for k, v in raw.items() if not k.startswith("__") and isinstance(v, bytes))
    assert {"pyd", "pth"} <= members  # the pickles are there, as raw bytes
    assert not os.path.exists(MARKER)


def test_no_secret_reaches_saved_files_or_logs(assets, tmp_path):
    secret = "wandb-secret-0123456789abcdef"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "fe_train", "train", "--config", CONFIG, *stage1_overrides(assets, out, **{
               "data.eval_shards": "", "train.max_steps": 2, "run.wandb_mode": "offline"})]
    proc = subprocess.run(cmd, env=dist_env(WANDB_API_KEY=secret), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and (out / "config.yaml").is_file()
    leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaked == []


def test_a_stop_for_skipped_samples_says_what_the_stage_needs():
    from fe_train.data.schema import what_is_needed

    said = what_is_needed({"missing_field:reply": 3, "bad_audio": 1, "missing_field:emotion": 2})
    assert said.startswith("; the stage needs `reply`") and "fe-shards join --replies" in said and "`emotion`" in said
    assert what_is_needed({"bad_audio": 1}) == ""
