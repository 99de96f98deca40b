"""What the frozen LLM is asked, per target task (a registry keyed by ``--task``).

distill (stage 1): the reply to the instruction text under ``prompt.system`` and
``prompt.user_text``. empathy (stage 2b): the reply to the instruction text plus a
pseudo label word, under the empathetic system prompt and the recipe's user turn
``<speech>(with a <emotion> emotional tone).`` with ``<speech>`` replaced by the
text and ``<emotion>`` by the label word.
"""

from __future__ import annotations

from dataclasses import dataclass

from fe_train.config import Config
from fe_train.data.manifest import Skips
from fe_train.errors import UserError
from fe_train.generate.labels import LabelDistribution


@dataclass(frozen=True)
class Task:
    name: str
    system: str
    user_template: str
    labels: LabelDistribution | None = None
    """The pseudo-label distribution (empathy only)."""

    def label(self, key: str, seed: int) -> str:
        return self.labels.draw(key, seed) if self.labels is not None else ""

    def user(self, text: str, label: str) -> str:
        if self.labels is None:
            return self.user_template.replace("{text}", text)
        # The label word first: an instruction text that happens to contain "<emotion>" stays as written.
        return self.user_template.replace("<emotion>", label).replace("<speech>", text)

    def record(self) -> dict:
        """What must not change between a run and its resume."""
        return {"task": self.name, "system": self.system, "user_template": self.user_template,
                "labels": self.labels.as_dict() if self.labels is not None else None}


def distill(cfg: Config) -> Task:
    if "{text}" not in cfg.prompt.user_text:
        raise UserError(f"config prompt.user_text = {cfg.prompt.user_text!r}: expected a template with {{text}}")
    return Task("distill", cfg.prompt.system, cfg.prompt.user_text)


def empathy(cfg: Config) -> Task:
    g = cfg.generate
    for slot in ("<speech>", "<emotion>"):
        if slot not in g.empathy_user:
            raise UserError(f"config generate.empathy_user = {g.empathy_user!r}: expected a template with {slot}")
    return Task("empathy", g.empathy_system, g.empathy_user, label_distribution(cfg))


def label_distribution(cfg: Config) -> LabelDistribution:
    """From ``generate.label_weights``, else from the emotion counts of ``generate.label_shards``."""
    from fe_train.data.catalog import emotion_counts

    g = cfg.generate
    if g.label_weights and g.label_shards:
        raise UserError("config generate.label_weights and generate.label_shards are both set: expected one of them")
    if g.label_weights:
        return LabelDistribution.from_weights(g.label_weights, "generate.label_weights")
    if not g.label_shards:
        raise UserError("the empathy task needs a pseudo-label distribution: set generate.label_shards "
                        "(the SER training shards, the recipe's default) or generate.label_weights")
    return LabelDistribution.from_counts(emotion_counts(g.label_shards, Skips()), f"generate.label_shards = {g.label_shards!r}")


TASKS = {"distill": distill, "empathy": empathy}


def build_task(name: str, cfg: Config) -> Task:
    if name not in TASKS:
        raise UserError(f"--task {name!r}: expected one of {sorted(TASKS)}")
    return TASKS[name](cfg)
