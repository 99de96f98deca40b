"""Audio decoding: any soundfile-readable bytes -> mono float32 at the target rate."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import soundfile as sf
import torch
import torchaudio.transforms as T

from fe_train.data.schema import SampleError


def decode(data: bytes | str, sample_rate_hz: int) -> np.ndarray:
    """Decode, downmix to mono and resample; undecodable or empty audio raises ``SampleError``."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        wave, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise SampleError("bad_audio", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if wave.shape[0] == 0:
        raise SampleError("empty_audio")
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    if not np.isfinite(mono).all():
        raise SampleError("bad_audio", "non-finite samples")
    return resample(mono, rate, sample_rate_hz)


def resample(wave: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    if from_hz == to_hz:
        return np.ascontiguousarray(wave, dtype=np.float32)
    with torch.no_grad():
        out = _resampler(from_hz, to_hz)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
    return out.numpy()


@lru_cache(maxsize=16)
def _resampler(from_hz: int, to_hz: int) -> torch.nn.Module:
    """torchaudio's sinc resampler with its kernel built once per rate pair (same output as the functional form)."""
    return T.Resample(from_hz, to_hz)


def encode_flac(wave: np.ndarray, sample_rate_hz: int) -> bytes:
    """Lossless 16-bit FLAC bytes of a mono float wave in [-1, 1]."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sample_rate_hz, format="FLAC", subtype="PCM_16")
    return buf.getvalue()
