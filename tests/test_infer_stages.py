"""``fe-train infer`` from runs of stages 1, 2a and 3a: the recognised emotion, the reply, the streamed units.

The three runs are short (a few optimizer steps each, one process): what is tested is that
every stage's exports load into one model and reach the output, not what they learned.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import soundfile as sf
import yaml

from conftest import REPO, stage1_overrides, torchrun
from fe_train.cli import train_main
from fe_train.config import EMOTIONS

FEW_STEPS = {"train.max_steps": 2, "train.global_batch_size": 4, "train.micro_batch_size": 2,
             "data.eval_shards": "", "run.progress_bar": "false", "run.wandb_mode": "disabled"}


def train(config: str, out, values: dict) -> None:
    args = [f"{k}={v}" for k, v in {**FEW_STEPS, **values, "run.output_dir": out}.items()]
    proc = torchrun(["-m", "fe_train", "train", "--config", str(REPO / "configs" / config), *args], nproc=1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def write_ser_shards(out) -> str:
    """Two voices x five emotions x two clips of the SER world, with their label in ``emotion``."""
    from fe_train.data import synthetic
    from fe_train.data.schema import Meta
    from fe_train.data.writer import encode_sample, write_shards
    from fe_train.fixtures import ser_world

    clips = ser_world.ser_clips(ser_world.COMMON_VOICES[:2], per_cell=2)
    samples = [encode_sample(Meta(key=c.key, corpus="ser-synthetic", speaker=c.voice, text=c.text, emotion=c.emotion),
                             c.wave, synthetic.SAMPLE_RATE_HZ) for c in clips]
    random.Random(0).shuffle(samples)
    write_shards(samples, out, prefix="ser", max_count=10)
    return str(out)


@pytest.fixture(scope="module")
def stage_runs(assets, tmp_path_factory):
    """Stage 1, then 2a from its adapter, then 3a: 2 steps each (about a minute here)."""
    from fe_train.fixtures.unit_assets import build_unit_assets

    root = tmp_path_factory.mktemp("stages")
    stage1, stage2, stage3 = root / "stage1", root / "stage2a", root / "stage3a"
    overrides = dict(item.split("=", 1) for item in stage1_overrides(assets, stage1))
    train("stage1_tiny.yaml", stage1, {**overrides, "data.eval_shards": ""})
    train("stage2a_tiny.yaml", stage2, {
        "model.encoder_path": assets.whisper, "model.llm_path": assets.llm,
        "train.init_adapter": stage1 / "export" / "adapter.safetensors",
        "data.train_shards": write_ser_shards(root / "ser")})
    units = build_unit_assets(assets, root / "units", n_strings=40)
    train("stage3a_tiny.yaml", stage3, {
        "model.llm_path": assets.llm, "decoder.path": units.decoder, "decoder.n_units": units.n_units,
        "decoder.max_new_units": 60, "data.train_shards": units.split(units.reply_shards, "train")})
    return stage1, stage2, stage3


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # the runs trained in fp32; the paper's presets are bf16
def test_infer_speaks_with_the_emotion_from_stages_1_2a_3a(stage_runs, tmp_path, capsys, precision):
    from fe_train.data import synthetic

    question = synthetic.instructions()[0]
    wav = tmp_path / "question.wav"
    sf.write(wav, synthetic.speak(question.text, synthetic.VOICES[0]), synthetic.SAMPLE_RATE_HZ, subtype="PCM_16")
    ckpts = [arg for run in stage_runs for arg in ("--ckpt", str(run))]
    assert train_main(["infer", *ckpts, "--out", str(tmp_path / "out"), str(wav), "eval.max_new_tokens=8",
                       f"train.precision={precision}"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert result["emotion"] in EMOTIONS and f"emotion: {result['emotion']}\n" in printed
    assert f"reply: {result['reply']}\n" in printed
    assert result["units"] and f"units: {len(result['units'])}\n" in printed
    saved = np.load(tmp_path / "out" / "question.units.npy")
    assert saved.tolist() == result["units"]
    n_units = yaml.safe_load((stage_runs[2] / "config.yaml").read_text())["decoder"]["n_units"]
    assert all(0 <= u < n_units for u in result["units"])


def test_infer_refuses_half_a_stage(stage_runs, tmp_path):
    from fe_train.data import synthetic
    from fe_train.errors import UserError
    from fe_train.eval.infer import infer

    stage1, stage2, _ = stage_runs
    wav = tmp_path / "question.wav"
    sf.write(wav, synthetic.speak("hello", synthetic.VOICES[0]), synthetic.SAMPLE_RATE_HZ, subtype="PCM_16")
    (stage2 / "export" / "ser_head.safetensors").rename(tmp_path / "ser_head.safetensors")
    try:
        with pytest.raises(UserError, match=r"export \['emotion_extractor'\] but not \['ser_head'\]"):
            infer([str(stage1), str(stage2)], str(wav), str(tmp_path / "out"), "cpu")
    finally:
        (tmp_path / "ser_head.safetensors").rename(stage2 / "export" / "ser_head.safetensors")


def test_ablate_reads_the_ser_head_under_every_control(stage_runs, tmp_path):
    """The controls change the prompt, not what the extractor hears: the head's reading is the same under each."""
    stage1, stage2, _ = stage_runs
    shards = str(stage2.parent / "ser")
    assert train_main(["eval", "ablate", "--task", "ser", "--ckpt", str(stage1), "--ckpt", str(stage2), "--shards", shards,
                       "--out", str(tmp_path), "eval.controls=[extractor,gold_label]",
                       "eval.max_new_tokens=4", "eval.bootstrap_resamples=50", "run.progress_bar=false"]) == 0
    table = json.loads((tmp_path / "ablation.json").read_text())["controls"]
    assert table["extractor"]["items"] == table["gold_label"]["items"] == 20
    assert table["extractor"]["head/wa"] == table["gold_label"]["head/wa"]
    records = [json.loads(line) for line in (tmp_path / "extractor" / "ser.records.jsonl").read_text().splitlines()]
    assert all(r["head"] in EMOTIONS for r in records)


def test_eval_ser_hears_each_clip_once_for_the_reply_and_the_head(stage_runs, tmp_path, monkeypatch):
    """The reply and the SER head read one encoder pass per clip (the encoder is the costly part of SER)."""
    from fe_train.model.speech_encoder import WhisperSpeechEncoder

    stage1, stage2, _ = stage_runs
    encoded, forward = [], WhisperSpeechEncoder.forward

    def counted(self, mel, *args, **kwargs):
        encoded.append(mel.shape[0])
        return forward(self, mel, *args, **kwargs)

    monkeypatch.setattr(WhisperSpeechEncoder, "forward", counted)
    assert train_main(["eval", "ser", "--ckpt", str(stage1), "--ckpt", str(stage2), "--shards", str(stage2.parent / "ser"),
                       "--out", str(tmp_path), "eval.max_new_tokens=4", "eval.bootstrap_resamples=50",
                       "run.progress_bar=false"]) == 0
    records = [json.loads(line) for line in (tmp_path / "ser.records.jsonl").read_text().splitlines()]
    assert len(records) == 20 and all(r["head"] in EMOTIONS and "word" in r for r in records)
    assert sum(encoded) == 20, encoded


def test_extractor_control_needs_the_slot_and_the_extractor():
    from fe_train.data.user_turn import check_control
    from fe_train.errors import UserError

    with pytest.raises(UserError, match=r"has no <emotion> for the extractor's soft token"):
        check_control("extractor", "<speech> Is the speaker angry?", has_extractor=True)
    with pytest.raises(UserError, match=r"no emotion extractor to fill <emotion> \(give the stage-2 run as --ckpt"):
        check_control("extractor", "<speech>(<emotion>)", has_extractor=False)
    check_control("extractor", "<speech>(<emotion>)", has_extractor=True)


def test_the_path_from_checkpoint_folders_to_a_placed_model_is_short(stage_runs, tmp_path):
    """Issue 15's measure of how the code reads: from ``infer``'s ``--ckpt`` folders (stages 1, 2a, 3a) to the placed
    model, the fe_train modules outside ``config/`` whose functions run, and the calls that go UP the layers
    (tests/test_layers.py; a callback such as the recipe's builder handed to the placement). Measured here: 18 modules,
    9 of them the model's own parts (encoder, LLM, adapter, extractor, SER head, speech LLM, decoder, fusion, spoken
    reply), and 2 upward calls (before issue 15: 23 files and 10 climbs, counted by reading the code)."""
    import sys
    from pathlib import Path

    import torch
    from test_layers import PACKAGE, layer, module_name

    from fe_train.eval.infer import infer

    ran, upward, placed = ["fe_train.eval.infer"], [], []

    def profile(frame, event, arg):
        if placed or not frame.f_code.co_filename.startswith(str(PACKAGE)) or frame.f_code.co_name == "<module>":
            return  # a module's top-level code runs once, at its first import: not part of the path
        module, caller = module_name(Path(frame.f_code.co_filename)), frame.f_back
        if event == "return" and module == "fe_train.engine.placement" and frame.f_code.co_name == "place":
            placed.append(arg)
        if event != "call" or not caller.f_code.co_filename.startswith(str(PACKAGE)):
            return  # called by a library (a logging filter, a hook): not a step of the path
        if layer(module) > layer(module_name(Path(caller.f_code.co_filename))):
            upward.append(f"{module_name(Path(caller.f_code.co_filename))} -> {module}.{frame.f_code.co_name}")
        if module not in ran:
            ran.append(module)

    wav = tmp_path / "q.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    sys.setprofile(profile)
    try:
        infer([str(run) for run in stage_runs], str(wav), str(tmp_path / "out"), torch.device("cpu"),
              overrides=["eval.max_new_tokens=2", "decoder.max_new_units=4"])
    finally:
        sys.setprofile(None)
    assert placed, "engine.placement.place never returned"
    path = [m for m in ran if not m.startswith("fe_train.config")]
    print(f"{len(path)} modules: {', '.join(path)}\n{len(upward)} upward calls: {upward}")
    assert "fe_train.model.spoken_reply" in path and "fe_train.model.emotion_extractor" in path  # all three stages
    assert len(path) <= 18 and len(upward) <= 2


def test_the_memory_plan_counts_what_each_stage_trains(stage_runs):
    """``fe-train plan``'s trainable parameters for stages 1, 2a and 3a (built on the meta device from the configs)
    are the parameters each run exported; stage 3a's plan has no encoder and no backward through the LLM."""
    from safetensors import safe_open

    from fe_train import stages
    from fe_train.config import Config
    from fe_train.engine.memory import workload_for

    for run in stage_runs:
        cfg = Config.load(run / "config.yaml")
        recipe = stages.recipe(cfg.train.stage)
        exported = 0
        for path in sorted((run / "export").rglob("*.safetensors")):
            with safe_open(path, "pt") as f:
                exported += sum(int(np.prod(f.get_slice(key).get_shape())) for key in f.keys())
        workload = workload_for(cfg, 2, 64, recipe)
        assert workload.trainable_params == exported, (cfg.train.stage, workload.trainable_params, exported)
        assert workload.llm_backward == (cfg.train.stage != "decoder_pretrain")
        assert (workload.encoder_params > 0) == (cfg.train.stage != "decoder_pretrain")


def test_3b_fills_the_emotion_slot_with_the_frozen_stage2_extractor(stage_runs, tmp_path, capsys):
    """The paper's 3b prompt ``<speech>(with a <emotion> emotional tone).``: the stage-2 extractor (frozen, from its
    export) fills the slot from the query's own audio, so the decoder trains on the LLM states it will see at
    inference; without the extractor's export the stage refuses with one line; infer then speaks with the emotion."""
    import torch

    from fe_train import stages
    from fe_train.config import Config
    from fe_train.data.collate import Collate
    from fe_train.data.pipeline import iter_shard, resolve_shards
    from fe_train.data.prompt import SLOTS
    from fe_train.data.synthetic import SAMPLE_RATE_HZ, VOICES, speak
    from fe_train.engine.build import WholeBuild
    from fe_train.errors import UserError

    stage1, stage2, stage3 = stage_runs
    model_paths = yaml.safe_load((stage1 / "config.yaml").read_text())["model"]
    shape = yaml.safe_load((stage2 / "config.yaml").read_text())["emotion"]  # the extractor's shape, as exported
    spoken = str(stage3.parent / "units" / "shards" / "spoken" / "train-*.tar")
    values = {"model.encoder_path": model_paths["encoder_path"], "model.llm_path": model_paths["llm_path"],
              "train.init_adapter": stage1 / "export" / "adapter.safetensors", "prompt.user_speech": "emotion",
              "decoder.path": stage3 / "export" / "decoder", "decoder.init_fusion": stage3 / "export" / "fusion.safetensors",
              "decoder.n_units": yaml.safe_load((stage3 / "config.yaml").read_text())["decoder"]["n_units"],
              "decoder.max_new_units": 60, "data.train_shards": spoken}
    recipe = stages.recipe("decoder_joint")
    cfg = Config.load(REPO / "configs" / "stage3b_tiny.yaml", [f"{k}={v}" for k, v in values.items()])
    with pytest.raises(UserError, match=r"has <emotion>: stage decoder_joint fills it with the frozen stage-2 extractor"):
        recipe.build_model(cfg, torch.float32, WholeBuild)
    values["emotion.init_extractor"] = stage2 / "export" / "emotion_extractor.safetensors"
    values["emotion.hidden_dim"] = 2 * shape["hidden_dim"]  # a width other than that of the run that exported it
    cfg = Config.load(REPO / "configs" / "stage3b_tiny.yaml", [f"{k}={v}" for k, v in values.items()])
    with pytest.raises(UserError, match=r"emotion.init_extractor = .*does not fit the configured EmotionExtractor "
                                        r"\(size mismatch for ffn.0.weight"):
        recipe.build_model(cfg, torch.float32, WholeBuild)
    values.update({"emotion.init_ser_head": stage2 / "export" / "ser_head.safetensors",
                   "emotion.hidden_dim": shape["hidden_dim"], "emotion.mask_padding": shape["mask_padding"]})
    cfg = Config.load(REPO / "configs" / "stage3b_tiny.yaml", [f"{k}={v}" for k, v in values.items()])
    model, tokenizer = recipe.build_model(cfg, torch.float32, WholeBuild)
    raw = next(iter_shard(resolve_shards(spoken)[0].url))[1]
    batch = Collate(tokenizer.pad_token_id)([recipe.example_builder(cfg, model, tokenizer)(raw)])
    assert (batch["slots"] == SLOTS["<emotion>"]).sum() == 1
    states = model.llm_states(batch)
    with torch.no_grad():
        for param in model.speech_llm.emotion_extractor.parameters():
            param.mul_(0.5)
    assert not torch.allclose(states, model.llm_states(batch))  # the extractor's vector shapes what the decoder reads

    stage3b = tmp_path / "stage3b"
    train("stage3b_tiny.yaml", stage3b, values)
    assert sorted(p.name for p in (stage3b / "export").iterdir()) == ["decoder", "fusion.safetensors"]
    wav = tmp_path / "question.wav"
    sf.write(wav, speak("how many legs does the cat have", VOICES[0]), SAMPLE_RATE_HZ, subtype="PCM_16")
    assert train_main(["infer", "--ckpt", str(stage3b), "--out", str(tmp_path / "out"), str(wav),
                       "eval.max_new_tokens=8"]) == 0
    result = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert result["emotion"] in EMOTIONS and result["units"], result
