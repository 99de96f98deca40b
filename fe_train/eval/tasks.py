"""Evaluation tasks: what every task shares, and the registry keyed by the names the CLI and ``eval.tasks`` use.

A task is made per run with ``(cfg, model, tokenizer, synced)`` and provides
``build(raw) -> Example`` (the shard sample as a prompt-only example; a sample it
cannot use raises ``SampleError`` and is counted), ``score(model, batch)`` (one
record per real sample, each with its ``key``), ``summarize(records)`` (the result
dict and its markdown table) and ``scalars(result)`` (the numbers logged during
training). ``run_task`` drives one rank's batches; ``fe_train.eval.gather`` joins the
ranks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.schema import Meta, SampleError
from fe_train.eval.bootstrap import Bootstrap
from fe_train.generate.replies import Sampling, decode, eos_ids
from fe_train.stages.align import SpeechInput


def bootstrap_of(cfg: Config) -> Bootstrap:
    return Bootstrap(cfg.eval.bootstrap_resamples, cfg.eval.confidence, cfg.eval.seed)


class SpokenPrompt:
    """A sample in the checkpoint's prompt (``prompt.system``, ``prompt.user_speech``), without a reply.

    ``eval.control`` decides what fills the user turn's ``<speech>``: ``speech``, the
    adapter's tokens of the sample's audio; ``transcript``, the sample's ``text``
    written in its place (no audio: the frozen LLM's answer to the words alone).
    """

    def __init__(self, cfg: Config, model, tokenizer, user: str | None = None):
        self.layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
        self.speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)
        self.user = cfg.prompt.user_speech if user is None else user
        self.control = cfg.eval.control

    def example(self, raw: RawSample, meta: Meta, fields: dict) -> Example:
        if self.control == "transcript":
            if not meta.text:
                raise SampleError("missing_field:text")
            layout = self.layout.build(self.user.replace("<speech>", meta.text), {"<emotion>": 1}, None)
            return Example(meta.key, {"layout": layout, **fields})
        mel, n_tokens = self.speech(raw)
        layout = self.layout.build(self.user, {"<speech>": n_tokens, "<emotion>": 1}, None)
        return Example(meta.key, {"layout": layout, "mel": mel, **fields})


class Replier:
    """Greedy replies (``eval.max_new_tokens``) of a ``FreezeEmpath`` model to a batch's prompts, decoded."""

    def __init__(self, cfg: Config, model, tokenizer, synced: bool):
        from fe_train.eval.speech_replies import reply_to_batch

        self.reply_to_batch = reply_to_batch
        self.tokenizer, self.synced = tokenizer, synced
        self.sampling = Sampling(max_new_tokens=cfg.eval.max_new_tokens)
        self.eos = eos_ids(model.llm, tokenizer)

    def __call__(self, model, batch: dict) -> list[str]:
        replies = self.reply_to_batch(model, batch, self.sampling, self.eos, self.tokenizer.pad_token_id, self.synced)
        return [decode(self.tokenizer, reply) for reply in replies]


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def run_task(task, model, batches: Iterable[dict], device: torch.device) -> tuple[list[dict], Counter]:
    """This rank's records and skipped samples (by reason) over ``batches``."""
    records: list[dict] = []
    skipped: Counter = Counter()
    for batch in batches:
        skipped.update(batch.get("skipped", {}))
        records += task.score(model, to_device(batch, device))
    return records, skipped


def task_class(name: str):
    from fe_train.errors import UserError
    from fe_train.eval.empathy_replies import EmpathyTask
    from fe_train.eval.ser import SERTask
    from fe_train.eval.spokenqa import SpokenQATask

    tasks = {"spokenqa": SpokenQATask, "ser": SERTask, "empathy": EmpathyTask}
    if name not in tasks:
        raise UserError(f"evaluation task {name!r}: expected one of {sorted(tasks)}")
    return tasks[name]
