"""Typed config: defaults, YAML overrides, key=value overrides, unknown keys, saving."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import yaml

from fe_train.config import Config
from fe_train.engine.ds_config import INJECTED, read_policy, resolve
from fe_train.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def test_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: 2\nmodel:\n  trim_encoder_padding: 'false'\n")
    cfg = Config.load(path, ["train.micro_batch_size=4", "train.lr=2e-4", "run.name=x"])
    assert cfg.train.lr == 2e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and cfg.train.micro_batch_size == 4
    assert cfg.model.trim_encoder_padding is False
    assert cfg.run.name == "x"


@pytest.mark.parametrize("override, fragment", [
    (["train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
    (["trainer.lr=1"], "unknown config key 'trainer'"),
    (["train.epochs=two"], "'train.epochs' = 'two' is not a valid int"),
    (["train.precision=fp8"], "train.precision = 'fp8'"),
    (["lr=1"], "expected section.key=value"),
    (["train.stage=ser", "train.state_distill=1"], "train.state_distill = 1.0: expected a number >= 0, and 0 unless "
                                                   "train.stage is align (it is 'ser')"),
])
def test_bad_keys_and_values_are_named(override, fragment):
    with pytest.raises(UserError) as err:
        Config.load(None, override)
    assert fragment in str(err.value)


def test_progress_bar_is_null_for_a_terminal_or_as_set():
    assert Config().run.progress_bar is None  # a bar when stderr is a terminal, none in a Slurm log
    assert Config.load(None, ["run.progress_bar=true"]).run.progress_bar is True
    assert Config.load(None, ["run.progress_bar=off"]).run.progress_bar is False
    assert Config.load(None, ["run.progress_bar=null"]).run.progress_bar is None
    with pytest.raises(UserError, match="'run.progress_bar' = 'sometimes' is not a valid bool"):
        Config.load(None, ["run.progress_bar=sometimes"])


def test_unknown_yaml_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("# a preset\ndata:\n  shards: x\n")
    with pytest.raises(UserError, match=r"bad.yaml line 3: unknown config key 'data.shards'"):
        Config.load(path)
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(UserError, match=r"bad.yaml line 2: 'train.lr' = 'fast' is not a valid float"):
        Config.load(path)
    with pytest.raises(UserError, match=r"bad.yaml: 'train.lr' = 'slow' is not a valid float"):
        Config.load(path, ["train.lr=slow"])  # the wrong value is the override's, not the file's line
    path.write_text("train:\n  lr: 1e-3\n   epochs: 2\n")
    with pytest.raises(UserError, match=r"bad.yaml line 3, column \d+: not valid YAML"):
        Config.load(path)


def test_saved_config_round_trips(tmp_path):
    cfg = Config.load(REPO / "configs" / "stage1_paper.yaml", ["train.seed=7"])
    cfg.save(tmp_path / "config.yaml")
    again = Config.load(tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    Config.load(path)


@pytest.mark.parametrize("path", sorted((REPO / "ds_configs").glob("*.json")), ids=lambda p: p.name)
def test_every_ds_config_is_policy_only(path):
    policy = read_policy(str(path))
    assert not set(policy) & set(INJECTED)
    cfg = Config.load(None, [f"engine.ds_config={path}", "train.global_batch_size=64", "train.micro_batch_size=8"])
    ds = resolve(cfg, world_size=4)
    assert ds["gradient_accumulation_steps"] == 2 and ds["train_batch_size"] == 64


def test_ds_config_repeating_run_numbers_is_rejected(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}, "gradient_clipping": 1.0, "bf16": {"enabled": True}}))
    with pytest.raises(UserError, match=r"sets \['gradient_clipping', 'bf16'\]"):
        read_policy(str(path))


def test_batch_must_divide(tmp_path):
    cfg = Config.load(None, ["train.global_batch_size=100", "train.micro_batch_size=8"])
    with pytest.raises(UserError, match="not a multiple"):
        resolve(cfg, world_size=2)


def repeated_defaults(path: Path) -> list[str]:
    """The keys of a YAML preset whose value is the default's: a preset holds only what differs, so that a default
    changed in ``fe_train/config`` is not silently kept at its old value by a copy."""
    tree, cfg, default = yaml.safe_load(path.read_text()), Config.load(path), Config()
    return [f"{section}.{key}" for section, keys in tree.items() for key in keys
            if getattr(getattr(cfg, section), key) == getattr(getattr(default, section), key)]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_hold_only_what_differs_from_the_defaults(path):
    assert set(yaml.safe_load(path.read_text())) <= {f.name for f in dataclasses.fields(Config)}, path
    assert repeated_defaults(path) == [], f"{path.name} repeats defaults: remove them"


def test_a_preset_repeating_a_default_is_caught(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  epochs: 5\nprompt:\n  system: You are a helpful assistant.\n")
    assert repeated_defaults(path) == ["train.lr", "prompt.system"]


def test_presets_name_the_recipe_prompts():
    """``empathy``/``helpful`` and ``speech``/``emotion`` stand for the recipe's texts, written once
    (``fe_train/config/prompts.py``); the saved config holds the texts."""
    from fe_train.config import EMOTION_TURN, EMPATHY_SYSTEM

    cfg = Config.load(REPO / "configs" / "stage2b_paper.yaml")
    assert cfg.prompt.system == EMPATHY_SYSTEM and cfg.prompt.user_speech == EMOTION_TURN
    assert cfg.emotion.ser_question and cfg.generate.empathy_system == EMPATHY_SYSTEM
    assert Config.load(None, ["prompt.system=Be brief."]).prompt.system == "Be brief."
    assert Config.load(None, ["prompt.system=empathy"]).to_dict()["prompt"]["system"] == EMPATHY_SYSTEM


def test_config_defaults_document_every_key(capsys):
    """``fe-train config --defaults``: every key with its docstring above it; read back, it is the default config."""
    from fe_train.cli import train_main

    assert train_main(["config", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == Config().to_dict()
    lines = out.splitlines()
    keys = [i for i, line in enumerate(lines) if line.startswith("  ") and not line.startswith("  #")]
    undocumented = [lines[i] for i in keys if not lines[i - 1].startswith("  #")]
    assert undocumented == [] and len(keys) == sum(len(v) for v in Config().to_dict().values())


def test_shard_sources_from_yaml_and_overrides(tmp_path):
    """The example of docs/shards.md (mixing sources), in a file and as an override."""
    from fe_train.config.sources import ShardSource, parse_sources

    docs = (REPO / "docs" / "shards.md").read_text()
    path = tmp_path / "mix.yaml"
    path.write_text(docs.split("## Mixing sources")[1].split("```yaml\n")[1].split("```")[0])
    expected = [ShardSource("shards/instructs2s/train_distill", 1.0), ShardSource("shards/ser/iemocap/train", 2.0),
                ShardSource("shards/ser/meld/train", 0.5)]
    cfg = Config.load(path)
    assert parse_sources(cfg.data.train_shards, "data.train_shards") == expected
    override = ("data.train_shards=[shards/instructs2s/train_distill, {shards: shards/ser/iemocap/train, weight: 2},"
                "{shards: shards/ser/meld/train, weight: 0.5}]")
    assert parse_sources(Config.load(None, [override]).data.train_shards, "data.train_shards") == expected
    command = shlex.split(docs.split("## Mixing sources")[1].split("```bash\n")[1].split("```")[0].replace("\\\n", ""))
    documented = Config.load(None, [word for word in command if word.startswith("data.")]).data
    assert parse_sources(documented.train_shards, "data.train_shards") == expected[:2]
    assert parse_sources(documented.eval_shards, "data.eval_shards") == [
        ShardSource("shards/ser/iemocap/test-{000000..000003}.tar"), ShardSource("shards/ser/meld/test")]
    assert Config.load(None, ["data.train_shards=shards/x/train-{000..009}.tar"]).data.train_shards == \
        "shards/x/train-{000..009}.tar"
    assert Config.load(None, ["data.train_shards=2024"]).data.train_shards == "2024"  # a folder named by a number
    cfg.save(tmp_path / "config.yaml")
    assert Config.load(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("value, message", [
    ("[a, {shards: b, weight: 0}]", "config data.train_shards[1].weight = 0: expected a number > 0"),
    ("[a, {shards: b, weight: -1.5}]", "config data.train_shards[1].weight = -1.5: expected a number > 0"),
    ("[{shards: b, weight: two}]", "config data.train_shards[0].weight = 'two': expected a number > 0"),
    ("[{shards: b, weight: true}]", "config data.train_shards[0].weight = True: expected a number > 0"),
    ("[{shards: b, weight: .nan}]", "config data.train_shards[0].weight = nan: expected a number > 0"),
    ("[a, {shards: b, wieght: 2}]",
     "config data.train_shards[1] = {'shards': 'b', 'wieght': 2}: expected keys shards and weight only, not wieght"),
    ("[{weight: 2}]", "config data.train_shards[0].shards = None: expected a shard directory, brace pattern or glob"),
    ("[a, [b]]", "config data.train_shards[1] = ['b']: expected a shard pattern or a mapping {shards: <pattern>, "
                 "weight: <number > 0>}"),
    ("{shards: b}", "overrides: 'data.train_shards' = {'shards': 'b'} is not a valid str or list"),
    ("[a-{0..1}.tar]", "override 'data.train_shards=[a-{0..1}.tar]': the value is not valid YAML"),
])
def test_bad_shard_sources_are_one_line(value, message):
    with pytest.raises(UserError) as err:
        Config.load(None, [f"data.train_shards={value}"])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
