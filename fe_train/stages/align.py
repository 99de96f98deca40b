"""Stage 1, semantic alignment: train the adapter so that the frozen LLM answers speech
as it answers text.

Data: speech instructions whose JSON carries ``reply``, the frozen LLM's own reply
to the instruction's text (self-distillation). Input: the chat prompt with the
user turn ``prompt.user_speech`` (``<speech>`` = the adapter's soft tokens). Loss:
cross-entropy on the reply tokens and the turn end. Trains: ``adapter``.
"""

from __future__ import annotations

from fe_train.config import Config
from fe_train.data import audio
from fe_train.data.features import LogMel
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.schema import Meta, SampleError
from fe_train.model.adapter import speech_token_count
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.frozen_llm import load_tokenizer
from fe_train.model.registry import ADAPTERS, ENCODERS, lookup
from fe_train.model.speech_encoder import encoder_frames

name = "align"
trains = ("adapter",)


def build_model(cfg: Config, dtype, partitioned):
    m = cfg.model
    # NOTE(transformers): under zero.Init, Whisper's _init_weights builds its sinusoids from the
    # partitioned (empty) shape and fails; the encoder (0.64B for large-v3) is loaded whole and
    # deepspeed.initialize partitions it.
    encoder = lookup(ENCODERS, m.encoder, "model.encoder")(m.encoder_path, dtype)
    llm = partitioned().load_causal_lm(m.llm_path, dtype, m.llm_activation_checkpointing)
    adapter = lookup(ADAPTERS, m.adapter, "model.adapter")(encoder.hidden_size, llm.config.hidden_size, m)
    return FreezeEmpath(llm, encoder=encoder, adapter=adapter), load_tokenizer(m.llm_path)


def example_builder(cfg: Config, model: FreezeEmpath, tokenizer):
    layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
    speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)

    def build(raw: RawSample) -> Example:
        meta = read_meta(raw)
        if not meta.reply:
            raise SampleError("missing_field:reply")
        mel, n_tokens = speech(raw)
        return Example(meta.key, {"layout": layout.build(cfg.prompt.user_speech, {"<speech>": n_tokens}, meta.reply), "mel": mel})

    return build


def read_meta(raw: RawSample) -> Meta:
    if "json" not in raw:
        raise SampleError("missing_member:json")
    return Meta.from_json(raw["json"])


class SpeechInput:
    """A sample's audio member -> Whisper log-mel and the number of adapter tokens it makes."""

    def __init__(self, cfg: Config, n_mels: int, n_frames: int):
        self.rate = cfg.data.sample_rate_hz
        self.stack = cfg.model.adapter_stack_frames
        self.logmel = LogMel(n_mels, n_frames, self.rate)

    def __call__(self, raw: RawSample, member: str = "flac"):
        if member not in raw:
            raise SampleError(f"missing_member:{member}")
        wave = audio.decode(raw[member], self.rate)
        if len(wave) > self.logmel.max_samples():
            raise SampleError("audio_too_long")
        mel = self.logmel(wave)
        n_tokens = int(speech_token_count(encoder_frames(mel.audio_frames), self.stack))
        if n_tokens < 1:
            raise SampleError("audio_too_short")
        return mel, n_tokens
