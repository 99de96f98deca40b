"""On one GPU: fe-train's stages at the paper's shapes, in bf16, against the hardware and a plain loop.

    python bench/gpu_check.py OUT [--size paper|tiny] [--work DIR] [--bare PATH] [--items 1,2,...]

Random weights, no download: ``bench/gpu_world.py`` writes Whisper-large-v3-, Qwen2.5-7B- and Qwen2.5-0.5B-shaped
checkpoints and shards of realistic lengths to ``--work`` (about 20 GB at paper size), and every item trains
through ``fe-train train`` on one rank (the paper presets, ``train.global_batch_size`` = one micro-batch so each
logged step is one micro-batch). One line per item, also in ``OUT/results.jsonl`` (``OUT/logs.txt``: each run's
output); an item that fails prints why and the others still run:

    peak  the device's bf16 matmul rate (an 8192^3 product; 512^3 on a CPU): MFU is taken against it
    1     stage 1, ``zero3.json``: samples/s, TFLOP/s and MFU by fe-train's FLOP counter, peak memory beside
          ``fe-train plan``'s prediction for the same settings
    1r    stage 1 as its preset runs it, ``zero3_replicated.json`` (the LLM whole, like the plain loop)
    2     the plain PyTorch loop (``bench/bare_stage1.py``, the shared anchor) at the same micro-batch and tokens per
          sample: fe-train / bare, in samples/s and in TFLOP/s (the loop always encodes 30 s, as fe-train does)
    3     stage 1 with ``zero3_offload.json``: samples/s as a fraction of item 1
    4a    stage 2a (from item 1's adapter), 4b stage 3a: samples/s and peak memory
    5     the stage-1 loss of one fixed batch in bf16 and in fp32 (tiny shapes, every device)

``--size tiny`` runs every item at tiny shapes (on a CPU too: ``tests/test_gpu_check.py`` keeps it from rotting).
Steady-state figures are medians over the steps after ``--warmup``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from gpu_world import World, build_world  # noqa: E402

from fe_train import stages  # noqa: E402
from fe_train.config import Config  # noqa: E402
from fe_train.engine.memory import GIB, estimate, workload_for  # noqa: E402
from fe_train.tracking.tracker import read_metrics  # noqa: E402

BF16_AGREEMENT = 0.02
"""Item 5 passes when |bf16 - fp32| / fp32 of the first step's loss is within this."""


class ItemError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Check:
    def __init__(self, args):
        self.args, self.out, self.work = args, Path(args.out), Path(args.work)
        self.cuda = torch.cuda.is_available()
        self.device = "cuda" if self.cuda else "cpu"
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
        if not self.cuda:
            self.env.setdefault("DS_ACCELERATOR", "cpu")
        self.results: dict[str, dict] = {}
        self.peak_tflops = 0.0
        self.world: World | None = None
        self.tiny_world: World | None = None

    # -- running -------------------------------------------------------------------------------------------
    def log(self, name: str, text: str) -> None:
        with open(self.out / "logs.txt", "a") as stream:
            stream.write(f"\n===== {name} =====\n{text}\n")

    def record(self, item: str, line: str, **figures) -> None:
        self.results[item] = figures
        print(f"[{item}] {line}", flush=True)
        with open(self.out / "results.jsonl", "a") as stream:
            stream.write(json.dumps({"item": item, "line": line, **figures}) + "\n")

    def item(self, name: str, fn) -> None:
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one item's failure must not hide the others' figures
            self.record(name, f"FAILED after {time.perf_counter() - started:.0f} s: {exc}", failed=True)

    def run(self, name: str, cmd: list[str], timeout: float) -> str:
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.log(name, f"{cmd}\ntimed out after {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}"[-20000:])
            raise ItemError(f"timed out after {timeout:.0f} s") from None
        self.log(name, (" ".join(cmd) + "\n" + proc.stdout + proc.stderr)[-20000:])
        if proc.returncode:
            lines = (proc.stdout + proc.stderr).splitlines()
            why = [line for line in lines if line.startswith("error:") or re.match(r"^\w*(Error|Exception)\b", line)]
            raise ItemError(f"rc {proc.returncode}: {(why or lines or [''])[-1][:300]}")
        return proc.stdout

    def train(self, name: str, config: str, overrides: list[str], steps: int, timeout: float) -> list[dict]:
        """``fe-train train`` on one rank for ``steps`` logged micro-batch steps; the metrics it logged."""
        out = self.work / "runs" / name
        shutil.rmtree(out, ignore_errors=True)  # a rerun measures afresh
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(free_port()),
               "-m", "fe_train", "train", "--config", config, *overrides, f"run.output_dir={out}",
               "run.wandb_mode=disabled", "run.progress_bar=false", "train.log_every=1", "train.eval_every=0",
               "train.save_every=0", "data.eval_shards=", f"train.max_steps={steps}", f"run.peak_tflops={self.peak_tflops}"]
        self.run(name, cmd, timeout)
        return [r for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]

    def steady(self, records: list[dict]) -> dict:
        after = [r for r in records if r["step"] > self.args.warmup] or records
        skipped = records[-1].get("train/nonfinite_skipped", 0)
        if skipped:
            raise ItemError(f"{skipped} micro-batches had a non-finite loss: no backward, the figures would be wrong")
        med = lambda key: statistics.median(r.get(key, 0.0) for r in after)  # noqa: E731
        return {"samples_per_s": med("train/samples_per_s"), "tflops": med("train/tflops_per_s_per_rank"),
                "mfu": med("train/mfu"), "seq_len": statistics.mean(r["train/seq_len"] for r in after),
                "max_seq_len": max(r["train/seq_len"] for r in records), "padding": med("train/padding"),
                "mem_gib": max(r.get("train/gpu_mem_peak_gib", 0.0) for r in records), "loss": records[-1]["train/loss"]}

    # -- the world -----------------------------------------------------------------------------------------
    def config(self, stage: str) -> str:
        return f"configs/{stage}_{'paper' if self.args.size == 'mid' else self.args.size}.yaml"

    def model_overrides(self, world: World) -> list[str]:
        return [f"model.encoder_path={world.path('whisper')}", f"model.llm_path={world.path('llm')}",
                f"train.global_batch_size={self.args.micro}", f"train.micro_batch_size={self.args.micro}",
                f"data.num_workers={self.args.workers}"]

    def build(self) -> None:
        started = time.perf_counter()
        self.world = build_world(self.work / f"world_{self.args.size}", self.args.size, self.device)
        self.tiny_world = self.world if self.args.size == "tiny" else build_world(self.work / "world_tiny", "tiny", "cpu")
        print(f"[world] {self.args.size} world in {self.world.root} ({time.perf_counter() - started:.0f} s)", flush=True)

    # -- the items -----------------------------------------------------------------------------------------
    def peak(self) -> None:
        n, dtype = (8192, torch.bfloat16) if self.cuda else (512, torch.bfloat16)
        a, b = (torch.randn(n, n, device=self.device, dtype=dtype) for _ in range(2))
        for _ in range(3):
            a @ b
        if self.cuda:
            torch.cuda.synchronize()
        reps, started = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        if self.cuda:
            torch.cuda.synchronize()
        self.peak_tflops = 2 * n**3 * reps / (time.perf_counter() - started) / 1e12
        name = torch.cuda.get_device_name() if self.cuda else "cpu"
        self.record("peak", f"{name}: bf16 matmul {n}^3 {self.peak_tflops:.1f} TFLOP/s (MFU below is against this)",
                    device=name, tflops=self.peak_tflops)

    def planned_gib(self, overrides: list[str], ds_config: str, max_seq_len: float) -> tuple[float, float]:
        cfg = Config.load(self.config("stage1"), [*overrides, f"engine.ds_config={ds_config}"])
        plans = {p.ds_config: p for p in estimate(workload_for(cfg, 1, int(round(max_seq_len)), stages.recipe("align")))}
        plan = plans[Path(ds_config).name]
        return plan.gpu_bytes / GIB, plan.host_bytes / GIB

    def stage1(self, item: str, ds_config: str, steps: int, vs: dict | None = None) -> dict:
        """Stage 1 under ``ds_config``; ``vs``: item 1's figures, to report samples/s as a fraction of them."""
        overrides = [*self.model_overrides(self.world), f"data.train_shards={self.world.shards('stage1')}",
                     "train.precision=bf16", f"engine.ds_config={ds_config}"]
        fig = self.steady(self.train(f"stage1_{item}", self.config("stage1"), overrides, steps, self.args.timeout))
        planned, host = self.planned_gib(overrides, ds_config, fig["max_seq_len"])
        fig.update(planned_gib=planned, planned_host_gib=host, mem_over_plan=fig["mem_gib"] / planned if planned else 0.0)
        host_note = f", host {host:.1f} GiB" if host else ""
        line = (f"stage 1 {Path(ds_config).name} bf16 micro {self.args.micro} x {fig['seq_len']:.0f} positions "
                f"(padding {fig['padding']:.0%}): {fig['samples_per_s']:.2f} samples/s, {fig['tflops']:.4g} TFLOP/s, "
                f"MFU {fig['mfu']:.3f}; peak GPU memory {fig['mem_gib']:.1f} GiB vs planner {planned:.1f} GiB{host_note} "
                f"({fig['mem_over_plan']:.2f}x)")
        if vs and vs.get("samples_per_s"):
            fig["vs_on_device"] = fig["samples_per_s"] / vs["samples_per_s"]
            line += f"; {fig['vs_on_device']:.2f}x the samples/s of item 1"
        self.record(item, line, **fig)
        return fig

    def bare(self) -> None:
        script = Path(self.args.bare)
        if not script.is_file():
            raise ItemError(f"bare loop not found at {script} (pass --bare)")
        mine = self.results.get("1")
        if not mine or mine.get("failed"):
            raise ItemError("needs item 1's figures")
        speech_tokens = self.world.shapes.whisper["max_source_positions"] // 5
        text_tokens = max(8, int(round(mine["seq_len"])) - speech_tokens)
        cmd = [sys.executable, str(script), "--size", self.args.size, "--batch", str(self.args.micro),
               "--text-tokens", str(text_tokens), "--steps", str(self.args.steps), "--warmup", str(self.args.warmup),
               "--peak-tflops", str(self.peak_tflops)]
        text = self.run("bare", cmd, self.args.timeout)
        found = dict(re.findall(r"(samples/s|TFLOP/s|MFU|peak_mem_GiB)=([0-9.na]+)", text))
        if "samples/s" not in found:
            raise ItemError(f"no figures in its output: {text[-300:]!r}")
        bare = {k: float(v) for k, v in found.items()}
        bare["TFLOP/s"] = bare["MFU"] * self.peak_tflops  # it prints TFLOP/s to 0.1: too coarse at tiny shapes
        ratio, flop_ratio = mine["samples_per_s"] / bare["samples/s"], mine["tflops"] / max(bare["TFLOP/s"], 1e-12)
        self.record("2", f"bare loop (LLM replicated, {speech_tokens}+{text_tokens} tokens/sample): {bare['samples/s']:.2f} "
                    f"samples/s, {bare['TFLOP/s']:.4g} TFLOP/s, MFU {bare['MFU']:.3f}, peak {bare['peak_mem_GiB']} GiB; "
                    f"fe-train zero3.json / bare: {ratio:.2f}x samples/s, {flop_ratio:.2f}x TFLOP/s"
                    + (self.replicated_ratio(bare) or ""), bare=bare, ratio=ratio, flop_ratio=flop_ratio)

    def replicated_ratio(self, bare: dict) -> str | None:
        rep = self.results.get("1r")
        if not rep or rep.get("failed"):
            return None
        return (f"; zero3_replicated.json / bare: {rep['samples_per_s'] / bare['samples/s']:.2f}x samples/s, "
                f"{rep['tflops'] / max(bare['TFLOP/s'], 1e-12):.2f}x TFLOP/s")

    def offload(self) -> None:
        base = self.results.get("1") or {}
        self.stage1("3", "ds_configs/zero3_offload.json", self.args.warmup + max(2, self.args.steps // 2), vs=base)

    def stage2a(self) -> None:
        adapter = self.work / "runs" / "stage1_1" / "export" / "adapter.safetensors"
        if not adapter.is_file():
            raise ItemError(f"needs item 1's exported adapter ({adapter})")
        overrides = [*self.model_overrides(self.world), f"data.train_shards={self.world.shards('ser')}",
                     "train.precision=bf16", f"train.init_adapter={adapter}"]
        self.preset("4a", "stage2a", overrides, "positions")

    def stage3a(self) -> None:
        world = self.world
        overrides = [f"model.llm_path={world.path('llm')}", f"decoder.path={world.path('decoder')}",
                     f"decoder.n_units={world.shapes.n_units}", f"data.train_shards={world.shards('units')}",
                     f"train.global_batch_size={self.args.micro}", f"train.micro_batch_size={self.args.micro}",
                     f"data.num_workers={self.args.workers}", "train.precision=bf16"]
        self.preset("4b", "stage3a", overrides, "LLM positions")

    def preset(self, item: str, stage: str, overrides: list[str], positions: str) -> None:
        """A few steps of ``stage``'s preset: its samples/s, TFLOP/s, MFU and peak memory."""
        fig = self.steady(self.train(stage, self.config(stage), overrides, self.args.warmup + self.args.steps, self.args.timeout))
        self.record(item, f"{stage} preset, micro {self.args.micro} x {fig['seq_len']:.0f} {positions}: "
                    f"{fig['samples_per_s']:.2f} samples/s, {fig['tflops']:.4g} TFLOP/s, MFU {fig['mfu']:.3f}, "
                    f"peak GPU memory {fig['mem_gib']:.1f} GiB", **fig)

    def bf16_agreement(self) -> None:
        world, losses = self.tiny_world, {}
        for precision in ("fp32", "bf16"):
            overrides = [*self.model_overrides(world), f"data.train_shards={world.shards('stage1')}",
                         f"train.precision={precision}", "train.global_batch_size=4", "train.micro_batch_size=4"]
            records = self.train(f"agreement_{precision}", "configs/stage1_tiny.yaml", overrides, 1, self.args.timeout)
            losses[precision] = records[0]["train/loss"]
        rel = abs(losses["bf16"] - losses["fp32"]) / losses["fp32"]
        verdict = "ok" if rel <= BF16_AGREEMENT else f"OFF (bar {BF16_AGREEMENT})"
        self.record("5", f"stage-1 first-step loss, tiny shapes on {self.device}: fp32 {losses['fp32']:.5f}, "
                    f"bf16 {losses['bf16']:.5f}, relative difference {rel:.4f} {verdict}", rel=rel, **losses)


ITEMS = ("peak", "1", "1r", "2", "5", "4a", "4b", "3")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for results.jsonl and logs.txt")
    ap.add_argument("--size", choices=("paper", "tiny", "mid"), default="paper",
                    help="mid: the paper's widths and presets with 1-2 layers, to try the paper path on a CPU")
    ap.add_argument("--work", default="/tmp/fe_gpu_check", help="models, shards and runs (about 20 GB at paper size)")
    ap.add_argument("--bare", default=str(REPO / "bench" / "bare_stage1.py"), help="the plain loop to compare with")
    ap.add_argument("--items", default=",".join(ITEMS), help=f"comma-separated, run in this order: {','.join(ITEMS)}")
    ap.add_argument("--micro", type=int, default=4, help="micro-batch (the paper presets' 4)")
    ap.add_argument("--steps", type=int, default=6, help="measured steps per item")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4, help="data.num_workers")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per run")
    args = ap.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    check = Check(args)
    check.peak()
    check.item("world", check.build)
    if check.world is None:
        return 1
    steps = args.warmup + args.steps
    run = {"1": lambda: check.stage1("1", "ds_configs/zero3.json", steps), "2": check.bare, "5": check.bf16_agreement,
           "4a": check.stage2a, "4b": check.stage3a, "3": check.offload,
           "1r": lambda: check.stage1("1r", "ds_configs/zero3_replicated.json", steps)}
    for name in args.items.split(","):
        if name != "peak":
            check.item(name, run[name])
    failed = [k for k, v in check.results.items() if v.get("failed")]
    print(f"done: {len(check.results)} items, failed: {failed or 'none'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
