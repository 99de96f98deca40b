"""The recipe's prompt texts, written once: the config defaults, the presets (by name) and the test worlds use these.

A preset names a system prompt instead of repeating it: ``prompt.system: empathy`` (``SYSTEM_PROMPTS``). Any other
value is the prompt itself.
"""

from __future__ import annotations

HELPFUL_SYSTEM = "You are a helpful assistant."
"""Stage 1 and stage 3's system prompt (Qwen2.5's default)."""
EMPATHY_SYSTEM = ("You are an empathetic spoken chatbot. Please provide a very short but helpful response to the user "
                  "with empathy toward the user's emotional tone.")
"""The released model's empathetic system prompt (stage 2, and the targets of 2b)."""
SYSTEM_PROMPTS = {"helpful": HELPFUL_SYSTEM, "empathy": EMPATHY_SYSTEM}
"""Names a config may give for ``prompt.system`` and ``generate.empathy_system``."""

EMOTION_TURN = "<speech>(with a <emotion> emotional tone)."
"""The user turn that carries speech and its emotion: stage 2's pseudo pairs, 2b's targets, the extractor's prompts."""
SER_QUESTION = "What is the emotional tone of the speaker? Answer in one word."
"""The SER question (``emotion.ser_question``), asked after the speech turn; the target is the label word."""
USER_TURNS = {"speech": "<speech>", "emotion": EMOTION_TURN}
"""Names a config may give for ``prompt.user_speech``."""


def named(value: str, names: dict[str, str]) -> str:
    """The text a config value stands for: the text of a name in ``names``, else the value itself."""
    return names.get(value, value)
