"""``slurm/reproduce.sh`` (``fe_train.reproduce``): the step table is ``docs/reproduce.md`` steps 2-13, command for
command; the planner chains the jobs by what each step reads, skips finished steps, refuses changed ones and bad
configs in one line; a real step run in --local leaves its marker only when it succeeds."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, dist_env
from fe_train.errors import UserError
from fe_train.reproduce.__main__ import main
from fe_train.reproduce.markers import expected_markers, marker_path
from fe_train.reproduce.runner import resolve
from fe_train.reproduce.settings import PipelineConfig
from fe_train.reproduce.steps import PROJECT, build_steps, covers
from test_reproduce import doc_steps

PAPER, TINY = REPO / "configs" / "pipeline" / "paper.yaml", REPO / "configs" / "pipeline" / "tiny.yaml"


def doc_commands(step: dict) -> list[list[str]]:
    """The doc step's fe-shards / fe-train commands as the table writes them (``torchrun ... -m fe_train`` is
    ``fe-train``; the ``for qa`` loop unrolled)."""
    commands, loop = [], []
    for line in step["lines"]:
        words = shlex.split(line, comments=True)
        if words[:1] == ["for"]:
            loop = words[words.index("in") + 1:words.index("do") if "do" in words else None]
            loop = [w.rstrip(";") for w in loop if w != "do;"]
        elif "fe_train" in words:
            words = ["fe-train", *words[words.index("fe_train") + 1:]]
        if words[:1] in (["fe-shards"], ["fe-train"]):
            commands += [[w.replace("$qa", qa) for w in words] for qa in loop] if loop and "$qa" in line else [words]
    return commands


def table_by_doc(cfg: PipelineConfig) -> dict[int, list]:
    by_doc: dict[int, list] = {}
    for step in build_steps(cfg):
        by_doc.setdefault(step.doc, []).append(step)
    return by_doc


def test_the_table_is_the_doc_command_for_command():
    cfg = PipelineConfig.load(PAPER)
    by_doc, doc = table_by_doc(cfg), {s["number"]: s for s in doc_steps()}
    assert list(by_doc) == list(range(2, 14))
    for number, steps in by_doc.items():
        assert [list(s.argv) for s in steps] == doc_commands(doc[number]), number
        writes = [w for s in steps for w in s.writes]
        assert set(writes) <= set(doc[number]["Writes"]), number
        assert all(any(covers(w, listed) for w in writes) for listed in doc[number]["Writes"]), number
        for read in (r for s in steps for r in s.reads if not r.startswith("codebooks/")):
            assert read in doc[number]["Reads"] or any(covers(w, read) for s in steps for w in s.writes), (number, read)
    assert len(build_steps(cfg)) == sum(len(doc_commands(doc[n])) for n in range(2, 14)) == 36


def test_each_training_step_names_its_paper_preset_paths_under_the_output_root():
    """The paths a training step appends are the paper preset's own (re-rooted), so the tiny presets, which name
    none, read exactly what the paper's would."""
    cfg = PipelineConfig.load(PAPER)
    for step in (s for s in build_steps(cfg) if s.kind == "train"):
        tree = yaml.safe_load((REPO / cfg.presets[step.name]).read_text())
        for key, value in step.paths.items():
            section, name = key.split(".")
            if section in tree and name in tree[section]:
                assert tree[section][name] == value, (step.name, key)
        assert step.paths["run.output_dir"] == tree["run"]["output_dir"] == f"runs/{step.name}_paper"
        command = resolve(step, cfg)
        assert f"run.output_dir={Path.cwd() / 'runs' / (step.name + '_paper')}" in command
        assert all(w.split("=", 1)[1].startswith(str(Path.cwd())) for w in command
                   if "=" in w and w.split("=", 1)[1].startswith(("/",) + PROJECT))


def tiny(tmp_path: Path, **changes) -> Path:
    tree = {**yaml.safe_load(TINY.read_text()), "out": str(tmp_path / "out"), "data": str(tmp_path / "data"), **changes}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def sbatch_lines(capsys) -> dict[str, list[str]]:
    lines = {}
    for line in capsys.readouterr().out.splitlines():
        name, rest = line.split(": ", 1)
        lines[name] = shlex.split(rest)
    return lines


def test_dry_run_chains_the_jobs_by_what_they_read(tmp_path, capsys):
    config = tiny(tmp_path)
    assert main([str(config), "--dry-run"]) == 0
    lines = sbatch_lines(capsys)
    steps = build_steps(PipelineConfig.load(config))
    assert list(lines) == [f"sbatch {s.name}" for s in steps] and len(steps) == 26
    out = tmp_path / "out"
    stage2b = lines["sbatch stage2b"]
    assert stage2b[0] == f"FE_PIPELINE_MARKER={out}/.pipeline/stage2b.done"
    assert stage2b[1:6] == ["sbatch", "--parsable", "--job-name=fe-stage2b", f"--output={out}/.pipeline/logs/stage2b-%j.out",
                            "--dependency=afterok:<ser_iemocap>:<ser_cremad>:<join_train_empathy>:<stage1>:<stage2a>"]
    assert stage2b[6:9] == ["--ntasks-per-node=2", "slurm/train.sbatch", "configs/stage2b_tiny.yaml"]
    assert f"emotion.init_extractor={out}/runs/stage2a_tiny/export/emotion_extractor.safetensors" in stage2b
    assert "decoder.codebook=$CODEBOOK" in lines["sbatch stage3b"] and "decoder.n_units=16" in lines["sbatch stage3b"]
    build = lines["sbatch ser_iemocap"]
    assert "--dependency" not in " ".join(build) and build[-8:] == [
        "--array=0-0", "--cpus-per-task=2", "slurm/build_shards.sbatch", "iemocap", f"{tmp_path}/data/IEMOCAP_full_release",
        f"{out}/shards/ser/iemocap", "--holdout", "session=Session5"]
    assert lines["sbatch distill"][-7:] == ["slurm/generate.sbatch", "distill", f"{out}/shards/instructs2s/train",
                                            f"{out}/targets/distill", "--config", "configs/generate_tiny.yaml",
                                            "model.llm_path=.cache/pipeline_tiny/models/llm"]
    assert lines["sbatch units_fit"][5:] == [
        "--dependency=afterok:<join_train_empathy>", "--ntasks-per-node=1", "slurm/step.sbatch", "fe-shards", "units",
        "fit", "--shards", f"{out}/shards/instructs2s/train_empathy", "--out", f"{out}/codebooks/km16", "--k", "16"]
    assert not (out / ".pipeline" / "stage1.done.pending").exists()  # a dry run writes nothing
