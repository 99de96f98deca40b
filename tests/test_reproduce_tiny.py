"""The whole tiny recipe, ``configs/pipeline/tiny.yaml`` with the tiny presets' own epochs, in ``--local`` mode (slow
tier): espeak-ng corpora in their published layouts and the tests' tiny frozen models in, every step's output the next
one's input, ``fe-train infer`` on a held-out wav printing an emotion, a reply and units at the end; run again, every
step is skipped."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from pipeline_world import make_inputs

from conftest import REPO, dist_env
from fe_train.config import EMOTIONS
from fe_train.reproduce.markers import marker_path
from fe_train.reproduce.settings import PipelineConfig
from fe_train.reproduce.steps import build_steps

pytestmark = pytest.mark.slow


def tiny_config(tmp_path, world, overrides: dict[str, list[str]]):
    inputs = make_inputs(tmp_path / "inputs", world)
    tree = yaml.safe_load((REPO / "configs" / "pipeline" / "tiny.yaml").read_text())
    tree.update(out=str(tmp_path / "out"), data=str(inputs / "corpora"),
                models={"llm": str(inputs / "models" / "llm"), "encoder": str(inputs / "models" / "whisper"),
                        "decoder": str(inputs / "models" / "decoder")})
    for step, extra in overrides.items():
        tree["overrides"][step] = [*tree["overrides"].get(step, []), *extra]
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def run_pipeline(config, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "slurm" / "reproduce.sh"), str(config), *flags], cwd=REPO, capture_output=True,
                          text=True, env=dist_env(PYTHON=sys.executable), timeout=3 * 3600)


def test_the_tiny_recipe_runs_locally_to_a_spoken_reply(assets, tmp_path):
    config = tiny_config(tmp_path, assets.root, {})
    proc = run_pipeline(config, "--local")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = PipelineConfig.load(config)
    steps = build_steps(cfg)
    assert all(marker_path(cfg.out, s.name).is_file() for s in steps) and steps[-1].name == "infer"
    emotion = re.search(r"^emotion: (\w+)$", proc.stdout, re.M)
    units = re.search(r"^units: (\d+)$", proc.stdout, re.M)
    assert emotion and emotion.group(1) in EMOTIONS, proc.stdout[-2000:]
    assert re.search(r"^reply: \S", proc.stdout, re.M) and units and int(units.group(1)) > 0, proc.stdout[-2000:]
    again = run_pipeline(config, "--local")
    assert again.returncode == 0 and again.stdout.splitlines() == [
        f"skip {s.name}: finished ({marker_path(cfg.out, s.name)})" for s in steps]
