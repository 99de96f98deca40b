"""Stage 3b, joint training: the speech decoder learns from the states of spoken queries.

Data: spoken queries (audio) with the frozen LLM's reply (``reply``) and the
reply's speech units. The frozen encoder and adapter (``train.init_adapter``,
from stage 1) place the query in the prompt (``prompt.user_speech``); the frozen
LLM runs forward only (``no_grad``) over it and the teacher-forced reply; the
decoder reads the fused reply states and tokens in the read-R/write-W sequence.
Loss: cross-entropy on the unit positions (and eos). Trains: ``decoder`` and
``fusion``, usually from stage 3a's exports (``decoder.path``, ``decoder.init_fusion``).
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.engine.export import load_module
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.registry import ADAPTERS, ENCODERS, lookup
from fe_train.model.spoken_reply import SpokenReply
from fe_train.stages.align import SpeechInput
from fe_train.stages.decoder_pretrain import DecoderRows, build_decoder, reply_meta

name = "decoder_joint"
trains = ("decoder", "fusion")
llm_backward = False  # the frozen LLM runs forward only (FLOP count)


def build_model(cfg: Config, dtype, partitioned):
    m = cfg.model
    # NOTE(transformers): the encoder is loaded whole, as in stage 1 (Whisper's init fails under zero.Init).
    encoder = lookup(ENCODERS, m.encoder, "model.encoder")(m.encoder_path, dtype)
    llm = partitioned().load_causal_lm(m.llm_path, dtype)
    adapter = lookup(ADAPTERS, m.adapter, "model.adapter")(encoder.hidden_size, llm.config.hidden_size, m)
    if cfg.train.init_adapter:
        load_module(adapter, cfg.train.init_adapter, "train.init_adapter")
    tokenizer = load_tokenizer(m.llm_path)
    speech_llm = FreezeEmpath(llm, encoder=encoder, adapter=adapter)
    return SpokenReply(speech_llm, *build_decoder(cfg.decoder, llm, tokenizer, dtype)), tokenizer


def example_builder(cfg: Config, model: SpokenReply, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    encoder = model.speech_llm.encoder
    speech = SpeechInput(cfg, encoder.n_mels, encoder.n_frames)
    rows = DecoderRows(cfg.decoder, model.decoder)

    def build(raw: RawSample) -> Example:
        meta = reply_meta(raw)
        mel, n_tokens = speech(raw)
        row = layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens}, meta.reply)
        return Example(meta.key, {"layout": row, "mel": mel, "units": rows(row, raw, meta)})

    return build


def query_builder(cfg: Config, model: SpokenReply, tokenizer):
    """A spoken query -> a prompt-only example (no reply, no units), for ``fe_train.model.streaming.speak``."""
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    encoder = model.speech_llm.encoder
    speech = SpeechInput(cfg, encoder.n_mels, encoder.n_frames)

    def build(raw: RawSample) -> Example:
        mel, n_tokens = speech(raw)
        return Example(raw.get("__key__", ""), {"layout": layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens}, None),
                                                "mel": mel})

    return build
