"""``fe-train demo``: the main job on an embedded default, end to end on this machine.

Builds tiny frozen models and a spoken-instruction corpus (espeak-ng voices),
writes shards with the project's writer, trains stage 1 with real DeepSpeed
ZeRO-3 in ``nproc`` processes (torchrun; gloo on CPU), and prints the first and
last loss, the held-out voices' spoken-QA accuracy, reply-token accuracy and eval
loss before and after, and where the checkpoint, metrics and plot are. Exits 1
when stage 1 did not learn on the held-out voices (``MARGIN``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from fe_train.config.files import shipped
from fe_train.errors import UserError
from fe_train.tracking.tracker import read_metrics

log = logging.getLogger(__name__)

PRESET = shipped("configs/stage1_tiny.yaml")


def launch_command(nproc: int, config: Path, overrides: list[str]) -> list[str]:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(_free_port())]
    return [*torchrun, "-m", "fe_train", "train", "--config", str(config), *overrides]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MARGIN = 0.2
"""What the held-out spoken-QA accuracy must gain, with the held-out eval loss ending below its start."""


def run_demo(out: Path, nproc: int = 2, epochs: int | None = None, assets_dir: Path | None = None) -> int:
    from fe_train.data.synthetic import have_espeak
    from fe_train.fixtures.assets import Assets, build_assets

    started = time.perf_counter()
    out = out.resolve()
    if not have_espeak():
        raise UserError("espeak-ng not found: the demo speaks its questions with it (run `make demo` as root, "
                        "or apt-get install espeak-ng)")
    assets = Assets(assets_dir.resolve()) if assets_dir else build_assets(out / "assets")
    log.info("assets ready in %.0f s: %s", time.perf_counter() - started, assets.root)
    run_dir = out / "run"
    overrides = [
        f"model.encoder_path={assets.whisper}", f"model.llm_path={assets.llm}",
        f"data.train_shards={assets.train_shards}", f"data.eval_shards={assets.heldout_shards}",
        f"run.output_dir={run_dir}", "eval.tasks=[spokenqa]", "eval.max_new_tokens=12",
    ] + ([f"train.epochs={epochs}"] if epochs else [])
    resume = ["--resume"] if (run_dir / "checkpoints" / "latest").is_file() else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    command = launch_command(nproc, PRESET, overrides)
    if resume:
        command.insert(command.index("--config"), "--resume")
    log.info("training: %s", " ".join(command))
    result = subprocess.run(command, env=env)
    if result.returncode:
        print(f"demo: training failed with exit status {result.returncode}", file=sys.stderr)
        return result.returncode
    print(summary(run_dir, time.perf_counter() - started))
    return verdict(run_dir)


def verdict(run_dir: Path) -> int:
    """0 when stage 1 learned on the held-out voices: spoken-QA accuracy up by ``MARGIN``, eval loss below its start."""
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/loss" in r]
    first, last = evals[0], evals[-1]
    gain = last["eval/spokenqa/accuracy"] - first["eval/spokenqa/accuracy"]
    if gain >= MARGIN and last["eval/loss"] < first["eval/loss"]:
        print(f"stage 1 generalises to the held-out voices: spoken-QA accuracy +{gain:.3f} (at least {MARGIN}), "
              f"eval loss {first['eval/loss']:.4f} -> {last['eval/loss']:.4f}")
        return 0
    print(f"demo: stage 1 did not learn on the held-out voices: spoken-QA accuracy {gain:+.3f} (expected at least "
          f"+{MARGIN}), eval loss {first['eval/loss']:.4f} -> {last['eval/loss']:.4f}", file=sys.stderr)
    return 1


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def summary(run_dir: Path, wall_s: float) -> str:
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    lines = [f"demo finished in {wall_s / 60:.1f} min"]
    if train:
        lines.append(f"train loss: first {train[0]['train/loss']:.4f} (step {train[0]['step']}) -> "
                     f"last {train[-1]['train/loss']:.4f} (step {train[-1]['step']})")
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(f"held-out voices, spoken questions answered: before {first['eval/spokenqa/accuracy']:.3f} -> "
                     f"after {last['eval/spokenqa/accuracy']:.3f} (step {first['step']} -> {last['step']})")
        lines.append(f"held-out voices, reply-token accuracy: before {first['eval/token_acc']:.3f} -> "
                     f"after {last['eval/token_acc']:.3f} (loss {first['eval/loss']:.4f} -> {last['eval/loss']:.4f})")
    lines += [f"checkpoint: {run_dir / 'checkpoints'}", f"adapter export: {run_dir / 'export' / 'adapter.safetensors'}",
              f"metrics: {run_dir / 'metrics.jsonl'}", f"loss curve: {run_dir / 'loss.png'}"]
    return "\n".join(lines)
