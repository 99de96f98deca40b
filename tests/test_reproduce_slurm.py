"""``slurm/reproduce.sh`` on a real local Slurm (one node): the data steps of the tiny recipe submitted as jobs
chained with ``--dependency=afterok``, each job writing its own marker when it succeeds; a job cancelled mid-way
leaves none, and the rerun skips the finished steps and submits only the cancelled one."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import yaml
from pipeline_world import instructs2s

from conftest import REPO, dist_env
from fe_train.fixtures import ser_layouts
from fe_train.fixtures.layouts import Recorder
from fe_train.reproduce.markers import marker_path

pytestmark = pytest.mark.slurm
JOB_TIMEOUT_S = 300


def test_jobs_chain_write_their_markers_and_a_rerun_after_cancel_skips_the_finished(local_slurm, tmp_path):
    recorder = Recorder()
    instructs2s(tmp_path / "data" / "InstructS2S-200K", recorder)
    ser_layouts.cremad(tmp_path / "data" / "CREMA-D", recorder)
    tree = yaml.safe_load((REPO / "configs" / "pipeline" / "tiny.yaml").read_text())
    tree.update(out=str(tmp_path / "out"), data=str(tmp_path / "data"), workers=1,
                ser=[{"corpus": "cremad", "root": "CREMA-D", "out": "shards/ser/cremad"}],
                sbatch={"data": ["--cpus-per-task=1"]})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tree))
    env = local_slurm.env(dist_env(PYTHON=sys.executable, FE_PYTHON=sys.executable))
    command = [str(REPO / "slurm" / "reproduce.sh"), str(config), "--to", "ser_cremad"]
    out = tmp_path / "out"

    first = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    jobs = dict(line.removeprefix("submitted ").split(": job ") for line in first.stdout.splitlines())
    assert list(jobs) == ["instructs2s", "verify", "ser_cremad"]
    assert local_slurm.job(jobs["verify"])["Dependency"].startswith(f"afterok:{jobs['instructs2s']}")
    local_slurm.cmd("scancel", jobs["verify"])  # cancelled while it waits for the build: the pipeline killed mid-way
    for step in ("instructs2s", "ser_cremad"):
        info = local_slurm.wait_done(jobs[step], JOB_TIMEOUT_S)
        assert info["JobState"] == "COMPLETED", (step, info, local_slurm.daemon_logs())
        marker = json.loads(marker_path(out, step).read_text())
        assert marker["step"] == step and marker["command"][:2] == ["fe-shards", "build"]
    assert local_slurm.wait_done(jobs["verify"], 60)["JobState"] == "CANCELLED"
    assert not marker_path(out, "verify").exists() and (out / ".pipeline" / "verify.done.pending").exists()

    again = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0] == f"skip instructs2s: finished ({marker_path(out, 'instructs2s')})"
    assert lines[2] == f"skip ser_cremad: finished ({marker_path(out, 'ser_cremad')})"
    verify = lines[1].removeprefix("submitted verify: job ")
    assert local_slurm.job(verify).get("Dependency") in ("(null)", "", None)
    assert local_slurm.wait_done(verify, JOB_TIMEOUT_S)["JobState"] == "COMPLETED", local_slurm.daemon_logs()
    marker = json.loads(marker_path(out, "verify").read_text())
    assert marker["command"] == ["fe-shards", "verify", f"{out}/shards/instructs2s/train"]
    log = (out / ".pipeline" / "logs" / f"verify-{verify}.out").read_text()
    assert "step.sbatch: finished: fe-shards verify" in log, log
    index = json.loads((out / "shards/instructs2s/train/index.json").read_text())
    assert index["count"] == 20, shlex.join(command)
