"""One audio file through a trained model: ``fe-train infer --ckpt ... audio.wav``.

The model of ``--ckpt`` (runs merged as in ``fe_train.eval.checkpoints``) is built
whole on this process's device, the audio is decoded at ``data.sample_rate_hz``
and put to the model under the checkpoint's prompt, and the greedy reply
(``eval.max_new_tokens``) is returned with the recognised emotion and the speech
units. The emotion is the SER head's choice over the extractor's vector (stage 2's
exports; '' without them). With stage 3's exports the reply is spoken while it is
generated (``fe_train.model.streaming.speak``, ``decoder.read_tokens`` /
``write_units`` / ``max_new_units``; units sampled at ``decoder.unit_temperature`` among
``decoder.unit_top_k``, seeded by ``eval.seed``): its units are saved, and the vocoder
(``eval.vocoder``), when configured, turns them into a wav.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fe_train.data.collate import Collate, to_device
from fe_train.data.schema import Meta, SampleError
from fe_train.engine.placement import place
from fe_train.errors import UserError
from fe_train.eval import assembly
from fe_train.eval.assembly import speech_llm
from fe_train.eval.checkpoints import load_config
from fe_train.eval.ser import head_labels
from fe_train.eval.tasks import Replier, SpokenPrompt
from fe_train.eval.vocoder import load_vocoder, write_wave
from fe_train.generate.replies import Reply, decode
from fe_train.model.pretrained import precision_dtype
from fe_train.model.spoken_reply import SpokenReply
from fe_train.model.streaming import speak


@dataclass
class Inference:
    audio: str
    reply: str
    emotion: str = ""
    """The recognised emotion ('' without an emotion extractor)."""
    units: list[int] = field(default_factory=list)
    wave: str = ""
    """The vocoder's wav of the units ('' without units or vocoder)."""

    def lines(self) -> list[str]:
        return [f"emotion: {self.emotion or '(no emotion extractor in --ckpt)'}", f"reply: {self.reply}",
                f"units: {len(self.units)}" + ("" if self.units else " (no speech decoder in --ckpt)")]


def infer(checkpoints: list[str], audio_path: str, out_dir: str, device, config_path: str | None = None,
          overrides: list[str] = ()) -> Inference:
    """Reply to ``audio_path``; ``infer.json`` (and the units and wav, when there are any) go to ``out_dir``."""
    cfg, exports = load_config(checkpoints, config_path, overrides)
    vocoder = load_vocoder(cfg.eval.vocoder) if cfg.eval.vocoder else None
    path = Path(audio_path)
    if not path.is_file():
        raise UserError(f"audio file {path}: no such file")
    dtype = precision_dtype(cfg.train.precision)
    placed = place(lambda partitioned: assembly.build(cfg, set(exports), dtype, partitioned), "replicate",
                   cfg.engine.ds_config, dtype, 1, device, 1, "fe-train infer")
    model = speech_llm(placed.model)
    prompt = SpokenPrompt(cfg, model, placed.tokenizer)
    try:
        example = prompt.example({"flac": path.read_bytes()}, Meta(key=path.stem), {})
    except SampleError as exc:
        raise UserError(f"audio file {path}: {exc} (expected speech soundfile can read, at most 30 s)") from None
    batch = to_device(Collate(placed.tokenizer.pad_token_id)([example]), device)
    result = Inference(str(path), "", head_labels(model, model.embed_with_emotion(batch)[1])[0] if model.ser_head is not None else "")
    if isinstance(placed.model, SpokenReply):
        d = cfg.decoder
        spoken = speak(placed.model, batch, d.read_tokens, d.write_units, placed.tokenizer.eos_token_id,
                       cfg.eval.max_new_tokens, d.max_new_units, d.unit_temperature,
                       torch.Generator().manual_seed(cfg.eval.seed), d.unit_top_k)
        result.reply = decode(placed.tokenizer, Reply(spoken.reply_ids, spoken.ended))
        result.units = spoken.units
    else:
        result.reply = Replier(cfg, model, placed.tokenizer, synced=False)(model, batch)[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if result.units:
        np.save(out / f"{path.stem}.units.npy", np.asarray(result.units, dtype=np.int64))
        if vocoder is not None:
            result.wave = str(write_wave(vocoder, np.asarray(result.units), out / f"{path.stem}.reply.wav"))
    (out / "infer.json").write_text(json.dumps(asdict(result), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return result
