"""Trained runs as one model: what ``--ckpt`` means for ``fe-train eval`` and ``fe-train infer``.

A checkpoint is a run's output directory (its resolved ``config.yaml`` and the
``export/`` of the modules it trained), or that ``export/`` directory itself.
Several are given when the stages ran separately (``--ckpt runs/stage1 --ckpt
runs/stage2a --ckpt runs/stage3a``); the model is their union:

- each run contributes the modules it exported, a later run's export replacing an
  earlier one's, and the config sections that shape those modules (``SECTIONS``);
- a run also contributes the frozen trained modules it started from (its config's
  ``INIT_KEYS``, e.g. stage 2's ``train.init_adapter``) where they exist, below every
  export: ``--ckpt runs/stage2a`` alone is stage 2a's whole model;
- the prompt (``prompt.*``) comes from the last run that exported a module that
  fills the prompt (the adapter or the emotion extractor), since those modules
  learned under it;
- every run must name the same frozen LLM and speech encoder (where it names one);
- each export path is written into the key that loads it (``INIT_KEYS``); the
  user's ``--config`` file and ``section.key=value`` overrides apply last.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

from fe_train.config import Config, from_tree, merge_overrides, read_yaml
from fe_train.config.loading import drop_retired
from fe_train.errors import UserError

log = logging.getLogger(__name__)

INIT_KEYS = {
    "adapter": ("train", "init_adapter"),
    "emotion_extractor": ("emotion", "init_extractor"),
    "ser_head": ("emotion", "init_ser_head"),
    "decoder": ("decoder", "path"),
    "fusion": ("decoder", "init_fusion"),
}
"""Exported module -> the config key its export is loaded from."""
SECTIONS = {"adapter": ("model",), "emotion_extractor": ("emotion",), "ser_head": ("emotion",),
            "decoder": ("decoder",), "fusion": ("decoder",)}
"""Exported module -> config sections that shape it."""
PROMPT_MODULES = ("adapter", "emotion_extractor")
FROZEN_PATHS = ("llm_path", "encoder_path")


@dataclass
class TrainedRun:
    root: Path
    tree: dict
    """The run's resolved config as saved (``config.yaml``)."""
    exports: dict[str, Path]
    """Module name -> its export (``<name>.safetensors`` or a ``<name>/`` directory)."""
    inherited: dict[str, Path]
    """Module name -> the file its config loaded it from (not exported by this run)."""


def ordered_modules(runs: list[TrainedRun]) -> list[tuple[TrainedRun, str, Path]]:
    """(run, module, path) in the order they apply, a later one replacing an earlier: inherited, then exported."""
    return [(run, module, path) for field in ("inherited", "exports") for run in runs
            for module, path in getattr(run, field).items()]


def read_run(path: str | Path) -> TrainedRun:
    path = Path(path)
    root = path.parent if path.name == "export" else path
    config = root / "config.yaml"
    if not config.is_file():
        raise UserError(f"--ckpt {path}: no config.yaml (expected a run's output directory, e.g. runs/stage1)")
    export = root / "export"
    exports = {}
    if export.is_dir():
        for item in sorted(export.iterdir()):
            name = item.name.removesuffix(".safetensors") if item.suffix == ".safetensors" else item.name
            if (item.is_file() and item.suffix == ".safetensors") or item.is_dir():
                exports[name] = item
    if not exports:
        raise UserError(f"--ckpt {path}: no exported module in {export} (a run exports when it finishes)")
    unknown = sorted(set(exports) - set(INIT_KEYS))
    if unknown:
        raise UserError(f"--ckpt {path}: exports {unknown} are not modules this fe-train can load ({sorted(INIT_KEYS)})")
    tree = read_yaml(config)
    retired = drop_retired(tree)
    if retired:
        log.warning("--ckpt %s: config keys of an older fe-train ignored: %s", path, ", ".join(retired))
    inherited = {}
    for module, (section, key) in INIT_KEYS.items():
        named = (tree.get(section) or {}).get(key)
        if module not in exports and named and Path(named).exists():
            inherited[module] = Path(named)
    return TrainedRun(root, tree, exports, inherited)


def merged_tree(runs: list[TrainedRun]) -> dict:
    """The config tree of the union of ``runs`` (rules in the module docstring)."""
    if not runs:
        raise UserError("no --ckpt given: expected at least one run directory")
    tree = copy.deepcopy(runs[-1].tree)
    prompt_run = None
    for run, module, _ in ordered_modules(runs):
        for section in SECTIONS[module]:
            tree[section] = copy.deepcopy(run.tree.get(section, {}))
        if module in PROMPT_MODULES:
            prompt_run = run
    if prompt_run is not None:
        tree["prompt"] = copy.deepcopy(prompt_run.tree.get("prompt", {}))
    tree.setdefault("model", {})
    for key in FROZEN_PATHS:
        named = {str(run.root): run.tree.get("model", {}).get(key) for run in runs if run.tree.get("model", {}).get(key)}
        if len(set(named.values())) > 1:
            raise UserError(f"--ckpt runs name different model.{key}: {named} (the frozen parts must be the same)")
        if named:
            tree["model"][key] = next(iter(named.values()))
    for _, module, path in ordered_modules(runs):
        section, key = INIT_KEYS[module]
        tree.setdefault(section, {})[key] = str(path)
    return tree


def load_config(checkpoints: list[str], config_path: str | None = None, overrides: list[str] = ()) -> tuple[Config, dict[str, Path]]:
    """The model's config (runs merged, then ``config_path``, then overrides) and every export by module."""
    runs = [read_run(path) for path in checkpoints]
    tree = merged_tree(runs)
    if config_path:
        for section, values in read_yaml(config_path).items():
            if not isinstance(values, dict):
                raise UserError(f"config file {config_path}: {section!r} must be a mapping")
            tree.setdefault(section, {}).update(values)
    merge_overrides(tree, list(overrides))
    exports = {module: path for _, module, path in ordered_modules(runs)}
    return from_tree(Config, tree, where="--ckpt config"), exports
