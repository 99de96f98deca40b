"""The built-in tokenizer's features: Whisper log-mel at 50 frames a second by default.

``LogMel`` (``fe_train.data.features``) hops 10 ms; ``stack`` consecutive frames
are stacked into one unit frame: by default two, one 20 ms frame, the rate of the
HuBERT units the paper presets are built for (W units per R reply tokens assumes
about 50 units a second); four give 25 Hz, CosyVoice2's rate, half the units per
token. A wave of ``n`` samples gives ``n // (160 * stack)`` frames at 16 kHz,
whatever its length: the log-mel window is set far beyond any reply, so nothing is cut.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from fe_train.config import SAMPLE_RATE_HZ
from fe_train.data.features import LogMel

HOP = 160
"""Samples per log-mel frame at 16 kHz: 100 frames a second."""
STACK = 2
"""Log-mel frames per unit frame by default: 50 unit frames a second."""
MAX_FRAMES = 1 << 22
"""Log-mel window in frames (about 11.6 hours): LogMel stops at its window, a reply never reaches it."""


@dataclass(frozen=True)
class FrameSettings:
    """How speech becomes feature frames; saved with a codebook, whose centroids only fit these settings."""

    n_mels: int = 80
    sample_rate_hz: int = SAMPLE_RATE_HZ
    n_fft: int = 400
    hop: int = HOP
    stack: int = STACK

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / (self.hop * self.stack)

    @property
    def dim(self) -> int:
        return self.n_mels * self.stack

    def to_dict(self) -> dict:
        return dict(asdict(self), kind="logmel", frame_rate_hz=self.frame_rate_hz)

    @classmethod
    def from_dict(cls, tree: dict) -> FrameSettings:
        return cls(**{name: int(tree[name]) for name in ("n_mels", "sample_rate_hz", "n_fft", "hop", "stack")})


class LogMelFrames:
    """A wave at ``settings.sample_rate_hz`` -> (frames, n_mels * stack) float64 features."""

    def __init__(self, settings: FrameSettings):
        self.settings = settings
        self.log_mel = LogMel(settings.n_mels, MAX_FRAMES, settings.sample_rate_hz, settings.n_fft, settings.hop)

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        result = self.log_mel(wave)
        mel = result.features[:, : result.audio_frames].T.double().numpy()  # (T100, n_mels)
        frames = len(mel) // self.settings.stack
        # (T100, n_mels) -> (T50, stack * n_mels): consecutive frames side by side, the earlier first
        return mel[: frames * self.settings.stack].reshape(frames, self.settings.dim)
