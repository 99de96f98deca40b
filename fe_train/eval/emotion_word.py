"""The emotion class a reply names: the label reader of the SER evaluation (``fe-train eval ser``).

The prediction is the first emotion word of the reply after SpokenQA normalisation
(case, accents, punctuation; whole words only), in any of its forms (``WORDS``:
"anger" and "angry" both name angry). A negation ("not angry") is not understood
and reads as the word it negates.
"""

from __future__ import annotations

from fe_train.eval.spokenqa import normalize

WORDS = {"angry": "angry", "anger": "angry", "surprised": "surprised", "surprise": "surprised", "happy": "happy",
         "happiness": "happy", "joy": "happy", "sad": "sad", "sadness": "sad", "neutral": "neutral"}
"""Normalised reply word -> the class it names (a name of ``fe_train.config.EMOTIONS``)."""


def label_word(reply: str) -> str | None:
    """The class named by the first emotion word of ``reply`` (None: no emotion word)."""
    return next((WORDS[w] for w in normalize(reply) if w in WORDS), None)
