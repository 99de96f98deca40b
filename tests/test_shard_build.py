"""The writer's guarantees: a builder killed mid-run and rerun, or cut into Slurm array tasks, gives the bytes of a
clean run with the same seed; finished work is never overwritten; bad input is counted or named on one line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, dist_env, skip_or_fail
from fe_train.cli import shards_main
from fe_train.data import corpora
from fe_train.data.build import BuildOptions, build
from fe_train.data.stats import Skips
from fe_train.errors import UserError
from fe_train.fixtures import ser_layouts
from fe_train.fixtures.layouts import Recorder

pytestmark = pytest.mark.usefixtures("espeak_ng")

OPTIONS = {"max_count": 2, "seed": 7}
CLI_OPTIONS = ["--max-count", "2", "--seed", "7", "--holdout", "speaker=Actor_08"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ser_layouts.ravdess(tmp_path_factory.mktemp("ravdess"), Recorder(), actors=tuple(range(1, 9)))


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory):
    """A build run start to finish in this process with 2 workers: the reference bytes."""
    out = tmp_path_factory.mktemp("clean")
    return out, run_build(corpus.root, out, workers=2)


def run_build(root: Path, out: Path, workers: int = 1, **options):
    from fe_train.data.splits import Holdout

    skips = Skips()
    opts = BuildOptions(out, workers=workers, holdout=(Holdout.parse("speaker=Actor_08"),),
                        source={"corpus": "ravdess", "root": str(root.resolve()), "labels": {}}, **{**OPTIONS, **options})
    return build(corpora.scan("ravdess", root, skips), opts, skips)


def shards_cli(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "shards" / "build.py"), *args], env=dist_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def contents(out: Path) -> dict[str, bytes]:
    """Every shard, index, report and plan of a build folder, by relative path."""
    names = [*out.glob("*/*.tar"), *out.glob("*/index.json"), out / "report.json", out / "build.json"]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in names if p.is_file()}


def test_killed_builder_rerun_gives_the_clean_bytes(corpus, clean, tmp_path):
    reference, result = clean
    planned = len(result.plan.jobs)
    assert planned >= 15 and result.merged.complete
    out = tmp_path / "crashed"
    proc = shards_cli("--corpus", "ravdess", "--root", str(corpus.root), "--out", str(out), "--workers", "1",
                      *CLI_OPTIONS, start_new_session=True)
    deadline = time.monotonic() + 240
    while proc.poll() is None and not list(out.glob("*/*.tar")) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # the builder and any child it has, as a node failure would
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the builder ended before it could be killed"
    finished = len(list(out.glob("*/*.tar")))
    assert 1 <= finished < planned and not (out / "report.json").exists()

    rerun = run_build(corpus.root, out, workers=2)
    assert len(rerun.written) == planned - finished and rerun.merged.complete
    assert contents(out) == contents(reference)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*.tar")}
    assert run_build(corpus.root, out).written == []
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.tar")} == stamps


def test_array_tasks_of_the_sbatch_script_write_disjoint_slices_then_merge(corpus, clean, tmp_path):
    reference, result = clean
    number = {job.name: job.number for job in result.plan.jobs}
    out, script = tmp_path / "array", REPO / "slurm" / "build_shards.sbatch"
    count, seen = 3, set()
    for task in range(count):
        env = dist_env(SLURM_ARRAY_TASK_ID=str(task + 1), SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_COUNT=str(count),
                       SLURM_CPUS_PER_TASK="1", PYTHON=sys.executable, FE_TRAIN_DIR=str(REPO))
        proc = subprocess.run(["bash", str(script), "ravdess", str(corpus.root), str(out), *CLI_OPTIONS], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        written = {p.stem for p in out.glob("*/*.tar")} - seen
        assert written and {number[name] % count for name in written} == {task}
        seen |= written
        assert (out / "logs" / f"task-{task:04d}.log").read_text().count(f"task {task}/{count}: wrote") == 1
        assert (out / "report.json").exists() == (task == count - 1)
    assert contents(out) == contents(reference)


def test_sbatch_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck not installed (tests/sysdeps.sh installs it)")
    proc = subprocess.run(["shellcheck", str(REPO / "slurm" / "build_shards.sbatch")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_finished_work_is_never_overwritten(corpus, clean, tmp_path):
    reference, _ = clean
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    before = contents(out)
    with pytest.raises(UserError, match=r"holds another build .*options differ: seed 7 -> 8"):
        run_build(corpus.root, out, seed=8)
    shard = sorted(out.glob("train/*.tar"))[0]
    (out / ".records" / f"{shard.stem}.json").unlink()
    with pytest.raises(UserError, match=f"shard {shard} exists without its record"):
        run_build(corpus.root, out)
    assert contents(out) == before

    foreign = tmp_path / "foreign"
    (foreign / "train").mkdir(parents=True)
    (foreign / "train" / "train-000000.tar").write_bytes(b"not ours")
    with pytest.raises(UserError, match="already holds shards that no build.json describes"):
        run_build(corpus.root, foreign)
    assert (foreign / "train" / "train-000000.tar").read_bytes() == b"not ours"


def test_verify_shows_a_progress_bar_when_asked_and_none_in_a_log(clean):
    """stderr is a pipe here, as in a Slurm log: no bar unless --progress asks for one."""
    out, _ = clean
    split = next(p for p in sorted(out.iterdir()) if any(p.glob("*.tar")))

    def verify(*flags: str) -> str:
        proc = subprocess.run([sys.executable, "-c", "import sys; from fe_train.cli import shards_main; sys.exit(shards_main())",
                               "verify", str(split), *flags], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stderr

    assert f"verify {split.name}" not in verify()
    shards = len(list(split.glob("*.tar")))
    assert f"verify {split.name}: 100%" in verify("--progress") and f"{shards}/{shards}" in verify("--progress")


def test_cli_errors_are_one_line_and_verify_names_a_damaged_shard(clean, tmp_path, capsys):
    assert shards_main(["build", "--corpus", "voxceleb", "--root", "/x", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --corpus 'voxceleb': expected one of ['cremad', 'esd'")
    assert shards_main(["build", "--corpus", "iemocap", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: iemocap root {tmp_path} does not match the iemocap layout: expected Session1..Session5 folders "
        "with dialog/EmoEvaluation/*.txt and sentences/wav/<dialog>/*.wav under the root")

    damaged = tmp_path / "damaged"
    shutil.copytree(clean[0], damaged)
    shard = sorted(damaged.glob("train/*.tar"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 3])
    assert shards_main(["verify", str(damaged)]) == 1
    lines = capsys.readouterr().out.splitlines()
    bad = [line for line in lines if "PROBLEMS" in line]
    assert len(bad) == 1 and bad[0].startswith(f"train/{shard.name}:") and "count_mismatch" in bad[0]
    assert lines[-1] == f"{len(lines) - 2}/{len(lines) - 1} shards ok"
