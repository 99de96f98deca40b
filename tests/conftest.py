"""Shared fixtures: the tiny world (models + shards) built once per session, and launchers."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id resolves from the Hugging Face cache only: tests download nothing

from fe_train.launch.env import free_port  # noqa: E402  (after the environment above; re-exported to the tests)

PAPER_CONFIGS = {
    "Qwen/Qwen2.5-7B-Instruct": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
        num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151645, hidden_act="silu"),
    "openai/whisper-large-v3": dict(
        architectures=["WhisperForConditionalGeneration"], model_type="whisper", vocab_size=51866, num_mel_bins=128,
        d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, decoder_layers=32,
        decoder_attention_heads=20, decoder_ffn_dim=5120, max_source_positions=1500, max_target_positions=448),
    "Qwen/Qwen2.5-0.5B": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643, hidden_act="silu"),
}
"""The paper's models as the planner sees them: the shape fields of their published ``config.json`` on the hub."""
HUB_REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_model(hf_home: Path, repo_id: str, build) -> None:
    """Put a model in a Hugging Face cache as huggingface_hub lays it out (``hub/models--org--name/snapshots/<revision>``
    and ``refs/main``); ``build(snapshot)`` writes its files."""
    org, name = repo_id.split("/")
    repo = hf_home / "hub" / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / HUB_REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(HUB_REVISION)
    build(snapshot)

def skip_or_fail(reason: str) -> None:
    """Skip a test whose requirement (espeak-ng, sox, Slurm and munge, shellcheck, root) is missing; under CI
    (``CI=true`` or ``CI=1``) fail it instead, so that a CI run without them is red rather than green and empty."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from the parent pids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
        except (OSError, IndexError):
            continue  # ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a zombie holds no memory, files or sockets)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_tree(pid: int, timeout_s: float = 30) -> list[int]:
    """SIGKILL ``pid`` and every descendant, as a node failure would, and wait until none of them runs.

    A process group is not enough: torchrun starts each rank in a session of its own. The tree is
    stopped (SIGSTOP) until it stops growing, so nothing forks between the walk and the kill; then the
    descendants and the process itself are killed. Returns the pids killed, ``pid`` first.
    """
    stopped: list[int] = []
    while new := [p for p in (pid, *descendants(pid)) if p not in stopped]:
        for p in new:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        stopped += new
    for p in [*stopped[1:], pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in stopped if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive, f"processes {alive} of the killed tree of {pid} still run"
    return stopped


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


def bf16_against_fp32(config: str, overrides: list[str], tmp: Path) -> tuple[float, float, dict[int, float]]:
    """A stage's first-step loss in fp32 and in bf16 (same weights, same batch), and the bf16 run's losses of
    three steps: ``train.precision=bf16`` as the paper presets run it, on 2 CPU ranks."""
    runs = {}
    for precision, steps in (("fp32", 1), ("bf16", 3)):
        out = tmp / precision
        proc = torchrun(["-m", "fe_train", "train", "--config", config, *overrides, f"run.output_dir={out}",
                         f"train.precision={precision}", f"train.max_steps={steps}", "train.log_every=1",
                         "train.eval_every=0", "data.eval_shards="])
        assert proc.returncode == 0, f"{precision}: " + proc.stdout[-3000:] + proc.stderr[-6000:]
        from fe_train.tracking.tracker import read_metrics

        runs[precision] = {r["step"]: r["train/loss"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r}
    return runs["fp32"][1], runs["bf16"][1], runs["bf16"]


ASSET_SOURCES = ("fe_train/fixtures", "fe_train/data/synthetic.py", "fe_train/data/writer.py", "fe_train/data/schema.py",
                 "fe_train/data/features.py", "fe_train/data/audio.py", "fe_train/generate/replies.py")


WORLD_SEED = int(os.environ.get("FE_WORLD_SEED", "0"))
"""Seed of every fixture world (``make test`` uses 0; the slow tier builds and tests the worlds of others too)."""


def world_key() -> str:
    """What else a built world depends on: its seed, torch's thread count and the versions of the numeric stack."""
    from importlib.metadata import version

    import torch

    espeak = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout if shutil.which("espeak-ng") else ""
    return (f"seed={WORLD_SEED} threads={torch.get_num_threads()} torch={torch.__version__} "
            f"transformers={version('transformers')} deepspeed={version('deepspeed')} espeak={espeak.strip()}")


def cached_build(name: str, build, sources=ASSET_SOURCES):
    """Build once into .cache/<name>/<digest>, reused by later sessions.

    The digest covers the sources that make the world and ``world_key()`` (seed, threads, versions):
    every world checks its own behaviour while it is built (``fe_train.fixtures.training``), so a
    cached world is one that passed its checks under the same conditions. Built under a temporary
    name and renamed, so concurrent sessions never see half a build.
    """
    digest = hashlib.sha256()
    for source in sources:
        for path in sorted((REPO / source).rglob("*.py")) if (REPO / source).is_dir() else [REPO / source]:
            digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    digest.update(world_key().encode())
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


def build_world(name: str) -> Path:
    """Fixture world ``name`` (``assets`` or ``ser_assets``) of seed ``WORLD_SEED``, built once and cached."""
    if shutil.which("espeak-ng") is None:
        skip_or_fail("espeak-ng not installed (tests/sysdeps.sh installs it)")
    from fe_train.fixtures.assets import build_assets
    from fe_train.fixtures.ser_assets import build_ser_assets

    build = {"assets": build_assets, "ser_assets": build_ser_assets}[name]
    return cached_build(name, lambda out: build(out, seed=WORLD_SEED))


@pytest.fixture(scope="session")
def assets():
    """Tiny frozen LLM + Whisper and spoken-instruction shards (minutes to build; cached in .cache/assets)."""
    from fe_train.fixtures.assets import Assets

    return Assets(build_world("assets"))


@pytest.fixture(scope="session")
def ser_assets():
    """The SER world: tiny frozen LLM + Whisper, a stage-1 adapter, SER clips per voice fold, instructions
    (minutes to build; cached in .cache/ser_assets)."""
    from fe_train.fixtures.ser_assets import SerAssets

    return SerAssets(build_world("ser_assets"))


@pytest.fixture(scope="module")
def slurm_clusters():
    """Real Slurm for the module (tests/slurm_harness.py): ``.get("local")`` (one node) or ``.get("two_nodes")``,
    started on first use; missing Slurm or munge skips, or fails under CI."""
    import slurm_harness

    reason = slurm_harness.unavailable()
    if reason:
        skip_or_fail(reason)
    slurm_harness.clean_leftovers()
    clusters = slurm_harness.Clusters()
    yield clusters
    clusters.stop()


@pytest.fixture(scope="module")
def local_slurm(slurm_clusters):
    """A real one-node Slurm for the module."""
    return slurm_clusters.get("local")


def stage1_overrides(assets, out_dir: Path, **extra) -> list[str]:
    values = {
        "model.encoder_path": assets.whisper, "model.llm_path": assets.llm,
        "data.train_shards": assets.train_shards, "data.eval_shards": assets.heldout_shards,
        "run.output_dir": out_dir, "run.progress_bar": "false", "run.wandb_mode": "disabled",
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]
