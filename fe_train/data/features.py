"""Whisper log-mel features in torch, equal to transformers' ``WhisperFeatureExtractor``.

Whisper pads every clip with zeros to a fixed window (30 s for the real models,
``2 * max_source_positions`` mel frames in general). Frames that see only that
zero padding have power exactly 0, so their log-mel is a constant: this module
runs the STFT over the real audio only and returns one pad value per clip. The
encoder wrapper rebuilds the padded window on the device right before the
encoder, so neither the FFT nor the host-to-device copy pays for the padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF

from fe_train.config import SAMPLE_RATE_HZ

LOG_FLOOR = -10.0
"""log10 of the power floor 1e-10, the value of an all-zero frame before normalisation."""
DYNAMIC_RANGE = 8.0


@dataclass
class LogMelResult:
    features: torch.Tensor
    """(n_mels, frames) normalised log-mel of the audio and its boundary frames."""
    pad_value: float
    """Value of every further frame up to the encoder's window."""
    audio_frames: int
    """Mel frames of real audio (``samples // hop``), the count the adapter turns into tokens."""


class LogMel:
    """Whisper's log-mel spectrogram (hann window, power 2, slaney mel, log10, 8 dB range)."""

    def __init__(self, n_mels: int, n_frames: int, sample_rate_hz: int = SAMPLE_RATE_HZ, n_fft: int = 400, hop: int = 160):
        self.n_mels = n_mels
        self.n_frames = n_frames
        self.n_fft = n_fft
        self.hop = hop
        self.window_samples = n_frames * hop
        self.window = torch.hann_window(n_fft)
        self.filters = AF.melscale_fbanks(
            n_fft // 2 + 1, 0.0, sample_rate_hz / 2, n_mels, sample_rate_hz, norm="slaney", mel_scale="slaney"
        ).T.contiguous()  # (n_mels, n_freqs)

    def max_samples(self) -> int:
        return self.window_samples

    def __call__(self, wave: np.ndarray | torch.Tensor) -> LogMelResult:
        wave = torch.as_tensor(wave, dtype=torch.float32)
        length = min(wave.shape[0], self.window_samples)
        # Frames beyond `span` see only zeros in the padded window (their STFT is exactly 0):
        # compute up to there, with enough zeros after the audio that the reflect padding at the
        # end of the shortened signal mirrors zeros, as it does in the full window.
        span = min(self.window_samples, length + self.n_fft // 2 + self.hop)
        signal = torch.zeros(span)
        signal[:length] = wave[:length]
        spec = torch.stft(signal, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.abs().square()  # (n_freqs, 1 + span // hop)
        log_mel = torch.clamp(self.filters @ power, min=1e-10).log10()
        log_mel = log_mel[:, : self.n_frames]  # Whisper drops the STFT's last frame of the full window
        peak = max(float(log_mel.max()), LOG_FLOOR)
        floor = peak - DYNAMIC_RANGE
        features = (torch.maximum(log_mel, torch.tensor(floor)) + 4.0) / 4.0
        pad_value = (max(LOG_FLOOR, floor) + 4.0) / 4.0
        return LogMelResult(features=features, pad_value=pad_value, audio_frames=length // self.hop)


def pad_window(features: torch.Tensor, pad_values: torch.Tensor, n_frames: int) -> torch.Tensor:
    """Rebuild Whisper's full window: (B, n_mels, T) + per-clip pad values -> (B, n_mels, n_frames)."""
    batch, n_mels, frames = features.shape
    full = pad_values.to(features.dtype).view(batch, 1, 1).expand(batch, n_mels, n_frames).clone()
    full[:, :, : min(frames, n_frames)] = features[:, :, :n_frames]
    return full
