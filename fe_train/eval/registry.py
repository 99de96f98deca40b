"""The evaluation tasks by the names the CLI and ``eval.tasks`` use."""

from __future__ import annotations

from fe_train.errors import UserError
from fe_train.eval.empathy_replies import EmpathyTask
from fe_train.eval.ser import SERTask
from fe_train.eval.spokenqa import SpokenQATask

TASKS = {"spokenqa": SpokenQATask, "ser": SERTask, "empathy": EmpathyTask}


def task_class(name: str):
    if name not in TASKS:
        raise UserError(f"evaluation task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name]
