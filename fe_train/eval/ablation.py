"""One evaluation under each control of ``eval.controls``, in one table: ``fe-train eval ablate``.

The model is placed once; each control (``eval.control``: ``speech``, the audio
through the adapter; ``transcript``, the transcript as text, the frozen LLM's
ceiling; ``gold_label``/``random_label``, a label word in the prompt; ``extractor``)
re-reads the shards and is scored by the task. Every control's full
results go to ``<out>/<control>/``; ``ablation.json`` and ``ablation.md`` hold
each control's items, skipped samples and the task's headline numbers.

``gold_label`` and ``random_label`` write a label word in place of ``<emotion>``
(``fe_train.data.user_turn``); ``extractor``, the review's extractor control, leaves
the slot to the stage-2 emotion extractor's soft token (a stage-2 run in ``--ckpt``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fe_train.data.pipeline import resolve_shards
from fe_train.errors import UserError
from fe_train.eval.checkpoints import load_config
from fe_train.eval.registry import task_class
from fe_train.eval.report import markdown_table, write_report
from fe_train.eval.runner import place, score_stream, start, task_stream, write_outputs
from fe_train.launch.env import LaunchEnv


def ablate(task_name: str, checkpoints: list[str], shards: str, out_dir: str, launch: LaunchEnv,
           config_path: str | None = None, overrides: list[str] = ()) -> dict | None:
    """Collective: ``task_name`` under every control; the table's data on rank 0 (None elsewhere)."""
    from fe_train.engine.build import shutdown

    cfg, exports = load_config(checkpoints, config_path, overrides)
    task_class(task_name)
    shard_list = resolve_shards(shards, "--shards")
    device = start(cfg, launch)
    scored = {}
    try:
        placed = place(cfg, exports, launch, device)
        for control in cfg.eval.controls:
            run_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, control=control))
            task = task_class(task_name)(run_cfg, placed.model, placed.tokenizer, placed.synced)
            stream = task_stream(task, placed.tokenizer, shard_list, launch.rank, launch.world_size, run_cfg)
            scored[control] = (task, *score_stream(task, placed.model, stream, device))
    except BaseException:
        shutdown(synchronize=False)
        raise
    shutdown()
    if not launch.is_main:
        return None
    context = {"checkpoints": checkpoints, "shards": shards, "world_size": launch.world_size}
    rows = {}
    for control, (task, records, skipped) in scored.items():
        if not records:
            raise UserError(f"control {control}: no sample of {shards} could be scored (skipped: {dict(skipped)})")
        result = write_outputs(task, records, skipped, str(Path(out_dir) / control), {**context, "control": control})
        rows[control] = {"items": len(records), "skipped": dict(skipped), **task.scalars(result)}
    names = sorted({key for row in rows.values() for key in row} - {"items", "skipped"})
    table = markdown_table(("control", "items", "skipped", *names), [
        (control, row["items"], sum(row["skipped"].values()), *(_cell(row.get(n)) for n in names))
        for control, row in rows.items()])
    summary = {"task": task_name, **context, "controls": rows}
    write_report(out_dir, "ablation", summary, table)
    return summary


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"
