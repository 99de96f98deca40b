"""Checks on ``save_pretrained`` directories before anything is loaded from them."""

from __future__ import annotations

from pathlib import Path

from fe_train.errors import UserError


def require_pretrained(path: str, key: str) -> None:
    """Raise a ``UserError`` naming ``key`` unless ``path`` holds a saved model's config.json."""
    if not path:
        raise UserError(f"config {key} is empty: expected a directory saved with save_pretrained")
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"config {key} = {path!r}: no such model directory (expected config.json from save_pretrained)")
