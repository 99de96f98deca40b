"""Token layout of a chat prompt with soft-token slots, and the reply labels.

The user turn is written with placeholders (``<speech>``, ``<emotion>``) and
rendered with the LLM tokenizer's own chat template. The rendered text is split
at the placeholders; text pieces are tokenized, and each placeholder becomes
``n`` positions whose embeddings the model overwrites with soft tokens (the
adapter's sequence, the emotion vector). Prompt and slot positions carry label
-100; the reply and the turn-end token carry their ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from fe_train.data.schema import SampleError
from fe_train.errors import UserError

IGNORE = -100
SLOTS = {"<speech>": 1, "<emotion>": 2}
"""Placeholder -> slot id in the layout's ``slots`` row (0 is text)."""
_SLOT_RE = re.compile("(" + "|".join(re.escape(name) for name in SLOTS) + ")")


@dataclass
class Layout:
    input_ids: list[int]
    labels: list[int]
    slots: list[int]
    """Per position: 0 text, else the slot id of the placeholder it stands for."""
    reply_truncated: bool = False


class PromptLayout:
    """Builds ``Layout`` rows for a tokenizer with a chat template and a fixed system prompt."""

    def __init__(self, tokenizer, system: str, max_reply_tokens: int):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"tokenizer of {tokenizer.name_or_path!r} has no chat template (expected an instruct/chat model)")
        self.tokenizer = tokenizer
        self.system = system
        self.max_reply_tokens = max_reply_tokens
        self.turn_end_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.turn_end_id
        self._pieces = lru_cache(maxsize=4096)(self._render)

    def render(self, user: str) -> str:
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _render(self, user: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        pieces = []
        for part in _SLOT_RE.split(self.render(user)):
            if part in SLOTS:
                pieces.append((part, ()))
            elif part:
                pieces.append(("", tuple(self.tokenizer(part, add_special_tokens=False)["input_ids"])))
        return tuple(pieces)

    def build(self, user: str, slot_lengths: dict[str, int], reply: str | None) -> Layout:
        """The prompt for ``user`` (with placeholders) followed by ``reply`` (None: prompt only)."""
        ids: list[int] = []
        slots: list[int] = []
        for name, tokens in self._pieces(user):
            if name:
                if name not in slot_lengths:
                    raise SampleError("unfilled_slot", name)
                ids += [self.pad_id] * slot_lengths[name]
                slots += [SLOTS[name]] * slot_lengths[name]
            else:
                ids += tokens
                slots += [0] * len(tokens)
        labels = [IGNORE] * len(ids)
        truncated = False
        if reply is not None:
            reply_ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            truncated = len(reply_ids) > self.max_reply_tokens
            # A cut reply gets no turn end: the model must not learn to stop there.
            reply_ids = reply_ids[: self.max_reply_tokens] + ([] if truncated else [self.turn_end_id])
            ids += reply_ids
            labels += reply_ids
            slots += [0] * len(reply_ids)
        return Layout(ids, labels, slots, truncated)
