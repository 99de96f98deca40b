"""slurm/train.sbatch on a real Slurm: one node (2 tasks) and two nodes in network namespaces.

Stage 1 on the tiny models, 2 ranks on CPU (gloo, DeepSpeed ZeRO-3). The harness
(tests/slurm_harness.py) starts munged, slurmctld and slurmd and stops them after the module.
The CPU nodes have no GPUs: the jobs ask for --gpus-per-node=0 and one CPU per task instead of
the script's 8 GPUs x 8 CPUs per node.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm_harness import SlurmCluster

from conftest import REPO, dist_env, stage1_overrides
from fe_train.config import Config
from fe_train.data.pipeline import resolve_shards
from fe_train.data.plan import EpochPlan, Geometry
from fe_train.launch.env import slurm_port

pytestmark = pytest.mark.slurm

CONFIG = "configs/stage1_tiny.yaml"
EPOCHS = 2
CPU = ["--cpus-per-task=1", "--gpus-per-node=0"]
ONE_NODE = ["--ntasks-per-node=2", *CPU]
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", *CPU]
JOB_TIMEOUT_S = 600
RECORD = re.compile(r"rank (\d+)/(\d+) \(local \d+/\d+\) on (\S+) \((\S*)\) via (\w+), master (\S+):(\d+)")


@dataclass
class Job:
    cluster: SlurmCluster
    id: str
    out: Path
    """run.output_dir"""
    batch_log: Path

    def info(self) -> dict[str, str]:
        return self.cluster.job(self.id)

    def wait_done(self) -> dict[str, str]:
        return self.cluster.wait_done(self.id, JOB_TIMEOUT_S)

    def wait_step(self, step: int) -> None:
        """Until metrics.jsonl has a training record at ``step`` or later (fails if the job ends first)."""
        def reached(info):
            assert info["JobState"] in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"), self.describe()
            return max(self.losses(), default=0) >= step
        self.cluster.wait_job(self.id, reached, JOB_TIMEOUT_S, f"step {step}")

    def losses(self) -> dict[int, list[float]]:
        """Training loss records by step (a list: a step logged twice would show)."""
        records: dict[int, list[float]] = {}
        path = self.out / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if "train/loss" in record:
                records.setdefault(record["step"], []).append(record["train/loss"])
        return records

    def rank_log(self, restart: int, rank: int) -> str:
        return (self.out / "logs" / f"job{self.id}" / f"restart{restart}" / f"rank{rank}.log").read_text()

    def records(self, restart: int = 0) -> list[tuple]:
        """(rank, world, host, address, launcher, master_addr, master_port) logged by each rank."""
        return sorted(RECORD.search(self.rank_log(restart, r)).groups() for r in (0, 1))

    def logged_steps(self, restart: int) -> list[int]:
        return [int(s) for s in re.findall(r"INFO fe_train: step (\d+) ", self.rank_log(restart, 0))]

    def describe(self) -> str:
        text = self.batch_log.read_text() if self.batch_log.is_file() else "(no batch log)"
        return f"job {self.id}: {self.info()}\n{text[-4000:]}\n{self.cluster.daemon_logs()}"


def submit(cluster: SlurmCluster, assets, tmp: Path, options: list[str], env_extra=None, **overrides) -> Job:
    out = tmp / "run"
    values = {"train.epochs": EPOCHS, "train.log_every": 1, "train.eval_every": 0, "data.eval_shards": "", **overrides}
    env = dist_env(FE_PYTHON=sys.executable, **(env_extra or {}))
    args = [*options, f"--output={tmp}/batch-%j.out", "slurm/train.sbatch", CONFIG, *stage1_overrides(assets, out, **values)]
    job_id = cluster.sbatch(args, env, cwd=REPO)
    return Job(cluster, job_id, out, tmp / f"batch-{job_id}.out")


def expected_steps(assets, world_size: int = 2) -> int:
    """Optimizer steps of an uninterrupted run, as the runner plans them."""
    cfg = Config.load(REPO / CONFIG)
    geometry = Geometry(world_size, cfg.data.num_workers, cfg.train.micro_batch_size)
    plan = EpochPlan(resolve_shards(str(assets.train_shards)), 0, cfg.train.seed, cfg.data.shuffle, geometry)
    accumulation = cfg.train.global_batch_size // (world_size * cfg.train.micro_batch_size)
    return EPOCHS * plan.batches_per_rank // accumulation


def assert_finished(job: Job, total: int, restarts: int) -> None:
    info = job.wait_done()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", str(restarts)), job.describe()
    assert "train.sbatch: finished" in job.batch_log.read_text()
    losses = job.losses()
    assert sorted(losses) == list(range(1, total + 1)), "every step logged"
    assert all(len(v) == 1 for v in losses.values()), "no step logged twice"
    checkpoints = job.out / "checkpoints"
    tag = (checkpoints / "latest").read_text().strip()
    assert tag == f"step{total:08d}"
    assert json.loads((checkpoints / tag / "trainer_state.json").read_text())["preempted"] is False
    assert (job.out / "export" / "adapter.safetensors").is_file()


def assert_same_losses(job: Job, reference: Job) -> None:
    expected = {step: values[0] for step, values in reference.losses().items()}
    losses = job.losses()
    assert sorted(losses) == sorted(expected), "the same steps as the uninterrupted one-node job"
    for step, values in losses.items():
        # fp32 on CPU with a fixed data plan: the same numbers up to float rounding.
        assert values[0] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def preempt(job: Job, after_step: int, to_batch_shell: bool) -> int:
    """Send SIGUSR1 once training passed ``after_step``; returns the step of the checkpoint it saved."""
    job.wait_step(after_step)
    restarts = int(job.info()["Restarts"])
    forwarded = job.batch_log.read_text().count("SIGUSR1: forwarding to the ranks")
    target = ["--batch"] if to_batch_shell else []  # the batch shell forwards it, as with --signal=B:USR1@s
    job.cluster.cmd("scancel", *target, "--signal=USR1", job.id)
    job.cluster.wait_job(job.id, lambda i: int(i["Restarts"]) > restarts, JOB_TIMEOUT_S, "a requeue")
    log = job.batch_log.read_text()
    assert log.count("SIGUSR1: forwarding to the ranks") == forwarded + to_batch_shell, log
    saved = re.findall(r"train.sbatch: preempted: checkpoint step(\d+)", log)
    assert len(saved) == restarts + 1, job.describe()
    return int(saved[-1])


@pytest.fixture(scope="module")
def reference(slurm_clusters, assets, tmp_path_factory):
    """An uninterrupted 2-task job on one node."""
    job = submit(slurm_clusters.get("local"), assets, tmp_path_factory.mktemp("slurm-reference"), ONE_NODE)
    job.wait_done()
    return job


def test_sbatch_trains_two_ranks_on_one_node(reference, assets):
    total = expected_steps(assets)
    assert_finished(reference, total, restarts=0)
    node = reference.cluster.nodes[0].name
    addr, port = socket.gethostbyname(node), str(slurm_port(reference.id))
    assert reference.records() == [("0", "2", node, addr, "slurm", node, port),
                                   ("1", "2", node, addr, "slurm", node, port)]


def test_preempted_job_checkpoints_requeues_and_resumes(slurm_clusters, reference, assets, tmp_path):
    job = submit(slurm_clusters.get("local"), assets, tmp_path, ONE_NODE)
    saved = preempt(job, after_step=10, to_batch_shell=True)
    total = expected_steps(assets)
    assert_finished(job, total, restarts=1)
    log = job.batch_log.read_text()
    assert f"resuming from {job.out}/checkpoints/step{saved:08d}" in log
    assert 10 <= saved < total
    assert max(job.logged_steps(restart=0)) == saved
    assert job.logged_steps(restart=1) == list(range(saved + 1, total + 1))
    assert_same_losses(job, reference)


def test_sbatch_trains_across_two_nodes(slurm_clusters, reference, assets, tmp_path):
    """... with the site's environment hook (FE_TRAIN_ENV) sourced in the batch shell and on each node before its rank."""
    hook, sourced = tmp_path / "site_env.sh", tmp_path / "sourced.log"
    hook.write_text(f'echo "${{SLURMD_NODENAME}} step=${{SLURM_STEP_ID:-}} rank=${{SLURM_PROCID:-}}" >> {sourced}\n'
                    'export FE_SITE_HOOK=1\n')
    job = submit(slurm_clusters.get("two_nodes"), assets, tmp_path, TWO_NODES, env_extra={"FE_TRAIN_ENV": str(hook)})
    assert_finished(job, expected_steps(assets), restarts=0)
    port = str(slurm_port(job.id))
    assert job.records() == [("0", "2", "node1", "10.77.0.11", "slurm", "node1", port),
                             ("1", "2", "node2", "10.77.0.12", "slurm", "node1", port)]
    assert_same_losses(job, reference)
    lines = sourced.read_text().splitlines()
    ranks = sorted(line for line in lines if "step=0 " in line)
    assert ranks == ["node1 step=0 rank=0", "node2 step=0 rank=1"], lines
    assert len(lines) == 3, lines  # and once in the batch shell


def test_killed_rank_ends_the_job(slurm_clusters, assets, tmp_path):
    """srun --kill-on-bad-exit ends the job when a rank dies, long before the collectives' timeout could."""
    timeout_s = 300
    job = submit(slurm_clusters.get("two_nodes"), assets, tmp_path, TWO_NODES, **{"engine.timeout_s": timeout_s})
    job.wait_step(3)
    os.kill(rank_pid(job.id, rank=1), signal.SIGKILL)
    killed = time.monotonic()
    info = job.wait_done()
    elapsed = time.monotonic() - killed
    print(f"job {job.id} ended {elapsed:.1f} s after rank 1 was killed")
    assert info["JobState"] == "FAILED", job.describe()
    assert elapsed < 30, job.describe()
    log = job.batch_log.read_text()
    assert "srun: error: node2: task 1: Killed" in log, log
    assert "train.sbatch: srun exited with status" in log


@pytest.mark.slow
def test_stopped_rank_fails_the_collectives_after_the_timeout(slurm_clusters, assets, tmp_path):
    """A rank that hangs (SIGSTOP) instead of dying: the other rank's collective fails after engine.timeout_s."""
    timeout_s = 20
    job = submit(slurm_clusters.get("two_nodes"), assets, tmp_path, TWO_NODES, **{"engine.timeout_s": timeout_s})
    job.wait_step(3)
    os.kill(rank_pid(job.id, rank=1), signal.SIGSTOP)
    stopped = time.monotonic()
    info = job.wait_done()
    elapsed = time.monotonic() - stopped
    print(f"job {job.id} ended {elapsed:.1f} s after rank 1 was stopped (engine.timeout_s={timeout_s})")
    assert info["JobState"] == "FAILED", job.describe()
    assert timeout_s <= elapsed < timeout_s + 30, job.describe()
    assert "srun: error: node1: task 0: Exited with exit code" in job.batch_log.read_text(), job.describe()


@pytest.mark.slow
def test_preempted_job_resumes_twice_across_two_nodes(slurm_clusters, reference, assets, tmp_path):
    """The direct path (scancel --signal=USR1 reaches the ranks), then the batch shell's."""
    job = submit(slurm_clusters.get("two_nodes"), assets, tmp_path, TWO_NODES)
    first = preempt(job, after_step=10, to_batch_shell=False)
    second = preempt(job, after_step=first + 10, to_batch_shell=True)
    total = expected_steps(assets)
    assert_finished(job, total, restarts=2)
    assert 10 <= first < second < total
    assert job.logged_steps(restart=1) == list(range(first + 1, second + 1))
    assert job.logged_steps(restart=2) == list(range(second + 1, total + 1))
    assert_same_losses(job, reference)


def rank_pid(job_id: str, rank: int) -> int:
    """The training process of ``rank`` (started by slurmstepd; the nodes share this machine's pids)."""
    for proc in Path("/proc").iterdir():
        try:
            environ = set((proc / "environ").read_bytes().split(b"\0"))
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent_comm = Path(f"/proc/{parent}/comm").read_text().strip()
        except (OSError, ValueError, IndexError):
            continue
        if {f"SLURM_JOB_ID={job_id}".encode(), f"SLURM_PROCID={rank}".encode()} <= environ and parent_comm == "slurmstepd":
            return int(proc.name)
    raise AssertionError(f"no process of job {job_id} rank {rank}")
