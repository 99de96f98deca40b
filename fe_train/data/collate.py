"""Collating examples into padded micro-batch tensors."""

from __future__ import annotations

from typing import Any

import torch

from fe_train.data.features import LogMelResult
from fe_train.data.interleave import UnitSequence, collate_unit_sequences
from fe_train.data.pipeline import Example
from fe_train.data.prompt import IGNORE, Layout


class Collate:
    """Pads token rows on the right and log-mel features with each clip's pad value.

    Example fields it knows: ``layout`` (a ``Layout``; another ``<prefix>layout`` gives ``<prefix>input_ids`` and so
    on), a ``UnitSequence`` (the speech
    decoder's row, as ``unit_*`` tensors), any ``*mel`` (a ``LogMelResult``,
    e.g. ``mel`` for content audio and ``emotion_mel`` for the emotion clip) and any
    integer or tensor field, which is stacked. Padding copies (``Example.pad``) get
    weight 0 and no labels, and their keys are left out of ``keys``.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, examples: list[Example]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "keys": [ex.key for ex in examples if not ex.pad],
            "weight": torch.tensor([0.0 if ex.pad else 1.0 for ex in examples]),
        }
        for name, value in examples[0].fields.items():
            column = [ex.fields[name] for ex in examples]
            if isinstance(value, Layout):
                prefix = name[: -len("layout")]
                out.update({prefix + k: v for k, v in self._layouts(column, [ex.pad for ex in examples]).items()})
            elif isinstance(value, UnitSequence):
                out.update(collate_unit_sequences(column, [ex.pad for ex in examples]))
            elif isinstance(value, LogMelResult):
                prefix = name[: -len("mel")]
                out.update({prefix + k: v for k, v in _mels(column).items()})
            elif isinstance(value, torch.Tensor):
                out[name] = torch.stack(column)
            elif isinstance(value, (int, float, bool)):
                out[name] = torch.tensor(column)
            else:
                out[name] = column
        return out

    def _layouts(self, layouts: list[Layout], pads: list[bool]) -> dict[str, torch.Tensor]:
        length = max(len(layout.input_ids) for layout in layouts)
        batch = len(layouts)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE, dtype=torch.long)
        slots = torch.zeros((batch, length), dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for row, (layout, pad) in enumerate(zip(layouts, pads)):
            n = len(layout.input_ids)
            input_ids[row, :n] = torch.tensor(layout.input_ids)
            slots[row, :n] = torch.tensor(layout.slots)
            attention_mask[row, :n] = 1
            if not pad:
                labels[row, :n] = torch.tensor(layout.labels)
        return {"input_ids": input_ids, "labels": labels, "slots": slots, "attention_mask": attention_mask}


def _mels(results: list[LogMelResult]) -> dict[str, torch.Tensor]:
    frames = max(result.features.shape[1] for result in results)
    n_mels = results[0].features.shape[0]
    pad_value = torch.tensor([result.pad_value for result in results])
    features = pad_value.view(-1, 1, 1).repeat(1, n_mels, frames)  # (B, n_mels, T)
    for row, result in enumerate(results):
        features[row, :, : result.features.shape[1]] = result.features
    return {
        "mel": features,
        "mel_pad_value": pad_value,
        "audio_frames": torch.tensor([result.audio_frames for result in results]),
    }


def to_device(batch: dict, device: torch.device, non_blocking: bool = False) -> dict:
    """A collated batch's tensors on ``device``; the other fields as they are."""
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
