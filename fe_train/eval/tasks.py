"""Evaluation tasks: what every task shares (the registry by name: ``fe_train.eval.registry``).

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
from fe_train.data.collate import to_device
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.prompt import PromptLayout
from fe_train.data.schema import Meta
from fe_train.data.speech_input import SpeechInput
from fe_train.data.user_turn import UserTurn, check_control
from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.speech_replies import reply_to_batch
from fe_train.generate.replies import Sampling, decode, eos_ids


def bootstrap_of(cfg: Config) -> Bootstrap:
    return Bootstrap(cfg.eval.bootstrap_resamples, cfg.eval.confidence, cfg.eval.seed)


class SpokenPrompt:
    """A sample in the checkpoint's prompt (``prompt.system``, ``prompt.user_speech``), without a reply.

    ``eval.control`` (``fe_train.data.user_turn``) decides what fills the user turn's
    ``<speech>`` and ``<emotion>``: the audio, the transcript, a label word. A model with an
    emotion extractor always gets the clip's audio: as ``mel`` with ``<speech>``, else as
    ``emotion_mel``, so that its extractor (and SER head) read the clip under every control.
    """

    def __init__(self, cfg: Config, model, tokenizer, user: str | None = None):
        self.layout = PromptLayout(tokenizer, cfg.prompt.system, cfg.prompt.max_reply_tokens)
        self.speech = SpeechInput(cfg, model.encoder.n_mels, model.encoder.n_frames)
        user = cfg.prompt.user_speech if user is None else user
        self.extractor = getattr(model, "emotion_extractor", None) is not None
        check_control(cfg.eval.control, user, self.extractor)
        self.turn = UserTurn(user, cfg.eval.control, cfg.eval.seed)

    def example(self, raw: RawSample, meta: Meta, fields: dict) -> Example:
        user = self.turn.render(meta.key, meta.text, meta.emotion)
        slots, fields = {"<emotion>": 1}, dict(fields)
        if self.turn.speech_slot:
            fields["mel"], slots["<speech>"] = self.speech(raw)
        elif self.extractor:
            fields["emotion_mel"], _ = self.speech(raw)
        return Example(meta.key, {"layout": self.layout.build(user, slots, None), **fields})


class Replier:
    """Greedy replies (``eval.max_new_tokens``) of a ``FreezeEmpath`` model to a batch's prompts, decoded."""

    def __init__(self, cfg: Config, model, tokenizer, synced: bool):
        self.tokenizer, self.synced = tokenizer, synced
        self.sampling = Sampling(max_new_tokens=cfg.eval.max_new_tokens)
        self.eos = eos_ids(model.llm, tokenizer)

    def __call__(self, model, batch: dict, embeds: torch.Tensor | None = None) -> list[str]:
        replies = reply_to_batch(model, batch, self.sampling, self.eos, self.tokenizer.pad_token_id, self.synced, embeds)
        return [decode(self.tokenizer, reply) for reply in replies]


@torch.no_grad()
def run_task(task, model, batches: Iterable[dict], device: torch.device) -> tuple[list[dict], Counter]:
    """This rank's records and skipped samples (by reason) over ``batches``."""
    records: list[dict] = []
    skipped: Counter = Counter()
    for batch in batches:
        skipped.update(batch.get("skipped", {}))
        records += task.score(model, to_device(batch, device))
    return records, skipped
