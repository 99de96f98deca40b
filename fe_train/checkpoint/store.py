"""Checkpoint layout, atomic saves, ``latest`` and keep-last-N.

Layout under ``<output_dir>/checkpoints``::

    step00000100/             a complete DeepSpeed checkpoint (trainable weights and optimizer only)
      trainer_state.json      step, epoch, data position, run ids   (written last: marks completeness)
      rng/rank00000.json      each rank's torch RNG state
      config.yaml             the resolved run config
    latest                    the tag of the newest complete checkpoint

A save goes to ``stepN.partial`` first; rank 0 renames it and then rewrites
``latest``, so a crash at any point leaves the previous checkpoint in use.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fe_train.config import Config
from fe_train.data.writer import atomic_write

log = logging.getLogger(__name__)

STATE_NAME = "trainer_state.json"
PARTIAL = ".partial"


@dataclass
class TrainerState:
    step: int = 0
    """Optimizer steps taken."""
    epoch: int = 0
    micro_in_epoch: int = 0
    """Micro-batches each rank consumed in ``epoch`` under the current plan."""
    consumed: list[list[int]] = field(default_factory=list)
    """[shard, start, stop] spans of ``epoch`` consumed before the current plan (after a geometry change)."""
    geometry: dict[str, int] = field(default_factory=dict)
    shards_digest: str = ""
    global_batch_size: int = 0
    """Samples per optimizer step when the state was saved: ``step`` counts in these units (0: not recorded)."""
    samples: int = 0
    """Real (non-padding) samples trained on, over all ranks."""
    wandb_id: str = ""
    nonfinite_skipped: int = 0
    """Micro-batches dropped on every rank because some rank's loss was NaN or inf."""
    preempted: bool = False
    """The run stopped on a checkpoint signal before its last step (slurm/train.sbatch reads it to requeue)."""


class CheckpointStore:
    def __init__(self, output_dir: str | Path, rank: int, keep_last: int):
        self.root = Path(output_dir) / "checkpoints"
        self.rank = rank
        self.keep_last = keep_last

    def latest_tag(self) -> str | None:
        """The newest complete checkpoint: the one ``latest`` names, else the newest with its state file."""
        pointer = self.root / "latest"
        if pointer.is_file():
            tag = pointer.read_text().strip()
            if (self.root / tag / STATE_NAME).is_file():
                return tag
            log.warning("checkpoint %s named by %s is incomplete; looking for an older one", tag, pointer)
        complete = sorted(p.parent.name for p in self.root.glob(f"step*/{STATE_NAME}") if not p.parent.name.endswith(PARTIAL))
        return complete[-1] if complete else None

    def save(self, engine, state: TrainerState, cfg: Config, barrier) -> Path:
        """Collective: every rank calls it. Returns the final checkpoint directory."""
        tag = f"step{state.step:08d}"
        partial = tag + PARTIAL
        engine.save_checkpoint(str(self.root), tag=partial, save_latest=False, exclude_frozen_parameters=True)
        rng_dir = self.root / partial / "rng"
        rng_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(rng_dir / f"rank{self.rank:05d}.json", json.dumps(rng_state()).encode())
        barrier()
        final = self.root / tag
        if self.rank == 0:
            cfg.save(self.root / partial / "config.yaml")
            atomic_write(self.root / partial / STATE_NAME, json.dumps(asdict(state), indent=1).encode())
            if final.exists():
                shutil.rmtree(final)
            (self.root / partial).rename(final)
            atomic_write(self.root / "latest", tag.encode())
            self._prune(keep=tag)
        barrier()
        return final

    def read_state(self, tag: str) -> TrainerState:
        return TrainerState(**json.loads((self.root / tag / STATE_NAME).read_text()))

    def universal_dir(self, tag: str) -> Path:
        """Where the world-size-independent (DeepSpeed universal) form of checkpoint ``tag`` goes."""
        return self.root / "universal" / tag

    def load(self, engine, tag: str, universal: bool = False) -> TrainerState:
        """Collective: restore trainable weights, optimizer, scheduler and this rank's RNG.

        ``universal``: load the universal form made by ``fe_train.engine.universal`` (another world size).
        """
        weights = self.universal_dir(tag) if universal else self.root / tag
        engine.load_checkpoint(
            str(weights.parent),
            tag=weights.name,
            load_module_strict=False,  # frozen weights are not in the checkpoint
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        state = self.read_state(tag)
        rng_file = self.root / tag / "rng" / f"rank{self.rank:05d}.json"
        if rng_file.is_file():
            set_rng_state(json.loads(rng_file.read_text()))
        return state

    def _prune(self, keep: str) -> None:
        tags = sorted(p.name for p in self.root.glob("step*") if p.is_dir() and not p.name.endswith(PARTIAL))
        for old in tags[: -self.keep_last]:
            if old != keep:
                shutil.rmtree(self.root / old, ignore_errors=True)
        for stale in self.root.glob(f"step*{PARTIAL}"):
            shutil.rmtree(stale, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))
