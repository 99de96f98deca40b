"""``fe-train demo`` as a new user runs it: stage 1 generalises to voices and questions it never heard (the
README's claim).

The world is the tests' cached one (``--assets``), so this runs the demo's training and its verdict: spoken-QA
accuracy on held-out voices and questions at least ``SHARE_OF_TRANSCRIPT`` of the frozen LLM's on their
transcripts, and the held-out eval loss down by ``LOSS_DROP``.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO, dist_env
from fe_train.demo import LOSS_DROP, SHARE_OF_TRANSCRIPT
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
    transcript = json.loads((out / "transcript" / "spokenqa.json").read_text())
    assert transcript["items"] == last["eval/spokenqa/items"] and transcript["accuracy"]["value"] >= 0.9
    assert last["eval/spokenqa/accuracy"] >= SHARE_OF_TRANSCRIPT * transcript["accuracy"]["value"], (first, last)
    assert last["eval/spokenqa/accuracy"] > first["eval/spokenqa/accuracy"], (first, last)
    assert last["eval/loss"] <= (1 - LOSS_DROP) * first["eval/loss"], (first, last)
    assert "held-out voices and questions, answered from speech: before" in proc.stdout
    assert "stage 1 generalises to held-out voices and questions" in proc.stdout
    assert (out / "run" / "loss.png").is_file() and (out / "run" / "export" / "adapter.safetensors").is_file()
