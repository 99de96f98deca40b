"""The vocoder plug-in point: ``eval.vocoder`` names a callable that turns speech units into a waveform.

``module:callable`` (e.g. ``my_pkg.hifigan:units_to_wave``) is imported; a bare
name is looked up among the ``fe_train.vocoders`` entry points of the installed
packages. The callable takes the units (int64 numpy array, (T,)) and returns
``(wave, sample_rate_hz)``: a float numpy array in [-1, 1] and its rate.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from fe_train.entry_point import import_attribute
from fe_train.errors import UserError

ENTRY_POINT_GROUP = "fe_train.vocoders"


def load_vocoder(spec: str) -> Callable[[np.ndarray], tuple[np.ndarray, int]]:
    """The callable ``spec`` names; a one-line ``UserError`` when it names nothing callable."""
    where = f"config eval.vocoder = {spec!r}"
    if ":" in spec:
        vocoder = import_attribute(spec, where, "a callable units -> (wave, sample_rate_hz)")
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
        if not found:
            names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
            raise UserError(f"{where}: expected module:callable or one of the {ENTRY_POINT_GROUP} entry points {names}")
        vocoder = found[0].load()
    if not callable(vocoder):
        raise UserError(f"{where}: {spec!r} is not a callable (expected units -> (wave, sample_rate_hz))")
    return vocoder


def write_wave(vocoder: Callable, units: np.ndarray, path: str | Path) -> Path:
    """The vocoder's waveform of ``units`` as a 16-bit wav at ``path``."""
    import soundfile as sf

    wave, rate = vocoder(np.asarray(units, dtype=np.int64))
    sf.write(str(path), np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0), int(rate), subtype="PCM_16")
    return Path(path)
