"""``fe-train infer`` on a tiny checkpoint in the release's layout, imported with ``import-release``.

The release is built here around the tiny world's frozen LLM (``assets``), with new speech modules in the
release's key layout (test_release.py's re-implementation) and a Whisper of the world's width. The release has
no SER head (docs/release.md), so the recognised emotion comes from a SER head export written next to the
imported ones, as one trained here (stage 2a) would be.
"""

from __future__ import annotations

import json
import shutil

import soundfile as sf
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_release import ReleaseExtractor, ReleaseGenerator, ReleaseProjector, tiny_qwen

from fe_train.cli import train_main
from fe_train.config import EMOTIONS

ENC = 64
N_UNITS, UNIT0 = 32, 523


def test_infer_on_an_imported_release(assets, tmp_path, capsys):
    from fe_train.data import synthetic

    torch.manual_seed(0)
    llm_config = json.loads((assets.llm / "config.json").read_text())
    vocab, width = llm_config["vocab_size"], llm_config["hidden_size"]
    assert (vocab, width) == (523, 64)  # the world's LLM: unit ids follow its tokenizer
    root = tmp_path / "release"
    root.mkdir()
    with safe_open(str(assets.llm / "model.safetensors"), "pt") as reader:
        state = {k: reader.get_tensor(k) for k in reader.keys()}  # noqa: SIM118
    rows = UNIT0 + N_UNITS + 1 + 3  # units, <sep>, 3 padding rows
    dec_config = tiny_qwen(rows, 32, eos_token_id=2, bos_token_id=1)
    mods = {"model.speech_projector.": ReleaseProjector(ENC, width, 5), "model.emotion_extractor.": ReleaseExtractor(ENC, width),
            "speech_generator.": ReleaseGenerator(dec_config, width)}
    for prefix, module in mods.items():
        state |= {prefix + k: v.detach().clone() for k, v in module.state_dict().items()}
    save_file(state, str(root / "model.safetensors"), metadata={"format": "pt"})
    config = {**llm_config, "model_type": "omni2_speech2s_qwen2", "speech_encoder_hidden_size": ENC,
              "speech_encoder_ds_rate": 5, "speech_generator": dec_config.to_dict(), "tts_tokenizer": "tts",
              "add_gate_fusion": True, "stream_params": "(3,15)"}
    (root / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(assets.llm / name, root / name)
    (root / "tts").mkdir()
    added = {"<sep>": UNIT0 + N_UNITS, **{f"<{u}>": UNIT0 + u for u in range(N_UNITS)}}
    (root / "tts" / "added_tokens.json").write_text(json.dumps(added))

    run = tmp_path / "imported"
    assert train_main(["import-release", str(root), "--out", str(run), "--llm-out", str(tmp_path / "llm")]) == 0
    save_file({"linear.weight": torch.randn(len(EMOTIONS), width)}, str(run / "export" / "ser_head.safetensors"))
    capsys.readouterr()
    wav = tmp_path / "question.wav"
    question = synthetic.instructions()[0]
    sf.write(wav, synthetic.speak(question.text, synthetic.VOICES[0]), synthetic.SAMPLE_RATE_HZ, subtype="PCM_16")
    assert train_main(["infer", "--ckpt", str(run), "--out", str(tmp_path / "out"), str(wav),
                       f"model.encoder_path={assets.whisper}", "eval.max_new_tokens=8", "decoder.max_new_units=40",
                       "train.precision=fp32"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert result["emotion"] in EMOTIONS and f"emotion: {result['emotion']}\n" in printed
    assert result["reply"] and f"reply: {result['reply']}\n" in printed
    assert result["units"] and all(0 <= u < N_UNITS for u in result["units"])
