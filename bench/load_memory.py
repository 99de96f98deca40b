"""Peak host memory per rank when the frozen LLM loads under ZeRO-3 (zero.Init) vs a plain load.

    python bench/load_memory.py [--hidden 1024 --layers 16]

Saves a random Qwen2-shaped LLM (about 0.3B parameters by default, fp32) with save_pretrained, then launches
three 2-rank torchrun jobs that load it: `plain` (every rank a full copy, every weight read once), `zero3`
(transformers' own path inside an HfDeepSpeedConfig: zero.Init) and `partitions` (fe_train.engine.partitioned_load:
built partitioned, each rank reads only its slices). Each rank reports its peak RSS above its RSS before the load;
the partitioned loads are checked equal to the weights on disk. Goal: <= 1/world + 0.25 of plain.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

RANK_SCRIPT = r"""
import json, os, resource, sys, torch
from fe_train.config import Config
from fe_train.engine import ds_config
from fe_train.engine.build import PartitionedBuild, init_distributed
from fe_train.launch.env import from_environ
from fe_train.model.frozen_llm import load_llm
mode, path, out = sys.argv[1:4]
launch = from_environ()
cfg = Config.load(None, ["engine.ds_config=ds_configs/zero3.json", "train.precision=fp32", "train.global_batch_size=2",
                         "train.micro_batch_size=1"])
init_distributed(launch, cfg)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "zero3":
    with PartitionedBuild(ds_config.resolve(cfg, launch.world_size)):
        llm = load_llm(path, torch.float32)
elif mode == "partitions":
    from fe_train.engine.partitioned_load import load_causal_lm
    llm = load_causal_lm(path, ds_config.resolve(cfg, launch.world_size), torch.float32, launch.rank)
else:
    llm = load_llm(path, torch.float32)
    for p in llm.parameters():  # a training rank reads every weight: make the memory-mapped pages resident
        float(p.detach().sum())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kept = sum(p.numel() for p in llm.parameters()) * 4
if mode != "plain":  # the weights must be exactly those on disk
    import deepspeed
    from safetensors.torch import load_file
    disk = load_file(os.path.join(path, "model.safetensors"))
    for name, p in llm.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):
            assert torch.equal(p.data.cpu(), disk[name]), name
    del disk
with open(f"{out}.{launch.rank}", "w") as stream:
    json.dump({"peak_above_start_mib": (peak - before) / 1024, "param_bytes_kept_mib": kept / 2**20}, stream)
torch.distributed.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    config = Qwen2Config(vocab_size=32000, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=4)
    model = Qwen2ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(work / "llm")
    del model
    script = work / "rank.py"
    script.write_text(RANK_SCRIPT)
    results = {}
    for mode in ("plain", "zero3", "partitions"):
        env = dict(os.environ, DS_ACCELERATOR=os.environ.get("DS_ACCELERATOR", "cpu"), OMP_NUM_THREADS="1",
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(script), mode, str(work / "llm"), str(work / mode)]
        subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        results[mode] = [json.loads((work / f"{mode}.{rank}").read_text()) for rank in range(2)]
    plain = max(r["peak_above_start_mib"] for r in results["plain"])
    zero3 = max(r["peak_above_start_mib"] for r in results["zero3"])
    parts = max(r["peak_above_start_mib"] for r in results["partitions"])
    summary = {"params": params, "fp32_mib": params * 4 / 2**20, "plain_peak_mib": plain, "hf_zero3_peak_mib": zero3,
               "partitions_peak_mib": parts, "hf_zero3_ratio": zero3 / plain, "partitions_ratio": parts / plain,
               "goal": 1 / 2 + 0.25, "per_rank": results}
    print(f"LLM {params / 1e6:.0f}M params ({params * 4 / 2**20:.0f} MiB fp32), 2 ranks, peak RSS above start, worst rank: "
          f"plain {plain:.0f} MiB; transformers under zero.Init {zero3:.0f} MiB ({zero3 / plain:.2f}x); "
          f"fe-train partition loader {parts:.0f} MiB ({parts / plain:.2f}x; goal <= 0.75x)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
