"""``bench/gpu_check.py``, the one-GPU check of issue 20, dry-run at tiny shapes on the CPU so that it never rots.

Every item runs through the same code as on a GPU (``fe-train train`` on one rank with the presets, the plain
loop, the planner); the figures mean nothing here, but each must be there and be a number, and item 5 (bf16
against fp32 on one batch) must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, dist_env

sys.path.insert(0, str(REPO / "bench"))
from gpu_check import BF16_AGREEMENT, ITEMS  # noqa: E402


@pytest.mark.slow  # slow tier: about 3.5 min of CPU here (the default tier keeps under 40 min)
def test_gpu_check_dry_run_prints_every_item(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", str(out), "--size", "tiny", "--work", str(tmp_path / "work"),
                           "--steps", "2", "--warmup", "1", "--workers", "1"],
                          env=dist_env(), cwd=REPO, capture_output=True, text=True, timeout=1200)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (out / "logs.txt").read_text()[-4000:]
    results = {r["item"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(ITEMS) <= set(results), sorted(results)
    assert not [r for r in results.values() if r.get("failed")]
    for item in ("1", "1r", "3", "4a", "4b"):
        assert results[item]["samples_per_s"] > 0 and results[item]["tflops"] > 0 and results[item]["mfu"] > 0, results[item]
    for item in ("1", "1r", "3"):
        assert results[item]["planned_gib"] > 0 and results[item]["seq_len"] > 0, results[item]
    assert results["3"]["planned_host_gib"] > 0 and 0 < results["3"]["vs_on_device"]
    assert results["2"]["bare"]["samples/s"] > 0 and results["2"]["ratio"] > 0
    assert results["5"]["rel"] <= BF16_AGREEMENT and results["5"]["fp32"] > 0
    for item in ITEMS:
        assert f"[{item}] " in proc.stdout
