"""The torch log-mel equals transformers' WhisperFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from fe_train.data import synthetic
from fe_train.data.features import LogMel, pad_window


def _ours(logmel: LogMel, wave: np.ndarray) -> np.ndarray:
    result = logmel(wave)
    return pad_window(result.features[None], torch.tensor([result.pad_value]), logmel.n_frames)[0].numpy()


@pytest.mark.parametrize("n_mels, n_frames", [(80, 400), (128, 3000)])
def test_equals_whisper_feature_extractor(n_mels, n_frames):
    reference = WhisperFeatureExtractor(feature_size=n_mels, n_samples=n_frames * 160, chunk_length=max(1, n_frames * 160 // 16000))
    logmel = LogMel(n_mels, n_frames)
    rng = np.random.default_rng(0)
    speech = synthetic.speak("what sound does the owl make", synthetic.VOICES[0])
    waves = [speech, speech[:1234], np.zeros(8000, np.float32)]
    waves += [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (1, 159, 160, 161, 16000, n_frames * 160, n_frames * 160 + 999)]
    for wave in waves:
        expected = reference(wave, sampling_rate=16000, return_tensors="np").input_features[0]
        assert np.abs(_ours(logmel, wave) - expected).max() < 1e-3, len(wave)


def test_audio_frames_and_short_output():
    logmel = LogMel(80, 400)
    result = logmel(np.zeros(16000, np.float32) + 0.01)
    assert result.audio_frames == 100
    assert result.features.shape[1] < 400  # the padded tail is not computed
