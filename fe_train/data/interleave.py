"""The speech decoder's streaming sequence: R reply positions read, then W units written, repeated.

The reply's text positions (each the fused LLM state and token, see
``fe_train.model.fusion``) are followed by ``<sep>``; the units by eos. Both are
cut into chunks, text into chunks of R and units into chunks of W, and the
chunks alternate: text chunk i, then unit chunk i, the last text chunk taking
all remaining units. When the units make fewer chunks than the text, the reply
cannot be streamed this way and the sequence falls back to [all text][all
units]. Only unit positions (and eos) carry labels. The sequence is cut at a
maximum length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from fe_train.data.prompt import IGNORE

T = TypeVar("T")


def interleave(text: Sequence[T], units: Sequence[T], sep: T, eos: T, read: int, write: int,
               max_length: int) -> tuple[list[T], list[bool]]:
    """The decoder sequence for ``text`` and ``units`` and, per position, whether it is a target."""
    text = [*text, sep]
    units = [*units, eos]
    text_chunks = -(-len(text) // read)
    unit_chunks = -(-len(units) // write)
    if unit_chunks < text_chunks:
        sequence, target = text + units, [False] * len(text) + [True] * len(units)
    else:
        sequence, target = [], []
        for i in range(text_chunks):
            last = i == text_chunks - 1
            chunk_text = text[i * read : (i + 1) * read]
            chunk_units = units[i * write :] if last else units[i * write : (i + 1) * write]
            sequence += chunk_text + chunk_units
            target += [False] * len(chunk_text) + [True] * len(chunk_units)
    return sequence[:max_length], target[:max_length]


@dataclass
class UnitSequence:
    """One example's decoder row: token ids, the LLM position paired with each text position, labels."""

    input_ids: list[int]
    """Decoder token per position; a text position carries its reply token (embedded by the decoder)."""
    llm_positions: list[int]
    """For a text position, the LLM position whose hidden state pairs with it (-1 elsewhere)."""
    labels: list[int]
    """Unit ids and eos at unit positions, ``IGNORE`` elsewhere."""
    pad_id: int
    truncated: bool = False


def unit_sequence(reply_ids: Sequence[int], reply_positions: Sequence[int], unit_ids: Sequence[int], sep_id: int,
                  eos_id: int, read: int, write: int, max_length: int) -> UnitSequence:
    """The decoder row for a reply whose tokens sit at ``reply_positions`` of the LLM's sequence.

    Reply token t at LLM position p is paired with the LLM state at p - 1, the state that predicted it.
    """
    text = [("text", i) for i in range(len(reply_ids))]
    units = [("unit", u) for u in unit_ids]
    full = len(text) + 1 + len(units) + 1
    sequence, target = interleave(text, units, ("sep", sep_id), ("unit", eos_id), read, write, max_length)
    input_ids, positions, labels = [], [], []
    for (kind, value), is_target in zip(sequence, target):
        if kind == "text":
            input_ids.append(reply_ids[value])
            positions.append(reply_positions[value] - 1)
        else:
            input_ids.append(value)
            positions.append(-1)
        labels.append(value if is_target else IGNORE)
    return UnitSequence(input_ids, positions, labels, eos_id, truncated=len(sequence) < full)


def collate_unit_sequences(rows: list[UnitSequence], pads: list[bool]) -> dict[str, torch.Tensor]:
    """Right-padded ``unit_*`` tensors (B, S); padding copies get no labels."""
    length = max(len(row.input_ids) for row in rows)
    batch = len(rows)
    input_ids = torch.full((batch, length), rows[0].pad_id, dtype=torch.long)
    positions = torch.full((batch, length), -1, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    mask = torch.zeros((batch, length), dtype=torch.long)
    for i, (row, pad) in enumerate(zip(rows, pads)):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        positions[i, :n] = torch.tensor(row.llm_positions)
        mask[i, :n] = 1
        if not pad:
            labels[i, :n] = torch.tensor(row.labels)
    return {"unit_input_ids": input_ids, "unit_llm_positions": positions, "unit_labels": labels,
            "unit_attention_mask": mask}
