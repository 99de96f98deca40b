"""Bad input ends with one clear line naming the file, key or value, and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, dist_env, stage1_overrides


def fe_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fe_train", *args], env=dist_env(), capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def last_line(proc) -> str:
    return proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("override, message", [
    ("model.llm_path=/no/such/llm", "config model.llm_path = '/no/such/llm': no such model directory"),
    ("model.encoder_path=/no/such/whisper", "config model.encoder_path = '/no/such/whisper': no such model directory"),
    ("train.lr_max=1", "unknown config key 'train.lr_max'"),
    ("data.train_shards=/no/shards-{000..003}.tar", "data.train_shards = '/no/shards-{000..003}.tar' matches no shard"),
    ("data.num_workers=5", "4 shard(s) for 1 rank(s) x 5 worker(s)"),
    ("data.train_shards=[/no/a, {shards: /no/b, weight: 0}]", "config data.train_shards[1].weight = 0: expected a number > 0"),
    ("data.eval_shards=[/no/dev]", "data.eval_shards[0] = '/no/dev' matches no shard"),
])
def test_one_line_errors(assets, tmp_path, override, message):
    config = str(REPO / "configs" / "stage1_tiny.yaml")
    overrides = stage1_overrides(assets, tmp_path / "run", **{"data.train_shards": assets.heldout_shards})
    proc = fe_train("train", "--config", config, *overrides, override)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert last_line(proc).startswith("error: ") and message in last_line(proc), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_config_file():
    proc = fe_train("train", "--config", "/no/such.yaml")
    assert proc.returncode == 2 and last_line(proc) == "error: config file /no/such.yaml: no such file"


def test_existing_checkpoint_is_not_overwritten(assets, tmp_path):
    (tmp_path / "run" / "checkpoints" / "step00000001").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step00000001" / "trainer_state.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step00000001")
    proc = fe_train("train", "--config", str(REPO / "configs" / "stage1_tiny.yaml"), *stage1_overrides(assets, tmp_path / "run"))
    assert proc.returncode == 2 and "already holds checkpoint step00000001: pass --resume" in last_line(proc)


def test_config_command_prints_the_resolved_key():
    """What slurm/train.sbatch reads to find run.output_dir (and the rank logs and checkpoints in it)."""
    config = str(REPO / "configs" / "stage1_tiny.yaml")
    proc = fe_train("config", "--config", config, "--get", "run.output_dir", "run.output_dir=/x/run")
    assert (proc.returncode, proc.stdout) == (0, "/x/run\n"), proc.stderr
    proc = fe_train("config", "--config", config, "--get", "run.outdir")
    assert proc.returncode == 2 and last_line(proc).startswith("error: --get 'run.outdir': expected section.key")


def test_resume_with_another_global_batch_size_is_refused(assets, tmp_path):
    """A step counts global batches: resuming with another size would mix units in the step count and the schedule."""
    config = str(REPO / "configs" / "stage1_tiny.yaml")
    overrides = [*stage1_overrides(assets, tmp_path / "run"), "data.eval_shards=", "train.max_steps=1"]
    first = fe_train("train", "--config", config, *overrides)
    assert first.returncode == 0, first.stderr[-2000:]
    proc = fe_train("train", "--config", config, *overrides, "train.global_batch_size=32", "--resume")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert last_line(proc) == ("error: config train.global_batch_size = 32: checkpoint step00000001 counts its 1 steps "
                               "in batches of 16; resume with 16, or start a new run from its exports"), proc.stderr[-2000:]


def test_version_and_defaults_in_help(capsys):
    from fe_train import __version__
    from fe_train.cli import shards_main, train_main

    for main, argv, expected in ((train_main, ["--version"], f"fe-train {__version__}"),
                                 (shards_main, ["build", "--help"], "(default: 1000)")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0 and expected in " ".join(capsys.readouterr().out.split()), argv


def test_demo_names_a_world_without_the_second_voices(tmp_path):
    """A world built by an older fe-train has no ``shards/more_voices``: the demo says so before it trains."""
    world = tmp_path / "world"
    (world / "shards" / "train").mkdir(parents=True)
    proc = fe_train("demo", "--out", str(tmp_path / "demo"), "--assets", str(world))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert last_line(proc) == (f"error: --assets {world}: no {world}/shards/more_voices/index.json (a world built by "
                               "an older fe-train: omit --assets to build a new one)")
