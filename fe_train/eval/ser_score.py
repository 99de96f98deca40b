"""SER accuracy of a FreezeEmpath model, read two ways: the label word the frozen LLM generates
(greedy, from the prompt alone; read by ``fe_train.eval.emotion_word``, as ``fe-train eval ser`` reads it)
and the SER head's choice on the emotion vector.

Collective under ZeRO-3: every rank runs the same number of batches (the epoch plan
pads short ranks) and generation keeps the ranks in step (``synced_gpus``); the counts
are summed over ranks. Padding rows (weight 0) are not counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from fe_train.config import EMOTIONS
from fe_train.data.collate import to_device
from fe_train.eval.emotion_word import label_word
from fe_train.eval.speech_replies import left_align, prompt_lengths


@dataclass
class SERScore:
    clips: int = 0
    word_correct: int = 0
    head_correct: int = 0
    confusion: list[list[int]] = field(default_factory=lambda: [[0] * (len(EMOTIONS) + 1) for _ in EMOTIONS])
    """Counts per (true label, generated label); the last column: no label word generated."""

    @property
    def word_accuracy(self) -> float:
        return self.word_correct / max(self.clips, 1)

    @property
    def head_accuracy(self) -> float:
        return self.head_correct / max(self.clips, 1)

    def as_dict(self) -> dict:
        return {"clips": self.clips, "word_accuracy": self.word_accuracy, "head_accuracy": self.head_accuracy,
                "confusion": self.confusion, "labels": list(EMOTIONS)}


@torch.no_grad()
def evaluate_ser(model, batches: Iterable[dict], tokenizer, device: torch.device, max_new_tokens: int) -> SERScore:
    """Score every batch (collated SER examples with ``emotion_label``); the sums are over all ranks."""
    distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
    counts = torch.zeros(3 + len(EMOTIONS) * (len(EMOTIONS) + 1), dtype=torch.float64)
    for batch in batches:
        batch = to_device(batch, device)
        embeds, emotion = model.embed_with_emotion(batch)
        inputs, mask = left_align(embeds, prompt_lengths(batch))
        new = model.llm.generate(inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 synced_gpus=distributed, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        words = [label_word(text) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
        scored = emotion is not None and model.ser_head is not None
        heads = model.ser_head(emotion).argmax(dim=-1).tolist() if scored else [None] * len(words)
        for label, weight, word, head in zip(batch["emotion_label"].tolist(), batch["weight"].tolist(), words, heads):
            if weight == 0:
                continue
            counts[0] += 1
            counts[1] += word == EMOTIONS[label]
            counts[2] += head == label
            counts[3 + label * (len(EMOTIONS) + 1) + (EMOTIONS.index(word) if word else len(EMOTIONS))] += 1
    if distributed:
        counts = counts.to(device)
        torch.distributed.all_reduce(counts)
    values = [int(v) for v in counts.cpu().tolist()]
    confusion = [values[3 + row * (len(EMOTIONS) + 1): 3 + (row + 1) * (len(EMOTIONS) + 1)] for row in range(len(EMOTIONS))]
    return SERScore(values[0], values[1], values[2], confusion)
