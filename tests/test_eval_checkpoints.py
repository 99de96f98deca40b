"""``--ckpt``: runs of separate stages make one model config; bad checkpoints get one-line errors."""

from __future__ import annotations

import pytest
import yaml

from fe_train.errors import UserError
from fe_train.eval.checkpoints import load_config, read_run


def _run(root, tree: dict, exports: list[str]):
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(tree))
    (root / "export").mkdir()
    for name in exports:
        if name == "decoder":
            (root / "export" / name).mkdir()
        else:
            (root / "export" / f"{name}.safetensors").write_bytes(b"")
    return root


@pytest.fixture
def runs(tmp_path):
    model = {"llm_path": "/m/llm", "encoder_path": "/m/whisper", "adapter_stack_frames": 10}
    stage1 = _run(tmp_path / "s1", {"model": model, "prompt": {"system": "helpful"}, "train": {"stage": "align"}}, ["adapter"])
    stage2 = _run(tmp_path / "s2", {"model": {**model, "adapter_stack_frames": 10}, "prompt": {"system": "empathetic"},
                                    "train": {"stage": "ser", "init_adapter": str(stage1 / "export" / "adapter.safetensors")}},
                  ["emotion_extractor", "ser_head"])
    stage3 = _run(tmp_path / "s3", {"model": {"llm_path": "/m/llm"}, "prompt": {"system": "helpful", "user_text": "{text}"},
                                    "train": {"stage": "decoder_pretrain"}, "decoder": {"n_units": 50}}, ["decoder", "fusion"])
    return stage1, stage2, stage3


def test_union_of_stage_runs(runs):
    stage1, stage2, stage3 = runs
    cfg, exports = load_config([str(stage1), str(stage2 / "export"), str(stage3)], overrides=["eval.batch_size=3"])
    assert sorted(exports) == ["adapter", "decoder", "emotion_extractor", "fusion", "ser_head"]
    assert cfg.train.init_adapter == str(stage1 / "export" / "adapter.safetensors")
    assert cfg.emotion.init_extractor == str(stage2 / "export" / "emotion_extractor.safetensors")
    assert cfg.decoder.path == str(stage3 / "export" / "decoder") and cfg.decoder.n_units == 50
    assert cfg.prompt.system == "empathetic"  # the last run that trained a module filling the prompt
    assert cfg.model.encoder_path == "/m/whisper" and cfg.model.adapter_stack_frames == 10  # stage 3 names no encoder
    assert cfg.eval.batch_size == 3


def test_prompt_comes_from_the_last_run_training_a_prompt_module(runs, tmp_path):
    stage1, _, _ = runs
    again = _run(tmp_path / "again", {"model": {"llm_path": "/m/llm", "adapter_hidden_dim": 64}, "prompt": {"system": "later"}},
                 ["adapter"])
    cfg, exports = load_config([str(stage1), str(again)])
    assert exports["adapter"] == again / "export" / "adapter.safetensors"  # a later export replaces an earlier one
    assert cfg.prompt.system == "later" and cfg.model.adapter_hidden_dim == 64
    assert cfg.model.encoder_path == "/m/whisper"  # named by the first run only


def test_a_run_brings_the_trained_modules_it_started_from(runs, tmp_path):
    """``--ckpt runs/stage2a`` alone: its config's ``train.init_adapter`` is part of its model; any export given
    replaces it, in whatever order; a path that no longer exists is not inherited."""
    stage1, stage2, _ = runs
    cfg, exports = load_config([str(stage2)])
    assert sorted(exports) == ["adapter", "emotion_extractor", "ser_head"]
    assert cfg.train.init_adapter == str(stage1 / "export" / "adapter.safetensors")
    assert cfg.prompt.system == "empathetic"
    newer = _run(tmp_path / "newer", {"model": {"llm_path": "/m/llm"}, "prompt": {"system": "newer"}}, ["adapter"])
    cfg, exports = load_config([str(newer), str(stage2)])
    assert exports["adapter"] == newer / "export" / "adapter.safetensors"  # an export wins over an inherited module
    (stage1 / "export" / "adapter.safetensors").unlink()
    assert sorted(load_config([str(stage2)])[1]) == ["emotion_extractor", "ser_head"]


def test_saved_configs_of_an_older_fe_train_load_without_their_retired_keys(runs, caplog):
    stage1, _, _ = runs
    tree = yaml.safe_load((stage1 / "config.yaml").read_text())
    tree["eval"] = {"ser_user": "<speech> Is the speaker angry?", "batch_size": 2}
    tree["emotion"] = {"emotion_source": "extractor", "hidden_dim": 64}
    (stage1 / "config.yaml").write_text(yaml.safe_dump(tree))
    cfg, _ = load_config([str(stage1)])
    assert cfg.eval.batch_size == 2 and cfg.emotion.hidden_dim == 64
    assert "config keys of an older fe-train ignored: emotion.emotion_source, eval.ser_user" in caplog.text
    with pytest.raises(UserError, match=r"config key 'emotion.emotion_source' was retired: use eval.control"):
        load_config([str(stage1)], overrides=["emotion.emotion_source=random_word"])


def test_config_file_and_overrides_apply_last(runs, tmp_path):
    stage1, _, _ = runs
    (tmp_path / "eval.yaml").write_text("prompt:\n  system: judge me\neval:\n  max_new_tokens: 5\n")
    cfg, _ = load_config([str(stage1)], str(tmp_path / "eval.yaml"), ["eval.max_new_tokens=7"])
    assert cfg.prompt.system == "judge me" and cfg.eval.max_new_tokens == 7


def test_different_frozen_llms_are_refused(runs, tmp_path):
    stage1, _, _ = runs
    other = _run(tmp_path / "other", {"model": {"llm_path": "/m/other-llm"}}, ["adapter"])
    with pytest.raises(UserError, match="different model.llm_path"):
        load_config([str(stage1), str(other)])


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "no config.yaml"),
    (lambda p: (p.mkdir(), (p / "config.yaml").write_text("{}\n")), "no exported module"),
    (lambda p: (p.mkdir(), (p / "config.yaml").write_text("{}\n"), (p / "export").mkdir(),
                (p / "export" / "mystery.safetensors").write_bytes(b"")), "not modules this fe-train can load"),
])
def test_bad_checkpoints(tmp_path, setup, message):
    setup(tmp_path / "run")
    with pytest.raises(UserError, match=message):
        read_run(tmp_path / "run")
