"""A stand-in vocoder for the plug-in test: each unit becomes 10 ms of a square wave at 8 kHz."""

import numpy as np


def square_wave(units: np.ndarray) -> tuple[np.ndarray, int]:
    wave = np.concatenate([0.5 * np.sign(np.sin(np.arange(80) * (unit + 1) / 4) + 1e-9) for unit in units])
    return wave, 8000
