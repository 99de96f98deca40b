"""``fe-train demo`` as a new user runs it: stage 1 learns on voices it never heard (the README's claim).

The world is the tests' cached one (``--assets``), so this runs the demo's training and its verdict:
held-out spoken-QA accuracy up by ``fe_train.demo.MARGIN`` and the held-out eval loss ending below its start.
"""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, dist_env
from fe_train.demo import MARGIN
from fe_train.tracking.tracker import read_metrics


def test_demo_learns_on_heldout_voices(assets, tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "fe_train", "demo", "--out", str(out), "--assets", str(assets.root)],
                          env=dist_env(), cwd=REPO, capture_output=True, text=True, timeout=1800)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    evals = [r for r in read_metrics(out / "run" / "metrics.jsonl") if "eval/loss" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] > 0
    assert last["eval/spokenqa/accuracy"] >= first["eval/spokenqa/accuracy"] + MARGIN, (first, last)
    assert last["eval/loss"] < first["eval/loss"], (first, last)
    assert "held-out voices, spoken questions answered: before" in proc.stdout
    assert "stage 1 generalises to the held-out voices" in proc.stdout
    assert (out / "run" / "loss.png").is_file() and (out / "run" / "export" / "adapter.safetensors").is_file()
