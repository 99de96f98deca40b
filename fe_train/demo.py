"""``fe-train demo``: the main job on an embedded default, end to end on this machine.

Builds tiny frozen models and a spoken-instruction corpus (espeak-ng voices),
writes shards with the project's writer, trains stage 1 with real DeepSpeed
ZeRO-3 in ``nproc`` processes (torchrun; gloo on CPU), and prints the first and
last loss; on questions and voices stage 1 never heard, the spoken-QA accuracy
before and after beside the frozen LLM's accuracy on their transcripts, and the
reply-token accuracy and eval loss; and where the checkpoint, metrics and plot
are. Exits 1 when stage 1 did not generalise (``SHARE_OF_TRANSCRIPT``, ``LOSS_DROP``).
"""

from __future__ import annotations

import json
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
                "--master_port", str(free_port())]
    return [*torchrun, "-m", "fe_train", "train", "--config", str(config), *overrides]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SHARE_OF_TRANSCRIPT = 0.8
"""Spoken-QA accuracy on held-out voices and questions must reach this share (issue 16's) of the frozen LLM's
accuracy on the same questions' transcripts. Hearing each question in 72 voices (``Assets.stage1_sources``) with
``STATE_DISTILL``, stage 1 ended between 0.83 and 0.98 on the worlds of seeds 0 to 3 (``docs/stage1.md``)."""
STATE_DISTILL = 1.0
"""``train.state_distill`` of the demo's stage 1: the tiny LLM, pre-trained on 40 questions only, is driven by the
reply's cross-entropy alone into whole held-out questions answered about another animal (``docs/stage1.md``)."""
EVAL_EVERY = 120
"""Optimizer steps between the demo's held-out evaluations (12 points on the curve over the preset's 10 epochs of
2304 clips, 1440 steps)."""
LOSS_DROP = 0.3
"""The held-out eval loss must end at least this fraction below its start."""


def run_demo(out: Path, nproc: int = 2, epochs: int | None = None, assets_dir: Path | None = None) -> int:
    from fe_train.data.synthetic import have_espeak
    from fe_train.fixtures.assets import Assets, build_assets

    started = time.perf_counter()
    out = out.resolve()
    if assets_dir:
        assets = Assets(assets_dir.resolve())
        if not (assets.more_voices_shards / "index.json").is_file():
            raise UserError(f"--assets {assets.root}: no {assets.more_voices_shards}/index.json (a world built by an "
                            "older fe-train: omit --assets to build a new one)")
    elif not have_espeak():
        raise UserError("espeak-ng not found: the demo speaks its questions with it (run `make demo` as root, "
                        "or apt-get install espeak-ng)")
    else:
        assets = build_assets(out / "assets")
    log.info("assets ready in %.0f s: %s", time.perf_counter() - started, assets.root)
    run_dir = out / "run"
    overrides = [
        f"model.encoder_path={assets.whisper}", f"model.llm_path={assets.llm}",
        f"data.train_shards={assets.stage1_sources}", f"data.eval_shards={assets.heldout_shards}",
        f"run.output_dir={run_dir}", "eval.tasks=[spokenqa]", "eval.max_new_tokens=12",
        f"train.state_distill={STATE_DISTILL}", f"train.eval_every={EVAL_EVERY}",
        *([f"train.epochs={epochs}"] if epochs else []),
    ]
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
    transcript = transcript_accuracy(run_dir, assets.heldout_shards, out / "transcript", env)
    print(summary(run_dir, transcript, time.perf_counter() - started))
    return verdict(run_dir, transcript)


def transcript_accuracy(run_dir: Path, shards: Path, out: Path, env: dict[str, str]) -> float:
    """The frozen LLM's spoken-QA accuracy on the held-out questions' transcripts (``eval.control=transcript``)."""
    command = [sys.executable, "-m", "fe_train", "eval", "spokenqa", "--ckpt", str(run_dir), "--shards", str(shards),
               "--out", str(out), "eval.control=transcript", "eval.max_new_tokens=12"]
    log.info("transcript control: %s", " ".join(command))
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "spokenqa.json").read_text())["accuracy"]["value"]


def verdict(run_dir: Path, transcript: float) -> int:
    """0 when stage 1 generalised: held-out spoken-QA accuracy at least ``SHARE_OF_TRANSCRIPT`` of the transcript's,
    and the held-out eval loss down by ``LOSS_DROP``."""
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/loss" in r]
    first, last = evals[0], evals[-1]
    accuracy, bar = last["eval/spokenqa/accuracy"], SHARE_OF_TRANSCRIPT * transcript
    loss_bar = (1 - LOSS_DROP) * first["eval/loss"]
    figures = (f"spoken-QA accuracy {accuracy:.3f} (at least {bar:.3f}: {SHARE_OF_TRANSCRIPT} x the transcript's "
               f"{transcript:.3f}), eval loss {first['eval/loss']:.4f} -> {last['eval/loss']:.4f} (at most {loss_bar:.4f})")
    if accuracy >= bar and last["eval/loss"] <= loss_bar:
        print(f"stage 1 generalises to held-out voices and questions: {figures}")
        return 0
    print(f"demo: stage 1 did not generalise to held-out voices and questions: {figures}", file=sys.stderr)
    return 1


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def summary(run_dir: Path, transcript: float, wall_s: float) -> str:
    records = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    lines = [f"demo finished in {wall_s / 60:.1f} min"]
    if train:
        lines.append(f"train loss: first {train[0]['train/loss']:.4f} (step {train[0]['step']}) -> "
                     f"last {train[-1]['train/loss']:.4f} (step {train[-1]['step']})")
    if evals:
        first, last = evals[0], evals[-1]
        lines.append(f"held-out voices and questions, answered from speech: before {first['eval/spokenqa/accuracy']:.3f}"
                     f" -> after {last['eval/spokenqa/accuracy']:.3f} (step {first['step']} -> {last['step']}); "
                     f"from the transcript: {transcript:.3f}")
        lines.append(f"held-out voices and questions, reply-token accuracy: before {first['eval/token_acc']:.3f} -> "
                     f"after {last['eval/token_acc']:.3f} (loss {first['eval/loss']:.4f} -> {last['eval/loss']:.4f})")
    lines += [f"checkpoint: {run_dir / 'checkpoints'}", f"adapter export: {run_dir / 'export' / 'adapter.safetensors'}",
              f"metrics: {run_dir / 'metrics.jsonl'}", f"loss curve: {run_dir / 'loss.png'}"]
    return "\n".join(lines)
