"""Resume on another world size through DeepSpeed's universal checkpoint (stage 1, real ZeRO-3 on CPU, gloo).

A run on ``first`` ranks saves at step 71 of the 72 in an epoch (1152 samples, global batch 16) and goes on to
the end; a copy of that checkpoint is resumed on ``second`` ranks (converted to the universal form by the
product, rank 0) and trains the last step. The epoch's last 16 samples form the same two micro-batches of 8 on
1 and on 2 ranks, so the resumed step sees exactly the data the uninterrupted one saw, and its loss and update
must equal the uninterrupted run's up to float rounding. The learning rate is constant after the warm-up, so
the step after the resume moves the weights as much as any other.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import REPO, stage1_overrides, torchrun
from fe_train.tracking.tracker import read_metrics

CONFIG = str(REPO / "configs" / "stage1_tiny.yaml")
SAVED = 71
TAG = f"step{SAVED:08d}"
MOMENTS = ("fp32", "exp_avg", "exp_avg_sq")


def _run(assets, out, dumps, nproc: int, resume: bool):
    dumps.mkdir(parents=True)
    proc = torchrun([str(REPO / "tests" / "dist" / "universal_check.py"), str(dumps), "1" if resume else "0", CONFIG,
                     *stage1_overrides(assets, out, **{"train.epochs": 1, "train.save_every": SAVED,
                                                       "train.eval_every": SAVED, "train.log_every": 1,
                                                       "train.min_lr_ratio": 1.0})], nproc=nproc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {(r["step"], key): value for r in read_metrics(out / "metrics.jsonl") for key, value in r.items()
            if key in ("train/loss", "eval/loss")}


def _universal_tensor(path):
    value = torch.load(path, map_location="cpu", weights_only=False)
    return value["param"] if isinstance(value, dict) else value  # older DeepSpeed wrapped it in a dict


@pytest.mark.parametrize("first,second", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_universal_resume_continues_the_state_and_the_loss(assets, tmp_path, first, second):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    before = _run(assets, tmp_path / "before", tmp_path / "before_dumps", first, resume=False)
    checkpoints = tmp_path / "after" / "checkpoints"
    shutil.copytree(tmp_path / "before" / "checkpoints" / TAG, checkpoints / TAG)
    (checkpoints / "latest").write_text(TAG)
    after = _run(assets, tmp_path / "after", tmp_path / "after_dumps", second, resume=True)

    # (a) The state the resumed engine holds right after loading is the state the first run saved, bit for bit:
    # as that run's engine held it, as DeepSpeed's universal files and as zero_to_fp32 give it.
    saved = torch.load(tmp_path / "before_dumps" / f"saved{SAVED}.pt")
    loaded = torch.load(tmp_path / "after_dumps" / "loaded.pt")
    universal = checkpoints / "universal" / TAG / "zero"
    recovered = get_fp32_state_dict_from_zero_checkpoint(str(tmp_path / "before" / "checkpoints"), tag=TAG)
    names = sorted(loaded["params"])
    assert names and all(name.startswith("adapter.") for name in names)
    assert names == sorted(saved["params"]) == sorted(p.name for p in universal.iterdir() if p.is_dir())
    assert names == sorted(recovered)
    for name in names:
        for moment in MOMENTS:
            value = loaded["params"][name][moment]
            assert torch.equal(value, saved["params"][name][moment]), (name, moment)
            # ZeRO-3's universal files hold each parameter flattened.
            assert torch.equal(value.flatten(), _universal_tensor(universal / name / f"{moment}.pt").flatten()), (name, moment)
        assert torch.equal(loaded["params"][name]["fp32"], recovered[name].float()), name
    optimizer = torch.load(universal / "optimizer_state.pt", map_location="cpu", weights_only=False)
    universal_steps = [float(s["step"]) for s in optimizer["optimizer_state_dict"]["state"].values()]
    assert loaded["optimizer_steps"] == saved["optimizer_steps"] == universal_steps == [float(SAVED)]
    assert loaded["trainer_step"] == saved["trainer_step"] == SAVED

    # (b) The loss is continuous: the eval loss at the resume point, measured by the first run after its step 35
    # and by the resumed run before its first step, and the loss of the step after it, as the uninterrupted run's.
    print(f"{first}->{second} ranks: eval loss at step {SAVED} {before[SAVED, 'eval/loss']:.6f} before, "
          f"{after[SAVED, 'eval/loss']:.6f} resumed; train loss at step {SAVED + 1} {before[SAVED + 1, 'train/loss']:.6f} "
          f"uninterrupted, {after[SAVED + 1, 'train/loss']:.6f} resumed")
    assert before[0, "eval/loss"] - before[SAVED, "eval/loss"] > 0.2, "the first run learned something to keep"
    for key in ((SAVED, "eval/loss"), (SAVED + 1, "train/loss"), (SAVED + 1, "eval/loss")):
        assert after[key] == pytest.approx(before[key], rel=1e-5), key
    assert (SAVED, "train/loss") not in after, "the resumed run trains only the steps after the checkpoint"
    # The update of that step used the loaded moments: the weights after it are the uninterrupted run's.
    final_before = torch.load(tmp_path / "before_dumps" / "final.pt")
    final_after = torch.load(tmp_path / "after_dumps" / "final.pt")
    for name in names:
        moved = (final_before["params"][name]["fp32"] - saved["params"][name]["fp32"]).abs().max()
        assert moved > 0, name
        for moment in MOMENTS:
            torch.testing.assert_close(final_after["params"][name][moment], final_before["params"][name][moment],
                                       rtol=1e-4, atol=1e-3 * float(moved) if moment == "fp32" else 1e-9)
