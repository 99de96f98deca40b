"""The loss is the mean over every labelled token of the global batch (issue 18): the same 16 samples cut as
1 rank x 1 micro-batch of 16, 1 rank x 4 accumulated micro-batches of 4, or 2 ranks x 2 x 4 give the same
gradient under real DeepSpeed ZeRO-3 (gloo, CPU), while the mean of per-micro-batch means would not; a dropped
non-finite micro-batch leaves exactly the others' share."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import torch

from conftest import REPO, stage1_overrides, torchrun
from fe_train.data.writer import EncodedSample, write_shards

CONFIG = str(REPO / "configs" / "stage1_tiny.yaml")
REPLY_WORDS = [28, 28, 15, 15, 1, 1, 1, 2, 5, 5, 6, 6, 8, 9, 9, 9]
"""Words per reply, in shard order: micro-batches of 4 hold 86, 5, 22 and 35 words."""


def skewed_shard(assets, out: Path) -> Path:
    """16 training samples of the tiny world whose replies are cut from the world's own words to REPLY_WORDS."""
    with tarfile.open(next(Path(assets.train_shards).glob("*.tar"))) as tar:
        members = {name: tar.extractfile(name).read() for name in tar.getnames()}
    keys = sorted({name.rsplit(".", 1)[0] for name in members})[: len(REPLY_WORDS)]
    metas = [json.loads(members[f"{key}.json"]) for key in keys]
    words = " ".join(meta["reply"] for meta in metas).split()
    samples = []
    for key, meta, n in zip(keys, metas, REPLY_WORDS):
        reply = " ".join((words * 4)[len(samples): len(samples) + n])
        samples.append(EncodedSample(key, {"flac": members[f"{key}.flac"], "json": json.dumps({**meta, "reply": reply}).encode()},
                                     meta["duration_s"]))
    write_shards(samples, out, max_count=len(samples) // 2)  # a shard per rank of the 2-rank run
    return out


def one_step(assets, shards: Path, out: Path, nproc: int, micro_batch: int, nan_micro: int = 0) -> dict:
    result = out / "record.pt"
    proc = torchrun([str(REPO / "tests" / "dist" / "global_batch_check.py"), str(result), str(nan_micro), CONFIG, *stage1_overrides(
        assets, out / "run", **{"data.train_shards": shards, "data.eval_shards": "", "data.shuffle": "false",
                                "train.micro_batch_size": micro_batch, "train.epochs": 1, "train.max_steps": 1,
                                "train.grad_clip": 0, "train.log_every": 1})], nproc=nproc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(result)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_gradient_does_not_depend_on_how_the_global_batch_is_cut(assets, tmp_path):
    shards = skewed_shard(assets, tmp_path / "shards")
    whole = one_step(assets, shards, tmp_path / "1x16", 1, 16)
    accumulated = one_step(assets, shards, tmp_path / "1x4x4", 1, 4)
    ranks = one_step(assets, shards, tmp_path / "2x2x4", 2, 4)
    assert len(whole["grads"]) == 1 and len(accumulated["grads"]) == 4 and len(ranks["grads"]) == 2
    reference = whole["grads"][-1]
    assert reference.norm() > 0
    assert relative(accumulated["grads"][-1], reference) < 1e-4
    assert relative(ranks["grads"][-1], reference) < 1e-4

    # The micro-batches really differ in size, and the mean of their means (the loss before issue 18) weighs a
    # token of the short ones more: rebuilt from the 4 micro-batches' own gradients, it points elsewhere.
    tokens = [counts[0] for counts in accumulated["counts"]]
    assert max(tokens) > 5 * min(tokens), tokens
    running = [torch.zeros_like(reference), *accumulated["grads"]]
    parts = [after - before for before, after in zip(running, running[1:])]  # each: grad of its summed loss / N
    micro_mean = sum(part * sum(tokens) / n for part, n in zip(parts, tokens)) / len(tokens)
    assert relative(micro_mean, reference) > 0.2

    # A non-finite micro-batch is dropped: its tokens count as zero loss, the others keep the global count.
    dropped = one_step(assets, shards, tmp_path / "1x4x4-nan", 1, 4, nan_micro=2)
    assert relative(dropped["grads"][-1], reference - parts[1]) < 1e-4
