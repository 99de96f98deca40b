"""Speech emotion recognition: ``fe-train eval ser``, the one SER evaluation (also during training,
``eval.tasks: [ser]``, and of the stage-2 tests).

Each clip with a gold ``emotion`` is put to the model with the SER prompt stage 2a trains on
(``prompt.user_speech``, then ``emotion.ser_question``: "<speech>(with a <emotion> emotional
tone). What is the emotional tone ...?" for a stage-2 checkpoint, "<speech> What is ...?" for a
stage-1 one) under ``eval.control``; the prediction is the first emotion word of the greedy
reply (``fe_train.eval.emotion_word``). A reply that names none is counted in the confusion
matrix's ``none`` column.

The auxiliary head's prediction (stage 2a's ``ser_head`` over the extractor's vector of the
clip) is a second reader of the same records (``READERS``), read under every control (the
controls change the prompt, not what the extractor hears); a model without an SER head
(stage-1 and stage-3 checkpoints) has only the word read.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fe_train.config import EMOTIONS, Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import read_meta
from fe_train.data.user_turn import ser_turn
from fe_train.eval.assembly import speech_llm
from fe_train.eval.confusion import plot_confusion
from fe_train.eval.emotion_word import label_word
from fe_train.eval.gather import real_rows
from fe_train.eval.report import markdown_table, percent
from fe_train.eval.ser_metrics import predictions_from, ser_metrics
from fe_train.eval.tasks import Replier, SpokenPrompt, bootstrap_of

READERS = ("word", "head")
"""Record fields holding a prediction; ``head`` joins when the model has an SER head."""


def ser_table(result: dict) -> str:
    rows = []
    for reader, metrics in result["readers"].items():
        for name, corpus in metrics["corpora"].items():
            rows.append((reader, name, corpus["clips"], percent(corpus["wa"]), percent(corpus["ua"])))
        average = metrics["corpus_average"]
        rows.append((reader, "average over corpora", metrics["clips"], percent(average["wa"]), percent(average["ua"])))
    return markdown_table(("reader", "corpus", "clips", "WA % [95% CI]", "UA % [95% CI]"), rows)


class SERTask:
    """Clips with a gold ``emotion``: WA and UA of the reply's label word, per corpus and averaged."""

    name = "ser"

    def __init__(self, cfg: Config, model, tokenizer, synced: bool):
        self.cfg = cfg
        user = ser_turn(cfg.prompt.user_speech, cfg.emotion.ser_question)
        self.prompt = SpokenPrompt(cfg, speech_llm(model), tokenizer, user=user)
        self.replier = Replier(cfg, speech_llm(model), tokenizer, synced)
        self.read_head = getattr(speech_llm(model), "ser_head", None) is not None

    def build(self, raw: RawSample) -> Example:
        meta = read_meta(raw)
        if not meta.emotion:
            raise SampleError("missing_field:emotion")
        return self.prompt.example(raw, meta, {"label": meta.emotion, "corpus": meta.corpus or "unknown"})

    def score(self, model, batch: dict) -> list[dict]:
        model = speech_llm(model)
        embeds, emotion = model.embed_with_emotion(batch)  # the encoder runs once for the reply and the head
        replies = self.replier(model, batch, embeds)
        records = [{"key": key, "corpus": batch["corpus"][row], "label": batch["label"][row], "reply": replies[row],
                    "word": label_word(replies[row])} for row, key in real_rows(batch)]
        if self.read_head:
            heads = head_labels(model, emotion)
            for record, (row, _) in zip(records, real_rows(batch)):
                record["head"] = heads[row]
        return records

    def summarize(self, records: list[dict]) -> tuple[dict, str]:
        bootstrap = bootstrap_of(self.cfg)
        readers = {reader: ser_metrics(predictions_from(records, reader, EMOTIONS), bootstrap) for reader in READERS
                   if any(reader in r for r in records)}
        result = {"clips": len(records), "readers": readers}
        return result, ser_table(result)

    def scalars(self, result: dict) -> dict[str, float]:
        return {f"{reader}/{key}": m["corpus_average"][key]["value"] for reader, m in result["readers"].items()
                for key in ("wa", "ua")}

    def figures(self, result: dict, out_dir: Path) -> list[Path]:
        """One confusion-matrix PNG per reader: ``ser.confusion.<reader>.png``."""
        return [plot_confusion(m["confusion"], m["classes"], m["confusion_columns"],
                               Path(out_dir) / f"ser.confusion.{reader}.png", f"SER ({reader}), {m['clips']} clips")
                for reader, m in result["readers"].items()]


@torch.no_grad()
def head_labels(model, emotion: torch.Tensor) -> list[str]:
    """The SER head's class for every row of the extractor's vectors ``emotion`` (B, D_llm)."""
    return [EMOTIONS[int(i)] for i in model.ser_head(emotion).argmax(dim=-1)]
