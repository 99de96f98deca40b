"""Run the step table: resolve each command against the pipeline config, decide run/skip from the markers, then
submit the steps as chained Slurm jobs (``sbatch --dependency=afterok``) or run them in order in this shell."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fe_train.demo import free_port
from fe_train.errors import UserError
from fe_train.reproduce.markers import Marker, expected_markers, marker_dir, marker_path, read_digest
from fe_train.reproduce.settings import PipelineConfig
from fe_train.reproduce.steps import CODEBOOK_JSON, PROJECT, Step

REPO = Path(__file__).resolve().parents[2]


def resolve(step: Step, cfg: PipelineConfig) -> list[str]:
    """The command a job runs: ``$DATA`` and ``$K`` filled, project paths under the output root, the step's path
    overrides and the config's extra overrides appended. ``$CODEBOOK`` stays: the job reads it when it starts."""
    def word(w: str) -> str:
        w = w.replace("$DATA", str(cfg.data)).replace("$K", str(cfg.k))
        return str(cfg.out / w) if w.startswith(PROJECT) else w

    paths = [f"{key}={word(value)}" for key, value in step.paths.items()]
    return [word(w) for w in step.argv] + paths + list(cfg.overrides.get(step.name, ()))


def codebook_json(cfg: PipelineConfig) -> Path:
    return cfg.out / CODEBOOK_JSON.replace("$K", str(cfg.k))


@dataclass(frozen=True)
class Planned:
    step: Step
    command: list[str]
    marker: Marker
    skip: bool


def plan(cfg: PipelineConfig, steps: list[Step], chosen: list[str], rerun_changed: bool) -> list[Planned]:
    """The chosen steps in order: finished ones (marker with today's digest) skipped; a finished step whose command,
    config or inputs changed refused in one line unless ``rerun_changed``; a missing dependency outside the choice
    refused."""
    commands = {s.name: resolve(s, cfg) for s in steps}
    markers = expected_markers(steps, commands)
    planned = []
    for step in steps:
        if step.name not in chosen:
            continue
        path = marker_path(cfg.out, step.name)
        done = path.is_file()
        if done and read_digest(path) != markers[step.name].digest and not rerun_changed:
            raise UserError(f"step {step.name} finished with another command, config or inputs ({path}); "
                            "rerun with --rerun-changed to run it again")
        skip = done and read_digest(path) == markers[step.name].digest
        for dep in step.deps:
            dep_path = marker_path(cfg.out, dep)
            if dep not in chosen and not (dep_path.is_file() and read_digest(dep_path) == markers[dep].digest):
                raise UserError(f"step {step.name} needs step {dep}, which has not finished with today's config "
                                f"(no current {dep_path}); include it (--from/--to) or run it first")
        planned.append(Planned(step, commands[step.name], markers[step.name], skip))
    return planned


def choose(steps: list[Step], start: str, stop: str, only: str) -> list[str]:
    names = [s.name for s in steps]
    for flag, name in (("--from", start), ("--to", stop), ("--only", only)):
        if name and name not in names:
            raise UserError(f"{flag} {name}: no such step (expected one of {', '.join(names)})")
    if only:
        return [only]
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    return names[first:last + 1]


def _child_env(cfg: PipelineConfig) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("DS_ACCELERATOR", "cuda" if _has_cuda() else "cpu")
    return env


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def local_command(step: Step, command: list[str], cfg: PipelineConfig) -> list[str]:
    """This shell's launcher: torchrun with ``cfg.ranks`` processes for training, generation and evaluation (what the
    sbatch scripts' srun starts), one process for data steps and ``infer``."""
    module = [sys.executable, "-m", "fe_train.reproduce", "exec"]
    if step.kind == "data" or step.name == "infer":
        return [*module, *command]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(cfg.ranks),
                "--master_port", str(free_port()), "-m", "fe_train"]
    return [*torchrun, *command[1:]]


def fill_codebook(command: list[str], cfg: PipelineConfig) -> list[str]:
    if not any("$CODEBOOK" in w for w in command):
        return command
    name = json.loads(codebook_json(cfg).read_text())["name"]
    return [w.replace("$CODEBOOK", name) for w in command]


def run_local(cfg: PipelineConfig, planned: list[Planned], dry_run: bool) -> int:
    marker_dir(cfg.out).mkdir(parents=True, exist_ok=True)
    for item in planned:
        name = item.step.name
        if item.skip:
            print(f"skip {name}: finished ({marker_path(cfg.out, name)})", flush=True)
            continue
        command = local_command(item.step, item.command, cfg)
        if dry_run:
            print(f"run {name}: {shlex.join(command)}", flush=True)
            continue
        print(f"run {name}: {shlex.join(command)}", flush=True)
        marker_path(cfg.out, name).unlink(missing_ok=True)
        done = subprocess.run(fill_codebook(command, cfg), env=_child_env(cfg), cwd=REPO)
        if done.returncode:
            print(f"reproduce: step {name} failed with exit status {done.returncode}", file=sys.stderr)
            return done.returncode
        marker_path(cfg.out, name).write_text(item.marker.text())
    return 0


def sbatch_command(item: Planned, cfg: PipelineConfig, deps: list[str]) -> list[str]:
    """``sbatch --parsable`` of one step through the script of its kind."""
    step, command = item.step, item.command
    log = marker_dir(cfg.out) / "logs" / f"{step.name}-%j.out"
    head = ["sbatch", "--parsable", f"--job-name=fe-{step.name}", f"--output={log}"]
    head += [f"--dependency=afterok:{':'.join(deps)}", "--kill-on-invalid-dep=yes"] if deps else []
    head += list(cfg.sbatch.get(step.kind, ()))
    if command[:2] == ["fe-shards", "build"]:
        corpus, root, out = (command[command.index(f) + 1] for f in ("--corpus", "--root", "--out"))
        rest = _drop(command[2:], ("--corpus", "--root", "--out", "--workers"))
        return [*head, "--array=0-0", f"--cpus-per-task={cfg.workers}", "slurm/build_shards.sbatch", corpus, root,
                out, *rest]
    if step.kind == "generate":
        task, source, out = (command[command.index(f) + 1] for f in ("--task", "--input", "--out"))
        rest = _drop(command[2:], ("--task", "--input", "--out"))
        return [*head, f"--ntasks-per-node={cfg.ranks}", "slurm/generate.sbatch", task, source, out, *rest]
    if step.kind == "train":
        config = command[command.index("--config") + 1]
        return [*head, f"--ntasks-per-node={cfg.ranks}", "slurm/train.sbatch", config,
                *_drop(command[2:], ("--config",))]
    ranks = cfg.ranks if step.kind == "eval" and step.name != "infer" else 1
    return [*head, f"--ntasks-per-node={ranks}", "slurm/step.sbatch", *command]


def _drop(words: list[str], flags: tuple[str, ...]) -> list[str]:
    """``words`` without the given flags and their values."""
    kept, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in flags:
            skip = True
        else:
            kept.append(w)
    return kept


def submit(cfg: PipelineConfig, planned: list[Planned], dry_run: bool) -> int:
    """Each step as a job after the jobs of the steps it depends on that this run submits (skipped ones are done).
    The job renames ``<step>.done.pending`` to ``<step>.done`` when it succeeds."""
    (marker_dir(cfg.out) / "logs").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, str] = {}
    for item in planned:
        name = item.step.name
        if item.skip:
            print(f"skip {name}: finished ({marker_path(cfg.out, name)})", flush=True)
            continue
        command = sbatch_command(item, cfg, [jobs[d] for d in item.step.deps if d in jobs])
        env = dict(_child_env(cfg), FE_PIPELINE_MARKER=str(marker_path(cfg.out, name)))
        if any("$CODEBOOK" in w for w in command):
            env["FE_PIPELINE_CODEBOOK"] = str(codebook_json(cfg))
        if dry_run:
            jobs[name] = f"<{name}>"
            print(f"sbatch {name}: FE_PIPELINE_MARKER={env['FE_PIPELINE_MARKER']} {shlex.join(command)}", flush=True)
            continue
        marker_path(cfg.out, name).unlink(missing_ok=True)
        Path(f"{env['FE_PIPELINE_MARKER']}.pending").write_text(item.marker.text())
        done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise UserError(f"sbatch of step {name} failed: {done.stderr.strip()[-300:]}")
        jobs[name] = done.stdout.strip().split(";")[0]
        print(f"submitted {name}: job {jobs[name]}", flush=True)
    return 0
