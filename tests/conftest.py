"""Shared fixtures: the tiny world (models + shards) built once per session, and launchers."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("WANDB_SILENT", "true")


def skip_or_fail(reason: str) -> None:
    """Skip a test whose requirement (espeak-ng, sox, Slurm and munge, shellcheck, root) is missing; under CI
    (``CI=true`` or ``CI=1``) fail it instead, so that a CI run without them is red rather than green and empty."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dist_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_STEP_ID"):
        env.pop(key, None)
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def torchrun(args: list[str], nproc: int = 2, timeout: int = 600, **popen) -> subprocess.CompletedProcess:
    """Run ``python -m torch.distributed.run --nproc_per_node nproc <args>`` and capture its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()), *args]
    return subprocess.run(cmd, env=dist_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO, **popen)


ASSET_SOURCES = ("fe_train/fixtures", "fe_train/data/synthetic.py", "fe_train/data/writer.py", "fe_train/data/schema.py",
                 "fe_train/data/features.py", "fe_train/data/audio.py", "fe_train/generate/replies.py")


def cached_build(name: str, build, sources=ASSET_SOURCES):
    """Build once into .cache/<name>/<digest of the sources that make it>, reused by later sessions.

    The builders are deterministic, so a cached copy equals a fresh one; a change to any
    source file gives a new digest. Built under a temporary name and renamed, so
    concurrent sessions never see half a build.
    """
    digest = hashlib.sha256()
    for source in sources:
        for path in sorted((REPO / source).rglob("*.py")) if (REPO / source).is_dir() else [REPO / source]:
            digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    digest.update(subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.encode())
    target = REPO / ".cache" / name / digest.hexdigest()[:16]
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=target.parent, prefix="partial-"))
        build(partial)
        try:
            partial.rename(target)
        except OSError:  # another session finished first
            shutil.rmtree(partial, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def espeak_ng():
    """Needs espeak-ng (real speech): ``pytestmark = pytest.mark.usefixtures("espeak_ng")`` in a module."""
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng not installed (tests/sysdeps.sh installs it)")


@pytest.fixture(scope="session")
def assets():
    """Tiny frozen LLM + Whisper and spoken-instruction shards (about 40 s to build; cached in .cache/assets)."""
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng not installed (tests/sysdeps.sh installs it)")
    from fe_train.fixtures.assets import Assets, build_assets

    return Assets(cached_build("assets", build_assets))


@pytest.fixture(scope="session")
def ser_assets():
    """The SER world: tiny frozen LLM + Whisper, a stage-1 adapter, SER clips per voice fold, instructions
    (minutes to build; cached in .cache/ser_assets)."""
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng not installed (tests/sysdeps.sh installs it)")
    from fe_train.fixtures.ser_assets import SerAssets, build_ser_assets

    return SerAssets(cached_build("ser_assets", build_ser_assets))


def stage1_overrides(assets, out_dir: Path, **extra) -> list[str]:
    values = {
        "model.encoder_path": assets.whisper, "model.llm_path": assets.llm,
        "data.train_shards": assets.train_shards, "data.eval_shards": assets.heldout_shards,
        "run.output_dir": out_dir, "run.progress_bar": "false", "run.wandb_mode": "disabled",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]
