"""``fe-train eval ablate --task ser`` on a stage-2a checkpoint: the extractor's soft token against the label controls.

The review's controls on the same weights and the same held-out voices (fold 0 of
``fe_train.fixtures.ser_world``): the gold label word in ``<emotion>`` scores at least
what the extractor's soft token does, a random label word scores chance (1/5).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import REPO, torchrun
from fe_train.cli import train_main
from fe_train.config import EMOTIONS

CHANCE = 1 / len(EMOTIONS)


def chance_band(clips: int) -> tuple[float, float]:
    """Accuracy of a label word drawn uniformly at random: 0.2 +- 4 standard deviations of a binomial mean."""
    spread = 4 * math.sqrt(CHANCE * (1 - CHANCE) / clips)
    return CHANCE - spread, CHANCE + spread


@pytest.fixture(scope="module")
def stage2a_runs(ser_assets, tmp_path_factory):
    """Stage 2a on fold 0 (12 epochs, 2 ranks), and the stage-1 adapter of the SER world as a run directory."""
    root = tmp_path_factory.mktemp("ablate")
    run = root / "stage2a"
    values = {"model.encoder_path": ser_assets.whisper, "model.llm_path": ser_assets.llm,
              "train.init_adapter": ser_assets.adapter, "data.train_shards": ser_assets.train_shards(0),
              "data.eval_shards": "", "train.epochs": 12, "run.output_dir": run, "run.progress_bar": "false",
              "run.wandb_mode": "disabled"}
    proc = torchrun(["-m", "fe_train", "train", "--config", str(REPO / "configs" / "stage2a_tiny.yaml"),
                     *(f"{k}={v}" for k, v in values.items())], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    stage1 = root / "stage1"  # the fixture trained the adapter with stage 1's objective; here it is a run's export
    (stage1 / "export").mkdir(parents=True)
    shutil.copy(ser_assets.adapter, stage1 / "export" / "adapter.safetensors")
    shutil.copy(run / "config.yaml", stage1 / "config.yaml")
    return stage1, run


@pytest.mark.slow
def test_gold_label_at_least_extractor_and_random_label_at_chance(ser_assets, stage2a_runs, tmp_path):
    stage1, run = stage2a_runs
    assert train_main(["eval", "ablate", "--task", "ser", "--ckpt", str(stage1), "--ckpt", str(run),
                       "--shards", str(ser_assets.heldout_shards(0) / "*.tar"), "--out", str(tmp_path),
                       "eval.controls=[extractor,gold_label,random_label]",
                       "eval.max_new_tokens=4", "eval.batch_size=16", "eval.bootstrap_resamples=200",
                       "run.progress_bar=false"]) == 0
    table = json.loads((tmp_path / "ablation.json").read_text())["controls"]
    print(json.dumps(table, indent=1))
    extractor, gold, random = table["extractor"], table["gold_label"], table["random_label"]
    assert extractor["items"] == gold["items"] == random["items"] > 0
    assert extractor["head/wa"] == gold["head/wa"] == random["head/wa"]  # the prompt does not change what the head hears
    assert gold["word/wa"] >= extractor["word/wa"] and gold["word/wa"] >= extractor["head/wa"]
    low, high = chance_band(random["items"])
    assert low <= random["word/wa"] <= high
    assert extractor["word/wa"] > high  # the trained extractor is well above chance on held-out voices
