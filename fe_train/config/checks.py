"""The one check every config section uses: a field value outside its domain is a ``UserError``."""

from __future__ import annotations

from fe_train.errors import UserError


def require(ok: bool, key: str, value, expected: str) -> None:
    if not ok:
        raise UserError(f"config {key} = {value!r}: expected {expected}")
