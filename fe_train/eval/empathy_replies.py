"""Replies to spoken instructions, written judge-ready: ``fe-train eval empathy``.

Each item's reply is generated under the checkpoint's prompt and written as the
record of ``fe_train.eval.empathy.judge_record`` (instruction, emotion, reply, the
judge prompts, empty ``judgements``) to ``empathy.records.jsonl``. The emotion the
judge is told is the clip's gold ``emotion``, else the ``pseudo_emotion`` its
instruction was voiced with; an item with neither is judged without one
(``emotion`` is ''). Without a speech decoder in the checkpoints there is no spoken
reply, so no ``style`` prompt. The summary counts the items per emotion; the
scores come from ``fe-train eval judged`` once the judge has answered.
"""

from __future__ import annotations

from collections import Counter

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import read_meta
from fe_train.eval.assembly import speech_llm
from fe_train.eval.empathy import judge_record
from fe_train.eval.gather import real_rows
from fe_train.eval.report import markdown_table
from fe_train.eval.tasks import Replier, SpokenPrompt


class EmpathyTask:
    name = "empathy"

    def __init__(self, cfg: Config, model, tokenizer, synced: bool):
        self.prompt = SpokenPrompt(cfg, speech_llm(model), tokenizer)
        self.replier = Replier(cfg, speech_llm(model), tokenizer, synced)

    def build(self, raw: RawSample) -> Example:
        meta = read_meta(raw)
        if not meta.text:
            raise SampleError("missing_field:text")
        fields = {"instruction": meta.text, "emotion": meta.emotion or meta.pseudo_emotion, "corpus": meta.corpus or "unknown"}
        return self.prompt.example(raw, meta, fields)

    def score(self, model, batch: dict) -> list[dict]:
        replies = self.replier(speech_llm(model), batch)
        return [judge_record(key, batch["corpus"][row], batch["instruction"][row], batch["emotion"][row], replies[row])
                for row, key in real_rows(batch)]

    def summarize(self, records: list[dict]) -> tuple[dict, str]:
        emotions = Counter(r["emotion"] or "unknown" for r in records)
        result = {"items": len(records), "by_emotion": dict(sorted(emotions.items())),
                  "empty_replies": sum(1 for r in records if not r["reply"]),
                  "criteria": sorted({name for r in records for name in r["prompts"]})}
        rows = [(emotion, n) for emotion, n in result["by_emotion"].items()] + [("all", len(records))]
        return result, markdown_table(("emotion", "items to judge"), rows)

    def scalars(self, result: dict) -> dict[str, float]:
        return {"empty_replies": float(result["empty_replies"])}
