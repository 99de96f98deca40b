"""A real Slurm for the tests: munged, slurmctld and slurmd started from a generated slurm.conf.

Two layouts:

- ``local``: one node on this machine (its short host name, at 127.0.0.1);
- ``two_nodes``: ``node1`` and ``node2``, each slurmd in its own network namespace with its own
  address (10.77.0.11 and .12 on a bridge at 10.77.0.1 that the harness creates and deletes), its
  own host name (``unshare --uts``) and a bind-mounted hosts file (``unshare --mount``).

Everything lives in one state directory: munged runs on its own socket there (``AuthInfo``), so a
munged of the machine is neither needed nor touched. Daemons run in the foreground as children of
the test process and are stopped by pid; the pids and the network devices are also recorded in
``REGISTRY`` so that a later run removes what an interrupted one left behind.
Needs root; installs Debian's slurm and munge packages when they are missing and apt-get exists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REGISTRY = Path(tempfile.gettempdir()) / "fe-train-slurm-harness.json"
DAEMONS = ("munged", "slurmctld", "slurmd")
PACKAGES = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client", "munged": "munge", "ip": "iproute2"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
BRIDGE, BRIDGE_ADDR, SUBNET = "fetbr0", "10.77.0.1", "10.77.0.0/24"
CTLD_PORT, SLURMD_PORT = 16817, 16818
"""Not Slurm's defaults (6817/6818), so a cluster of the machine is left alone."""


@dataclass(frozen=True)
class Node:
    name: str
    addr: str
    netns: str = ""
    """Network namespace of the node's slurmd ('' for the machine's own)."""


def unavailable() -> str:
    """Why a real Slurm cannot run here ('' when it can); installs missing packages as CI would."""
    if os.geteuid() != 0:
        return "the Slurm harness needs root (it starts munged, slurmctld and slurmd)"
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None})
    if not missing:
        return ""
    if shutil.which("apt-get") is None:
        return f"Slurm packages {missing} are missing and apt-get is unavailable"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return f"apt-get install {missing} failed: {done.stderr.strip()[-300:]}"
    return ""


def clean_leftovers() -> None:
    """Stop the daemons and remove the network devices that an earlier, interrupted run recorded."""
    if not REGISTRY.is_file():
        return
    record = json.loads(REGISTRY.read_text() or "{}")
    for pid, name in record.get("daemons", []):
        if _comm(pid) == name:
            _terminate(pid)
    for netns in record.get("netns", []):
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
    if record.get("bridge"):
        subprocess.run(["ip", "link", "del", record["bridge"]], capture_output=True)
    REGISTRY.unlink()


class SlurmCluster:
    def __init__(self, nodes: list[Node], controller: str, controller_addr: str):
        self.nodes, self.controller, self.controller_addr = nodes, controller, controller_addr
        self.dir = Path(tempfile.mkdtemp(prefix="fe-train-slurm-"))
        self.dir.chmod(0o755)  # munged (user munge) must reach its socket directory
        self.conf = self.dir / "slurm.conf"
        self.procs: list[tuple[subprocess.Popen, str]] = []
        self.netns: list[str] = []
        self.bridge = ""

    # ---- layouts

    @classmethod
    def local(cls) -> SlurmCluster:
        host = socket.gethostname().split(".")[0]
        return cls([Node(host, "127.0.0.1")], host, "127.0.0.1")

    @classmethod
    def two_nodes(cls) -> SlurmCluster:
        host = socket.gethostname().split(".")[0]
        nodes = [Node(f"node{i}", f"10.77.0.1{i}", f"fet-node{i}") for i in (1, 2)]
        return cls(nodes, host, BRIDGE_ADDR)

    # ---- life cycle

    def start(self) -> SlurmCluster:
        for sub in ("munge", "ctld", "log", "run", *(f"slurmd-{n.name}" for n in self.nodes)):
            (self.dir / sub).mkdir(exist_ok=True)
        shutil.chown(self.dir / "munge", "munge", "munge")
        (self.dir / "munge").chmod(0o755)
        if any(n.netns for n in self.nodes):
            self._network()
        self.conf.write_text(self.slurm_conf())
        self._munged()
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], "slurmctld")
        for node in self.nodes:
            self._slurmd(node)
        self.wait_idle()
        return self

    def stop(self) -> None:
        """Cancel jobs, stop the daemons (slurmd, slurmctld, munged) and delete the network."""
        try:
            if any(name == "slurmctld" and proc.poll() is None for proc, name in self.procs):
                self.cancel_all()
        finally:
            for proc, _ in reversed(self.procs):
                _terminate(proc.pid, proc)
            self.procs.clear()
            for netns in self.netns:
                subprocess.run(["ip", "netns", "del", netns], capture_output=True)
            if self.bridge:
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            self.netns, self.bridge = [], ""
            REGISTRY.unlink(missing_ok=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def cancel_all(self, timeout_s: float = 60) -> None:
        jobs = self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if jobs:
            self.cmd("scancel", *jobs, check=False)
        deadline = time.time() + timeout_s
        while time.time() < deadline and self.cmd("squeue", "-h", "-o", "%i", check=False).stdout.strip():
            time.sleep(0.5)

    def slurm_conf(self) -> str:
        topology = _topology()
        lines = [
            "ClusterName=fetest",
            f"SlurmctldHost={self.controller}({self.controller_addr})",
            f"SlurmctldPort={CTLD_PORT}",
            f"SlurmdPort={SLURMD_PORT}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire also delays the restart of a requeued job (default 120 s)
            f"AuthInfo=socket={self.dir / 'munge' / 'munge.socket'},cred_expire=10",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={self.dir / 'ctld'}",
            f"SlurmdSpoolDir={self.dir / 'slurmd-%n'}",
            f"SlurmctldPidFile={self.dir / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.dir / 'run' / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={self.dir / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.dir / 'log' / 'slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc",  # no cgroups in containers
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=bf_interval=1,sched_interval=1",  # a requeued job restarts in ~11 s, not ~24
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=600",
        ]
        for node in self.nodes:
            lines.append(f"NodeName={node.name} NodeAddr={node.addr} NodeHostname={node.name} {topology} "
                         "RealMemory=1000 State=UNKNOWN")
        names = ",".join(n.name for n in self.nodes)
        lines.append(f"PartitionName=debug Nodes={names} Default=YES MaxTime=INFINITE State=UP")
        return "\n".join(lines) + "\n"

    def _network(self) -> None:
        taken = subprocess.run(["ip", "-o", "addr", "show", "to", SUBNET], capture_output=True, text=True).stdout
        if taken.strip():
            raise RuntimeError(f"{SUBNET} is already in use on this machine: {taken.strip()}")
        self.bridge = BRIDGE
        self._record()
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        hosts = ["127.0.0.1 localhost", f"{BRIDGE_ADDR} {self.controller}", *(f"{n.addr} {n.name}" for n in self.nodes)]
        (self.dir / "hosts").write_text("\n".join(hosts) + "\n")
        for i, node in enumerate(self.nodes, start=1):
            self.netns.append(node.netns)
            self._record()
            _ip("netns", "add", node.netns)
            _ip("link", "add", f"fetv{i}", "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            _ip("link", "set", f"fetv{i}", "master", BRIDGE, "up")
            _ip("-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", "eth0")
            _ip("-n", node.netns, "link", "set", "eth0", "up")
            _ip("-n", node.netns, "link", "set", "lo", "up")

    def _munged(self) -> None:
        munge = self.dir / "munge"
        self._spawn(["munged", "-F", f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                     f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"],
                    "munged", user="munge", group="munge", extra_groups=[])
        _wait(lambda: (munge / "munge.socket").exists(), 20, "munged did not create its socket")

    def _slurmd(self, node: Node) -> None:
        slurmd = ["slurmd", "-D", "-f", str(self.conf), "-N", node.name]
        if not node.netns:
            self._spawn(slurmd, "slurmd")
            return
        # NOTE(slurm): nsenter --net, not `ip netns exec`: that remounts /sys and slurmd loses /sys/fs/cgroup.
        inner = f"mount --bind {self.dir / 'hosts'} /etc/hosts && hostname {node.name} && exec {' '.join(slurmd)}"
        self._spawn(["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts", "--mount",
                     "--propagation", "private", "sh", "-c", inner], "slurmd")

    def _spawn(self, cmd: list[str], name: str, **popen) -> None:
        log = open(self.dir / "log" / f"{name}-{len(self.procs)}.out", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        log.close()
        self.procs.append((proc, name))
        self._record()

    def _record(self) -> None:
        REGISTRY.write_text(json.dumps({"daemons": [(p.pid, n) for p, n in self.procs], "netns": self.netns,
                                        "bridge": self.bridge}))

    def wait_idle(self, timeout_s: float = 60) -> None:
        want = {n.name for n in self.nodes}

        def idle() -> bool:
            for proc, name in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.daemon_logs()}")
            out = self.cmd("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split("\n")
            states = dict(line.split() for line in out if line.strip())
            return all(states.get(n) == "idle" for n in want)

        _wait(idle, timeout_s, lambda: f"nodes not idle:\n{self.cmd('sinfo', '-N', check=False).stdout}\n{self.daemon_logs()}")

    # ---- using it

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return dict(os.environ if base is None else base, SLURM_CONF=str(self.conf))

    def cmd(self, *args: str, check: bool = True, **run) -> subprocess.CompletedProcess:
        run.setdefault("env", self.env())
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, **run)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def sbatch(self, args: list[str], env: dict[str, str], cwd: Path) -> str:
        out = self.cmd("sbatch", "--parsable", *args, env=self.env(env), cwd=cwd).stdout.strip()
        return out.split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, Restarts, NodeList, ...)."""
        line = self.cmd("scontrol", "show", "job", "-o", job_id).stdout
        return dict(re.findall(r"(\w+)=(\S*)", line))

    def wait_job(self, job_id: str, until, timeout_s: float, what: str) -> dict[str, str]:
        """Poll the job until ``until(info)``; on timeout cancel it and fail with its state."""
        info: dict[str, str] = {}

        def reached() -> bool:
            nonlocal info
            info = self.job(job_id)
            return bool(until(info))

        try:
            _wait(reached, timeout_s, lambda: f"job {job_id}: {what} not reached in {timeout_s} s: {info}")
        except TimeoutError:
            self.cmd("scancel", job_id, check=False)
            raise
        return info

    def wait_done(self, job_id: str, timeout_s: float) -> dict[str, str]:
        return self.wait_job(job_id, lambda i: i.get("JobState") in TERMINAL, timeout_s, "a final state")

    def daemon_logs(self, lines: int = 15) -> str:
        parts = []
        for path in sorted((self.dir / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _topology() -> str:
    """This machine's CPU layout as ``slurmd -C`` prints it (every node claims all of it)."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    fields = dict(re.findall(r"(\w+)=(\S+)", line))
    return " ".join(f"{k}={fields[k]}" for k in keys)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _terminate(pid: int, proc: subprocess.Popen | None = None, timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; reaps ``proc`` when it is our child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not _comm(pid):
                return
            time.sleep(0.1)


def _wait(condition, timeout_s: float, message) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(message() if callable(message) else message)
        time.sleep(0.5)


class Clusters:
    """One cluster at a time, started on first use of a layout: both layouts use the same ports."""

    def __init__(self):
        self.layout, self.current = "", None

    def get(self, layout: str) -> SlurmCluster:
        if layout != self.layout:
            self.stop()
            self.layout, self.current = layout, getattr(SlurmCluster, layout)()
            self.current.start()
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
        self.layout, self.current = "", None
