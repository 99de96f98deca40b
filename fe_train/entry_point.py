"""Plug-ins named ``module:attribute`` (a vocoder, a speech tokenizer), imported by name.

Code that lives outside this package (IndexTTS2's semantic codec, CosyVoice's
tokenizer, a HiFi-GAN) plugs in by the module that holds it, so a GPU node can
install it next to fe-train without a registry entry here. A spec that names
nothing importable is the user's input gone wrong: a one-line ``UserError`` that
names the spec and what was expected, never a traceback.
"""

from __future__ import annotations

import importlib

from fe_train.errors import UserError


def import_attribute(spec: str, where: str, expected: str) -> object:
    """The attribute ``spec`` (``module:attribute``) names; ``where`` (the option or config key) and ``expected``
    (what it should be, e.g. ``a function(arg) -> tokenizer``) go into the error message."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute or ":" in attribute:
        raise UserError(f"{where}: expected module:attribute naming {expected}, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"{where}: cannot import {module_name!r} ({exc}); expected a module holding {expected}") from None
    if not hasattr(module, attribute):
        raise UserError(f"{where}: module {module_name!r} has no attribute {attribute!r}; expected {expected}")
    return getattr(module, attribute)
