"""``fe-train generate``: presets load, bad input ends with one line naming what is wrong, parts are atomic."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from fe_train.cli import train_main
from fe_train.config import Config
from fe_train.errors import UserError
from fe_train.generate.parts import PartStore


@pytest.mark.parametrize("name", ["generate_paper.yaml", "generate_tiny.yaml"])
def test_presets_load(name):
    cfg = Config.load(REPO / "configs" / name)
    assert cfg.generate.do_sample is False  # greedy: the frozen LLM's own most likely reply
    assert (REPO / cfg.engine.ds_config).is_file()


def generate(capsys, *args: str) -> tuple[int, str]:
    code = train_main(["generate", *args])
    return code, capsys.readouterr().err.strip().splitlines()[-1] if code else ""


def test_unknown_task_and_missing_label_source(capsys, tmp_path):
    code, line = generate(capsys, "--task", "summarise", "--input", "x", "--out", str(tmp_path))
    assert code == 2 and line == "error: --task 'summarise': expected one of ['distill', 'empathy']"
    code, line = generate(capsys, "--task", "empathy", "--input", "x", "--out", str(tmp_path))
    assert code == 2 and "set generate.label_shards (the SER training shards" in line


def test_input_without_instructions(assets, capsys, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"key": "a", "audio": "a.flac"}) + "\n" + "{not json\n")
    code, line = generate(capsys, "--task", "distill", "--input", str(manifest), "--out", str(tmp_path / "o"),
                          f"model.llm_path={assets.llm}")
    assert code == 2 and line == (f"error: --input '{manifest}': no instruction with a key and a text "
                                  "(skipped {'missing_field:text': 1, 'bad_json': 1})")


def test_resume_with_other_settings_is_refused(assets, capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    stored = {"task": "distill", "seed": 0}
    (out / "generate.json").write_text(json.dumps(stored))
    code, line = generate(capsys, "--task", "distill", "--input", str(assets.heldout_shards), "--out", str(out),
                          f"model.llm_path={assets.llm}", "generate.seed=3")
    assert code == 2 and "holds replies generated with other settings (differs: " in line
    assert "seed" in line and "llm_path" in line


def test_parts_are_whole_and_never_overwritten(tmp_path):
    store = PartStore(tmp_path)
    records = [{"key": f"k{i}", "reply": f"r{i}"} for i in range(3)]
    path = store.write(5, records)
    assert path.name.startswith("part-00000005-") and not list(tmp_path.glob("*.tmp"))
    (tmp_path / "part-00000009-deadbeef.jsonl.tmp").write_text('{"key": "half')  # a write cut by a kill
    assert sorted(store.read().by_key) == ["k0", "k1", "k2"]
    with pytest.raises(UserError, match="exists already"):
        store.write(5, records)
    store.write(6, [{"key": "k1", "reply": "r1"}])  # the same reply again is counted, not an error
    assert store.read().repeated == 1
