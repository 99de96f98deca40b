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
from test_reproduce import doc_steps

from conftest import REPO, dist_env
from fe_train.errors import UserError
from fe_train.reproduce.__main__ import main
from fe_train.reproduce.markers import expected_markers, marker_path
from fe_train.reproduce.runner import resolve
from fe_train.reproduce.settings import PipelineConfig
from fe_train.reproduce.steps import PROJECT, build_steps, covers

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


def tiny(tmp_path: Path, name: str = "pipeline.yaml", **changes) -> Path:
    tree = {**yaml.safe_load(TINY.read_text()), "out": str(tmp_path / "out"), "data": str(tmp_path / "data"), **changes}
    path = tmp_path / name
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
    assert list(lines) == [f"sbatch {s.name}" for s in steps] and len(steps) == 28
    out = tmp_path / "out"
    stage2b = lines["sbatch stage2b"]
    assert stage2b[0] == f"FE_PIPELINE_MARKER={out}/.pipeline/stage2b.done"
    assert stage2b[1:6] == ["sbatch", "--parsable", "--job-name=fe-stage2b", f"--output={out}/.pipeline/logs/stage2b-%j.out",
                            "--dependency=afterok:<ser_iemocap>:<ser_cremad>:<join_train_empathy>:<stage1>:<stage2a>"]
    assert stage2b[6] == "--kill-on-invalid-dep=yes"  # a step whose upstream failed is cancelled, not left pending
    assert stage2b[7:10] == ["--ntasks-per-node=2", "slurm/train.sbatch", "configs/stage2b_tiny.yaml"]
    assert f"emotion.init_extractor={out}/runs/stage2a_tiny/export/emotion_extractor.safetensors" in stage2b
    assert "decoder.codebook=$CODEBOOK" in lines["sbatch stage3b"] and "decoder.n_units=16" in lines["sbatch stage3b"]
    build = lines["sbatch ser_iemocap"]
    assert "--dependency" not in " ".join(build) and build[-10:] == [
        "--array=0-0", "--cpus-per-task=2", "slurm/build_shards.sbatch", "iemocap", f"{tmp_path}/data/IEMOCAP_full_release",
        f"{out}/shards/ser/iemocap", "--holdout", "session=Session5", "--max-count", "4"]
    assert lines["sbatch distill"][-7:] == ["slurm/generate.sbatch", "distill", f"{out}/shards/instructs2s/train",
                                            f"{out}/targets/distill", "--config", "configs/generate_tiny.yaml",
                                            "model.llm_path=.cache/pipeline_tiny/models/llm"]
    assert lines["sbatch units_fit"][5:] == [
        "--dependency=afterok:<join_train_empathy>", "--kill-on-invalid-dep=yes", "--ntasks-per-node=1", "slurm/step.sbatch", "fe-shards", "units",
        "fit", "--shards", f"{out}/shards/instructs2s/train_empathy", "--out", f"{out}/codebooks/km16", "--k", "16"]
    assert not (out / ".pipeline" / "stage1.done.pending").exists()  # a dry run writes nothing


def finish(config: Path, *names: str) -> None:
    """Markers as the named steps leave them when they finish with today's config."""
    cfg = PipelineConfig.load(config)
    steps = build_steps(cfg)
    markers = expected_markers(steps, {s.name: resolve(s, cfg) for s in steps})
    for name in names:
        marker_path(cfg.out, name).parent.mkdir(parents=True, exist_ok=True)
        marker_path(cfg.out, name).write_text(markers[name].text())


DATA_STEPS = ("instructs2s", "verify", "ser_iemocap", "ser_cremad", "ser_ravdess", "distill", "distill_val",
              "join_train_distill", "join_val_distill")


def test_finished_steps_are_skipped_and_drop_out_of_the_dependencies(tmp_path, capsys):
    config = tiny(tmp_path)
    finish(config, *DATA_STEPS)
    assert main([str(config), "--dry-run", "--to", "stage2a"]) == 0
    lines = sbatch_lines(capsys)
    assert [n for n in lines if n.startswith("skip ")] == [f"skip {n}" for n in DATA_STEPS]
    assert "--dependency" not in " ".join(lines["sbatch stage1"])  # all it reads is finished
    assert "--dependency=afterok:<stage1>" in lines["sbatch stage2a"]
    assert list(lines)[-1] == "sbatch stage2a"
    assert not marker_path(tmp_path / "out", "stage1").exists()  # a dry run writes no marker
    finish(config, "stage1")
    assert main([str(config), "--dry-run", "--only", "stage2a"]) == 0
    assert list(sbatch_lines(capsys)) == ["sbatch stage2a"]


def test_a_changed_step_is_refused_in_one_line_unless_rerun_changed(tmp_path, capsys):
    config = tiny(tmp_path)
    finish(config, *DATA_STEPS, "stage1")
    changed = tiny(tmp_path, overrides={"stage1": ["train.max_steps=3"]})
    with pytest.raises(UserError, match=r"^step stage1 finished with another command, config or inputs \(.*stage1.done\); "
                                        "rerun with --rerun-changed to run it again$"):
        main([str(changed), "--dry-run", "--to", "stage1"])
    capsys.readouterr()
    assert main([str(changed), "--dry-run", "--to", "stage1", "--rerun-changed"]) == 0
    lines = sbatch_lines(capsys)
    assert "train.max_steps=3" in lines["sbatch stage1"] and "skip join_val_distill" in lines
    # an upstream change reaches every step after it: the marker digests chain
    finish(config, *DATA_STEPS, "stage1")
    changed = tiny(tmp_path, overrides={"distill": ["generate.max_new_tokens=5"]})
    with pytest.raises(UserError, match="^step stage1 finished with another command, config or inputs"):
        main([str(changed), "--dry-run", "--only", "stage1"])
    with pytest.raises(UserError, match="^step stage1 needs step join_train_distill, which has not finished"):
        main([str(changed), "--dry-run", "--only", "stage1", "--rerun-changed"])


@pytest.mark.parametrize("change, line", [
    ({"epochs": 3}, "unknown key 'epochs' (expected one of"),
    ({"k": 0}, "k must be a positive integer, got 0"),
    ({"models": {"llm": "x"}}, "models must map exactly llm, encoder, decoder to a path or hub id"),
    ({"ser": [{"corpus": "iemocap", "out": "shards/ser/iemocap"}]}, "ser[0] must map corpus, root, out"),
    ({"overrides": {"stage1": "train.max_steps=3"}}, "overrides.stage1 must be a list, got 'train.max_steps=3'"),
])
def test_a_bad_config_is_one_line_naming_the_file_and_key(tmp_path, change, line):
    config = tiny(tmp_path, **change)
    proc = subprocess.run([str(REPO / "slurm" / "reproduce.sh"), str(config), "--list"], env=dist_env(PYTHON=sys.executable),
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: {config}: {line}"), proc.stderr
    assert proc.stderr.count("\n") == 1


def test_an_unknown_step_and_a_missing_key_are_one_line(tmp_path):
    tree = yaml.safe_load(tiny(tmp_path).read_text())
    del tree["presets"]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(tree))
    with pytest.raises(UserError, match=r"bad.yaml: missing key 'presets'$"):
        main([str(tmp_path / "bad.yaml"), "--list"])
    with pytest.raises(UserError, match=r"^--from stage9: no such step \(expected one of instructs2s, verify, "):
        main([str(tiny(tmp_path)), "--dry-run", "--from", "stage9"])


def test_a_local_step_leaves_its_marker_only_when_it_succeeds(tmp_path):
    """--local runs the real fe-shards build of an espeak-ng CREMA-D in its published layout; the marker holds its
    command; a rerun skips it; a step whose corpus is missing fails and leaves no marker."""
    from fe_train.fixtures import ser_layouts
    from fe_train.fixtures.layouts import Recorder

    layout = ser_layouts.cremad(tmp_path / "data" / "CREMA-D", Recorder())
    config = tiny(tmp_path)
    env = dist_env(PYTHON=sys.executable)
    run = [str(REPO / "slurm" / "reproduce.sh"), str(config), "--local"]
    proc = subprocess.run([*run, "--only", "ser_cremad"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "out"
    marker = json.loads(marker_path(out, "ser_cremad").read_text())
    assert marker["command"] == ["fe-shards", "build", "--corpus", "cremad", "--root", f"{tmp_path}/data/CREMA-D",
                                 "--out", f"{out}/shards/ser/cremad", "--max-count", "4"]
    index = json.loads((out / "shards/ser/cremad/train/index.json").read_text())
    assert index["count"] == len(layout.clips) == 12 and max(s["count"] for s in index["shards"]) == 4
    again = subprocess.run([*run, "--only", "ser_cremad"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert again.returncode == 0 and again.stdout.startswith("skip ser_cremad: finished"), again.stdout
    changed = tiny(tmp_path, "changed.yaml", ser=[{"corpus": "cremad", "root": "CREMA-D", "out": "shards/ser/cremad",
                                   "args": ["--max-count", "6"]}])
    rebuilt = subprocess.run([str(REPO / "slurm" / "reproduce.sh"), str(changed), "--local", "--only", "ser_cremad",
                              "--rerun-changed"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert rebuilt.returncode == 2 and f"{out}/shards/ser/cremad holds another build" in rebuilt.stderr, rebuilt.stderr
    assert not marker_path(out, "ser_cremad").exists()  # the old marker went when the step started again
    failed = subprocess.run([*run, "--only", "ser_iemocap"], env=env, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert failed.returncode != 0 and "reproduce: step ser_iemocap failed with exit status" in failed.stderr
    assert not marker_path(out, "ser_iemocap").exists()


SECTION = (REPO / "docs" / "reproduce.md").read_text().split("## One command: slurm/reproduce.sh", 1)[1].split("### 0.")[0]


def test_the_docs_say_what_the_tool_does(tmp_path, capsys):
    """docs/reproduce.md (One command) and README (SLURM): the step count, the flags, the markers' path, the skip
    and refusal lines, the sbatch scripts by kind."""
    readme = (REPO / "README.md").read_text().split("### SLURM", 1)[1]
    assert main([str(PAPER), "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 36 and "the 36 steps" in SECTION and "(36 steps)" in readme
    assert listed[0].split() == ["2", "instructs2s", "data", "after:", "-"]
    help_text = subprocess.run([str(REPO / "slurm" / "reproduce.sh"), "--help"], env=dist_env(PYTHON=sys.executable),
                               capture_output=True, text=True, cwd=REPO).stdout
    for flag in ("--local", "--dry-run", "--from", "--to", "--only", "--list", "--rerun-changed"):
        assert flag in SECTION and flag in help_text
    for flag in ("--local", "--dry-run", "--from STEP", "--to STEP", "--only STEP", "--list"):
        assert flag in readme
    assert "`<out>/.pipeline/<step>.done`" in SECTION and "`<out>/.pipeline/<step>.done`" in readme
    assert "`skip <step>: finished`" in SECTION
    assert ("step <step> finished with another command, config or\n  inputs (...); rerun with --rerun-changed to run "
            "it again") in SECTION
    config = tiny(tmp_path)
    assert main([str(config), "--dry-run"]) == 0
    scripts = {line.split(": ", 1)[0].split()[1]: next(w for w in shlex.split(line) if w.startswith("slurm/"))
               for line in capsys.readouterr().out.splitlines()}
    kinds = {s.name: s.kind for s in build_steps(PipelineConfig.load(config))}
    by_kind = {(kinds[n], script) for n, script in scripts.items()}
    assert by_kind == {("data", "slurm/build_shards.sbatch"), ("data", "slurm/step.sbatch"),
                       ("generate", "slurm/generate.sbatch"), ("train", "slurm/train.sbatch"), ("eval", "slurm/step.sbatch")}
    for script in ("slurm/build_shards.sbatch", "slurm/generate.sbatch", "slurm/train.sbatch", "slurm/step.sbatch"):
        assert f"`{script}`" in SECTION
        assert 'mv "$FE_PIPELINE_MARKER.pending" "$FE_PIPELINE_MARKER"' in (REPO / script).read_text()


def test_local_runs_training_under_torchrun_with_the_configs_ranks(tmp_path, capsys):
    config = tiny(tmp_path)
    assert main([str(config), "--local", "--dry-run", "--to", "stage1"]) == 0
    lines = {line.split(": ", 1)[0]: shlex.split(line.split(": ", 1)[1]) for line in capsys.readouterr().out.splitlines()}
    stage1 = lines["run stage1"]
    assert stage1[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
    assert stage1[7:12] == ["-m", "fe_train", "train", "--config", "configs/stage1_tiny.yaml"]
    assert lines["run ser_cremad"][1:6] == ["-m", "fe_train.reproduce", "exec", "fe-shards", "build"]
    assert not (tmp_path / "out" / ".pipeline" / "stage1.done").exists()
