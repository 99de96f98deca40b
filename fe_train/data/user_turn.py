"""The user turn of an emotion prompt, and the review's controls over what fills its slots.

A template such as ``<speech>(with a <emotion> emotional tone).`` keeps its slots when the
content comes from speech and the emotion from the extractor. The controls put text in
their place instead, from the same sample:

- emotion ``random_word``: a label word drawn per sample key (uniform over the five labels, so
  it is right one time in five); ``true_word``: the sample's own label word;
- content ``transcript``: the clip's transcript instead of the adapter's tokens.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from fe_train.config import EMOTIONS


def random_word(seed: int, key: str) -> str:
    """A label word that depends only on the seed and the sample key (the same in every run)."""
    return EMOTIONS[zlib.crc32(f"{seed}/{key}".encode()) % len(EMOTIONS)]


EMOTION_FILL: dict[str, Callable[[int, str, str], str]] = {
    "extractor": lambda seed, key, label: "<emotion>",
    "random_word": lambda seed, key, label: random_word(seed, key),
    "true_word": lambda seed, key, label: label,
}
"""emotion source -> (seed, sample key, true label) -> what stands at ``<emotion>``."""

CONTENT_FILL: dict[str, Callable[[str], str]] = {
    "speech": lambda transcript: "<speech>",
    "transcript": lambda transcript: transcript,
}
"""content source -> (transcript) -> what stands at ``<speech>``."""


class UserTurn:
    def __init__(self, template: str, emotion_source: str = "extractor", content_source: str = "speech", seed: int = 0):
        self.template = template
        self.emotion = EMOTION_FILL[emotion_source]
        self.content = CONTENT_FILL[content_source]
        self.seed = seed
        self.speech_slot = "<speech>" in self.render("k", "t", EMOTIONS[0])
        """True when the rendered turn keeps ``<speech>`` (the adapter's tokens fill it)."""
        self.emotion_slot = "<emotion>" in self.render("k", "t", EMOTIONS[0])
        """True when the rendered turn keeps ``<emotion>`` (the extractor's vector fills it)."""

    def render(self, key: str, transcript: str, label: str) -> str:
        return self.template.replace("<speech>", self.content(transcript)).replace("<emotion>", self.emotion(self.seed, key, label))
