"""The user turn of a prompt, and the review's controls over what fills its slots (``eval.control``).

A template such as ``<speech>(with a <emotion> emotional tone).`` keeps its slots for the
model to fill: ``<speech>`` with the adapter's tokens of the audio, ``<emotion>`` with the
emotion extractor's vector of the same clip. A control puts text in their place instead,
from the same sample (``fe_train.config.CONTROLS``):

- ``speech``: both slots kept (the model must have an extractor if the turn has ``<emotion>``);
- ``extractor``: the same, and the turn must have ``<emotion>`` and the model an extractor;
- ``transcript``: the sample's ``text`` in place of ``<speech>``, no audio for the adapter: the
  frozen LLM answering the words alone, the ceiling of the adapter (``<emotion>``, if any, is
  still the extractor's vector of the clip);
- ``gold_label``: the sample's own ``emotion`` word in place of ``<emotion>``;
- ``random_label``: a label word drawn from (``eval.seed``, sample key), uniform over the
  five and the same in every run, so it is right one time in five.

Training always fills the slots (stage 2's examples); the controls are evaluations of the
same checkpoint on the same data, under any ``fe-train eval`` command.
"""

from __future__ import annotations

import zlib

from fe_train.config import CONTROLS, EMOTIONS
from fe_train.data.schema import SampleError
from fe_train.errors import UserError

LABEL_CONTROLS = ("gold_label", "random_label")
"""Controls that write a label word in place of ``<emotion>``."""


def random_label(seed: int, key: str) -> str:
    """A label word that depends only on the seed and the sample key (the same in every run)."""
    return EMOTIONS[zlib.crc32(f"{seed}/{key}".encode()) % len(EMOTIONS)]


def check_control(control: str, template: str, has_extractor: bool) -> None:
    """One line naming the key when the control cannot be applied to ``template`` for this model."""
    needs_slot = control in (*LABEL_CONTROLS, "extractor")
    if needs_slot and "<emotion>" not in template:
        raise UserError(f"config eval.control = {control!r}: the user turn {template!r} has no <emotion> for the "
                        + ("extractor's soft token" if control == "extractor" else "label word"))
    if not has_extractor and (control == "extractor" or ("<emotion>" in template and control not in LABEL_CONTROLS)):
        raise UserError(f"config eval.control = {control!r} with the user turn {template!r}: the model has no emotion "
                        "extractor to fill <emotion> (give the stage-2 run as --ckpt, or a label control)")


class UserTurn:
    """``template`` under ``control``: ``render`` gives the user turn's text for one sample."""

    def __init__(self, template: str, control: str = "speech", seed: int = 0):
        if control not in CONTROLS:
            raise UserError(f"config eval.control = {control!r}: expected one of {CONTROLS}")
        self.template, self.control, self.seed = template, control, seed
        self.speech_slot = "<speech>" in template and control != "transcript"
        """True when the rendered turn keeps ``<speech>`` (the adapter's tokens fill it)."""
        self.emotion_slot = "<emotion>" in template and control not in LABEL_CONTROLS
        """True when the rendered turn keeps ``<emotion>`` (the extractor's vector fills it)."""

    def render(self, key: str, transcript: str | None, label: str | None) -> str:
        """The turn of the sample ``key``; a control that needs a field the sample lacks raises ``SampleError``."""
        user = self.template
        if "<speech>" in user and not self.speech_slot:
            if not transcript:
                raise SampleError("missing_field:text")
            user = user.replace("<speech>", transcript)
        if "<emotion>" in user and not self.emotion_slot:
            if self.control == "gold_label" and not label:
                raise SampleError("missing_field:emotion")
            user = user.replace("<emotion>", label if self.control == "gold_label" else random_label(self.seed, key))
        return user


def ser_turn(user_speech: str, question: str) -> str:
    """The one SER prompt: the checkpoint's speech turn (``prompt.user_speech``), then the question."""
    return f"{user_speech} {question}"
