"""The launcher record: which process this is, read from the launcher's environment.

This is the only module that reads launcher variables (SLURM_*, RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Everything else receives a ``LaunchEnv``.
Precedence: variables set by torchrun or the ``deepspeed`` launcher win (they are
also right for ``srun torchrun``); then an ``srun`` task's SLURM variables; else a
single process.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from fe_train.errors import UserError

DEFAULT_PORT = 29500
SLURM_PORT_BASE = 20000
SLURM_PORT_SPAN = 20000


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str
    """One of: slurm, torchrun, deepspeed, single."""
    job_id: str = ""
    """The SLURM job id, '' outside SLURM."""
    hostname: str = ""
    host_addr: str = ""
    """The address ``hostname`` resolves to: what gloo/NCCL advertise to the other ranks by default."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def exported(self, device_index: int | None = None) -> dict[str, str]:
        """The variables torch.distributed and DeepSpeed read in ``init_distributed``.

        NOTE(deepspeed): the engine takes ``LOCAL_RANK`` as its CUDA device index, so a rank on a GPU exports
        the index of its device among the visible ones (``cuda_device_index``), not its place on the node.
        """
        return {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank if device_index is None else device_index),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def describe(self) -> str:
        return (
            f"rank {self.rank}/{self.world_size} (local {self.local_rank}/{self.local_world_size}) "
            f"on {self.hostname} ({self.host_addr or '?'}) via {self.launcher}, master {self.master_addr}:{self.master_port}"
        )


def from_environ(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read the launcher record from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    host = socket.gethostname()
    addr = _resolve(host)
    if "RANK" in env and "WORLD_SIZE" in env:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "deepspeed"
        world = _int(env, "WORLD_SIZE")
        return LaunchEnv(
            rank=_int(env, "RANK"),
            local_rank=_int(env, "LOCAL_RANK", 0),
            world_size=world,
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", world),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", DEFAULT_PORT),
            launcher=launcher,
            job_id=env.get("SLURM_JOB_ID", ""),
            hostname=host,
            host_addr=addr,
        )
    if "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        job_id = env.get("SLURM_JOB_ID", "0")
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
        hosts = expand_hostlist(nodelist) if nodelist else [host]
        port = env.get("MASTER_PORT")
        return LaunchEnv(
            rank=_int(env, "SLURM_PROCID"),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            world_size=_int(env, "SLURM_NTASKS", 1),
            local_world_size=_tasks_on_this_node(env),
            master_addr=env.get("MASTER_ADDR") or hosts[0],
            master_port=int(port) if port else slurm_port(job_id),
            launcher="slurm",
            job_id=job_id,
            hostname=host,
            host_addr=addr,
        )
    return LaunchEnv(
        rank=0,
        local_rank=0,
        world_size=1,
        local_world_size=1,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=_int(env, "MASTER_PORT", 0) or free_port(env.get("MASTER_ADDR", "127.0.0.1")),
        launcher="single",
        hostname=host,
        host_addr=addr,
    )


def free_port(addr: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``addr`` now: a single process's rendezvous, so that two runs on one machine
    (or one beside a launcher holding the default port) do not collide."""
    with socket.socket() as sock:
        sock.bind((addr, 0))
        return sock.getsockname()[1]


def export(launch: LaunchEnv, device_index: int | None = None) -> None:
    """Write the record into ``os.environ`` for torch.distributed and DeepSpeed."""
    os.environ.update(launch.exported(device_index))


GPU_COUNTS = ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_GPUS_PER_TASK", "SLURM_GPUS")
"""Slurm's GPU counts of the job ("4" or "a100:4"): GPUs were asked for."""


def cuda_device_index(local_rank: int, visible: int) -> int:
    """This rank's CUDA device among the ``visible`` ones.

    Every GPU of the node visible (one task per GPU, all bound to the node): the local rank. One GPU per task
    (``srun --gpus-per-task=1``, ``--gpu-bind=single:1`` or ``map_gpu``): 0, the only one it sees. Some of them
    (``--gpu-bind=closest``): the local rank modulo the visible count.
    """
    return local_rank % visible


def check_device(cuda_available: bool, environ: Mapping[str, str] | None = None) -> None:
    """Stop with one line when the machine is not the one the job was launched for, before anything is built."""
    env = os.environ if environ is None else environ
    accelerator = env.get("DS_ACCELERATOR", "")
    asked = [f"{key}={env[key]}" for key in GPU_COUNTS if re.search(r"(^|:)0*[1-9]\d*$", env.get(key, ""))]
    if not cuda_available and (asked or accelerator == "cuda"):
        reason = ", ".join(asked) or "DS_ACCELERATOR=cuda"
        raise UserError(f"GPUs expected ({reason}) but torch finds no CUDA device (torch {torch_version()}): "
                        f"a driver older than the wheel's CUDA, or no GPU given to this task; "
                        f"ask for --gpus-per-node=0 to train on CPU on purpose")
    if cuda_available and accelerator not in ("", "cuda"):
        raise UserError(f"DS_ACCELERATOR={accelerator} but torch finds CUDA devices: DeepSpeed would work on "
                        f"{accelerator} while torch uses CUDA; unset DS_ACCELERATOR")


def torch_version() -> str:
    import torch

    return torch.__version__


def slurm_port(job_id: str) -> int:
    """A port derived from the job id, so two jobs sharing a node do not collide."""
    digits = re.sub(r"\D", "", job_id) or "0"
    return SLURM_PORT_BASE + int(digits) % SLURM_PORT_SPAN


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM hostlist such as ``gpu[01-03,07],login1`` into host names."""
    hosts: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", hostlist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not match:
            hosts.append(part)
            continue
        prefix, ranges, suffix = match.groups()
        for item in ranges.split(","):
            lo, _, hi = item.partition("-")
            if not hi:
                hosts.append(f"{prefix}{lo}{suffix}")
                continue
            width = len(lo)
            hosts.extend(f"{prefix}{n:0{width}d}{suffix}" for n in range(int(lo), int(hi) + 1))
    return hosts


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return ""


def _tasks_on_this_node(env: Mapping[str, str]) -> int:
    """SLURM_TASKS_PER_NODE looks like ``2(x3),1``; SLURM_NODEID picks this node's entry."""
    if "SLURM_NTASKS_PER_NODE" in env:
        return _int(env, "SLURM_NTASKS_PER_NODE")
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "")
    per_node: list[int] = []
    for item in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item)
        if not match:
            raise UserError(f"SLURM_TASKS_PER_NODE={spec!r}: expected entries like 2(x3),1")
        per_node.extend([int(match.group(1))] * int(match.group(2) or 1))
    node = _int(env, "SLURM_NODEID", 0)
    return per_node[node] if node < len(per_node) else 1


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int:
    if key not in env:
        if default is None:
            raise UserError(f"environment variable {key} is not set")
        return default
    try:
        return int(env[key])
    except ValueError:
        raise UserError(f"environment variable {key}={env[key]!r}: expected an integer") from None
