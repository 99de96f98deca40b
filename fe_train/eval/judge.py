"""The LLM-judge prompts of the empathy evaluation and the parsing of the judge's answers.

Three criteria, as the paper scores its empathetic dialogue:

- ``quality`` (1-10): is the reply a helpful, relevant, correct and fluent answer?
- ``empathy`` (1-10): does the reply respond to the user's emotional tone with empathy?
- ``style`` (1, 5 or 10): the rubric of the paper's appendix for the spoken reply: does
  the speech's style fit the user's emotion, and is it natural? 1 when neither holds,
  5 when one does, 10 when both do.

The wording of ``quality`` and ``empathy`` is ours (the paper's appendix text for them is
not in our copy). ``style`` follows the appendix as quoted in the seed review up to the
point where that quote is cut off (the angry case); the angry, surprised and neutral
lines are ours. Every prompt asks for the score in double brackets (``[[7]]``), the form
``parse_score`` reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

QUALITY = """I need your help to evaluate the quality of a spoken chatbot's reply. You are given:
1. The text of the user's spoken instruction.
2. The chatbot's reply (as text).

## Scoring Criteria
Rate how helpful, relevant, correct and fluent the reply is as an answer to the instruction, on a scale of 1 to 10
(1: useless or wrong, 10: an excellent answer). Give a short explanation, then the score in double brackets, e.g. [[7]].

# User's Instruction: {instruction}
# Chatbot's Reply: {reply}
"""

EMPATHY = """I need your help to evaluate the empathy of a spoken chatbot's reply. You are given:
1. The text of the user's spoken instruction.
2. The emotional tone of the user's speech.
3. The chatbot's reply (as text).

## Scoring Criteria
Rate how well the reply recognises the user's emotional tone and responds to it with appropriate empathy (comfort for
sadness, calm understanding for anger, shared joy for happiness, and so on) while still addressing the instruction, on a
scale of 1 to 10 (1: ignores or mismatches the user's emotion, 10: perfectly attuned). Give a short explanation, then
the score in double brackets, e.g. [[7]].

# User's Instruction: {instruction}
# User's Emotional Tone: {emotion}
# Chatbot's Reply: {reply}
"""

STYLE = """I need your help to evaluate the performance of a model in a speech interaction scenario. The model receives
the user's speech input and responds with speech output. You are given:
1. The user's speech input's text instruction, which contains an emotional expression from the user.
2. The emotional tone of user's speech input.
3. The model's speech response.

## Scoring Criteria
Rate each generated audio according to the two criteria below:
1. Did the style of the generated speech (tone, emotion, warmth, intensity, etc.) fit the user's emotion?
- If the user is feeling happy, the speech response should be cheerful and enthusiastic
- If the user is feeling sad, the speech response should be gentle, comforting, and empathetic
- If the user is feeling angry, the speech response should be empathetic, calm and soothing
- If the user is feeling surprised, the speech response should be lively and engaged
- If the user is feeling neutral, the speech response should be friendly and natural
2. Is the speech highly natural, with human-like prosody and standard pronunciation, without sounding like
TTS-synthesized audio?
Please directly rate the score with simple explanations.
- If none of the criteria above are met, rate: [[1]],
- If only one of the criteria is met, rate: [[5]]
- If both criteria are met, rate: [[10]]

# User's Input Speech Instruction: {instruction}
# User's Emotional Tone: {emotion}
# Model's Speech Response: {speech}
"""


@dataclass(frozen=True)
class Criterion:
    name: str
    template: str
    scores: tuple[int, ...]
    """The scores a judge may give."""
    needs_speech: bool = False
    """Judged on the spoken reply (the prompt names its audio file)."""

    def prompt(self, instruction: str, emotion: str, reply: str, speech: str = "") -> str:
        return self.template.format(instruction=instruction, emotion=emotion, reply=reply, speech=speech)


CRITERIA = {
    "quality": Criterion("quality", QUALITY, tuple(range(1, 11))),
    "empathy": Criterion("empathy", EMPATHY, tuple(range(1, 11))),
    "style": Criterion("style", STYLE, (1, 5, 10), needs_speech=True),
}

_BRACKETED = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")


class ScoreError(ValueError):
    """A judgement that gives no usable score; ``reason`` is what it is counted under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def parse_score(judgement, criterion: Criterion) -> float:
    """The score of a judge's answer: a number, or text whose last ``[[n]]`` is the score."""
    if isinstance(judgement, bool) or judgement is None:
        raise ScoreError("missing")
    if isinstance(judgement, (int, float)):
        value = float(judgement)
    elif isinstance(judgement, str):
        found = _BRACKETED.findall(judgement)
        if not found:
            raise ScoreError("no_bracketed_score")
        value = float(found[-1])
    else:
        raise ScoreError("not_text_or_number")
    if value not in criterion.scores:
        raise ScoreError("out_of_scale")
    return value
