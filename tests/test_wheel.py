"""fe-train as a wheel, outside the checkout: ``pip install fe_train-*.whl`` into a fresh venv, then the commands
find the shipped presets (``configs/``) and DeepSpeed policies (``ds_configs/``) from another directory.

The wheel is built from a copy of the working tree; the fresh venv gets its dependencies from this venv's
site-packages (a ``.pth`` line: nothing is downloaded) and fe-train only from the wheel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, dist_env

SOURCE_IGNORED = (".git", ".venv", ".cache", "demo_out", "runs", "build", "dist", "*.egg-info", "__pycache__", "wandb")


def run(args: list, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=1800, **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*SOURCE_IGNORED))
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", root / "dist", source])
    (wheel,) = (root / "dist").glob("fe_train-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    site = Path(run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps", "--no-index", wheel])
    return venv


def test_installed_wheel_finds_presets_and_ds_configs_from_another_directory(wheel_venv, tmp_path):
    where = run([wheel_venv / "bin" / "python", "-c", "import fe_train; print(fe_train.__file__)"], cwd=tmp_path).stdout
    assert where.startswith(str(wheel_venv)), where  # the wheel's copy, not the checkout
    shown = run([wheel_venv / "bin" / "fe-train", "config", "--config", "configs/stage2a_tiny.yaml"], cwd=tmp_path).stdout
    assert "stage: ser" in shown and "ds_configs/zero3_tiny.json" in shown
    policy = run([wheel_venv / "bin" / "python", "-c", "from fe_train.engine.ds_config import read_policy; "
                  "print(read_policy('ds_configs/zero3_offload.json')['zero_optimization']['stage'])"], cwd=tmp_path)
    assert policy.stdout.strip() == "3"
    missing = subprocess.run([wheel_venv / "bin" / "fe-train", "config", "--config", "configs/nope.yaml"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "config file configs/nope.yaml: no such file" in missing.stderr


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_from_another_directory(wheel_venv, assets, tmp_path):
    proc = run([wheel_venv / "bin" / "fe-train", "demo", "--out", tmp_path / "demo", "--assets", assets.root],
               cwd=tmp_path, env=dist_env())
    assert "stage 1 generalises to held-out voices and questions" in proc.stdout, proc.stdout[-3000:]
