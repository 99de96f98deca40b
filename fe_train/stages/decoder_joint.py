"""Stage 3b, joint training: the speech decoder learns from the states of spoken queries.

Data: spoken queries (audio) with the frozen LLM's reply (``reply``) and the
reply's speech units. The frozen encoder and adapter (``train.init_adapter``,
from stage 1) place the query in the prompt (``prompt.user_speech``); with an
``<emotion>`` slot there (the paper's ``<speech>(with a <emotion> emotional tone).``),
the frozen stage-2 extractor (``emotion.init_extractor``) fills it from the query's
own audio, as at inference; the frozen LLM runs forward only (``no_grad``) over the
prompt and the teacher-forced reply; the decoder reads the fused reply states and
tokens in the read-R/write-W sequence.
Loss: cross-entropy on the unit positions (and eos). Trains: ``decoder`` and
``fusion``, usually from stage 3a's exports (``decoder.path``, ``decoder.init_fusion``).
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.speech_input import SpeechInput
from fe_train.errors import UserError
from fe_train.model import assembly
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.spoken_reply import SpokenReply
from fe_train.stages.decoder_pretrain import DecoderRows, reply_meta

name = "decoder_joint"
trains = ("decoder", "fusion")
llm_backward = False  # the frozen LLM runs forward only (FLOP count, memory plan)


SLOTS = {"<emotion>": 1}
"""Soft-token slots of the user turn besides ``<speech>`` (a turn without ``<emotion>`` ignores it)."""


def build_model(cfg: Config, dtype, partitioned):
    emotion = "<emotion>" in cfg.prompt.user_speech
    if emotion and not cfg.emotion.init_extractor:
        raise UserError(f"config prompt.user_speech = {cfg.prompt.user_speech!r} has <emotion>: stage decoder_joint fills "
                        "it with the frozen stage-2 extractor; give its export as emotion.init_extractor (e.g. "
                        "runs/stage2b/export/emotion_extractor.safetensors)")
    speech_llm = assembly.speech_llm(cfg, dtype, partitioned, emotion=emotion)
    tokenizer = load_tokenizer(cfg.model.llm_path)
    return SpokenReply(speech_llm, *assembly.decoder_parts(cfg.decoder, speech_llm.llm, tokenizer, dtype)), tokenizer


def example_builder(cfg: Config, model: SpokenReply, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    encoder = model.speech_llm.encoder
    speech = SpeechInput(cfg, encoder.n_mels, encoder.n_frames)
    rows = DecoderRows(cfg.decoder, model.decoder)

    def build(raw: RawSample) -> Example:
        meta = reply_meta(raw)
        mel, n_tokens = speech(raw)
        row = layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens, **SLOTS}, meta.reply)
        return Example(meta.key, {"layout": row, "mel": mel, "units": rows(row, raw, meta)})

    return build


def query_builder(cfg: Config, model: SpokenReply, tokenizer):
    """A spoken query -> a prompt-only example (no reply, no units), for ``fe_train.model.streaming.speak``."""
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    encoder = model.speech_llm.encoder
    speech = SpeechInput(cfg, encoder.n_mels, encoder.n_frames)

    def build(raw: RawSample) -> Example:
        mel, n_tokens = speech(raw)
        row = layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens, **SLOTS}, None)
        return Example(raw.get("__key__", ""), {"layout": row, "mel": mel})

    return build
