"""The whole tiny recipe through ``slurm/reproduce.sh`` on a real local Slurm (one node, training jobs of two tasks),
killed mid-way and run again (slow tier; issue 17's must-shows 1 and 2).

The pipeline is submitted; once stage 1's job has finished, every job still queued or running is cancelled (the
pipeline killed). The rerun skips the finished steps, submits the rest, and ends with ``fe-train infer`` printing an
emotion, a reply and units; every export equals, tensor for tensor, that of the same recipe run uninterrupted with
``--local``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_reproduce_tiny import run_pipeline, tiny_config

from conftest import REPO, dist_env
from fe_train.config import EMOTIONS
from fe_train.reproduce.markers import marker_path
from fe_train.reproduce.settings import PipelineConfig
from fe_train.reproduce.steps import KINDS, build_steps

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
JOB_TIMEOUT_S = 900
CPU_JOBS = ["--cpus-per-task=1", "--gpus-per-node=0"]
"""The local node has two CPUs and no GPU: every job asks for one CPU per task and no GPU."""


def submit(local_slurm, config) -> dict[str, str]:
    """{step: job id} of the steps submitted (finished ones are skipped)."""
    proc = subprocess.run([str(REPO / "slurm" / "reproduce.sh"), str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=local_slurm.env(dist_env(PYTHON=sys.executable, FE_PYTHON=sys.executable)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(line.removeprefix("submitted ").split(": job ") for line in proc.stdout.splitlines()
                if line.startswith("submitted "))


def exports(out) -> dict[str, dict[str, torch.Tensor]]:
    return {str(path.relative_to(out)): load_file(str(path)) for path in sorted(out.glob("runs/*/export/**/*.safetensors"))}


def test_whole_recipe_on_slurm_killed_and_rerun_ends_with_the_exports_of_an_uninterrupted_run(local_slurm, assets, tmp_path):
    reference = tiny_config(tmp_path / "local", assets.root, {})
    assert run_pipeline(reference, "--local").returncode == 0
    config = tiny_config(tmp_path / "slurm", assets.root, {})
    tree = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**tree, "sbatch": {kind: CPU_JOBS for kind in KINDS}}))
    cfg = PipelineConfig.load(config)
    steps = [s.name for s in build_steps(cfg)]

    first = submit(local_slurm, config)
    assert list(first) == steps
    assert local_slurm.wait_done(first["stage1"], JOB_TIMEOUT_S)["JobState"] == "COMPLETED", local_slurm.daemon_logs()
    for step, job in first.items():  # the pipeline killed: every job not yet finished is cancelled
        if not marker_path(cfg.out, step).is_file():
            local_slurm.cmd("scancel", job, check=False)
    finished = [s for s in steps if marker_path(cfg.out, s).is_file()]
    assert "stage1" in finished and len(finished) < len(steps)

    second = submit(local_slurm, config)
    assert list(second) == [s for s in steps if s not in finished]
    info = local_slurm.wait_done(second["infer"], JOB_TIMEOUT_S)
    assert info["JobState"] == "COMPLETED", (info, local_slurm.daemon_logs())
    assert all(marker_path(cfg.out, s).is_file() for s in steps)
    log = (cfg.out / ".pipeline" / "logs" / f"infer-{second['infer']}.out").read_text()
    emotion, units = re.search(r"^emotion: (\w+)$", log, re.M), re.search(r"^units: (\d+)$", log, re.M)
    assert emotion and emotion.group(1) in EMOTIONS and units and int(units.group(1)) > 0, log[-2000:]

    got, want = exports(cfg.out), exports(PipelineConfig.load(reference).out)
    assert sorted(got) == sorted(want) and len(got) >= 8, (sorted(got), sorted(want))
    for name, tensors in want.items():
        assert tensors.keys() == got[name].keys(), name
        assert all(torch.equal(tensors[k], got[name][k]) for k in tensors), name
