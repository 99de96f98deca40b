"""The speech tokenizer plug-in point: what turns spoken replies into stage-3 units.

``fe-shards units make --tokenizer MODULE:FUNCTION --tokenizer-arg ARG`` imports
MODULE and calls ``FUNCTION(ARG)`` once (ARG is a string: a checkpoint folder, a
config file, ''). The object it returns must have::

    codebook: str          the codebook's name, recorded with every unit sequence and checked against
                           decoder.codebook in training; a different model or fit must have another name
    n_units: int           every id lies in [0, n_units) (decoder.n_units must be at least this)
    sample_rate_hz: int    the rate of the waves it takes
    __call__(waves: list[np.ndarray]) -> list[np.ndarray]
                           float32 mono waves in [-1, 1] at sample_rate_hz -> one 1-D int64 array of
                           unit ids per wave, in the same order (a batch: a GPU tokenizer may pad them)

The built-in is ``fe_train.units.kmeans:load`` (ARG: the folder ``fe-shards units fit``
wrote). A GPU tokenizer (IndexTTS2's semantic codec, CosyVoice's speech tokenizer)
plugs in as a small module of its own that loads the model in FUNCTION and wraps
its encode call in ``__call__``; nothing in fe-train imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fe_train.entry_point import import_attribute
from fe_train.errors import UserError

EXPECTED = ("an object with codebook: str, n_units: int, sample_rate_hz: int and "
            "__call__(waves: list[np.ndarray]) -> list[np.ndarray] of int unit ids")


class SpeechTokenizer(Protocol):
    codebook: str
    n_units: int
    sample_rate_hz: int

    def __call__(self, waves: list[np.ndarray]) -> list[np.ndarray]: ...


def load_tokenizer(spec: str, arg: str = "") -> SpeechTokenizer:
    """The tokenizer ``spec`` (``module:function``) makes of ``arg``; a one-line ``UserError`` when the spec names
    no function or the function returns something that is not a tokenizer."""
    where = f"--tokenizer {spec}"
    function = import_attribute(spec, where, "a function(arg: str) returning " + EXPECTED)
    if not callable(function):
        raise UserError(f"{where}: {spec!r} is not a function (it is of type {type(function).__name__}); "
                        f"expected a function(arg: str) returning {EXPECTED}")
    tokenizer = function(arg)
    wrong = [name for name, kind in (("codebook", str), ("n_units", int), ("sample_rate_hz", int))
             if not isinstance(getattr(tokenizer, name, None), kind) or isinstance(getattr(tokenizer, name), bool)]
    wrong += [] if callable(tokenizer) else ["__call__"]
    if wrong or not tokenizer.codebook or tokenizer.n_units < 1 or tokenizer.sample_rate_hz < 1:
        problem = f"a wrong or missing {', '.join(wrong)}" if wrong else "an empty codebook or a count below 1"
        raise UserError(f"{where}: {spec}({arg!r}) returned a {type(tokenizer).__name__} with {problem}; "
                        f"expected {EXPECTED}")
    return tokenizer


def tokenize(tokenizer: SpeechTokenizer, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``tokenizer``'s units of ``waves`` as int64 arrays, checked: one 1-D integer array per wave, ids in
    [0, n_units). A tokenizer that breaks its contract is a ``UserError`` naming its codebook."""
    out = tokenizer(list(waves))
    where = f"tokenizer of codebook {tokenizer.codebook!r}"
    if not isinstance(out, (list, tuple)) or len(out) != len(waves):
        raise UserError(f"{where}: returned {type(out).__name__} for {len(waves)} waves; expected a list of "
                        f"{len(waves)} arrays of unit ids")
    checked = []
    for units in out:
        units = np.asarray(units)
        if units.ndim != 1 or not (np.issubdtype(units.dtype, np.integer) or units.size == 0):
            raise UserError(f"{where}: returned an array of {units.dtype} {units.shape}; expected 1-D integer ids")
        if units.size and (units.min() < 0 or units.max() >= tokenizer.n_units):
            raise UserError(f"{where}: returned ids in [{units.min()}, {units.max()}]; expected ids in "
                            f"[0, {tokenizer.n_units})")
        checked.append(units.astype(np.int64))
    return checked
