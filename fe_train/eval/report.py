"""Evaluation results on disk: ``<name>.json`` (everything) and ``<name>.md`` (the table a paper shows)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fe_train.data.writer import atomic_write


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent(interval: dict, digits: int = 1) -> str:
    """An interval record (``Interval.as_dict``) as ``value [low, high]`` in percent."""
    return f"{100 * interval['value']:.{digits}f} [{100 * interval['low']:.{digits}f}, {100 * interval['high']:.{digits}f}]"


def score(interval: dict, digits: int = 2) -> str:
    """An interval record as ``value [low, high]`` on its own scale (judge scores)."""
    return f"{interval['value']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def confidence_label(interval: dict) -> str:
    return f"{100 * interval['confidence']:g}%"


def write_report(out_dir: str | Path, name: str, result: dict, table: str) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write(json_path, (json.dumps(result, indent=1) + "\n").encode())
    atomic_write(md_path, table.encode())
    return json_path, md_path
