"""What the model is given for a sample under each control of the ablation (``eval.control``).

- ``speech``: the sample's audio through the adapter in ``<speech>``.
- ``transcript``: the sample's ``text`` written in place of ``<speech>``, no audio:
  the frozen LLM answering the words alone, the ceiling of the adapter.
- ``gold_label``: the audio, and the clip's gold ``emotion`` word written in place
  of ``<emotion>`` (the ground-truth-label control).
- ``random_label``: the audio, and an emotion word drawn per key with ``eval.seed``
  (uniform over ``EMOTIONS``, the same in every run) in place of ``<emotion>``.
- ``extractor``: the audio, and the stage-2 emotion extractor's soft token in
  ``<emotion>`` (the review's extractor control; the model must have the extractor).

The label and extractor controls need a user turn with ``<emotion>`` (e.g. ``eval.ser_user`` =
"<speech>(with a <emotion> emotional tone). Is the speaker angry, ...?"). Without a
label control, ``<emotion>`` keeps its soft-token slot for the emotion extractor.
"""

from __future__ import annotations

import zlib

from fe_train.config import EMOTIONS
from fe_train.data.schema import Meta, SampleError
from fe_train.errors import UserError


def random_label(key: str, seed: int) -> str:
    return EMOTIONS[zlib.crc32(f"{seed}\0{key}".encode()) % len(EMOTIONS)]


def _speech(user: str, meta: Meta, seed: int) -> tuple[str, bool]:
    return user, True


def _transcript(user: str, meta: Meta, seed: int) -> tuple[str, bool]:
    if not meta.text:
        raise SampleError("missing_field:text")
    return user.replace("<speech>", meta.text), False


def _gold_label(user: str, meta: Meta, seed: int) -> tuple[str, bool]:
    if not meta.emotion:
        raise SampleError("missing_field:emotion")
    return user.replace("<emotion>", meta.emotion), True


def _random_label(user: str, meta: Meta, seed: int) -> tuple[str, bool]:
    return user.replace("<emotion>", random_label(meta.key, seed)), True


CONTROLS = {"speech": _speech, "transcript": _transcript, "gold_label": _gold_label, "random_label": _random_label,
            "extractor": _speech}
"""``eval.control`` -> (user template, meta, seed) -> (the user turn, whether the audio fills ``<speech>``)."""
LABEL_CONTROLS = ("gold_label", "random_label")
EMOTION_SLOT_CONTROLS = (*LABEL_CONTROLS, "extractor")
"""Controls that need ``<emotion>`` in the user turn."""


def check_control(control: str, user: str, has_extractor: bool = False) -> None:
    if control in EMOTION_SLOT_CONTROLS and "<emotion>" not in user:
        raise UserError(f"config eval.control = {control!r}: the user turn {user!r} has no <emotion> for the "
                        + ("extractor's soft token" if control == "extractor" else "label word"))
    if control == "extractor" and not has_extractor:
        raise UserError("config eval.control = 'extractor': the checkpoints export no emotion extractor "
                        "(give the stage-2 run as --ckpt)")


def extractor_fills_slot(control: str, user: str) -> bool:
    """The extractor's soft token reaches the LLM: audio in, ``<emotion>`` left a slot (not a written label)."""
    return control in ("speech", "extractor") and "<emotion>" in user
