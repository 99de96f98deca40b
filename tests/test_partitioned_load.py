"""The frozen LLM loaded straight into its ZeRO-3 partitions (2 CPU ranks, real DeepSpeed)."""

from __future__ import annotations

import json

from conftest import REPO, torchrun


def test_partitions_hold_the_checkpoint_and_compute_the_same_logits(assets, tmp_path):
    report = tmp_path / "report.json"
    proc = torchrun([str(REPO / "tests" / "dist" / "partitioned_load_check.py"), str(assets.llm), str(report)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads(report.read_text())
    assert result["unequal"] == [], "every weight equals the one in model.safetensors"
    assert result["tied"], "tied input/output embeddings stay one parameter"
    assert result["logits_diff"] == 0.0
    assert result["held"] <= result["total"] // 2 + result["count"], "a rank holds half the elements (+1 pad per tensor)"
    assert result["trainable"] == 0 and not result["training"]
