"""Config trees: YAML files, ``section.key=value`` overrides, and their typed, checked conversion."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

import yaml

from fe_train.config.files import shipped_file
from fe_train.errors import UserError

RETIRED = {
    "emotion.emotion_source": "eval.control (extractor, gold_label, random_label), an evaluation of the trained model",
    "emotion.content_source": "eval.control (transcript), an evaluation of the trained model",
    "emotion.ser_user": "prompt.user_speech and emotion.ser_question (the SER prompt is the one, then the other)",
    "emotion.eval_max_new_tokens": "eval.max_new_tokens",
    "eval.ser_user": "prompt.user_speech and emotion.ser_question (fe-train eval ser asks stage 2a's SER prompt)",
}
"""Config keys of an older fe-train -> what replaced them."""


def drop_retired(tree: dict[str, Any]) -> list[str]:
    """Remove the ``RETIRED`` keys from a saved config tree (a run's ``config.yaml``); the dotted keys removed."""
    dropped = []
    for dotted in RETIRED:
        section, _, key = dotted.partition(".")
        if isinstance(tree.get(section), dict) and key in tree[section]:
            del tree[section][key]
            dropped.append(dotted)
    return dropped


def merge_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Write ``section.key=value`` overrides into a config tree (values parsed as YAML)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise UserError(f"override {item!r}: expected section.key=value, e.g. train.lr=1e-4")
        section, _, name = key.partition(".")
        tree.setdefault(section, {})
        if not isinstance(tree[section], dict):
            raise UserError(f"override {item!r}: {section!r} is not a section")
        try:
            tree[section][name] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UserError(f"override {item!r}: the value is not valid YAML ({problem}); quote a pattern with "
                            "braces or commas inside a list: data.train_shards=['dir/a-{000..009}.tar',dir/b]") from None
    return tree


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A config file (a relative path also among the shipped ``configs/``)."""
    path = shipped_file(path)
    if not path.is_file():
        raise UserError(f"config file {path}: no such file")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"config file {path}{where}: not valid YAML ({problem})") from None
    if not isinstance(tree, dict):
        raise UserError(f"config file {path}: expected a mapping of sections, got {type(tree).__name__}")
    return tree


def key_lines(path: str | os.PathLike) -> dict[str, int]:
    """``section`` and ``section.key`` -> the line they are written on in a YAML config file (for error messages)."""
    lines: dict[str, int] = {}
    root = yaml.compose(shipped_file(path).read_text())
    if not isinstance(root, yaml.MappingNode):
        return lines
    for section, body in root.value:
        lines[str(section.value)] = section.start_mark.line + 1
        if isinstance(body, yaml.MappingNode):
            for key, _ in body.value:
                lines[f"{section.value}.{key.value}"] = key.start_mark.line + 1
    return lines


def from_tree(cls, tree: dict[str, Any], where: str, prefix: str = "", lines: dict[str, int] | None = None):
    """Build dataclass ``cls`` from a nested dict, coercing and checking every key; ``lines`` (``key_lines``) puts
    the line of a wrong key into its error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        at = f"{where} line {lines[dotted]}" if lines and dotted in lines else where
        if key not in fields and dotted in RETIRED:
            raise UserError(f"{at}: config key {dotted!r} was retired: use {RETIRED[dotted]}")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{at}: unknown config key {dotted!r} (known here: {known})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{at}: {dotted!r} must be a mapping, got {value!r}")
            kwargs[key] = from_tree(hint, value, where, prefix=f"{dotted}.", lines=lines)
        else:
            kwargs[key] = _coerce(hint, value, dotted, at)
    return cls(**kwargs)


def _coerce(hint, value, key: str, where: str):
    origin = typing.get_origin(hint) or hint
    if origin in (typing.Union, types.UnionType):
        if type(None) in typing.get_args(hint) and (value is None or str(value).lower() in ("null", "none", "auto")):
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return _coerce(options[0], value, key, where)
        for option in options:  # the first that takes the value (``str | list``: a pattern, else a list)
            try:
                return _coerce(option, value, key, where)
            except UserError:
                continue
        names = " or ".join(getattr(option, "__name__", str(option)) for option in options)
        raise UserError(f"{where}: {key!r} = {value!r} is not a valid {names}")
    try:
        if origin is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if origin is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if origin is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return "" if value is None else str(value)
        if origin is list:
            if not isinstance(value, list):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    name = getattr(origin, "__name__", str(origin))
    raise UserError(f"{where}: {key!r} = {value!r} is not a valid {name}")
