"""slurm/generate.sbatch on a real Slurm, one node, 2 tasks on CPU: a preempted job requeues itself and ends with
exactly one reply per key, the same replies as an uninterrupted job.

Uses the Slurm harness of tests/slurm_harness.py (munged, slurmctld and slurmd started for the module).
"""

from __future__ import annotations

import json
import sys

import pytest
from test_generate_distributed import CONFIG, SAMPLED, part_lines, write_manifest

from conftest import REPO, dist_env
from fe_train.generate.parts import PartStore

pytestmark = pytest.mark.slurm

CPU = ["--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=0"]
JOB_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_manifest(tmp_path_factory.mktemp("manifest") / "instructions.jsonl")


def submit(local_slurm, assets, manifest, tmp) -> tuple[str, object]:
    out = tmp / "replies"
    tmp.mkdir(parents=True, exist_ok=True)  # for the batch log
    # A part per key: the job is still generating when the signal comes, however fast the machine.
    overrides = [f"model.llm_path={assets.llm}", "generate.batch_size=1", *(f"{k}={v}" for k, v in SAMPLED.items())]
    args = [*CPU, f"--output={tmp}/batch-%j.out", "slurm/generate.sbatch", "distill", str(manifest), str(out),
            "--config", CONFIG, *overrides]
    job_id = local_slurm.sbatch(args, dist_env(FE_PYTHON=sys.executable), cwd=REPO)
    return job_id, out


def describe(local_slurm, job_id, tmp) -> str:
    log = tmp / f"batch-{job_id}.out"
    return f"{local_slurm.job(job_id)}\n{log.read_text()[-3000:] if log.is_file() else '(no batch log)'}\n{local_slurm.daemon_logs()}"


def test_preempted_generate_job_requeues_and_matches(local_slurm, assets, manifest, tmp_path):
    ref_id, ref_out = submit(local_slurm, assets, manifest, tmp_path / "reference")
    info = local_slurm.wait_done(ref_id, JOB_TIMEOUT_S)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), describe(local_slurm, ref_id, tmp_path / "reference")
    reference = {r["key"]: r for r in part_lines(ref_out)}
    assert len(reference) == 192

    tmp = tmp_path / "preempted"
    job_id, out = submit(local_slurm, assets, manifest, tmp)
    local_slurm.wait_job(job_id, lambda i: len(PartStore(out).parts()) >= 4, JOB_TIMEOUT_S, "4 parts")
    local_slurm.cmd("scancel", "--batch", "--signal=USR1", job_id)  # as --signal=B:USR1@s does before the time limit
    local_slurm.wait_job(job_id, lambda i: int(i["Restarts"]) >= 1, JOB_TIMEOUT_S, "a requeue")
    info = local_slurm.wait_done(job_id, JOB_TIMEOUT_S)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), describe(local_slurm, job_id, tmp)
    log = (tmp / f"batch-{job_id}.out").read_text()
    assert "generate.sbatch: SIGUSR1: requeueing job" in log
    assert "generate.sbatch: finished: generate distill: 192/192 keys have a reply" in log, log
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["done_before"] < 192, summary
    records = part_lines(out)
    assert sorted(r["key"] for r in records) == sorted(reference), "exactly one reply per key"
    for record in records:
        assert record == reference[record["key"]], record["key"]
