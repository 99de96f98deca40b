"""Training samples/s and padding with length grouping off and on, side by side in one run (issue 18).

    python bench/grouping_speed.py WORLD [--rounds 2] [--steps 60] [--nproc 2] [--config configs/stage1_tiny.yaml]

WORLD is a stage-1 world as ``tests/build_world.py assets`` prints it (``.cache/assets/<digest>``). Its training
shards are copied to a scratch folder and given their ``lengths.json`` (``fe-shards lengths``); then stage 1 trains
``--steps`` optimizer steps with ``data.group_by_length=off`` and ``=on`` in turn, ``--rounds`` times each
(off, on, off, on, ...: the machine's drift falls on both), on ``--nproc`` CPU processes (ZeRO-3, gloo). Per run it
prints the median of the logged ``train/samples_per_s`` (the first log dropped: start-up), the mean ``train/padding``
(the share of the LLM's positions that are padding) and ``train/seq_len``; then the medians per setting and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from fe_train.demo import launch_command


def train(world: Path, shards: Path, out: Path, config: str, nproc: int, steps: int, grouping: str) -> dict[str, float]:
    overrides = [f"model.encoder_path={world}/models/whisper", f"model.llm_path={world}/models/llm",
                 f"data.train_shards={shards}", "data.eval_shards=", f"run.output_dir={out}",
                 "run.wandb_mode=disabled", "run.progress_bar=false", f"train.max_steps={steps}", "train.log_every=5",
                 "train.eval_every=0", "train.save_every=0", f"data.group_by_length={grouping}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"))
    subprocess.run(launch_command(nproc, Path(config), overrides), env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in logs if "train/samples_per_s" in r][1:]
    return {"samples_per_s": statistics.median(r["train/samples_per_s"] for r in logs),
            "padding": statistics.fmean(r["train/padding"] for r in logs),
            "seq_len": statistics.fmean(r["train/seq_len"] for r in logs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--config", default="configs/stage1_tiny.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grouping-speed-") as scratch:
        shards = Path(scratch) / "shards"
        shutil.copytree(args.world / "shards" / "train", shards)
        subprocess.run([str(Path(sys.executable).parent / "fe-shards"), "lengths", str(shards)], check=True,
                       stdout=subprocess.DEVNULL)
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        for round_ in range(args.rounds):
            for grouping in results:
                figures = train(args.world, shards, Path(scratch) / f"run-{grouping}-{round_}", args.config,
                                args.nproc, args.steps, grouping)
                results[grouping].append(figures)
                print(f"round {round_} grouping {grouping:3}: {figures['samples_per_s']:.2f} samples/s, padding "
                      f"{figures['padding']:.3f}, mean padded row {figures['seq_len']:.1f} positions", flush=True)
    medians = {g: statistics.median(r["samples_per_s"] for r in runs) for g, runs in results.items()}
    padding = {g: statistics.fmean(r["padding"] for r in runs) for g, runs in results.items()}
    print(f"median samples/s: off {medians['off']:.2f}, on {medians['on']:.2f} (on / off {medians['on'] / medians['off']:.2f}x); "
          f"padding: off {padding['off']:.3f}, on {padding['on']:.3f}")


if __name__ == "__main__":
    main()
