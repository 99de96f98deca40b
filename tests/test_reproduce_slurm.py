"""The whole tiny recipe through ``slurm/reproduce.sh`` on a real local Slurm (one node, training jobs of two tasks),
killed mid-way and run again (issue 17's must-shows 1 and 2).

The pipeline is submitted as jobs chained with ``--dependency=afterok``; once stage 1's job has finished, every job
still queued or running is cancelled (the pipeline killed: a cancelled job leaves no marker). The rerun skips the
finished steps, submits the rest, and ends with ``fe-train infer`` printing an emotion, a reply and units.

- default tier: the training stages at two epochs; stage 3b trains with the stage-2 extractor filling ``<emotion>``
  (no sample skipped), the spoken-QA test set is built and evaluated, and the finished steps' outputs are untouched
  by the rerun;
- slow tier: the tiny presets' own epochs, and every export equals, tensor for tensor, that of the same recipe run
  uninterrupted with ``--local``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

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
from fe_train.tracking.tracker import read_metrics

pytestmark = pytest.mark.slurm
JOB_TIMEOUT_S = 900
CPU_JOBS = ["--cpus-per-task=1", "--gpus-per-node=0"]
"""The local node has two CPUs and no GPU: every job asks for one CPU per task and no GPU."""
SHORT = {stage: ["train.epochs=2"] for stage in ("stage1", "stage2a", "stage2b", "stage3a", "stage3b")}
"""The default tier's shortened epochs."""


def slurm_config(tmp_path, world, overrides: dict[str, list[str]]) -> tuple[Path, PipelineConfig]:
    config = tiny_config(tmp_path, world, overrides)
    tree = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**tree, "sbatch": {kind: CPU_JOBS for kind in KINDS}}))
    return config, PipelineConfig.load(config)


def submit(local_slurm, config: Path) -> dict[str, str]:
    """{step: job id} of the steps submitted (finished ones are skipped)."""
    proc = subprocess.run([str(REPO / "slurm" / "reproduce.sh"), str(config)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=local_slurm.env(dist_env(PYTHON=sys.executable, FE_PYTHON=sys.executable)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return dict(line.removeprefix("submitted ").split(": job ") for line in proc.stdout.splitlines()
                if line.startswith("submitted "))


def kill_after_stage1(local_slurm, config: Path, cfg: PipelineConfig) -> list[str]:
    """Submit the pipeline and cancel every unfinished job once stage 1's has finished; the steps finished then."""
    steps = [s.name for s in build_steps(cfg)]
    first = submit(local_slurm, config)
    assert list(first) == steps
    assert local_slurm.job(first["infer"])["Dependency"].startswith("afterok:")  # chained, waiting on stage 3b
    assert local_slurm.wait_done(first["stage1"], JOB_TIMEOUT_S)["JobState"] == "COMPLETED", local_slurm.daemon_logs()
    for step, job in first.items():
        if not marker_path(cfg.out, step).is_file():
            local_slurm.cmd("scancel", job, check=False)
    finished = [s for s in steps if marker_path(cfg.out, s).is_file()]
    assert "stage1" in finished and len(finished) < len(steps)
    for step in steps:  # a cancelled job leaves no marker, only the one its submission wrote as pending
        assert step in finished or (cfg.out / ".pipeline" / f"{step}.done.pending").is_file(), step
    return finished


def rerun_to_a_spoken_reply(local_slurm, config: Path, cfg: PipelineConfig, finished: list[str]) -> None:
    """Submit again: exactly the unfinished steps run, and ``infer`` prints an emotion, a reply and units."""
    steps = [s.name for s in build_steps(cfg)]
    second = submit(local_slurm, config)
    assert list(second) == [s for s in steps if s not in finished]
    for step in build_steps(cfg):  # a step whose inputs all finished before the kill waits on no job
        if step.name in second and set(step.deps) <= set(finished):
            assert local_slurm.job(second[step.name]).get("Dependency") in ("(null)", "", None), step.name
    info = local_slurm.wait_done(second["infer"], JOB_TIMEOUT_S)
    unfinished = [s for s in steps if not marker_path(cfg.out, s).is_file()]
    logs = {s: (cfg.out / ".pipeline" / "logs" / f"{s}-{second[s]}.out") for s in unfinished}
    assert info["JobState"] == "COMPLETED", (info, {s: p.read_text()[-1500:] for s, p in logs.items() if p.is_file()})
    assert all(json.loads(marker_path(cfg.out, s).read_text())["step"] == s for s in steps)
    log = (cfg.out / ".pipeline" / "logs" / f"infer-{second['infer']}.out").read_text()
    emotion, units = re.search(r"^emotion: (\w+)$", log, re.M), re.search(r"^units: (\d+)$", log, re.M)
    assert emotion and emotion.group(1) in EMOTIONS and units and int(units.group(1)) > 0, log[-2000:]
    assert re.search(r"^reply: \S", log, re.M) and "step.sbatch: finished: fe-train infer" in log, log[-2000:]


def exports(out) -> dict[str, dict[str, torch.Tensor]]:
    return {str(path.relative_to(out)): load_file(str(path)) for path in sorted(out.glob("runs/*/export/**/*.safetensors"))}


def test_the_recipe_on_slurm_killed_and_rerun_ends_with_a_spoken_reply(local_slurm, assets, tmp_path):
    config, cfg = slurm_config(tmp_path, assets.root, SHORT)
    finished = kill_after_stage1(local_slurm, config, cfg)
    kept = {p: p.read_bytes() for p in sorted(cfg.out.glob("runs/*/export/**/*")) if p.is_file()}
    assert any(p.name == "adapter.safetensors" for p in kept), sorted(kept)
    rerun_to_a_spoken_reply(local_slurm, config, cfg, finished)
    assert all(p.read_bytes() == data for p, data in kept.items())  # what finished before the kill was not redone

    run = cfg.out / "runs" / Path(cfg.presets["stage3b"]).stem
    metrics = read_metrics(run / "metrics.jsonl")
    assert metrics and max(m.get("step", 0) for m in metrics) >= 2, metrics[-1:]
    assert not {k: v for m in metrics for k, v in m.items() if k.startswith("data/skipped/") and v}, metrics[-1]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert "<emotion>" in yaml.safe_dump(resolved["prompt"]), resolved["prompt"]
    assert resolved["emotion"]["init_extractor"].endswith("stage2b_tiny/export/emotion_extractor.safetensors"), resolved
    questions = len((Path(cfg.data) / "llama_questions.jsonl").read_text().splitlines())
    scored = json.loads(next((cfg.out / "results" / "qa_llama_questions").glob("**/spokenqa.json")).read_text())
    assert questions >= 6 and scored["items"] == questions, scored  # the spoken-QA set evaluated, none skipped


@pytest.mark.slow
def test_whole_recipe_on_slurm_killed_and_rerun_ends_with_the_exports_of_an_uninterrupted_run(local_slurm, assets, tmp_path):
    reference = tiny_config(tmp_path / "local", assets.root, {})
    assert run_pipeline(reference, "--local").returncode == 0
    config, cfg = slurm_config(tmp_path / "slurm", assets.root, {})
    rerun_to_a_spoken_reply(local_slurm, config, cfg, kill_after_stage1(local_slurm, config, cfg))
    got, want = exports(cfg.out), exports(PipelineConfig.load(reference).out)
    assert sorted(got) == sorted(want) and len(got) >= 8, (sorted(got), sorted(want))
    for name, tensors in want.items():
        assert tensors.keys() == got[name].keys(), name
        assert all(torch.equal(tensors[k], got[name][k]) for k in tensors), name
