"""A shard sample's parts as the recipes read them: its JSON record, and its audio as Whisper log-mel with the
number of soft tokens the adapter makes of it (the frame arithmetic every stage, evaluation and test shares)."""

from __future__ import annotations

import torch

from fe_train.config import Config
from fe_train.data import audio
from fe_train.data.features import LogMel
from fe_train.data.pipeline import RawSample
from fe_train.data.schema import Meta, SampleError


def encoder_frames(audio_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Encoder frames of real audio for mel frame counts (Whisper's second conv halves, rounding up)."""
    return (audio_frames + 1) // 2


def speech_token_count(encoder_frames: int | torch.Tensor, stack_frames: int) -> int | torch.Tensor:
    """Soft tokens for a clip: whole groups of ``stack_frames`` encoder frames (the tail is dropped)."""
    return encoder_frames // stack_frames


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
