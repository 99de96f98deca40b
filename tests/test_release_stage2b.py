"""Stage 2b continued from an imported release checkpoint (2 CPU processes, DeepSpeed ZeRO-3), exported back.

The release is built around the SER world's frozen LLM and stage-1 adapter (as the release's projector), with a
fresh extractor in the release's layout (test_release.py). 2b trains the imported extractor (and a new SER head:
the release has none); ``export-release`` of the imported run followed by the 2b run puts the trained
extractor back in the release's layout and leaves every other tensor's bytes as they were.
"""

from __future__ import annotations

import json
import math
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_release import ReleaseExtractor, ReleaseGenerator, tiny_qwen

from conftest import REPO, torchrun
from fe_train.cli import train_main
from fe_train.tracking.tracker import read_metrics

N_UNITS = 16
POOL = "model.emotion_extractor.attn_pool.multihead_attn."


def read(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as reader:
        return {k: reader.get_tensor(k) for k in reader.keys()}  # noqa: SIM118


def release_tensors(folder) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    return {k: v for name in sorted(set(index.values())) for k, v in read(folder / name).items()}


def test_stage2b_from_an_imported_release_trains_and_exports_back(ser_assets, tmp_path):
    torch.manual_seed(0)
    world_llm = ser_assets.whisper.parent / "llm"
    llm_config = json.loads((world_llm / "config.json").read_text())
    vocab, width = llm_config["vocab_size"], llm_config["hidden_size"]
    adapter = read(ser_assets.adapter)
    state = read(world_llm / "model.safetensors")
    state |= {f"model.speech_projector.linear{i}.{p}": adapter[f"ffn.{j}.{p}"] for i, j in ((1, 0), (2, 2))
              for p in ("weight", "bias")}
    dec_config = tiny_qwen(vocab + N_UNITS + 1, 32, eos_token_id=2)
    for prefix, module in (("model.emotion_extractor.", ReleaseExtractor(64, width)),
                           ("speech_generator.", ReleaseGenerator(dec_config, width))):
        state |= {prefix + k: v.detach().clone() for k, v in module.state_dict().items()}
    root = tmp_path / "release"
    root.mkdir()
    save_file(state, str(root / "model.safetensors"))
    stack = adapter["ffn.0.weight"].shape[1] // 64
    (root / "config.json").write_text(json.dumps({
        **llm_config, "model_type": "omni2_speech2s_qwen2", "speech_encoder_hidden_size": 64,
        "speech_encoder_ds_rate": stack, "speech_generator": dec_config.to_dict(), "tts_tokenizer": "tts",
        "add_gate_fusion": True}))
    for item in world_llm.iterdir():
        if item.name.startswith(("tokenizer", "chat_template")):
            shutil.copy(item, root / item.name)
    (root / "tts").mkdir()
    (root / "tts" / "added_tokens.json").write_text(json.dumps(
        {"<sep>": vocab + N_UNITS, **{f"<{u}>": vocab + u for u in range(N_UNITS)}}))
    imported, llm = tmp_path / "imported", tmp_path / "llm"
    assert train_main(["import-release", str(root), "--out", str(imported), "--llm-out", str(llm)]) == 0

    run = tmp_path / "stage2b"
    overrides = {
        "model.encoder_path": ser_assets.whisper, "model.llm_path": llm,
        "train.init_adapter": imported / "export" / "adapter.safetensors",
        "emotion.init_extractor": imported / "export" / "emotion_extractor.safetensors", "emotion.hidden_dim": 2048,
        "model.adapter_stack_frames": stack, "model.adapter_hidden_dim": adapter["ffn.0.weight"].shape[0],
        "data.train_shards": ser_assets.train_shards(0), "data.eval_shards": "",
        "emotion.pair_shards": ser_assets.instructions, "train.max_steps": 32, "train.log_every": 2, "train.lr": 3e-3,
        "run.output_dir": run, "run.progress_bar": "false", "run.wandb_mode": "disabled"}
    proc = torchrun(["-m", "fe_train", "train", "--config", str(REPO / "configs" / "stage2b_tiny.yaml"),
                     *[f"{k}={v}" for k, v in overrides.items()]])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    losses = [r["train/loss"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 16 and all(math.isfinite(v) for v in losses), losses
    assert sum(losses[-4:]) / sum(losses[:4]) < 0.95, losses  # as the fresh-extractor 2b test (docs/stage2.md)

    back = tmp_path / "back"
    assert train_main(["export-release", str(imported), str(run), "--llm", str(llm), "--out", str(back)]) == 0
    exported, trained = release_tensors(back), read(run / "export" / "emotion_extractor.safetensors")
    assert sorted(exported) == sorted(state)
    in_proj = torch.cat([trained[f"pool.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")])
    assert exported[POOL + "in_proj_weight"].equal(in_proj)
    assert not exported[POOL + "in_proj_weight"].equal(state[POOL + "in_proj_weight"])  # 2b changed it
    assert exported["model.emotion_extractor.linear2.weight"].equal(trained["ffn.2.weight"])
    for key, value in state.items():
        if not key.startswith("model.emotion_extractor."):
            assert exported[key].equal(value), key  # LLM, projector, decoder, fusion: as imported
