"""Stage 2 end to end on 2 CPU processes with real DeepSpeed ZeRO-3 (gloo): SER pre-training on held-out
voices with the review's controls, the exports scored again through ``fe-train eval ser``, and stage 2b
on pseudo pairs. The held-out folds are ``fe_train.fixtures.ser_world.FOLDS``, fixed before any result."""

from __future__ import annotations

import json
import math
import time

import pytest

from conftest import REPO, bf16_against_fp32, torchrun
from fe_train.fixtures.ser_world import FOLDS
from fe_train.tracking.tracker import read_metrics

CHECK = str(REPO / "tests" / "dist" / "stage2_check.py")
CHANCE = 1 / 5


def chance_band(clips: int) -> tuple[float, float]:
    """Accuracy of a label word drawn uniformly at random: 0.2 +- 4 standard deviations of a binomial mean."""
    spread = 4 * math.sqrt(CHANCE * (1 - CHANCE) / clips)
    return CHANCE - spread, CHANCE + spread


def stage2_overrides(ser_assets, out, fold: int, **extra) -> list[str]:
    values = {
        "model.encoder_path": ser_assets.whisper, "model.llm_path": ser_assets.llm, "train.init_adapter": ser_assets.adapter,
        "data.train_shards": ser_assets.train_shards(fold), "data.eval_shards": ser_assets.heldout_shards(fold),
        "run.output_dir": out, "run.progress_bar": "false", "run.wandb_mode": "disabled", **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def train_ser(ser_assets, tmp_path_factory, fold: int, **extra):
    out = tmp_path_factory.mktemp(f"stage2a-fold{fold}") / "run"
    result = out.parent / "report.json"
    started = time.perf_counter()
    proc = torchrun([CHECK, str(result), str(REPO / "configs" / "stage2a_tiny.yaml"),
                     *stage2_overrides(ser_assets, out, fold, **extra)], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads(result.read_text())
    report["wall_s"] = time.perf_counter() - started
    return out, report


@pytest.fixture(scope="module")
def fold0(ser_assets, tmp_path_factory):
    """The preset as it is (30 epochs, chosen on the tuning voices: docs/stage2.md)."""
    return train_ser(ser_assets, tmp_path_factory, 0)


def test_ser_on_heldout_voices_word_and_head(fold0):
    _, report = fold0
    score = report["extractor"]
    print(f"fold 0 ({', '.join(FOLDS[0])}), the preset: word {score['word_accuracy']:.3f} head {score['head_accuracy']:.3f} "
          f"on {score['clips']} clips, {report['wall_s']:.0f} s")
    assert score["clips"] == 3 * 5 * 6
    assert score["word_accuracy"] >= 0.80 and score["head_accuracy"] >= 0.80, score


def test_controls_random_label_is_chance_and_gold_label_is_right(fold0):
    _, report = fold0
    low, high = chance_band(report["random_label"]["clips"])
    assert low <= report["random_label"]["word_accuracy"] <= high, report["random_label"]
    assert report["gold_label"]["word_accuracy"] >= 0.95, report["gold_label"]
    # The SER head reads the extractor, not the prompt: the controls do not move it. With the transcript as
    # content the extractor reads the clip passed as a separate emotion clip: the same vectors.
    for control in ("random_label", "gold_label", "transcript"):
        assert report[control]["clips"] == report["extractor"]["clips"] and report[control]["skipped"] == {}, control
        assert report[control]["head_accuracy"] == report["extractor"]["head_accuracy"], control


def test_frozen_parts_bit_identical_and_optimizer_state_only_for_extractor_and_head(fold0):
    _, report = fold0
    assert report["trainable_modules"] == ["emotion_extractor", "ser_head"]
    assert report["frozen_checked"] > 20 and report["frozen_mismatched"] == []
    assert report["frozen_modules"] == ["adapter", "encoder", "llm"]
    assert report["optimizer_tracks_only_trainable"]
    assert report["optimizer_tracked_elems"] == report["trainable_elems"]
    padding = report["fp32_partition_elems"] - report["trainable_elems"]
    assert 0 <= padding < report["world_size"] * report["trainable_tensors"]
    assert report["optimizer_state_elems"] == 2 * report["fp32_partition_elems"]


def test_eval_ser_scores_the_exports_as_the_run_scored_them(ser_assets, fold0, tmp_path):
    """``fe-train eval ser --ckpt RUN`` (the run's exports, placed partitioned over 2 ranks like the training engine)
    scores what the run scored with the same evaluation in its own process."""
    out, report = fold0
    proc = torchrun(["-m", "fe_train", "eval", "ser", "--ckpt", str(out), "--shards", str(ser_assets.heldout_shards(0)),
                     "--out", str(tmp_path), "eval.control=extractor", "eval.placement=zero3", "run.progress_bar=false"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    result = json.loads((tmp_path / "ser.json").read_text())
    assert result["clips"] == report["extractor"]["clips"]
    assert result["readers"]["word"]["confusion"] == report["extractor"]["confusion"]
    assert result["readers"]["head"]["overall"]["wa"]["value"] == report["extractor"]["head_accuracy"]


def run_stage2b(ser_assets, tmp_path, **extra) -> tuple[dict, list[float]]:
    out = tmp_path / "run"
    result = tmp_path / "report.json"
    overrides = stage2_overrides(ser_assets, out, 0, **{"emotion.pair_shards": ser_assets.instructions,
                                                        "train.log_every": 2, "train.max_steps": 32, **extra})
    proc = torchrun([CHECK, str(result), str(REPO / "configs" / "stage2b_tiny.yaml"), *overrides])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads(result.read_text())
    assert report["steps"] == 32 and report["frozen_mismatched"] == []
    assert report["trainable_modules"] == ["emotion_extractor", "ser_head"]
    assert report["optimizer_tracked_elems"] == report["trainable_elems"]
    losses = [r["train/loss"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses), losses
    return report, losses


def quarters(losses: list[float]) -> float:
    """Mean of the last four logged losses over the first four's (each logged loss: 2 batches of other questions)."""
    return sum(losses[-4:]) / sum(losses[:4])


def test_stage2b_pseudo_pairs_train_a_fresh_extractor(ser_assets, tmp_path):
    """2b's objective reaches the extractor through the frozen LLM: from a fresh extractor its loss falls (lr 3e-3;
    at the preset's 3e-4 32 steps are too few to show it). Measured: 0.74-0.86 of the start (docs/stage2.md)."""
    _, losses = run_stage2b(ser_assets, tmp_path, **{"train.lr": 3e-3})
    assert quarters(losses) < 0.95, losses


def test_stage2b_from_2a_keeps_ser(ser_assets, fold0, tmp_path):
    """The recipe's 2b, from fold 0's 2a exports: the SER examples mixed in keep SER. Its training loss is already
    near what the extractor can reach in this world (the reply's answer part comes from the speech) and moves with
    the batches' questions more than with training (last-4 over first-4 logged losses 0.86-1.22 across worlds), so
    it is not a bar here; that 2b's objective trains the extractor is the fresh-extractor test's."""
    out2a, report2a = fold0
    report, _ = run_stage2b(ser_assets, tmp_path, **{
        "emotion.init_extractor": out2a / "export" / "emotion_extractor.safetensors",
        "emotion.init_ser_head": out2a / "export" / "ser_head.safetensors"})
    assert report["extractor"]["head_accuracy"] >= report2a["extractor"]["head_accuracy"] - 0.1
    assert report["extractor"]["word_accuracy"] >= report2a["extractor"]["word_accuracy"] - 0.1


@pytest.mark.parametrize("stage", ["2a", "2b"])
def test_bf16_trains_like_fp32(ser_assets, tmp_path, stage):
    """train.precision=bf16 (the paper's): the extractor and the SER head train in bf16 beside the bf16 LLM and
    encoder, and the first step's loss (same weights, same batch) is within 2% of fp32's."""
    extra = {} if stage == "2a" else {"emotion.pair_shards": ser_assets.instructions}
    config = str(REPO / "configs" / f"stage{stage}_tiny.yaml")
    fp32, bf16, losses = bf16_against_fp32(config, stage2_overrides(ser_assets, tmp_path / "unused", 0, **extra), tmp_path)
    print(f"stage {stage}: first-step loss fp32 {fp32:.4f} bf16 {bf16:.4f}; bf16 steps {losses}")
    assert sorted(losses) == [1, 2, 3] and all(math.isfinite(v) for v in losses.values()), losses
    assert abs(bf16 - fp32) <= 0.02 * fp32, (fp32, bf16)


@pytest.mark.slow
def test_ser_three_folds_mean_at_least_85_percent(ser_assets, tmp_path_factory):
    """The full tiny preset on every fold of held-out voices; every fold is printed."""
    started = time.perf_counter()
    scores = []
    for fold in range(len(FOLDS)):
        _, report = train_ser(ser_assets, tmp_path_factory, fold)
        score = report["extractor"]
        scores.append(score)
        print(f"fold {fold} ({', '.join(FOLDS[fold])}): word {score['word_accuracy']:.3f} head {score['head_accuracy']:.3f} "
              f"random-label {report['random_label']['word_accuracy']:.3f} gold-label {report['gold_label']['word_accuracy']:.3f} "
              f"({report['wall_s']:.0f} s)")
    word = sum(s["word_accuracy"] for s in scores) / len(scores)
    head = sum(s["head_accuracy"] for s in scores) / len(scores)
    print(f"mean over {len(FOLDS)} folds: word {word:.3f} head {head:.3f}; {time.perf_counter() - started:.0f} s")
    assert word >= 0.85 and head >= 0.85
