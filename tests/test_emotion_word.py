"""How ``fe-train eval ser`` reads the emotion class a reply names."""

from __future__ import annotations

from fe_train.config import EMOTIONS
from fe_train.eval import emotion_word, ser

REPLIES = {
    "angry": "angry", "Angry.": "angry", "i feel sad": "sad", "happy! no, sad": "happy", "": None, "joyful": None,
    "anger": "angry", "The cat has four legs.": None, "SADNESS...": "sad", "surprise, surprise: neutral": "surprised",
    "I'm not angry": "angry", "Neutral": "neutral", "saddle": None, "the speaker sounds Happy": "happy",
}


def test_the_ser_evaluation_reads_every_reply_to_its_label():
    assert {reply: ser.label_word(reply) for reply in REPLIES} == REPLIES
    assert ser.label_word is emotion_word.label_word  # one reader


def test_every_label_word_names_a_class_and_every_class_has_its_word():
    assert set(emotion_word.WORDS.values()) == set(EMOTIONS)
    assert all(emotion_word.WORDS[name] == name for name in EMOTIONS)
